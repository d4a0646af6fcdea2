"""PyTorch side of benches/depthwise_conv.rs: depthwise 3x3 convolution (groups =
channels) at batch 64, f32, CPU, channels_last, the same thread count, timed the same way
(minimum over repetitions of the forward pass with autograd recording, of the input
gradient and of the kernel gradient).

Run from the repository root:
    python3 benches/depthwise_conv_torch.py --threads 2
and, for ours, RAYON_NUM_THREADS=2 cargo bench --bench depthwise_conv; alternate the two
(ours, theirs, ours, theirs) on a shared machine. PyTorch gets symmetric padding 1 (the
same output sizes and work as TF's 'same', which is asymmetric at stride 2).
"""
import argparse
import time

import torch
import torch.nn.functional as F

BATCH = 64
SHAPES = [(32, 32), (64, 16), (128, 8), (256, 4)]


def time_case(c, size, stride):
    x = (torch.rand(BATCH, c, size, size) * 2 - 1).to(memory_format=torch.channels_last).requires_grad_()
    k = (torch.rand(c, 1, 3, 3) * 2 - 1).requires_grad_()
    conv = lambda: F.conv2d(x, k, None, stride=stride, padding=1, groups=c)
    dy = torch.rand_like(conv())
    best = [float("inf")] * 3
    started, reps = time.perf_counter(), 0
    while reps < 5 or (time.perf_counter() - started < 1.0 and reps < 100):
        t0 = time.perf_counter()
        y = conv()
        t1 = time.perf_counter()
        (dx,) = torch.autograd.grad(y, [x], dy)
        t2 = time.perf_counter()
        y = conv()
        t3 = time.perf_counter()
        (dk,) = torch.autograd.grad(y, [k], dy)
        t4 = time.perf_counter()
        if reps > 0:
            best = [min(b, t) for b, t in zip(best, [t1 - t0, t2 - t1, t4 - t3])]
        reps += 1
    return [b * 1e3 for b in best]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads; use ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("depthwise_conv (torch %s): 3x3, batch %d, f32, channels_last, %d threads (min over repetitions)"
          % (torch.__version__, BATCH, args.threads))
    print("| case | forward ms | input grad ms | kernel grad ms | total ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for c, size in SHAPES:
        for stride in (1, 2):
            f, dx, dk = time_case(c, size, stride)
            print("| dw %dch %dx%d s%d | %.3f | %.3f | %.3f | %.3f |" % (c, size, size, stride, f, dx, dk, f + dx + dk))


if __name__ == "__main__":
    main()
