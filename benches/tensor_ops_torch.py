"""The work of benches/tensor_ops.rs in PyTorch (CPU), with the same thread count.

Usage: python benches/tensor_ops_torch.py [--threads N]
Prints one line per case: name, median time, and GFLOP/s (matmul) or GB/s (memory-bound ops),
counting work exactly as the Rust benchmark's criterion throughput does.
"""
import argparse
import os
import time

import torch

MATMUL_SHAPES = [
    ("1024x1024x1024", 1024, 1024, 1024),
    ("conv_64x15x15_k576_n64", 64 * 15 * 15, 9 * 64, 64),
    ("conv_64x8x8_k1152_n128", 64 * 8 * 8, 9 * 128, 128),
    ("conv_64x4x4_k2304_n256", 64 * 4 * 4, 9 * 256, 256),
    ("conv_64x2x2_k4608_n512", 64 * 2 * 2, 9 * 512, 512),
]


def median_time(fn, min_seconds=2.0, min_iters=10):
    fn()  # warm up
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    g = torch.Generator().manual_seed(0)
    for name, m, k, n in MATMUL_SHAPES:
        a = torch.rand(m, k, generator=g) * 2 - 1
        b = torch.rand(k, n, generator=g) * 2 - 1
        t = median_time(lambda: torch.mm(a, b))
        print(f"matmul_f32/{name}: {t * 1e3:.3f} ms, {2 * m * n * k / t / 1e9:.1f} GFLOP/s")
    n = 1 << 24
    a = torch.rand(n, generator=g)
    b = torch.rand(n, generator=g)
    rows = torch.rand(n // 64, 64, generator=g)
    bias = torch.rand(64, generator=g)
    cases = [
        ("add", lambda: a + b, 3 * 4 * n),
        ("exp", lambda: torch.exp(a), 2 * 4 * n),
        ("add_bias_broadcast", lambda: rows + bias, 2 * 4 * n),
        ("sum_all", lambda: a.sum(), 4 * n),
        ("sum_axis0_of_Nx64", lambda: rows.sum(0), 4 * n),
    ]
    for name, fn, nbytes in cases:
        t = median_time(fn)
        print(f"elementwise_f32_16M/{name}: {t * 1e3:.3f} ms, {nbytes / t / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
