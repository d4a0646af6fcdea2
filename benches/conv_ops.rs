//! Forward and backward time of every distinct convolution of the seed ResNet18 at batch
//! 64, of its batch norms and of its pooling layers, on the CPU, in f32.
//! `benches/conv_ops_torch.py` times the same work in PyTorch (channels_last, same thread
//! count) and prints both side by side; docs/performance.md has the table.
//!
//! A plain timing loop (`harness = false`), not criterion: 20 cases of tens of
//! milliseconds each need only a few repetitions, and the whole table takes about a
//! minute on two cores. Each figure is the minimum over the repetitions (the machine is
//! shared; the minimum is the least disturbed).
//!
//! Run: `cargo bench --bench conv_ops` (threads: `RAYON_NUM_THREADS`, default all cores).
//! It prints a table and writes `target/conv_ops_ours.tsv` for the PyTorch script.

use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};
use tapegrad::tensor::{Conv2dParams, Padding};
use tapegrad::{DType, Device, GradientTape, Tensor};

const BATCH: usize = 64;

/// One benchmarked layer.
enum Case {
    /// (c_in, c_out, kernel, stride, padding, input size)
    Conv(usize, usize, usize, usize, Padding, usize),
    /// (channels, size): training-mode batch norm of `[64, size, size, channels]`.
    BatchNorm(usize, usize),
    /// The stem's 2x2 stride-1 'same' max pooling of `[64, size, size, channels]`.
    MaxPool(usize, usize),
    /// The head's global average pooling of `[64, size, size, channels]`.
    GlobalAvgPool(usize, usize),
}

/// The seed ResNet18 (shared/seed/resnet_cifar100_tf.py): stem 3x3 valid on 32x32, then
/// four stages whose first block has stride 2 (30 -> 15 -> 8 -> 4 -> 2), each block two
/// 3x3 convolutions, the downsampling block a 1x1 stride-2 shortcut. The stride-1 3x3 rows
/// with 64-256 channels run with Winograd (F4 at 15x15 and 8x8, F2 at 4x4); the 2x2 and
/// 3-channel ones with im2col.
fn cases() -> Vec<Case> {
    use Case::*;
    use Padding::{Same, Valid};
    vec![
        Conv(3, 64, 3, 1, Valid, 32),
        Conv(64, 64, 3, 2, Same, 30),
        Conv(64, 64, 1, 2, Same, 30),
        Conv(64, 64, 3, 1, Same, 15),
        Conv(64, 128, 3, 2, Same, 15),
        Conv(64, 128, 1, 2, Same, 15),
        Conv(128, 128, 3, 1, Same, 8),
        Conv(128, 256, 3, 2, Same, 8),
        Conv(128, 256, 1, 2, Same, 8),
        Conv(256, 256, 3, 1, Same, 4),
        Conv(256, 512, 3, 2, Same, 4),
        Conv(256, 512, 1, 2, Same, 4),
        Conv(512, 512, 3, 1, Same, 2),
        // Not in the seed: Winograd F4 without padding, tiles overhanging a 13x13 output.
        Conv(64, 64, 3, 1, Valid, 15),
        BatchNorm(64, 30),
        BatchNorm(64, 15),
        BatchNorm(128, 8),
        BatchNorm(256, 4),
        BatchNorm(512, 2),
        MaxPool(64, 30),
        GlobalAvgPool(512, 2),
    ]
}

impl Case {
    /// The name both scripts use for the case.
    fn name(&self) -> String {
        match *self {
            Case::Conv(ci, co, k, s, p, size) => {
                let p = if p == Padding::Valid { "valid" } else { "same" };
                format!("conv {ci}->{co} {k}x{k} s{s} {p} {size}x{size}")
            }
            Case::BatchNorm(c, size) => format!("batch_norm {c} {size}x{size}"),
            Case::MaxPool(c, size) => format!("max_pool 2x2 s1 same {c} {size}x{size}"),
            Case::GlobalAvgPool(c, size) => format!("global_avg_pool {c} {size}x{size}"),
        }
    }

    /// The inputs (the first is the image batch) and the forward function.
    #[allow(clippy::type_complexity)]
    fn setup(&self) -> (Vec<Tensor>, Box<dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>>) {
        match *self {
            Case::Conv(ci, co, k, s, padding, size) => {
                let params = Conv2dParams { strides: (s, s), padding, ..Default::default() };
                let inputs = vec![random(&[BATCH, size, size, ci], 1), random(&[co, k, k, ci], 2), random(&[co], 3)];
                (inputs, Box::new(move |t| t[0].conv2d(&t[1], Some(&t[2]), &params)))
            }
            Case::BatchNorm(c, size) => {
                let inputs = vec![random(&[BATCH, size, size, c], 1), random(&[c], 2), random(&[c], 3)];
                (inputs, Box::new(|t| Ok(t[0].batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-3)?.0)))
            }
            Case::MaxPool(c, size) => {
                (vec![random(&[BATCH, size, size, c], 1)], Box::new(|t| t[0].max_pool2d((2, 2), (1, 1), Padding::Same)))
            }
            Case::GlobalAvgPool(c, size) => {
                (vec![random(&[BATCH, size, size, c], 1)], Box::new(|t| t[0].global_avg_pool2d()))
            }
        }
    }
}

fn random(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(dims, -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).expect("random tensor")
}

/// Minimum forward and backward times over repetitions: at least 3, more for fast
/// cases, up to about a second per case.
fn time_case(case: &Case) -> (Duration, Duration) {
    let (inputs, forward) = case.setup();
    let dy = {
        let y = forward(&inputs).expect("forward");
        random(y.dims(), 4)
    };
    let mut best = (Duration::MAX, Duration::MAX);
    let started = Instant::now();
    let mut reps = 0;
    while reps < 4 || (started.elapsed() < Duration::from_secs(1) && reps < 50) {
        let tape = GradientTape::new();
        for x in &inputs {
            tape.watch(x);
        }
        let t0 = Instant::now();
        let y = tape.record(|| forward(&inputs)).expect("forward");
        let t1 = Instant::now();
        let grads = tape.gradient_with_output_gradient(&y, &inputs, &dy).expect("backward");
        let t2 = Instant::now();
        assert!(grads.iter().all(Option::is_some));
        // The first repetition warms caches and the allocator; it is not counted.
        if reps > 0 {
            best = (best.0.min(t1 - t0), best.1.min(t2 - t1));
        }
        reps += 1;
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("conv_ops: seed ResNet18 layers at batch {BATCH}, f32, {threads} threads (min over repetitions)");
    println!("| case | forward ms | backward ms | total ms | backward/forward |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut tsv = String::from("case\tforward_ms\tbackward_ms\n");
    for case in cases() {
        let name = case.name();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let (f, b) = time_case(&case);
        let (f, b) = (f.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3);
        println!("| {name} | {f:.2} | {b:.2} | {:.2} | {:.2} |", f + b, b / f);
        tsv.push_str(&format!("{name}\t{f:.4}\t{b:.4}\n"));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/conv_ops_ours.tsv");
    match std::fs::write(path, tsv) {
        Ok(()) => println!("wrote {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}
