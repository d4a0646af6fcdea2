"""The work of benches/optimizer_step.rs in PyTorch (CPU): one optimizer step over the
parameter shapes of the seed ResNet18 (convolutions with bias, 100 classes), same threads.

Usage: python benches/optimizer_step_torch.py [--threads N]
Prints the median time of Adam (default implementation and foreach) and SGD with momentum.
"""
import argparse
import time

import torch


def resnet18_seed_shapes():
    shapes = [(64, 3, 3, 3), (64,), (64,), (64,)]  # stem conv (+bias), BN gamma/beta
    c_in = 64
    for filters in (64, 128, 256, 512):
        for block in range(2):
            stride = 2 if block == 0 else 1
            shapes += [(filters, c_in, 3, 3), (filters,), (filters,), (filters,)]
            shapes += [(filters, filters, 3, 3), (filters,), (filters,), (filters,)]
            if stride != 1:
                shapes += [(filters, c_in, 1, 1), (filters,)]
            c_in = filters
    shapes += [(100, 512), (100,)]
    return shapes


def median_time(fn, min_seconds=3.0, min_iters=10):
    fn()
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
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = resnet18_seed_shapes()
    params = [torch.nn.Parameter(torch.randn(s) * 0.01) for s in shapes]
    print(f"{sum(p.numel() for p in params):,} parameters in {len(params)} tensors, {torch.get_num_threads()} threads")
    for p in params:
        p.grad = (torch.rand_like(p) - 0.5) * 2e-3
    cases = {
        "adam": torch.optim.Adam(params, lr=3e-4, eps=1e-7, foreach=False),
        "adam_foreach": torch.optim.Adam(params, lr=3e-4, eps=1e-7, foreach=True),
        "sgd_momentum": torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=False),
    }
    for name, opt in cases.items():
        t = median_time(opt.step)
        print(f"optimizer_step_resnet18/{name}: {t * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
