"""PyTorch's figures for the work benches/cuda_micro.rs measures, on the same card.

Prints one `RESULT <name> <value> <unit>` line per measurement (same names and units);
scripts/gpu-check.sh sets them beside ours. Timing: warm-ups, then a loop timed with the
device synchronised before and after only, as in the Rust benchmark.

Precision is always set explicitly (PyTorch's default lets cuDNN convolutions use TF32,
while tapegrad's are strict f32 unless cuda::set_tf32(true)): strict f32 everywhere except
the `matmul_*_tf32` rows; `--tf32` measures only the convolutions, with TF32 allowed in
both matmuls and cuDNN, their names ending in `_tf32` (as `cuda_micro --tf32`). `--quick`
uses cuda_micro's `--quick` sizes (a smoke test: the figures mean nothing).

Usage: python benches/cuda_micro_torch.py [--quick] [--tf32]
"""
import argparse
import time

import torch
import torch.nn.functional as F

DEVICE = "cuda"


# The budget per measurement in seconds (0 for --quick: five timed calls).
BUDGET = 0.5


def set_tf32(enabled):
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def seconds_per_call(f, budget=None):
    budget = BUDGET if budget is None else budget
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


# The distinct convolutions of the seed ResNet18 on 32x32 CIFAR images, as in
# cuda_micro.rs: name, input (h, w, c_in), filters, kernel size, stride, padding, layers.
RESNET18_CONVS = [
    ("stem_3x3_3to64_32", (32, 32, 3), 64, 3, 1, "valid", 1),
    ("3x3s2_64_30", (30, 30, 64), 64, 3, 2, "same", 1),
    ("1x1s2_64_30", (30, 30, 64), 64, 1, 2, "same", 1),
    ("3x3_64_15", (15, 15, 64), 64, 3, 1, "same", 3),
    ("3x3s2_64to128_15", (15, 15, 64), 128, 3, 2, "same", 1),
    ("1x1s2_64to128_15", (15, 15, 64), 128, 1, 2, "same", 1),
    ("3x3_128_8", (8, 8, 128), 128, 3, 1, "same", 3),
    ("3x3s2_128to256_8", (8, 8, 128), 256, 3, 2, "same", 1),
    ("1x1s2_128to256_8", (8, 8, 128), 256, 1, 2, "same", 1),
    ("3x3_256_4", (4, 4, 256), 256, 3, 1, "same", 3),
    ("3x3s2_256to512_4", (4, 4, 256), 512, 3, 2, "same", 1),
    ("1x1s2_256to512_4", (4, 4, 256), 512, 1, 2, "same", 1),
    ("3x3_512_2", (2, 2, 512), 512, 3, 1, "same", 3),
]


def tf_same(size, k, stride):
    """TF's 'same' padding along one axis: (before, after), the extra one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def convolutions(batch, suffix):
    """channels_last convolutions in the precision the caller set, TF's padding: where it
    is asymmetric the input is padded explicitly, as tapegrad does for cuDNN. Every name
    ends in `suffix`."""
    total_flops = total_seconds = 0.0
    for name, (h, w, c), filters, k, stride, padding, layers in RESNET18_CONVS:
        cl = torch.channels_last
        x = random(batch, c, h, w).contiguous(memory_format=cl).requires_grad_()
        weight = random(filters, c, k, k).contiguous(memory_format=cl).requires_grad_()
        (top, bottom), (left, right) = (tf_same(h, k, stride), tf_same(w, k, stride)) if padding == "same" else ((0, 0), (0, 0))
        ph, pw = min(top, bottom), min(left, right)
        extra = (left - pw, right - pw, top - ph, bottom - ph)

        def forward():
            xi = F.pad(x, extra) if any(extra) else x
            return F.conv2d(xi, weight, stride=stride, padding=(ph, pw))

        with torch.no_grad():
            y = forward()
            dy = random(*y.shape).contiguous(memory_format=cl)
            flops = 2 * y.numel() * k * k * c
            t = seconds_per_call(forward)
        report(f"conv_{name}_fwd{suffix}", flops / t / 1e9, "GFLOP/s")
        t = seconds_per_call(lambda: torch.autograd.grad(forward(), (x, weight), dy))
        report(f"conv_{name}_fwdbwd{suffix}", 3 * flops / t / 1e9, "GFLOP/s")
        total_flops += 3 * flops * layers
        total_seconds += t * layers
    report(f"resnet18_convs_b{batch}_fwdbwd{suffix}", total_flops / total_seconds / 1e9, "GFLOP/s")


def main():
    global BUDGET
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="cuda_micro's tiny --quick sizes")
    p.add_argument("--tf32", action="store_true", help="only the convolutions, TF32 allowed")
    args = p.parse_args()
    # The sizes of cuda_micro.rs (full and --quick), so that the names match.
    if args.quick:
        matmuls, conv_batch, n, rows, softmax_rows, BUDGET = (64, 128), 2, 1 << 20, 256, 64, 0.0
    else:
        matmuls, conv_batch, n, rows, softmax_rows = (1024, 4096), 64, 1 << 26, 1 << 13, 1 << 16
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    set_tf32(args.tf32)
    # Read back, so that the log shows what PyTorch took.
    print(f"# allow_tf32: matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn {torch.backends.cudnn.allow_tf32}")
    if args.tf32:
        convolutions(conv_batch, "_tf32")
        return
    for size in matmuls:
        a, b = random(size, size), random(size, size)
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            t = seconds_per_call(lambda: a @ b)
            report(f"matmul_{size}_{'tf32' if tf32 else 'f32'}", 2 * size**3 / t / 1e9, "GFLOP/s")
    set_tf32(False)

    x, y = random(n), random(n)
    gb = lambda nbytes, t: nbytes / t / 1e9
    mi = n >> 20
    report(f"add_{mi}M_f32", gb(3 * 4 * n, seconds_per_call(lambda: x + y)), "GB/s")
    report(f"exp_{mi}M_f32", gb(2 * 4 * n, seconds_per_call(lambda: x.exp())), "GB/s")
    report(f"sum_{mi}M_f32", gb(4 * n, seconds_per_call(lambda: x.sum())), "GB/s")
    cols = rows
    m, bias = random(rows, cols), random(cols)
    report(f"bias_add_{rows}x{cols}_f32", gb(2 * 4 * rows * cols, seconds_per_call(lambda: m + bias)), "GB/s")
    report(f"column_sum_{rows}x{cols}_f32", gb(4 * rows * cols, seconds_per_call(lambda: m.sum(0))), "GB/s")
    logits = random(softmax_rows, 1000)
    t = seconds_per_call(lambda: torch.log_softmax(logits, -1))
    report(f"log_softmax_{softmax_rows}x1000_f32", gb(2 * 4 * softmax_rows * 1000, t), "GB/s")
    convolutions(conv_batch, "")


if __name__ == "__main__":
    main()
