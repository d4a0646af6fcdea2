//! Criterion benchmarks of the tensor crate's CPU kernels: f32 matmul at 1024^3 and at the
//! GEMM shapes the seed ResNet18's 3x3 convolutions become at batch 64, and large
//! elementwise ops and reductions. `benches/tensor_ops_torch.py` times the same work in
//! PyTorch with the same number of threads; docs/performance.md has both.
//!
//! Run: `cargo bench --bench tensor_ops` (threads: `RAYON_NUM_THREADS`, default all cores).
//! The "throughput" criterion prints for matmul is in FLOP/s (2·m·n·k per product).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, SeedableRng};
use std::time::Duration;
use tapegrad::{DType, Device, Tensor};

/// (name, m, k, n): 1024^3, then im2col GEMMs of seed-ResNet18 3x3 convolutions at batch 64.
const MATMUL_SHAPES: &[(&str, usize, usize, usize)] = &[
    ("1024x1024x1024", 1024, 1024, 1024),
    ("conv_64x15x15_k576_n64", 64 * 15 * 15, 9 * 64, 64),
    ("conv_64x8x8_k1152_n128", 64 * 8 * 8, 9 * 128, 128),
    ("conv_64x4x4_k2304_n256", 64 * 4 * 4, 9 * 256, 256),
    ("conv_64x2x2_k4608_n512", 64 * 2 * 2, 9 * 512, 512),
];

fn rand_tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(dims, -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).expect("random tensor")
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for &(name, m, k, n) in MATMUL_SHAPES {
        let a = rand_tensor(&[m, k], 1);
        let b = rand_tensor(&[k, n], 2);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &(a, b), |bench, (a, b)| {
            bench.iter(|| a.matmul(b).expect("matmul"))
        });
    }
    group.finish();
}

fn elementwise(c: &mut Criterion) {
    const N: usize = 1 << 24; // 16M f32 = 64 MB per operand
    let mut group = c.benchmark_group("elementwise_f32_16M");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes((3 * 4 * N) as u64));
    let a = rand_tensor(&[N], 3);
    let b = rand_tensor(&[N], 4);
    group.bench_function("add", |bench| bench.iter(|| a.add(&b).expect("add")));
    group.throughput(Throughput::Bytes((2 * 4 * N) as u64));
    group.bench_function("exp", |bench| bench.iter(|| a.exp().expect("exp")));
    let rows = rand_tensor(&[N / 64, 64], 5);
    let bias = rand_tensor(&[64], 6);
    group.throughput(Throughput::Bytes((2 * 4 * N) as u64));
    group.bench_function("add_bias_broadcast", |bench| bench.iter(|| rows.add(&bias).expect("add")));
    group.throughput(Throughput::Bytes((4 * N) as u64));
    group.bench_function("sum_all", |bench| bench.iter(|| a.sum_all().expect("sum")));
    group.bench_function("sum_axis0_of_Nx64", |bench| bench.iter(|| rows.sum(&[0], false).expect("sum")));
    group.finish();
}

criterion_group!(benches, matmul, elementwise);
criterion_main!(benches);
