#!/usr/bin/env bash
# scripts/gpu-check.sh — runs on a GPU machine (no Rust needed), from the repository root:
#   1. the GPU tests and the NVRTC test from the bundle that scripts/build-gpu-bundle.sh
#      made (REQUIRE_GPU=1 / REQUIRE_NVRTC=1: a skip is a failure),
#   2. the micro-benchmarks (benches/cuda_micro.rs) and PyTorch's figures for the same
#      work on the same card (benches/cuda_micro_torch.py),
#   3. training images/s and peak memory of the seed ResNet18 at batch 64 and 256 beside
#      PyTorch eager (NCHW and channels_last; benches/resnet_train*.{rs,py}), and a short
#      run of the flagship on synthetic data,
# and prints one table at the end. Exit status: non-zero if a test or benchmark failed.
#
# Environment: GPU_BUNDLE (default target/gpu-bundle), PYTHON (default: python3, which
# holds PyTorch on the lent machines), OUT (if set, logs are also written there),
# GPU_CHECK_QUICK=1 (tiny sizes: a smoke test of this script, e.g. on scripts/cuda-emu).
#
# Libraries: CUDA's own lib64 (CUDA_HOME, default /usr/local/cuda) and the NVIDIA wheels
# of the Python install (nvidia/cu13/lib, nvidia/cudnn/lib, ...) go on LD_LIBRARY_PATH, so
# libnvrtc and libcublas are found where no toolkit is installed system-wide.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle="${GPU_BUNDLE:-target/gpu-bundle}"
py="${PYTHON:-python3}"
logs="${OUT:-$(mktemp -d)}"
mkdir -p "$logs"

for bin in cuda_ops nvrtc_kernels cuda_micro cuda_training cuda_fit torch_trajectory resnet_train resnet_cifar100; do
  [[ -x "$bundle/$bin" ]] || { echo "gpu-check: $bundle/$bin missing; run scripts/build-gpu-bundle.sh" >&2; exit 2; }
done

libs=()
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
for d in "$cuda_home/lib64" "$cuda_home/lib"; do [[ -d "$d" ]] && libs+=("$d"); done
# `nvidia` is a namespace package: it may span several site-packages folders.
nvidia_roots="$("$py" -c 'import nvidia, os; print("\n".join(os.path.abspath(p) for p in nvidia.__path__))' 2>/dev/null || true)"
while IFS= read -r nvidia_root; do
  [[ -n "$nvidia_root" ]] || continue
  for d in "$nvidia_root"/cu13/lib "$nvidia_root"/cudnn/lib "$nvidia_root"/*/lib; do
    [[ -d "$d" ]] && libs+=("$d")
  done
done <<< "$nvidia_roots"
# cuDNN 9 (libcudnn.so.9, for convolutions) from PyTorch's pip install, wherever it is.
cudnn_lib="$("$py" -c 'import nvidia.cudnn, os; print(os.path.join(os.path.abspath(list(nvidia.cudnn.__path__)[0]), "lib"))' 2>/dev/null || true)"
[[ -n "$cudnn_lib" && -d "$cudnn_lib" ]] && libs+=("$cudnn_lib")
ls "${cudnn_lib:-/nonexistent}"/libcudnn.so* >/dev/null 2>&1 \
  || echo "gpu-check: no libcudnn.so.9 from the Python install (nvidia.cudnn); convolutions need it" >&2
LD_LIBRARY_PATH="$(IFS=:; echo "${libs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH REQUIRE_GPU=1 REQUIRE_NVRTC=1
echo "gpu-check: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

status=0
declare -A outcome
for t in nvrtc_kernels cuda_ops cuda_training cuda_fit torch_trajectory; do
  start=$SECONDS
  if "$bundle/$t" --test-threads=1 2>&1 | tee "$logs/$t.log"; then
    outcome[$t]="passed in $((SECONDS - start)) s"
  else
    outcome[$t]="FAILED (log: $logs/$t.log)"
    status=1
  fi
done

quick=()
train_batches=(64 256)
train_steps=(--steps 20 --warmup 5)
flagship=(--synthetic 8192 --epochs 2)
if [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
  quick=(--quick)
  train_batches=(4)
  train_steps=(--steps 2 --warmup 1)
  flagship=(--synthetic 64 --batch-size 16 --epochs 1 --dataset cifar10)
fi
"$bundle/cuda_micro" "${quick[@]}" 2>&1 | tee "$logs/cuda_micro.txt" || status=1
PYTHONUNBUFFERED=1 "$py" benches/cuda_micro_torch.py 2>&1 | tee "$logs/cuda_micro_torch.txt" || status=1

# End-to-end training: ours, then PyTorch eager in both memory formats, per batch size.
for b in "${train_batches[@]}"; do
  "$bundle/resnet_train" --device cuda --batch "$b" "${train_steps[@]}" 2>&1 | tee -a "$logs/train_ours.txt" || status=1
  "$py" benches/resnet_train_torch.py --device cuda --batch "$b" "${train_steps[@]}" 2>&1 \
    | tee -a "$logs/train_torch.txt" || status=1
  "$py" benches/resnet_train_torch.py --device cuda --batch "$b" "${train_steps[@]}" --channels-last 2>&1 \
    | tee -a "$logs/train_torch_cl.txt" || status=1
done
# The flagship for one short epoch on synthetic data (summary, progress, eval, checkpoints).
flagship_dir="$(mktemp -d)"
if "$bundle/resnet_cifar100" "${flagship[@]}" --device cuda --checkpoint-dir "$flagship_dir" \
  2>&1 | tee "$logs/flagship.txt"; then
  outcome[flagship]="$(grep '^done:' "$logs/flagship.txt" | tail -1)"
else
  outcome[flagship]="FAILED (log: $logs/flagship.txt)"
  status=1
fi

echo
echo "== gpu-check summary =="
echo "flagship (${flagship[*]}): ${outcome[flagship]}"
for t in nvrtc_kernels cuda_ops cuda_training cuda_fit torch_trajectory; do echo "test $t: ${outcome[$t]}"; done
"$py" - "$logs/cuda_micro.txt" "$logs/cuda_micro_torch.txt" <<'PY'
import sys
def read(path):
    rows = {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) == 4 and parts[0] == "RESULT":
            rows[parts[1]] = (float(parts[2]), parts[3])
    return rows
ours, torch = read(sys.argv[1]), read(sys.argv[2])
print(f"{'benchmark':<30} {'tapegrad':>12} {'torch':>12} {'unit':<8} {'ratio':>6}")
for name in list(ours) + [n for n in torch if n not in ours]:
    o, t = ours.get(name, (None, "")), torch.get(name, (None, ""))
    unit = o[1] or t[1]
    ratio = f"{o[0] / t[0]:.2f}" if o[0] and t[0] else "-"
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    print(f"{name:<30} {fmt(o[0]):>12} {fmt(t[0]):>12} {unit:<8} {ratio:>6}")
print("(ratio = tapegrad / torch; higher is better for both units)")
PY
"$py" - "$logs/train_ours.txt" "$logs/train_torch.txt" "$logs/train_torch_cl.txt" <<'PY'
import sys
def read(path):
    rows = {}
    try:
        for line in open(path, errors="replace"):
            parts = line.split()
            if len(parts) == 4 and parts[0] == "RESULT":
                rows[parts[1]] = (float(parts[2]), parts[3])
    except FileNotFoundError:
        pass
    return rows
ours, nchw, cl = (read(p) for p in sys.argv[1:4])
print(f"\n{'training (seed ResNet18, Adam)':<34} {'tapegrad':>10} {'torch NCHW':>11} {'torch CL':>10} {'unit':<6} {'ratio':>6}")
for name in list(dict.fromkeys(list(ours) + list(nchw) + list(cl))):
    vals = [d.get(name, (None, ""))[0] for d in (ours, nchw, cl)]
    unit = next(d[name][1] for d in (ours, nchw, cl) if name in d)
    best = [v for v in vals[1:] if v]
    # Throughput: ours over the faster torch format; memory: the smaller torch over ours.
    if vals[0] and best:
        ratio = vals[0] / max(best) if unit == "img/s" else min(best) / vals[0]
        ratio = f"{ratio:.2f}"
    else:
        ratio = "-"
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    print(f"{name:<34} {fmt(vals[0]):>10} {fmt(vals[1]):>11} {fmt(vals[2]):>10} {unit:<6} {ratio:>6}")
print("(ratio > 1: tapegrad ahead of PyTorch eager's better memory format)")
PY
exit $status
