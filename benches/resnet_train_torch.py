"""The seed ResNet18/34 (Keras semantics) trained in PyTorch, timed the way
benches/resnet_train.rs times tapegrad: same model, batch, optimizer and thread count.

Keras semantics reproduced here: convolutions with bias, TF 'same' padding (asymmetric at
stride 2: the extra row/column goes bottom/right), BatchNormalization momentum 0.99 (PyTorch
momentum 0.01) and epsilon 1e-3, Adam(lr=3e-4, eps=1e-7), glorot-uniform kernels, zero biases.

Usage:
  python benches/resnet_train_torch.py --device cpu --threads 2 --batch 64 --steps 10
  python benches/resnet_train_torch.py --device cuda --batch 256 --channels-last [--tf32]
  python benches/resnet_train_torch.py --device cpu --threads 2 --batch 256 --inference --channels-last
Prints: images/s over the timed steps (after warm-up), and peak GPU memory on CUDA.

Precision is set explicitly on both switches, never left to PyTorch's defaults (which let
cuDNN convolutions use TF32): strict f32 by default, as tapegrad computes by default;
`--tf32` allows TF32 for matrix products and convolutions, to compare with
`resnet_train --tf32` (tapegrad's cuda::set_tf32(true)). Its RESULT names end in `_tf32`.
`--bf16` runs the forward pass and the loss under bf16 autocast (names end in `_bf16`);
`--compile MODE` trains a `torch.compile(model, mode=MODE)` (compiled during the warm-up
steps; names end in `_compile`): PyTorch's modes beside which tapegrad's bf16 and CUDA-graph
modes are to be measured.
"""
import argparse
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_pads(size, kernel, stride):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """Conv2D with Keras defaults and TF padding ('same' or 'valid')."""

    def __init__(self, cin, cout, k, stride=1, padding="same"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, bias=True)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.k, self.stride, self.padding = k, stride, padding

    def forward(self, x):
        if self.padding == "same":
            top, bottom = tf_same_pads(x.shape[2], self.k, self.stride)
            left, right = tf_same_pads(x.shape[3], self.k, self.stride)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return self.conv(x)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class BasicBlock(nn.Module):
    def __init__(self, cin, f, stride):
        super().__init__()
        self.conv1, self.bn1 = Conv(cin, f, 3, stride), bn(f)
        self.conv2, self.bn2 = Conv(f, f, 3, 1), bn(f)
        self.shortcut = Conv(cin, f, 1, stride) if stride != 1 else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks, num_classes=100):
        super().__init__()
        self.stem_conv, self.stem_bn = Conv(3, 64, 3, 1, padding="valid"), bn(64)
        layers, cin = [], 64
        for f, n in zip([64, 128, 256, 512], blocks):
            for i in range(n):
                layers.append(BasicBlock(cin, f, 2 if i == 0 else 1))
                cin = f
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, stride=1)  # 2x2 s1 'same'
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and convolutions (default: strict f32)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (resnet_train --cudnn-benchmark); RESULT names end in _bench")
    p.add_argument("--bf16", action="store_true", help="forward pass and loss under bf16 autocast")
    p.add_argument("--inference", action="store_true", help="forward passes only, model.eval() under torch.inference_mode()")
    p.add_argument("--compile", metavar="MODE", help="torch.compile mode, e.g. max-autotune or reduce-overhead")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    precision = (("_tf32" if args.tf32 else "") + ("_bench" if args.cudnn_benchmark else "") + ("_bf16" if args.bf16 else "")
                 + ("_compile" if args.compile else ""))
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    dev = torch.device(args.device)
    model = ResNet([2, 2, 2, 2] if args.arch == "resnet18" else [3, 4, 6, 3]).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if args.compile:
        model = torch.compile(model, mode=args.compile)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-7)
    x = (torch.rand(args.batch, 3, 32, 32, device=dev) * 2 - 1).to(memory_format=fmt)
    y = torch.randint(0, 100, (args.batch,), device=dev)

    def infer():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            return model(x).float().mean()

    def train_step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if args.inference:
        model.eval()
    step = infer if args.inference else train_step

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = time.perf_counter() - t0
    ips = args.batch * args.steps / dt
    extra = ""
    if dev.type == "cuda":
        extra = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    work = "inference" if args.inference else "training"
    print(
        f"torch {torch.__version__} {args.arch} {work} batch {args.batch} {args.device} threads {torch.get_num_threads()} "
        f"channels_last={args.channels_last} allow_tf32 (matmul, cudnn)={torch.backends.cuda.matmul.allow_tf32}, "
        f"{torch.backends.cudnn.allow_tf32} bf16={args.bf16} compile={args.compile} params={params}: {dt / args.steps * 1e3:.1f} ms/step, "
        f"{ips:.1f} images/s, last loss {loss.item():.4f}{extra}"
    )
    # Machine-readable lines for scripts/gpu-check.sh's table (same names as resnet_train.rs).
    kind = "infer" if args.inference else "train"
    print(f"RESULT {kind}_{args.arch}_b{args.batch}_{dev.type}{precision} {ips:.1f} img/s")
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        mem = "peak_memory_infer" if args.inference else "peak_memory"
        print(f"RESULT {mem}_{args.arch}_b{args.batch}_{dev.type}{precision} {peak:.0f} MiB")


if __name__ == "__main__":
    main()
