//! The program's main thread joins a rayon pool of its own at its first CPU op (so that
//! its parallel loops run on it instead of waiting for a hand-off), and nothing else
//! changes: the same bits as on any other thread, other threads stay on the global pool,
//! and a thread that computes while the main thread waits for it still finishes.
//!
//! Its own `main` (`harness = false`): the test harness runs tests on threads of its
//! own, never on the main thread. One thread, so that a pool shared with the main
//! thread would deadlock the waiting case.

use rand::{rngs::StdRng, SeedableRng};
use std::sync::mpsc;
use std::time::Duration;
use tapegrad_tensor::{Conv2dParams, DType, Device, GradientTape, Padding, Tensor};

/// A ResNet-like 3x3 convolution's output, input gradient and kernel gradient, as bits.
fn products(seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Tensor::rand_uniform([4usize, 12, 12, 32], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let k = Tensor::rand_uniform([32usize, 3, 3, 32], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let p = Conv2dParams { padding: Padding::Same, ..Default::default() };
    let tape = GradientTape::new();
    tape.watch(&x);
    tape.watch(&k);
    let y = tape.record(|| x.conv2d(&k, None, &p)?.relu()).unwrap();
    let loss = tape.record(|| y.square()?.sum_all()).unwrap();
    let grads = tape.gradient(&loss, &[&x, &k]).unwrap();
    let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
    vec![bits(&y), bits(grads[0].as_ref().unwrap()), bits(grads[1].as_ref().unwrap())]
}

fn main() {
    // Before rayon reads it, while no other thread exists.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    assert_eq!(std::thread::current().name(), Some("main"));
    assert_eq!(rayon::current_thread_index(), None, "the main thread starts outside every pool");

    let on_main = products(7);
    assert_eq!(rayon::current_thread_index(), Some(0), "after a CPU op the main thread is thread 0 of a pool");
    assert_eq!(rayon::current_num_threads(), 1, "its pool has the global pool's thread count");

    // Another thread computes on the global pool and does not join one.
    let on_other = std::thread::spawn(|| {
        let p = products(7);
        assert_eq!(rayon::current_thread_index(), None, "only the main thread joins a pool");
        p
    })
    .join()
    .unwrap();
    assert!(on_main == on_other, "the main thread's pool gives other bits than the global pool");

    // The main thread waits (outside rayon) for a thread that computes: with one thread,
    // a pool shared with the main thread would never run that thread's loops.
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || send.send(products(8)).unwrap());
    let waited = receive
        .recv_timeout(Duration::from_secs(120))
        .expect("a thread computing while the main thread waits did not finish: deadlock");
    assert!(waited != on_main, "different seeds give different products");
    println!("main_thread_pool: ok");
}
