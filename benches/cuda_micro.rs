//! CUDA micro-benchmarks: cuBLAS matrix products (GFLOP/s, f32 and TF32), memory-bound
//! elementwise, reduction and softmax kernels (GB/s, counting bytes read and written
//! once), and the convolutions of the seed ResNet18 at batch 64 through cuDNN (GFLOP/s,
//! f32: forward alone, and forward plus both gradients; then all 21 layers together). `benches/cuda_micro_torch.py` measures the same work with PyTorch;
//! `scripts/gpu-check.sh` runs both on one card and prints them side by side.
//!
//! Then the fused kernels (issue 14, section 3), in microseconds per call at the seed
//! ResNet18's batch: conv bias through cuDNN's `cudnnAddTensor` beside the same convolution
//! without bias followed by our broadcast-add kernel (and without bias at all); batch norm
//! with ReLU, and with residual add and ReLU, fused and unfused (forward + backward); and an
//! Adam step over ResNet18's 62 variables by the multi-tensor kernel and per variable.
//!
//! Output: one `RESULT <name> <value> <unit>` line per measurement. Without a usable GPU
//! it prints `SKIPPED cuda_micro: <reason>` and exits 0 (1 under `REQUIRE_GPU=1`).
//!
//! Run: `cargo bench --features cuda --bench cuda_micro`. With `--quick`, tiny sizes and
//! few iterations: a smoke test of the binary (the figures mean nothing). With `--tf32`,
//! only the convolutions, with TF32 allowed (`cuda::set_tf32(true)`), their names ending
//! in `_tf32`; without it everything is strict f32 except the `matmul_*_tf32` rows.

use std::time::Instant;
use tapegrad::tensor::{cuda, Conv2dParams, DType, Device, GradientTape, Padding, Result, Tensor};

const DEVICE: Device = Device::Cuda(0);

/// Seconds per call of `f`: warm-up calls, then enough timed calls for about `budget`
/// seconds, with the device synchronised before and after the timed loop only.
fn seconds_per_call(mut f: impl FnMut() -> Result<Tensor>, budget: f64) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    cuda::synchronize(0)?;
    let start = Instant::now();
    f()?;
    cuda::synchronize(0)?;
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let iters = ((budget / once) as usize).clamp(5, 1000);
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    cuda::synchronize(0)?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

fn random(shape: &[usize]) -> Result<Tensor> {
    // Uniform values drawn on the host, then uploaded (not timed).
    let mut rng = rand::rng();
    Tensor::rand_uniform(shape.to_vec(), -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng)?.to_device(&DEVICE)
}

fn report(name: &str, value: f64, unit: &str) {
    println!("RESULT {name} {value:.1} {unit}");
}

/// Problem sizes: full, or tiny for `--quick`.
struct Sizes {
    matmul: [usize; 2],
    /// Batch of the convolution benchmarks.
    conv_batch: usize,
    vector: usize,
    matrix: usize,
    softmax_rows: usize,
    budget: f64,
}

/// name, `[h, w, c_in]`, filters, kernel size, stride, padding, layers.
type ConvShape = (&'static str, [usize; 3], usize, usize, usize, Padding, usize);

/// The distinct convolutions of the seed ResNet18 on 32x32 CIFAR images (NHWC): name,
/// input `[h, w, c_in]`, filters, kernel size, stride, padding, and how many layers have
/// that shape (21 in all: the stem, 16 in the blocks, 4 shortcuts: every stage's first
/// block has stride 2 in the seed, the first stage's too).
const RESNET18_CONVS: [ConvShape; 13] = [
    ("stem_3x3_3to64_32", [32, 32, 3], 64, 3, 1, Padding::Valid, 1),
    ("3x3s2_64_30", [30, 30, 64], 64, 3, 2, Padding::Same, 1),
    ("1x1s2_64_30", [30, 30, 64], 64, 1, 2, Padding::Same, 1),
    ("3x3_64_15", [15, 15, 64], 64, 3, 1, Padding::Same, 3),
    ("3x3s2_64to128_15", [15, 15, 64], 128, 3, 2, Padding::Same, 1),
    ("1x1s2_64to128_15", [15, 15, 64], 128, 1, 2, Padding::Same, 1),
    ("3x3_128_8", [8, 8, 128], 128, 3, 1, Padding::Same, 3),
    ("3x3s2_128to256_8", [8, 8, 128], 256, 3, 2, Padding::Same, 1),
    ("1x1s2_128to256_8", [8, 8, 128], 256, 1, 2, Padding::Same, 1),
    ("3x3_256_4", [4, 4, 256], 256, 3, 1, Padding::Same, 3),
    ("3x3s2_256to512_4", [4, 4, 256], 512, 3, 2, Padding::Same, 1),
    ("1x1s2_256to512_4", [4, 4, 256], 512, 1, 2, Padding::Same, 1),
    ("3x3_512_2", [2, 2, 512], 512, 3, 1, Padding::Same, 3),
];

/// Forward (and forward + input and kernel gradients) of each ResNet18 convolution; every
/// name ends in `suffix` (the precision).
fn convolutions(s: &Sizes, suffix: &str) -> Result<()> {
    let (mut total_flops, mut total_seconds) = (0.0, 0.0);
    for (name, [h, w, c], filters, k, stride, padding, layers) in RESNET18_CONVS {
        let x = random(&[s.conv_batch, h, w, c])?;
        let kernel = random(&[filters, k, k, c])?;
        let params = Conv2dParams { strides: (stride, stride), padding, dilation: (1, 1), groups: 1 };
        let y = x.conv2d(&kernel, None, &params)?;
        let dy = random(y.dims())?;
        let flops = 2.0 * (y.elem_count() * k * k * c) as f64;
        let t = seconds_per_call(|| x.conv2d(&kernel, None, &params), s.budget)?;
        report(&format!("conv_{name}_fwd{suffix}"), flops / t / 1e9, "GFLOP/s");
        let step = || -> Result<Tensor> {
            let tape = GradientTape::new();
            tape.watch(&x);
            tape.watch(&kernel);
            let y = tape.record(|| x.conv2d(&kernel, None, &params))?;
            let grads = tape.gradient_with_output_gradient(&y, &[&x, &kernel], &dy)?;
            grads.into_iter().next().flatten().ok_or_else(|| tapegrad::Error::Tape("no input gradient".into()))
        };
        let t = seconds_per_call(step, s.budget)?;
        report(&format!("conv_{name}_fwdbwd{suffix}"), 3.0 * flops / t / 1e9, "GFLOP/s");
        total_flops += 3.0 * flops * layers as f64;
        total_seconds += t * layers as f64;
    }
    report(&format!("resnet18_convs_b{}_fwdbwd{suffix}", s.conv_batch), total_flops / total_seconds / 1e9, "GFLOP/s");
    Ok(())
}

fn run(s: &Sizes, tf32: bool) -> Result<()> {
    if tf32 {
        cuda::set_tf32(true);
        let result = convolutions(s, "_tf32");
        cuda::set_tf32(false);
        return result;
    }
    for n in s.matmul {
        let (a, b) = (random(&[n, n])?, random(&[n, n])?);
        for tf32 in [false, true] {
            cuda::set_tf32(tf32);
            let t = seconds_per_call(|| a.matmul(&b), s.budget)?;
            let name = format!("matmul_{n}_{}", if tf32 { "tf32" } else { "f32" });
            report(&name, 2.0 * (n * n * n) as f64 / t / 1e9, "GFLOP/s");
        }
    }
    cuda::set_tf32(false);

    let n = s.vector;
    let (x, y) = (random(&[n])?, random(&[n])?);
    let gb = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
    let t = seconds_per_call(|| x.add(&y), s.budget)?;
    report(&format!("add_{}M_f32", n >> 20), gb(3 * 4 * n, t), "GB/s");
    let t = seconds_per_call(|| x.exp(), s.budget)?;
    report(&format!("exp_{}M_f32", n >> 20), gb(2 * 4 * n, t), "GB/s");
    let t = seconds_per_call(|| x.sum_all(), s.budget)?;
    report(&format!("sum_{}M_f32", n >> 20), gb(4 * n, t), "GB/s");
    let (rows, cols) = (s.matrix, s.matrix);
    let (m, bias) = (random(&[rows, cols])?, random(&[cols])?);
    let t = seconds_per_call(|| m.add(&bias), s.budget)?;
    report(&format!("bias_add_{rows}x{cols}_f32"), gb(2 * 4 * rows * cols, t), "GB/s");
    let t = seconds_per_call(|| m.sum(&[0], false), s.budget)?;
    report(&format!("column_sum_{rows}x{cols}_f32"), gb(4 * rows * cols, t), "GB/s");
    let logits = random(&[s.softmax_rows, 1000])?;
    let t = seconds_per_call(|| logits.log_softmax(-1), s.budget)?;
    report(&format!("log_softmax_{}x1000_f32", s.softmax_rows), gb(2 * 4 * s.softmax_rows * 1000, t), "GB/s");
    convolutions(s, "")?;
    fused_kernels(s)?;
    let stats = cuda::memory_stats(0)?;
    println!(
        "# allocator: {} device allocations, {} cache hits, {} MiB reserved, peak {} MiB in use",
        stats.device_allocations,
        stats.cache_hits,
        stats.reserved >> 20,
        stats.peak_in_use >> 20
    );
    Ok(())
}

/// Microseconds per call of `f` (see [`seconds_per_call`]).
fn micros(f: impl FnMut() -> Result<Tensor>, budget: f64) -> Result<f64> {
    Ok(seconds_per_call(f, budget)? * 1e6)
}

/// The forward and backward pass of `f` at `inputs` (all watched), to the first gradient.
fn fwd_bwd(inputs: &[&Tensor], dy: &Tensor, f: impl Fn() -> Result<Tensor>) -> Result<Tensor> {
    let tape = GradientTape::new();
    for x in inputs {
        tape.watch(x);
    }
    let y = tape.record(&f)?;
    let grads = tape.gradient_with_output_gradient(&y, inputs, dy)?;
    grads.into_iter().next().flatten().ok_or_else(|| tapegrad::Error::Tape("no gradient".into()))
}

/// Conv bias (cudnnAddTensor against our bias kernel), fused batch norm, multi-tensor Adam.
fn fused_kernels(s: &Sizes) -> Result<()> {
    use tapegrad::layers::{models::resnet18, InputSpec, Layer};
    use tapegrad::tensor::optim::{adam_update, adam_update_many, AdamOperands, AdamStep};
    // The 3x3 convolutions of the first stage: [b, 15, 15, 64] -> [b, 15, 15, 64].
    let b = s.conv_batch;
    let (x, kernel, bias) = (random(&[b, 15, 15, 64])?, random(&[64, 3, 3, 64])?, random(&[64])?);
    let params = Conv2dParams { strides: (1, 1), padding: Padding::Same, dilation: (1, 1), groups: 1 };
    let t = micros(|| x.conv2d(&kernel, None, &params), s.budget)?;
    report(&format!("conv_nobias_3x3_64_15_b{b}"), t, "us");
    let t = micros(|| x.conv2d(&kernel, Some(&bias), &params), s.budget)?;
    report(&format!("conv_bias_cudnn_add_tensor_3x3_64_15_b{b}"), t, "us");
    let t = micros(|| x.conv2d(&kernel, None, &params)?.add(&bias), s.budget)?;
    report(&format!("conv_bias_nvrtc_add_3x3_64_15_b{b}"), t, "us");

    // Batch norm at the same shape, forward + backward, fused and composed.
    let (gamma, beta, residual, dy) =
        (random(&[64])?, random(&[64])?, random(&[b, 15, 15, 64])?, random(&[b, 15, 15, 64])?);
    let inputs = [&x, &gamma, &beta];
    let t =
        micros(|| fwd_bwd(&inputs, &dy, || Ok(x.batch_norm_relu_train(Some(&gamma), Some(&beta), 1e-3)?.0)), s.budget)?;
    report(&format!("bn_relu_fused_fwdbwd_64_15_b{b}"), t, "us");
    let t =
        micros(|| fwd_bwd(&inputs, &dy, || x.batch_norm_train(Some(&gamma), Some(&beta), 1e-3)?.0.relu()), s.budget)?;
    report(&format!("bn_relu_unfused_fwdbwd_64_15_b{b}"), t, "us");
    let inputs = [&x, &gamma, &beta, &residual];
    let fused = || Ok(x.batch_norm_add_relu_train(Some(&gamma), Some(&beta), &residual, 1e-3)?.0);
    let t = micros(|| fwd_bwd(&inputs, &dy, fused), s.budget)?;
    report(&format!("bn_add_relu_fused_fwdbwd_64_15_b{b}"), t, "us");
    let unfused = || residual.add(&x.batch_norm_train(Some(&gamma), Some(&beta), 1e-3)?.0)?.relu();
    let t = micros(|| fwd_bwd(&inputs, &dy, unfused), s.budget)?;
    report(&format!("bn_add_relu_unfused_fwdbwd_64_15_b{b}"), t, "us");

    // An Adam step over ResNet18's variables (second step: m and v present).
    let model = resnet18(100);
    model.build(&InputSpec::new([1, 32, 32, 3]).with_device(DEVICE))?;
    let values: Vec<Tensor> = model.trainable_variables().iter().map(|v| v.value_untracked()).collect();
    let grads: Vec<Tensor> = values.iter().map(|v| random(v.dims())).collect::<Result<_>>()?;
    let state: Vec<Tensor> = grads.iter().map(|g| g.abs()).collect::<Result<_>>()?;
    let step = AdamStep { learning_rate: 1e-3, step: 2, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
    let items: Vec<AdamOperands<'_>> = (0..values.len())
        .map(|i| AdamOperands { param: &values[i], grad: &grads[i], m: Some(&state[i]), v: Some(&state[i]) })
        .collect();
    let first = |mut all: Vec<(Tensor, Tensor, Tensor)>| all.swap_remove(0).0;
    let t = micros(|| Ok(first(adam_update_many(&items, &step)?)), s.budget)?;
    report(&format!("adam_resnet18_{}vars_multi_tensor", items.len()), t, "us");
    let per_variable = || -> Result<Tensor> {
        let all: Vec<_> =
            items.iter().map(|it| adam_update(it.param, it.grad, it.m, it.v, &step)).collect::<Result<_>>()?;
        Ok(first(all))
    };
    let t = micros(per_variable, s.budget)?;
    report(&format!("adam_resnet18_{}vars_per_variable", items.len()), t, "us");
    Ok(())
}

fn main() {
    if let Err(e) = cuda::ensure_available(0) {
        eprintln!("SKIPPED cuda_micro: {e}");
        std::process::exit(if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") { 1 } else { 0 });
    }
    let sizes = if std::env::args().any(|a| a == "--quick") {
        Sizes { matmul: [64, 128], conv_batch: 2, vector: 1 << 20, matrix: 256, softmax_rows: 64, budget: 0.0 }
    } else {
        // 64 Mi f32 values (256 MiB) per vector; 8192 x 8192 matrices.
        Sizes {
            matmul: [1024, 4096],
            conv_batch: 64,
            vector: 1 << 26,
            matrix: 1 << 13,
            softmax_rows: 1 << 16,
            budget: 0.5,
        }
    };
    if let Err(e) = run(&sizes, std::env::args().any(|a| a == "--tf32")) {
        eprintln!("cuda_micro failed: {e}");
        std::process::exit(1);
    }
}
