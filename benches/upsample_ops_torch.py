"""PyTorch side of benches/upsample_ops.rs: the same U-Net upsampling layers at batch 16
(f32, CPU, channels_last, the same thread count), timed the same way (minimum over
repetitions of the forward pass with autograd recording, and of the backward pass).

Run from the repository root:
    python3 benches/upsample_ops_torch.py --threads 2 --interleave
which, case by case, runs `cargo bench --bench upsample_ops -- <case>` with RAYON_NUM_THREADS
set to the same thread count and then times PyTorch, so both sides of a row see the same
load on a shared machine. `--ours target/upsample_ops_ours.tsv` instead reads a whole earlier
run. It prints a markdown table with the ratio torch_ms / ours_ms (above 1: ours is faster).

Keras' 3x3 stride-2 'same' transposed convolution is given to PyTorch as padding=1,
output_padding=1: the same output size and work (PyTorch's window sits one row higher).
"""
import argparse
import os
import subprocess
import time

import torch
import torch.nn.functional as F

BATCH = 16
LEVELS = [(128, 8), (64, 16), (32, 32)]


def image(c, size):
    return torch.rand(BATCH, c, size, size).to(memory_format=torch.channels_last) * 2 - 1


def cases():
    for c, size in LEVELS:
        for k, p in [(2, "valid"), (3, "same")]:
            w = torch.rand(c, c // 2, k, k).to(memory_format=torch.channels_last) * 2 - 1
            pad, op = (0, 0) if p == "valid" else (1, 1)
            yield ("conv_transpose %d->%d %dx%d s2 %s %dx%d" % (c, c // 2, k, k, p, size, size),
                   [image(c, size), w, torch.rand(c // 2)],
                   lambda t, pad=pad, op=op: F.conv_transpose2d(t[0], t[1], t[2], stride=2, padding=pad,
                                                                output_padding=op))
        yield ("upsampling x2 nearest %d %dx%d" % (c, size, size), [image(c, size)],
               lambda t: F.interpolate(t[0], scale_factor=2, mode="nearest"))
        yield ("upsampling x2 bilinear %d %dx%d" % (c, size, size), [image(c, size)],
               lambda t: F.interpolate(t[0], scale_factor=2, mode="bilinear", align_corners=False))


def time_case(inputs, forward):
    for t in inputs:
        t.requires_grad_()
    dy = torch.rand_like(forward(inputs))
    best_f, best_b = float("inf"), float("inf")
    started, reps = time.perf_counter(), 0
    while reps < 4 or (time.perf_counter() - started < 1.0 and reps < 50):
        for t in inputs:
            t.grad = None
        t0 = time.perf_counter()
        y = forward(inputs)
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        if reps > 0:
            best_f, best_b = min(best_f, t1 - t0), min(best_b, t2 - t1)
        reps += 1
    return best_f * 1e3, best_b * 1e3


def read_ours(path):
    ours = {}
    with open(path) as f:
        next(f)
        for line in f:
            name, fwd, bwd = line.rstrip("\n").split("\t")
            ours[name] = (float(fwd), float(bwd))
    return ours


def run_ours(name, threads):
    """Runs the Rust bench for one case; returns (forward ms, backward ms)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "upsample_ops", "--", name], env=env,
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return float(cells[1]), float(cells[2])
    raise RuntimeError("no row for %r in:\n%s" % (name, out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads; use ours")
    ap.add_argument("--ours", help="target/upsample_ops_ours.tsv written by cargo bench --bench upsample_ops")
    ap.add_argument("--interleave", action="store_true", help="run the Rust bench case by case, beside PyTorch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = read_ours(args.ours) if args.ours else {}
    cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo", shell=True, capture_output=True, text=True)
    print("CPU: %s; torch %s, %d threads; batch %d, f32, channels_last; min over repetitions"
          % (cpu.stdout.split(":", 1)[-1].strip(), torch.__version__, args.threads, BATCH))
    print("| case | ours fwd ms | ours bwd ms | ours total ms | torch fwd ms | torch bwd ms | torch total ms "
          "| torch/ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sums = [0.0, 0.0]
    for name, inputs, forward in cases():
        if args.interleave:
            ours[name] = run_ours(name, args.threads)
        tf, tb = time_case(inputs, forward)
        of, ob = ours.get(name, (float("nan"), float("nan")))
        sums[0] += of + ob
        sums[1] += tf + tb
        print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |"
              % (name, of, ob, of + ob, tf, tb, tf + tb, (tf + tb) / (of + ob)))
    print("| **all of the above** | | | %.1f | | | %.1f | %.2f |" % (sums[0], sums[1], sums[1] / sums[0]))


if __name__ == "__main__":
    main()
