//! A whole training step of the seed ResNet18 on CUDA against the same step on the CPU:
//! identical weights and batch give the same loss, the same gradient for every trainable
//! variable, and the same variables after the Adam update (BN moving statistics included).
//!
//! Without a usable GPU the test prints `SKIPPED <test>: <reason>` and passes;
//! `REQUIRE_GPU=1` turns that into a failure. In CI it runs on the emulated GPU
//! (scripts/cuda-emu), on a real one through scripts/gpu-check.sh.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapegrad::layers::mixed_precision::{full_precision, Policy};
use tapegrad::layers::models::ResNet;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::Sequential;
use tapegrad::layers::{losses, InputSpec, Layer, Mode};
use tapegrad::tensor::testing::cuda_device_or_skip;
use tapegrad::{DType, Device, GradientTape, Tensor, Variable};

const LEARNING_RATE: f64 = 1e-3;

/// The seed ResNet18 built for `device`, with the CPU model's weights copied in.
fn resnet18_on(device: Device, batch: usize, weights_from: Option<&ResNet>) -> ResNet {
    tapegrad::layers::random::set_seed(11);
    let model = ResNet::seed([2, 2, 2, 2], 100);
    model.build(&InputSpec::new([batch, 32, 32, 3]).with_device(device)).expect("build");
    if let Some(source) = weights_from {
        for (to, from) in model.variables().iter().zip(source.variables()) {
            // Same architecture, same order (layer names differ: Keras-style unique names).
            assert_eq!(to.value_untracked().dims(), from.value_untracked().dims(), "{}", to.name());
            to.assign(from.value_untracked().to_device(&device).unwrap()).unwrap();
        }
    }
    model
}

/// One seed training step; returns the loss and the gradients (on the host, as f64).
fn train_step(model: &dyn Layer, x: &Tensor, y: &Tensor) -> (f64, Vec<Vec<f64>>) {
    let vars = model.trainable_variables();
    let tape = GradientTape::new();
    let loss = tape
        .record(|| {
            let logits = full_precision(&model.call(x, Mode::Train)?)?;
            losses::sparse_categorical_crossentropy(y, &logits, true)
        })
        .expect("forward");
    let grads = tape.gradient(&loss, &vars).expect("gradient");
    Adam::new(LEARNING_RATE).apply_gradients(&grads, &vars).expect("apply_gradients");
    let host = grads.iter().map(|g| g.as_ref().expect("every variable is used").to_vec_f64().unwrap()).collect();
    (loss.to_scalar::<f32>().unwrap() as f64, host)
}

/// `max |a - b| <= rel * max |b| + abs`, with a message naming `what`.
fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (worst, at) =
        a.iter().zip(b).enumerate().map(|(i, (x, y))| ((x - y).abs(), i)).fold(
            (0.0, 0),
            |m, d| {
                if d.0 > m.0 {
                    d
                } else {
                    m
                }
            },
        );
    assert!(
        worst <= rel * scale + abs,
        "{what}: cuda {} vs cpu {} at {at} (|diff| {worst:e}, largest |cpu| {scale:e})",
        a[at],
        b[at]
    );
}

fn values(vars: &[Variable]) -> Vec<(String, Vec<f64>)> {
    vars.iter().map(|v| (v.name().to_string(), v.value_untracked().to_vec_f64().unwrap())).collect()
}

#[test]
fn resnet18_training_step_matches_the_cpu() {
    let Some(gpu) = cuda_device_or_skip("resnet18_training_step_matches_the_cpu") else { return };
    let batch = 4;
    let cpu_model = resnet18_on(Device::Cpu, batch, None);
    let gpu_model = resnet18_on(gpu, batch, Some(&cpu_model));

    let mut rng = StdRng::seed_from_u64(5);
    let x = Tensor::rand_uniform([batch, 32, 32, 3], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..100)).collect();
    let y = Tensor::from_vec(labels, [batch], &Device::Cpu).unwrap();

    let (cpu_loss, cpu_grads) = train_step(&cpu_model, &x, &y);
    let (gpu_loss, gpu_grads) = train_step(&gpu_model, &x.to_device(&gpu).unwrap(), &y.to_device(&gpu).unwrap());

    assert!((gpu_loss - cpu_loss).abs() <= 1e-4 * cpu_loss.abs(), "loss: cuda {gpu_loss} vs cpu {cpu_loss}");
    let names: Vec<String> = cpu_model.trainable_variables().iter().map(|v| v.name().to_string()).collect();
    // Summation orders differ (cuDNN/cuBLAS vs our GEMM) through 18 layers. A convolution's
    // bias before batch norm has a gradient of exactly zero in exact arithmetic (BN removes
    // the mean), i.e. pure rounding noise: hence an absolute floor relative to the largest
    // gradient of the model.
    let largest = cpu_grads.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for ((name, g), c) in names.iter().zip(&gpu_grads).zip(&cpu_grads) {
        assert_close(&format!("gradient of {name}"), g, c, 2e-3, 1e-5 * largest);
    }
    for ((name, g), (_, c)) in values(&gpu_model.variables()).iter().zip(values(&cpu_model.variables())) {
        if name.contains("moving") {
            assert_close(&format!("{name} after the step"), g, &c, 1e-4, 1e-6);
        } else {
            // Adam's first step moves each weight by about the learning rate times the sign
            // of its gradient: where a gradient is ~0 the two signs may differ.
            assert_close(&format!("{name} after the step"), g, &c, 1e-5, 2.0 * LEARNING_RATE + 1e-6);
        }
    }
}

/// The same step under Keras' `mixed_bfloat16` policy: convolutions and matrix products in
/// bf16 (cuDNN and cuBLAS with f32 accumulation on the GPU, f32 kernels rounded once on the
/// CPU), batch norm, the loss and the f32 variables as before. Both sides round each layer's
/// output to bf16 (8 significant bits), but from f32 sums taken in different orders, so a
/// value near a rounding boundary can land one bf16 step (0.4-0.8%) apart, and such steps
/// compound through 18 layers: the tolerances are bf16's, not f32's.
#[test]
fn resnet18_mixed_bfloat16_step_matches_the_cpu() {
    let Some(gpu) = cuda_device_or_skip("resnet18_mixed_bfloat16_step_matches_the_cpu") else { return };
    let batch = 4;
    let cpu_resnet = resnet18_on(Device::Cpu, batch, None);
    let gpu_resnet = resnet18_on(gpu, batch, Some(&cpu_resnet));
    let f32_model = resnet18_on(Device::Cpu, batch, Some(&cpu_resnet));
    let cpu_model = Sequential::new().add(cpu_resnet).dtype_policy(Policy::MIXED_BFLOAT16);
    let gpu_model = Sequential::new().add(gpu_resnet).dtype_policy(Policy::MIXED_BFLOAT16);

    let mut rng = StdRng::seed_from_u64(6);
    let x = Tensor::rand_uniform([batch, 32, 32, 3], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..100)).collect();
    let y = Tensor::from_vec(labels, [batch], &Device::Cpu).unwrap();

    let (cpu_loss, cpu_grads) = train_step(&cpu_model, &x, &y);
    let (gpu_loss, gpu_grads) = train_step(&gpu_model, &x.to_device(&gpu).unwrap(), &y.to_device(&gpu).unwrap());

    assert!(cpu_loss.is_finite() && gpu_loss.is_finite(), "loss: cuda {gpu_loss}, cpu {cpu_loss}");
    let logits = gpu_model.call(&x.to_device(&gpu).unwrap(), Mode::Infer).unwrap();
    assert_eq!(logits.dtype(), DType::BF16, "the GPU model computes in bf16");
    assert!((gpu_loss - cpu_loss).abs() <= 2e-2 * cpu_loss.abs(), "loss: cuda {gpu_loss} vs cpu {cpu_loss}");
    for v in gpu_model.variables() {
        assert_eq!(v.value_untracked().dtype(), DType::F32, "{} stays f32 under mixed_bfloat16", v.name());
    }
    // The yardstick is bf16 itself: the same step in f32 on the CPU. At batch 4 behind batch
    // norm the gradients cancel heavily, so bf16 moves them by 20-35% (L2) from f32, and the
    // convolution biases before batch norm (zero in exact arithmetic) are pure rounding noise.
    // The GPU's bf16 step must be no further from the CPU's bf16 step than bf16 is from f32,
    // as a whole, and within 2.5x of it for every variable (two independent noises of one
    // size differ by about 1.4x theirs; measured on the emulator: 0.6-1.7x).
    let (_, f32_grads) = train_step(&f32_model, &x, &y);
    let l2 = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt();
    let names: Vec<String> = gpu_model.trainable_variables().iter().map(|v| v.name().to_string()).collect();
    let (mut device_sq, mut bf16_sq) = (0.0, 0.0);
    for (((name, g), c), f) in names.iter().zip(&gpu_grads).zip(&cpu_grads).zip(&f32_grads) {
        let (device, bf16) = (l2(g, c), l2(c, f));
        assert!(device <= 2.5 * bf16 + 1e-6, "gradient of {name}: |cuda - cpu| = {device:e}, |bf16 - f32| = {bf16:e}");
        device_sq += device * device;
        bf16_sq += bf16 * bf16;
    }
    assert!(bf16_sq > 0.0, "the bf16 step equals the f32 one: nothing ran in bf16");
    assert!(
        device_sq <= bf16_sq,
        "gradients: |cuda - cpu| = {:e}, |bf16 - f32| = {:e}",
        device_sq.sqrt(),
        bf16_sq.sqrt()
    );
}

#[test]
fn summary_of_a_model_built_on_the_gpu() {
    let Some(gpu) = cuda_device_or_skip("summary_of_a_model_built_on_the_gpu") else { return };
    let model = ResNet::seed([2, 2, 2, 2], 100);
    model.build(&InputSpec::new([2, 32, 32, 3]).with_device(gpu)).expect("build");
    // The spec names only the shape (on the CPU); the trace runs where the weights are.
    let summary = tapegrad::layers::summary(&model, &InputSpec::new([2, 32, 32, 3])).expect("summary").to_string();
    assert!(summary.contains("Trainable params: 11,227,300"), "{summary}");
}

/// A LossScaleOptimizer step on CUDA decides with one wait for the device, however many
/// gradients there are (the finiteness probes are summed on the device before the one
/// read; it waited once per gradient before), and it skips an overflowing step as on the
/// CPU: same scale, same variables. `cuda::host_waits` counts the waits.
#[test]
fn a_loss_scaled_step_waits_for_the_device_once() {
    use tapegrad::layers::mixed_precision::LossScaleOptimizer;
    use tapegrad::layers::training::train_step as step;
    use tapegrad::layers::Dense;
    let Some(gpu) = cuda_device_or_skip("a_loss_scaled_step_waits_for_the_device_once") else { return };
    let Device::Cuda(ordinal) = gpu else { unreachable!("a CUDA device") };
    let make = |device: Device| {
        tapegrad::layers::random::set_seed(5);
        let model = Sequential::new()
            .add(Dense::new(8))
            .add(Dense::new(8))
            .add(Dense::new(8))
            .add(Dense::new(3))
            .dtype_policy(Policy::MIXED_FLOAT16);
        model.build(&InputSpec::new([4, 6]).with_device(device)).expect("build");
        model
    };
    let (cpu_model, gpu_model) = (make(Device::Cpu), make(gpu));
    for (to, from) in gpu_model.variables().iter().zip(cpu_model.variables()) {
        to.assign(from.value_untracked().to_device(&gpu).unwrap()).unwrap();
    }
    assert_eq!(gpu_model.trainable_variables().len(), 8);
    let mut rng = StdRng::seed_from_u64(8);
    let x = Tensor::rand_uniform([4, 6], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 2, 1], [4], &Device::Cpu).unwrap();
    // 2^15 * 2^10 overflows f16 in the backward pass: the first step is skipped.
    let optimizer = || LossScaleOptimizer::new(Adam::new(LEARNING_RATE)).initial_scale(2f64.powi(25));
    let (mut cpu_opt, mut gpu_opt) = (optimizer(), optimizer());
    let (gx, gy) = (x.to_device(&gpu).unwrap(), y.to_device(&gpu).unwrap());
    let loss = |model: &Sequential, x: &Tensor, y: &Tensor| {
        let logits = full_precision(&model.call(x, Mode::Train)?)?;
        Ok(losses::sparse_categorical_crossentropy(y, &logits, true)?)
    };
    for i in 0..12 {
        step(&cpu_model, &mut cpu_opt, || loss(&cpu_model, &x, &y)).expect("cpu step");
        let before = tapegrad::tensor::cuda::host_waits(ordinal).unwrap();
        step(&gpu_model, &mut gpu_opt, || loss(&gpu_model, &gx, &gy)).expect("cuda step");
        let waits = tapegrad::tensor::cuda::host_waits(ordinal).unwrap() - before;
        assert_eq!(waits, 1, "step {i}: the host waited {waits} times for the device");
        assert_eq!(gpu_opt.loss_scale(), cpu_opt.loss_scale(), "step {i}");
        assert_eq!(gpu_opt.iterations(), cpu_opt.iterations(), "step {i}");
    }
    assert!(cpu_opt.iterations() > 0 && cpu_opt.iterations() < 12, "some steps were skipped, not all");
    for (g, c) in gpu_model.variables().iter().zip(cpu_model.variables()) {
        let (g, c) = (g.value_untracked().to_vec_f64().unwrap(), c.value_untracked().to_vec_f64().unwrap());
        assert_close("a variable after the steps", &g, &c, 1e-2, 1e-4);
    }

    // Tensors on the CPU and on the GPU: one wait, for the GPU's sum.
    use tapegrad::tensor::check_numerics::all_finite;
    let on_cpu = Tensor::ones([3], DType::F32, &Device::Cpu).unwrap();
    let finite = Tensor::ones([2], DType::F16, &gpu).unwrap();
    let infinite = Tensor::from_vec(vec![1.0f32, f32::INFINITY], [2], &Device::Cpu).unwrap().to_device(&gpu).unwrap();
    let before = tapegrad::tensor::cuda::host_waits(ordinal).unwrap();
    assert!(all_finite(&[&on_cpu, &finite, &finite]).unwrap());
    assert!(!all_finite(&[&finite, &on_cpu, &infinite]).unwrap());
    assert_eq!(tapegrad::tensor::cuda::host_waits(ordinal).unwrap() - before, 2, "one wait per all_finite");
}
