//! Forward and backward time of layer and group normalization on the CPU in f32, at
//! shapes of the small CNNs and transformer blocks people build: group norm of NHWC
//! feature maps at batch 64 (Keras' 32 groups), layer norm of image feature maps and of
//! token rows; and training-mode batch norm with the epilogues the seed ResNet18 fuses
//! (`relu(bn(x))`, `relu(residual + bn(x))`) at its 64- and 128-channel shapes. `benches/norm_ops_torch.py` times the same work in PyTorch (channels_last,
//! the same thread count) beside it, case by case.
//!
//! A plain timing loop (`harness = false`) as in `benches/conv_ops.rs`: each figure is the
//! minimum over the repetitions (the machine is shared; the minimum is the least
//! disturbed).
//!
//! Run: `cargo bench --bench norm_ops [-- <name filter>]` (threads: `RAYON_NUM_THREADS`).

use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};
use tapegrad::{DType, Device, GradientTape, Tensor};

/// One benchmarked op.
enum Case {
    /// (batch, size, channels, groups): group norm of `[batch, size, size, channels]`.
    Group(usize, usize, usize, usize),
    /// (rows, cols): layer norm over the last axis of `[rows, cols]`.
    Layer(usize, usize),
    /// (size, channels, epilogue): training-mode batch norm of `[64, size, size, channels]`
    /// followed by nothing, a ReLU, or a residual add and a ReLU, as one fused op.
    Batch(usize, usize, Epilogue),
}

/// What follows a batch norm (the ResNet block's fusions).
#[derive(Clone, Copy)]
enum Epilogue {
    None,
    Relu,
    AddRelu,
}

fn cases() -> Vec<Case> {
    vec![
        Case::Group(64, 32, 64, 32),
        Case::Group(64, 16, 128, 32),
        Case::Group(64, 8, 256, 32),
        Case::Layer(64 * 32 * 32, 64),
        Case::Layer(64 * 128, 512),
        Case::Batch(30, 64, Epilogue::Relu),
        Case::Batch(15, 64, Epilogue::Relu),
        Case::Batch(15, 64, Epilogue::AddRelu),
        Case::Batch(8, 128, Epilogue::AddRelu),
        Case::Batch(4, 256, Epilogue::None),
    ]
}

impl Case {
    /// The name both scripts use for the case.
    fn name(&self) -> String {
        match *self {
            Case::Group(n, s, c, g) => format!("group_norm {g} groups {n}x{s}x{s}x{c}"),
            Case::Layer(r, c) => format!("layer_norm {r}x{c}"),
            Case::Batch(s, c, e) => {
                let op = match e {
                    Epilogue::None => "batch_norm",
                    Epilogue::Relu => "batch_norm_relu",
                    Epilogue::AddRelu => "batch_norm_add_relu",
                };
                format!("{op} 64x{s}x{s}x{c}")
            }
        }
    }

    /// The inputs (x, gamma, beta) and the forward function.
    #[allow(clippy::type_complexity)]
    fn setup(&self) -> (Vec<Tensor>, Box<dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>>) {
        match *self {
            Case::Group(n, s, c, g) => {
                let inputs = vec![random(&[n, s, s, c], 1), random(&[c], 2), random(&[c], 3)];
                (inputs, Box::new(move |t| t[0].group_norm(g, Some(&t[1]), Some(&t[2]), 1e-3)))
            }
            Case::Layer(r, c) => {
                let inputs = vec![random(&[r, c], 1), random(&[c], 2), random(&[c], 3)];
                (inputs, Box::new(|t| t[0].layer_norm(1, Some(&t[1]), Some(&t[2]), 1e-3)))
            }
            Case::Batch(s, c, e) => {
                let mut inputs = vec![random(&[64, s, s, c], 1), random(&[c], 2), random(&[c], 3)];
                match e {
                    Epilogue::None => {
                        (inputs, Box::new(|t| Ok(t[0].batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-3)?.0)))
                    }
                    Epilogue::Relu => {
                        (inputs, Box::new(|t| Ok(t[0].batch_norm_relu_train(Some(&t[1]), Some(&t[2]), 1e-3)?.0)))
                    }
                    Epilogue::AddRelu => {
                        inputs.push(random(&[64, s, s, c], 5));
                        (
                            inputs,
                            Box::new(|t| Ok(t[0].batch_norm_add_relu_train(Some(&t[1]), Some(&t[2]), &t[3], 1e-3)?.0)),
                        )
                    }
                }
            }
        }
    }
}

fn random(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(dims, -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).expect("random tensor")
}

/// Minimum forward and backward times over repetitions: at least 4, up to about a second.
fn time_case(case: &Case) -> (Duration, Duration) {
    let (inputs, forward) = case.setup();
    let dy = random(inputs[0].dims(), 4);
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
    println!("norm_ops: f32, {threads} threads (min over repetitions)");
    println!("| case | forward ms | backward ms | total ms |");
    println!("| --- | ---: | ---: | ---: |");
    for case in cases() {
        let name = case.name();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let (f, b) = time_case(&case);
        let (f, b) = (f.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3);
        println!("| {name} | {f:.2} | {b:.2} | {:.2} |", f + b);
    }
}
