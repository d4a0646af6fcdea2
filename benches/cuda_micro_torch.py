"""PyTorch's figures for the work benches/cuda_micro.rs measures, on the same card.

Prints one `RESULT <name> <value> <unit>` line per measurement (same names and units);
scripts/gpu-check.sh sets them beside ours. Timing: warm-ups, then a loop timed with the
device synchronised before and after only, as in the Rust benchmark.
"""
import time

import torch

DEVICE = "cuda"


def seconds_per_call(f, budget=0.5):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    start = time.perf_counter()
    f()
    torch.cuda.synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    iters = min(max(int(budget / once), 5), 1000)
    start = time.perf_counter()
    for _ in range(iters):
        f()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def random(*shape):
    return torch.rand(*shape, device=DEVICE) * 2 - 1


def report(name, value, unit):
    print(f"RESULT {name} {value:.1f} {unit}", flush=True)


def main():
    for n in (1024, 4096):
        a, b = random(n, n), random(n, n)
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            t = seconds_per_call(lambda: a @ b)
            report(f"matmul_{n}_{'tf32' if tf32 else 'f32'}", 2 * n**3 / t / 1e9, "GFLOP/s")
    torch.backends.cuda.matmul.allow_tf32 = False

    n = 1 << 26
    x, y = random(n), random(n)
    gb = lambda nbytes, t: nbytes / t / 1e9
    report("add_64M_f32", gb(3 * 4 * n, seconds_per_call(lambda: x + y)), "GB/s")
    report("exp_64M_f32", gb(2 * 4 * n, seconds_per_call(lambda: x.exp())), "GB/s")
    report("sum_64M_f32", gb(4 * n, seconds_per_call(lambda: x.sum())), "GB/s")
    rows = cols = 1 << 13
    m, bias = random(rows, cols), random(cols)
    report("bias_add_8192x8192_f32", gb(2 * 4 * rows * cols, seconds_per_call(lambda: m + bias)), "GB/s")
    report("column_sum_8192x8192_f32", gb(4 * rows * cols, seconds_per_call(lambda: m.sum(0))), "GB/s")
    logits = random(1 << 16, 1000)
    t = seconds_per_call(lambda: torch.log_softmax(logits, -1))
    report("log_softmax_65536x1000_f32", gb(2 * 4 * (1 << 16) * 1000, t), "GB/s")


if __name__ == "__main__":
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    main()
