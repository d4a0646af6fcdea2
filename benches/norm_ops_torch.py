"""PyTorch side of benches/norm_ops.rs: the same layer, group and batch normalizations (f32,
CPU, channels_last images, the same thread count; batch norm followed by `relu` or by an add
and `relu`, as eager PyTorch runs the ResNet block), timed the same way (minimum over
repetitions of the forward pass with autograd recording, and of the backward pass).

Run from the repository root:
    python3 benches/norm_ops_torch.py --threads 2
which, case by case, runs `cargo bench -q --bench norm_ops -- <case>` with
RAYON_NUM_THREADS set to the same thread count and then times PyTorch, so both sides of a
row see the same load on a shared machine. Prints a markdown table with the ratio
torch_ms / ours_ms (above 1: ours is faster).
"""
import argparse
import os
import subprocess
import time

import torch
import torch.nn.functional as F

EPS = 1e-3


def cases():
    """(name as in norm_ops.rs, inputs, forward)."""
    out = []
    for n, s, c, g in [(64, 32, 64, 32), (64, 16, 128, 32), (64, 8, 256, 32)]:
        x = torch.rand(n, c, s, s).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
        inputs = [x, torch.rand(c) * 2 - 1, torch.rand(c) * 2 - 1]
        out.append(("group_norm %d groups %dx%dx%dx%d" % (g, n, s, s, c), inputs,
                    lambda t, g=g: F.group_norm(t[0], g, t[1], t[2], eps=EPS)))
    for r, c in [(64 * 32 * 32, 64), (64 * 128, 512)]:
        inputs = [torch.rand(r, c) * 2 - 1, torch.rand(c) * 2 - 1, torch.rand(c) * 2 - 1]
        out.append(("layer_norm %dx%d" % (r, c), inputs,
                    lambda t, c=c: F.layer_norm(t[0], (c,), t[1], t[2], eps=EPS)))
    for s, c, e in [(30, 64, "relu"), (15, 64, "relu"), (15, 64, "add_relu"), (8, 128, "add_relu"), (4, 256, "")]:
        x = torch.rand(64, c, s, s).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
        inputs = [x, torch.rand(c) * 2 - 1, torch.rand(c) * 2 - 1]
        bn = lambda t: F.batch_norm(t[0], None, None, t[1], t[2], training=True, eps=EPS)
        if e == "relu":
            forward = lambda t, bn=bn: F.relu(bn(t))
        elif e == "add_relu":
            inputs.append(torch.rand(64, c, s, s).mul(2).sub(1).contiguous(memory_format=torch.channels_last))
            forward = lambda t, bn=bn: F.relu(t[3] + bn(t))
        else:
            forward = bn
        name = "batch_norm%s 64x%dx%dx%d" % ("_" + e if e else "", s, s, c)
        out.append((name, inputs, forward))
    return out


def time_case(inputs, forward):
    inputs = [t.detach().requires_grad_() for t in inputs]
    dy = torch.rand_like(forward(inputs))
    best_f = best_b = float("inf")
    start, reps = time.perf_counter(), 0
    while reps < 4 or (time.perf_counter() - start < 1.0 and reps < 50):
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


def run_ours(name, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "norm_ops", "--", name], env=env,
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return float(cells[1]), float(cells[2])
    raise RuntimeError("no row for %r in:\n%s" % (name, out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads; use ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("torch %s, %d threads, f32, channels_last; min over repetitions" % (torch.__version__, args.threads))
    print("| case | ours fwd ms | ours bwd ms | torch fwd ms | torch bwd ms | torch/ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, inputs, forward in cases():
        of, ob = run_ours(name, args.threads)
        tf, tb = time_case(inputs, forward)
        print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |" % (name, of, ob, tf, tb, (tf + tb) / (of + ob)))


if __name__ == "__main__":
    main()
