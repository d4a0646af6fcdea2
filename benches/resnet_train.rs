//! End-to-end training speed of the seed ResNet18/34: images per second over full steps
//! (forward, tape gradient, Adam update) on one fixed random batch, after warm-up steps.
//! `benches/resnet_train_torch.py` runs the same model (Keras semantics), batch and
//! optimizer in PyTorch; docs/performance.md sets the two side by side.
//!
//! ```text
//! cargo bench --bench resnet_train -- [--arch resnet18|resnet34] [--batch 64] [--steps 10] [--warmup 3] [--device cpu|cuda]
//! ```
//! Threads: `RAYON_NUM_THREADS` (default: all cores).

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;
use tapegrad::layers::models::ResNet;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::{losses, InputSpec, Layer, Mode};
use tapegrad::{DType, Device, GradientTape, Tensor};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arch = arg(&args, "--arch", "resnet18");
    let batch: usize = arg(&args, "--batch", "64").parse()?;
    let steps: usize = arg(&args, "--steps", "10").parse()?;
    let warmup: usize = arg(&args, "--warmup", "3").parse()?;
    let device = match arg(&args, "--device", "cpu").as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => return Err(format!("--device {other}: expected cpu or cuda").into()),
    };
    tapegrad::layers::random::set_seed(1234);
    let model = match arch.as_str() {
        "resnet18" => ResNet::seed([2, 2, 2, 2], 100),
        "resnet34" => ResNet::seed([3, 4, 6, 3], 100),
        other => return Err(format!("--arch {other}: expected resnet18 or resnet34").into()),
    };
    model.build(&InputSpec::new([batch, 32, 32, 3]).with_device(device))?;
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::rand_uniform([batch, 32, 32, 3], -1.0, 1.0, DType::F32, &device, &mut rng)?;
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..100)).collect();
    let y = Tensor::from_vec(labels, [batch], &device)?;
    let mut optimizer = Adam::new(3e-4);
    let vars = model.trainable_variables();
    let mut step = || -> Result<f32, Box<dyn std::error::Error>> {
        let tape = GradientTape::new();
        let loss = tape.record(|| losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true))?;
        let grads = tape.gradient(&loss, &vars)?;
        optimizer.apply_gradients(&grads, &vars)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    for _ in 0..warmup {
        step()?;
    }
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = step()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "tapegrad {arch} batch {batch} {device} threads {}: {:.1} ms/step, {:.1} images/s, last loss {loss:.4}",
        rayon::current_num_threads(),
        seconds / steps as f64 * 1e3,
        (batch * steps) as f64 / seconds
    );
    Ok(())
}
