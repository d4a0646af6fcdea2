//! CUDA micro-benchmarks: cuBLAS matrix products (GFLOP/s, f32 and TF32) and
//! memory-bound elementwise, reduction and softmax kernels (GB/s, counting bytes read and
//! written once). `benches/cuda_micro_torch.py` measures the same work with PyTorch;
//! `scripts/gpu-check.sh` runs both on one card and prints them side by side.
//!
//! Output: one `RESULT <name> <value> <unit>` line per measurement. Without a usable GPU
//! it prints `SKIPPED cuda_micro: <reason>` and exits 0 (1 under `REQUIRE_GPU=1`).
//!
//! Run: `cargo bench --features cuda --bench cuda_micro`. With `--quick`, tiny sizes and
//! few iterations: a smoke test of the binary (the figures mean nothing).

use std::time::Instant;
use tapegrad::tensor::{cuda, DType, Device, Result, Tensor};

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
    vector: usize,
    matrix: usize,
    softmax_rows: usize,
    budget: f64,
}

fn run(s: &Sizes) -> Result<()> {
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

fn main() {
    if let Err(e) = cuda::ensure_available(0) {
        eprintln!("SKIPPED cuda_micro: {e}");
        std::process::exit(if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") { 1 } else { 0 });
    }
    let sizes = if std::env::args().any(|a| a == "--quick") {
        Sizes { matmul: [64, 128], vector: 1 << 20, matrix: 256, softmax_rows: 64, budget: 0.0 }
    } else {
        // 64 Mi f32 values (256 MiB) per vector; 8192 x 8192 matrices.
        Sizes { matmul: [1024, 4096], vector: 1 << 26, matrix: 1 << 13, softmax_rows: 1 << 16, budget: 0.5 }
    };
    if let Err(e) = run(&sizes) {
        eprintln!("cuda_micro failed: {e}");
        std::process::exit(1);
    }
}
