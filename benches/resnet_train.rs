//! End-to-end training speed of the seed ResNet18/34: images per second over full steps
//! (forward, tape gradient, Adam update) on one fixed random batch, after warm-up steps.
//! `benches/resnet_train_torch.py` runs the same model (Keras semantics), batch and
//! optimizer in PyTorch; docs/performance.md sets the two side by side.
//!
//! ```text
//! cargo bench --bench resnet_train -- [--arch resnet18|resnet34] [--batch 64] [--steps 10] [--warmup 3] [--device cpu|cuda] [--tf32] [--cudnn-benchmark] [--cuda-graph] [--bf16] [--inference]
//! ```
//! `--inference`: forward passes only, in inference mode (moving statistics, no tape), the
//! work of `Trainer::predict`; the RESULT name starts with `infer_` instead of `train_`.
//! `--cuda-graph` (with `--device cuda`): forward, loss and gradients replayed as a CUDA graph
//! (`GraphedStep`, the batch copied into its static input each step), the Adam update eager.
//! `--bf16`: Keras' `mixed_bfloat16` policy (layers compute in bf16, variables, batch norm and
//! the loss in f32), beside resnet_train_torch.py's `--bf16` (autocast); names end in `_bf16`.
//! Threads: `RAYON_NUM_THREADS` (default: all cores).

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;
use tapegrad::layers::mixed_precision::{full_precision, set_global_policy, Policy};
use tapegrad::layers::models::ResNet;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::training::GraphedStep;
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
    // Strict f32 unless `--tf32` (as resnet_train_torch.py's flag); RESULT names say which.
    let tf32 = args.iter().any(|a| a == "--tf32");
    tapegrad::tensor::cuda::set_tf32(tf32);
    // cuDNN algorithms chosen by measurement (PyTorch's cudnn.benchmark; the torch twin's
    // flag of the same name); RESULT names end in `_bench`.
    let benchmark = args.iter().any(|a| a == "--cudnn-benchmark");
    tapegrad::tensor::cuda::set_cudnn_benchmark(benchmark);
    let bf16 = args.iter().any(|a| a == "--bf16");
    if bf16 {
        set_global_policy(Policy::MIXED_BFLOAT16);
    }
    let precision = format!(
        "{}{}{}",
        if tf32 { "_tf32" } else { "" },
        if benchmark { "_bench" } else { "" },
        if bf16 { "_bf16" } else { "" }
    );
    let device = match arg(&args, "--device", "cpu").as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => return Err(format!("--device {other}: expected cpu or cuda").into()),
    };
    let cuda_graph = args.iter().any(|a| a == "--cuda-graph");
    if cuda_graph && device.is_cpu() {
        return Err("--cuda-graph needs --device cuda".into());
    }
    let inference = args.iter().any(|a| a == "--inference");
    if inference && cuda_graph {
        return Err("--inference times forward passes only; --cuda-graph graphs training steps".into());
    }
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
    // A step returns its loss without reading it: reading waits for the device, and
    // PyTorch's loop (resnet_train_torch.py) does not wait either.
    let mut graphed = cuda_graph.then(GraphedStep::new);
    let mut step = || -> Result<Tensor, Box<dyn std::error::Error>> {
        if inference {
            return Ok(model.call(&x, Mode::Infer)?);
        }
        if let Some(graphed) = graphed.as_mut() {
            let forward = |x: &Tensor, y: &Tensor| -> tapegrad::layers::Result<(Tensor, Tensor)> {
                let logits = full_precision(&model.call(x, Mode::Train)?)?;
                Ok((losses::sparse_categorical_crossentropy(y, &logits, true)?, logits))
            };
            return Ok(graphed.run(&model, &mut optimizer, &x, &y, forward)?.0);
        }
        let tape = GradientTape::new();
        let loss = tape.record(|| {
            // Under --bf16 the logits go to f32 before the loss, as in the flagship.
            let logits = full_precision(&model.call(&x, Mode::Train)?)?;
            losses::sparse_categorical_crossentropy(&y, &logits, true)
        })?;
        let grads = tape.gradient(&loss, &vars)?;
        optimizer.apply_gradients(&grads, &vars)?;
        Ok(loss)
    };
    for _ in 0..warmup {
        step()?.mean_all()?.to_scalar::<f32>()?;
    }
    if let Device::Cuda(ordinal) = device {
        tapegrad::tensor::cuda::reset_peak_memory(ordinal)?;
    }
    let start = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(step()?);
    }
    let loss = match last {
        // Waits for the queued steps; in inference mode the "loss" is the logits' mean.
        Some(out) => out.mean_all()?.to_scalar::<f32>()?,
        None => f32::NAN,
    };
    let seconds = start.elapsed().as_secs_f64();
    let memory = match device {
        Device::Cuda(ordinal) => {
            let stats = tapegrad::tensor::cuda::memory_stats(ordinal)?;
            format!(", peak GPU memory {:.0} MiB", stats.peak_in_use as f64 / (1 << 20) as f64)
        }
        Device::Cpu => String::new(),
    };
    let images_per_sec = (batch * steps) as f64 / seconds;
    let mode = match &graphed {
        Some(g) => {
            let s = g.stats();
            let why = g.fallback_reason().map(|r| format!("; last eager step: {r}")).unwrap_or_default();
            format!(" cuda-graph ({} replayed, {} captured, {} eager{why})", s.replays, s.captures, s.eager_steps)
        }
        None => String::new(),
    };
    let work = if inference { "inference" } else { "training" };
    println!(
        "tapegrad {arch} {work} batch {batch} {device}{mode} threads {}: {:.1} ms/step, {images_per_sec:.1} images/s, \
         last loss {loss:.4}{memory}",
        rayon::current_num_threads(),
        seconds / steps as f64 * 1e3,
    );
    // One machine-readable line for scripts/gpu-check.sh's table.
    let place = match (device.is_cpu(), cuda_graph) {
        (true, _) => "cpu",
        (false, false) => "cuda",
        (false, true) => "cuda_graph",
    };
    let kind = if inference { "infer" } else { "train" };
    println!("RESULT {kind}_{arch}_b{batch}_{place}{precision} {images_per_sec:.1} img/s");
    if let Device::Cuda(ordinal) = device {
        let peak = tapegrad::tensor::cuda::memory_stats(ordinal)?.peak_in_use as f64 / (1 << 20) as f64;
        let mem = if inference { "peak_memory_infer" } else { "peak_memory" };
        println!("RESULT {mem}_{arch}_b{batch}_{place}{precision} {peak:.0} MiB");
    }
    Ok(())
}
