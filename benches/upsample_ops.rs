//! Forward and backward time of the U-Net decoder's upsampling layers on the CPU, in f32,
//! at batch 16: `Conv2DTranspose` (2x2 stride 2 'valid' and 3x3 stride 2 'same', halving
//! the channels) and `UpSampling2D` x2 (nearest and bilinear) at 128 channels 8x8 -> 16x16,
//! 64 at 16x16 -> 32x32 and 32 at 32x32 -> 64x64. `benches/upsample_ops_torch.py` times
//! the same work in PyTorch (channels_last, same thread count) and prints both side by
//! side; docs/performance.md has the table.
//!
//! A plain timing loop (`harness = false`) as benches/conv_ops.rs: each figure is the
//! minimum over repetitions (the machine is shared; the minimum is the least disturbed).
//!
//! Run: `cargo bench --bench upsample_ops` (threads: `RAYON_NUM_THREADS`, default all
//! cores). It prints a table and writes `target/upsample_ops_ours.tsv`.

use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};
use tapegrad::tensor::{Conv2dTransposeParams, Interpolation, Padding};
use tapegrad::{DType, Device, GradientTape, Tensor};

const BATCH: usize = 16;

/// One benchmarked layer.
enum Case {
    /// (c_in, kernel, padding, input size): a stride-2 transposed convolution to c_in / 2
    /// channels.
    ConvTranspose(usize, usize, Padding, usize),
    /// (channels, interpolation, input size): x2 upsampling.
    UpSampling(usize, Interpolation, usize),
}

/// The decoder of a small U-Net: 8x8 -> 16x16 -> 32x32 -> 64x64.
fn cases() -> Vec<Case> {
    use Case::*;
    use Interpolation::{Bilinear, Nearest};
    let mut cases = Vec::new();
    for (c, size) in [(128, 8), (64, 16), (32, 32)] {
        cases.push(ConvTranspose(c, 2, Padding::Valid, size));
        cases.push(ConvTranspose(c, 3, Padding::Same, size));
        cases.push(UpSampling(c, Nearest, size));
        cases.push(UpSampling(c, Bilinear, size));
    }
    cases
}

impl Case {
    /// The name both scripts use for the case.
    fn name(&self) -> String {
        match *self {
            Case::ConvTranspose(c, k, p, size) => {
                let p = if p == Padding::Valid { "valid" } else { "same" };
                format!("conv_transpose {c}->{} {k}x{k} s2 {p} {size}x{size}", c / 2)
            }
            Case::UpSampling(c, interp, size) => format!("upsampling x2 {} {c} {size}x{size}", interp.as_str()),
        }
    }

    /// The inputs (the first is the image batch) and the forward function.
    #[allow(clippy::type_complexity)]
    fn setup(&self) -> (Vec<Tensor>, Box<dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>>) {
        match *self {
            Case::ConvTranspose(c, k, padding, size) => {
                let params = Conv2dTransposeParams { strides: (2, 2), padding, ..Default::default() };
                let inputs =
                    vec![random(&[BATCH, size, size, c], 1), random(&[c, k, k, c / 2], 2), random(&[c / 2], 3)];
                (inputs, Box::new(move |t| t[0].conv2d_transpose(&t[1], Some(&t[2]), &params)))
            }
            Case::UpSampling(c, interp, size) => {
                (vec![random(&[BATCH, size, size, c], 1)], Box::new(move |t| t[0].resize((2, 2), interp)))
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
    println!("upsample_ops: U-Net upsampling layers at batch {BATCH}, f32, {threads} threads (min over repetitions)");
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
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/upsample_ops_ours.tsv");
    match std::fs::write(path, tsv) {
        Ok(()) => println!("wrote {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}
