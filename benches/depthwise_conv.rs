//! Depthwise 3x3 convolution at MobileNet shapes, batch 64, f32, on the CPU: forward,
//! input gradient and kernel gradient times. `benches/depthwise_conv_torch.py` times the
//! same work in PyTorch (channels_last, same thread count); docs/performance.md has the
//! table.
//!
//! A plain timing loop (`harness = false`); each figure is the minimum over repetitions
//! (the machine is shared; the minimum is the least disturbed).
//!
//! Run: `cargo bench --bench depthwise_conv [-- <case filter>]` (threads:
//! `RAYON_NUM_THREADS`, default all cores). It prints a markdown table.

use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};
use tapegrad::tensor::{Conv2dParams, Padding};
use tapegrad::{DType, Device, GradientTape, Tensor};

const BATCH: usize = 64;

/// (channels, input size) of MobileNet's depthwise layers on 32x32 inputs.
const SHAPES: [(usize, usize); 4] = [(32, 32), (64, 16), (128, 8), (256, 4)];

fn random(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(dims, -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).expect("random tensor")
}

/// Minimum (forward, input gradient, kernel gradient) times of one case.
fn time_case(channels: usize, size: usize, stride: usize) -> [Duration; 3] {
    let params =
        Conv2dParams { strides: (stride, stride), padding: Padding::Same, groups: channels, ..Default::default() };
    let (x, k) = (random(&[BATCH, size, size, channels], 1), random(&[channels, 3, 3, 1], 2));
    let dy = random(x.conv2d(&k, None, &params).expect("forward").dims(), 3);
    let mut best = [Duration::MAX; 3];
    let started = Instant::now();
    let mut reps = 0;
    while reps < 5 || (started.elapsed() < Duration::from_secs(1) && reps < 100) {
        let t0 = Instant::now();
        let tape = GradientTape::new();
        tape.watch(&x);
        tape.watch(&k);
        let y = tape.record(|| x.conv2d(&k, None, &params)).expect("forward");
        let t1 = Instant::now();
        // The two gradients separately: each request runs only the primitive it needs.
        let dx = tape.gradient_with_output_gradient(&y, &[&x], &dy);
        let t2 = Instant::now();
        drop(dx);
        let tape = GradientTape::new();
        tape.watch(&k);
        let y = tape.record(|| x.conv2d(&k, None, &params)).expect("forward");
        let t3 = Instant::now();
        let dk = tape.gradient_with_output_gradient(&y, &[&k], &dy).expect("kernel gradient");
        let t4 = Instant::now();
        assert!(dk[0].is_some());
        // The first repetition warms caches and the allocator; it is not counted.
        if reps > 0 {
            for (b, t) in best.iter_mut().zip([t1 - t0, t2 - t1, t4 - t3]) {
                *b = (*b).min(t);
            }
        }
        reps += 1;
    }
    best
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("depthwise_conv: 3x3 'same', batch {BATCH}, f32, {threads} threads (min over repetitions)");
    println!("| case | forward ms | input grad ms | kernel grad ms | total ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (channels, size) in SHAPES {
        for stride in [1, 2] {
            let name = format!("dw {channels}ch {size}x{size} s{stride}");
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let [f, dx, dk] = time_case(channels, size, stride).map(|d| d.as_secs_f64() * 1e3);
            println!("| {name} | {f:.3} | {dx:.3} | {dk:.3} | {:.3} |", f + dx + dk);
        }
    }
}
