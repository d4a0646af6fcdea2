"""PyTorch side of benches/conv_ops.rs: the same seed-ResNet18 layers at batch 64 (f32,
CPU, channels_last, the same thread count), timed the same way (minimum over repetitions
of the forward pass with autograd recording, and of the backward pass).

Run from the repository root:
    /opt/torch-venv/bin/python benches/conv_ops_torch.py --threads 2 --interleave
which, case by case, runs `cargo bench --bench conv_ops -- <case>` with RAYON_NUM_THREADS
set to the same thread count and then times PyTorch, so that both sides of a row see the
same load on a shared machine. `--ours target/conv_ops_ours.tsv` instead reads a whole
earlier run of `cargo bench --bench conv_ops`. It prints a markdown table with both and
the ratio torch_ms / ours_ms (above 1: ours is faster), the format of docs/performance.md.

PyTorch gets symmetric padding 1 for the 3x3 'same' convolutions (the same output sizes
and work as TF's asymmetric padding, without a separate pad op), and the stem's 2x2
stride-1 'same' max pooling is run on the unpadded input (29x29 outputs instead of 30x30):
both choices favour PyTorch slightly.
"""
import argparse
import os
import subprocess
import time

import torch
import torch.nn.functional as F

BATCH = 64

# (c_in, c_out, kernel, stride, padding, size), as in benches/conv_ops.rs.
CONVS = [
    (3, 64, 3, 1, "valid", 32),
    (64, 64, 3, 2, "same", 30),
    (64, 64, 1, 2, "same", 30),
    (64, 64, 3, 1, "same", 15),
    (64, 128, 3, 2, "same", 15),
    (64, 128, 1, 2, "same", 15),
    (128, 128, 3, 1, "same", 8),
    (128, 256, 3, 2, "same", 8),
    (128, 256, 1, 2, "same", 8),
    (256, 256, 3, 1, "same", 4),
    (256, 512, 3, 2, "same", 4),
    (256, 512, 1, 2, "same", 4),
    (512, 512, 3, 1, "same", 2),
    (64, 64, 3, 1, "valid", 15),
]
BATCH_NORMS = [(64, 30), (64, 15), (128, 8), (256, 4), (512, 2)]


def image(c, size):
    return torch.rand(BATCH, c, size, size).to(memory_format=torch.channels_last) * 2 - 1


def cases():
    for ci, co, k, s, p, size in CONVS:
        x, w, b = image(ci, size), torch.rand(co, ci, k, k).to(memory_format=torch.channels_last), torch.rand(co)
        pad = k // 2 if p == "same" else 0
        yield ("conv %d->%d %dx%d s%d %s %dx%d" % (ci, co, k, k, s, p, size, size), [x, w, b],
               lambda t, s=s, pad=pad: F.conv2d(t[0], t[1], t[2], stride=s, padding=pad))
    for c, size in BATCH_NORMS:
        yield ("batch_norm %d %dx%d" % (c, size, size), [image(c, size), torch.rand(c), torch.rand(c)],
               lambda t: F.batch_norm(t[0], None, None, t[1], t[2], training=True, eps=1e-3))
    yield ("max_pool 2x2 s1 same 64 30x30", [image(64, 30)], lambda t: F.max_pool2d(t[0], 2, 1))
    yield ("global_avg_pool 512 2x2", [image(512, 2)], lambda t: t[0].mean(dim=(2, 3)))


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
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "conv_ops", "--", name], env=env,
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return float(cells[1]), float(cells[2])
    raise RuntimeError("no row for %r in:\n%s" % (name, out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads; use ours")
    ap.add_argument("--ours", help="target/conv_ops_ours.tsv written by cargo bench --bench conv_ops")
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
