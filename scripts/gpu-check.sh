#!/usr/bin/env bash
# scripts/gpu-check.sh — the first-look check of a lent GPU machine (no Rust needed), run from
# the repository root after scripts/build-gpu-bundle.sh made target/gpu-bundle here:
#
#   1. preflight (~20 s): driver, NVRTC, cuBLAS and cuDNN versions and the library files
#      actually loaded (tests/cuda_preflight.rs, and PyTorch's view), then a quick op sweep
#      (matmul, elementwise with NaN/Inf, reductions, every convolution direction) under
#      CUDA_LAUNCH_BLOCKING=1. If it fails, the benchmarks are skipped and the time goes to
#      diagnosis: each failing test alone with a backtrace and cuDNN/cuBLAS logging, the
#      library search path, PyTorch's own libraries.
#   2. training images/s and peak memory of the seed ResNet18 at batch 64 beside PyTorch
#      eager (NCHW and channels_last), strict f32 on both sides;
#   3. every GPU test binary (CUDA_LAUNCH_BLOCKING=1, so a kernel fault names its kernel),
#      and a 1-GPU NCCL run (a single-rank communicator's all-reduce and data-parallel
#      steps, tests/nccl.rs), skipped with the reason when no libnccl is found;
#   4. the micro-benchmarks beside PyTorch's (benches/cuda_micro*.{rs,py}), strict f32;
#   5. full mode only: batch 256, the TF32 rows (ours with cuda::set_tf32(true), PyTorch
#      with allow_tf32 on both switches), the rows with cuDNN algorithms chosen by measurement
#      (--cudnn-benchmark, cudnn.benchmark on both sides), the TF32 convolution micro-benchmarks;
#   6. a short run of the flagship on synthetic data;
#   7. full mode only, if time is left: tapegrad in mixed_bfloat16 (eager and CUDA graph) beside
#      PyTorch eager with bf16 autocast, and torch.compile (reduce-overhead), the rows
#      tapegrad's bf16 and CUDA-graph modes are to beat.
# The bundle is target/gpu-bundle/gpu-bundle.tar.xz, unpacked into a temporary folder (or,
# from GPU_BUNDLE_PROFILE=dev, the binaries themselves). Each stage runs under `timeout`
# within an overall budget (GPU_CHECK_BUDGET_S: 450 s,
# 170 s in quick mode); a stage that no longer fits is reported as skipped. Each table is
# printed as soon as its stage ends, and all of them again at the end. Logs go to one
# tarball, $OUT/gpu-check-logs.tar.gz (also written if the script is interrupted), with
# $OUT/gpu-check-summary.txt beside it. Exit status: non-zero if any stage failed.
#
# Environment: GPU_BUNDLE (default target/gpu-bundle), PYTHON (default python3, with
# PyTorch), OUT (default: a temporary folder), GPU_CHECK_QUICK=1 (quick mode: batch 64
# only, few steps, tiny micro-benchmark sizes), GPU_CHECK_BUDGET_S, and for the emulator
# (scripts/cuda-emu, far slower than a GPU) GPU_CHECK_TRAIN_BATCHES (e.g. "4"),
# GPU_CHECK_TRAIN_STEPS (e.g. "2") and GPU_CHECK_FLAGSHIP (the flagship's arguments, e.g.
# "--synthetic 64 --batch-size 16 --epochs 1 --dataset cifar10").
#
# Set for every stage: TAPEGRAD_CUDA_NO_CPU_FALLBACK=1 (an f32 convolution without a cuDNN
# algorithm is an error, not a silent CPU run), REQUIRE_GPU=1 (a skipped GPU test fails),
# TAPEGRAD_KERNEL_CACHE (one NVRTC cache for all the processes of this run).
#
# Libraries: the NVIDIA wheels of the Python install (nvidia/cu13/lib, nvidia/cudnn/lib,
# nvidia/nccl/lib, ...) come first on LD_LIBRARY_PATH, then CUDA_HOME's lib64; every `stubs`
# folder is dropped, so neither a toolkit's nor a stub libcuda.so shadows the driver's.
# cudarc loads `libnccl.so`, the wheels ship `libnccl.so.2`: the NCCL stage links one to
# the other in a folder of its own.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle="${GPU_BUNDLE:-target/gpu-bundle}"
py="${PYTHON:-python3}"
out="${OUT:-$(mktemp -d)}"
quick="${GPU_CHECK_QUICK:-0}"
work="$(mktemp -d)"
logs="$work/gpu-check-logs"
mkdir -p "$out" "$logs"
summary="$logs/summary.txt"
: > "$summary"

if [[ "$quick" == 1 ]]; then
  budget="${GPU_CHECK_BUDGET_S:-170}"
  train_batches=(${GPU_CHECK_TRAIN_BATCHES:-64})
  train_steps=(--steps "${GPU_CHECK_TRAIN_STEPS:-5}" --warmup 2)
  micro_flags=(--quick)
  flagship=(${GPU_CHECK_FLAGSHIP:---synthetic 256 --batch-size 64 --epochs 1 --dataset cifar10})
else
  budget="${GPU_CHECK_BUDGET_S:-450}"
  train_batches=(${GPU_CHECK_TRAIN_BATCHES:-64 256})
  train_steps=(--steps "${GPU_CHECK_TRAIN_STEPS:-20}" --warmup 5)
  micro_flags=()
  flagship=(${GPU_CHECK_FLAGSHIP:---synthetic 8192 --epochs 2})
fi
deadline=$((SECONDS + budget))
# Kept back at the end for the summary and the tarball.
reserve=10

# The tarball, whatever happens (a timeout of the whole call included).
finish() {
  trap - EXIT INT TERM
  cp "$summary" "$out/gpu-check-summary.txt" 2>/dev/null
  tar -czf "$out/gpu-check-logs.tar.gz" -C "$work" gpu-check-logs 2>/dev/null \
    && echo "gpu-check: logs in $out/gpu-check-logs.tar.gz ($(du -k "$out/gpu-check-logs.tar.gz" | cut -f1) KiB)"
}
trap finish EXIT
trap 'echo "gpu-check: interrupted" | tee -a "$summary"; exit 130' INT TERM

# Prints and records a line of the summary.
note() { echo "$*" | tee -a "$summary"; }

declare -A outcome
order=()
status=0

# run_stage NAME MAX_SECONDS COMMAND...: runs COMMAND (output to $logs/NAME.log) under a
# timeout that fits the budget; records "passed/FAILED/TIMEOUT/skipped" and its seconds.
run_stage() {
  local name="$1" max="$2"
  shift 2
  order+=("$name")
  local left=$((deadline - SECONDS - reserve))
  local limit=$((max < left ? max : left))
  if ((limit < 5)); then
    outcome[$name]="skipped (out of time)"
    note "stage $name: ${outcome[$name]}"
    return 1
  fi
  local start=$SECONDS rc
  timeout -k 5 "$limit" "$@" > "$logs/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    outcome[$name]="passed in ${took} s"
  elif ((rc == 124 || rc == 137)); then
    outcome[$name]="TIMEOUT after ${limit} s"
    status=1
  else
    outcome[$name]="FAILED (exit $rc) in ${took} s"
    status=1
  fi
  note "stage $name: ${outcome[$name]}"
  return $rc
}

# Failing tests of a libtest log, their panic messages, and the result lines.
test_failures() {
  {
    grep -E '^test .* FAILED$|^test result|^error' "$1"
    grep -E -A3 'panicked at|tapegrad warning|failed:' "$1" \
      | grep -vE '^\s*$|^\s+(at |[0-9]+: )|^note: |^stack backtrace|^--$|^test .* ok$'
  } | head -40
}

# --- libraries -------------------------------------------------------------------------
libs=()
nvidia_roots="$("$py" -c 'import nvidia, os; print("\n".join(os.path.abspath(p) for p in nvidia.__path__))' 2>/dev/null || true)"
while IFS= read -r root; do
  [[ -n "$root" ]] || continue
  for d in "$root"/cu13/lib "$root"/cudnn/lib "$root"/*/lib; do
    [[ -d "$d" ]] && libs+=("$d")
  done
done <<< "$nvidia_roots"
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
for d in "$cuda_home/lib64" "$cuda_home/lib"; do [[ -d "$d" ]] && libs+=("$d"); done
IFS=: read -r -a inherited <<< "${LD_LIBRARY_PATH:-}"
libs+=("${inherited[@]}")
path=()
declare -A seen
for d in "${libs[@]}"; do
  [[ -n "$d" && -z "${seen[$d]:-}" ]] || continue
  seen[$d]=1
  if [[ "$d" == */stubs || "$d" == */stubs/* ]]; then
    echo "gpu-check: dropped $d from LD_LIBRARY_PATH (a stub libcuda.so would shadow the driver's)"
    continue
  fi
  path+=("$d")
done
LD_LIBRARY_PATH="$(IFS=:; echo "${path[*]}")"
export LD_LIBRARY_PATH REQUIRE_GPU=1 TAPEGRAD_CUDA_NO_CPU_FALLBACK=1 TAPEGRAD_KERNEL_CACHE="$work/kernel-cache"
export PYTHONUNBUFFERED=1

note "== gpu-check $(date -u +%FT%TZ) quick=$quick budget=${budget}s =="
note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
# The release bundle is one archive (scripts/build-gpu-bundle.sh); a dev bundle is unpacked.
if [[ -f "$bundle/gpu-bundle.tar.xz" ]]; then
  mkdir -p "$work/bundle"
  if command -v xz > /dev/null; then
    tar -xJf "$bundle/gpu-bundle.tar.xz" -C "$work/bundle"
  else
    "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$bundle/gpu-bundle.tar.xz" "$work/bundle"
  fi
  bundle="$work/bundle"
fi
missing=()
for bin in cuda_preflight cuda_ops cuda_micro resnet_train; do [[ -x "$bundle/$bin" ]] || missing+=("$bin"); done
if ((${#missing[@]})); then
  note "gpu-check: ${missing[*]} missing from $bundle; run scripts/build-gpu-bundle.sh (and carry $bundle)"
  exit 2
fi

# --- 1. preflight ----------------------------------------------------------------------
preflight_ok=1
run_stage preflight 60 env CUDA_LAUNCH_BLOCKING=1 "$bundle/cuda_preflight" --nocapture --test-threads=1 || preflight_ok=0
grep -oE 'preflight: .*|panicked.*|SKIPPED.*|error.*' "$logs/preflight.log" | head -30 | tee -a "$summary"
run_stage torch_preflight 60 "$py" - <<'PY'
import os, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"device: {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}")
x = torch.randn(8, 3, 16, 16, device="cuda")
w = torch.randn(4, 3, 3, 3, device="cuda")
torch.nn.functional.conv2d(x, w).sum().item()
(x.flatten(1) @ x.flatten(1).T).sum().item()
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if any(n in l for n in ("libcuda", "libcudnn", "libcublas", "libnvrtc"))})
for path in libs:
    print("torch loaded", path)
PY
grep -vE '^$' "$logs/torch_preflight.log" | tail -12 | tee -a "$summary"

sweep=(unary_ops_match_cpu binary_ops_broadcast_like_cpu elementwise_ops_treat_nan_and_inf_like_cpu reductions_match_cpu
  matmul_matches_cpu conv2d_through_cudnn_matches_cpu)
if ((preflight_ok)); then
  run_stage op_sweep 90 env CUDA_LAUNCH_BLOCKING=1 "$bundle/cuda_ops" --test-threads=1 "${sweep[@]}" || preflight_ok=0
  grep -E '^test |^test result' "$logs/op_sweep.log" | tee -a "$summary"
fi

if ((!preflight_ok)); then
  note ""
  note "== preflight FAILED: benchmarks skipped, diagnosis follows =="
  {
    [[ "${outcome[preflight]}" == passed* ]] || test_failures "$logs/preflight.log"
    [[ -f "$logs/op_sweep.log" ]] && test_failures "$logs/op_sweep.log"
  } | tee -a "$summary"
  failing=$(grep -hE '^test .* FAILED$' "$logs/op_sweep.log" 2>/dev/null | awk '{print $2}')
  diag_env=(CUDA_LAUNCH_BLOCKING=1 RUST_BACKTRACE=1 CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr
    CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG=stderr)
  if [[ -z "$failing" ]]; then
    run_stage diag_preflight 60 env "${diag_env[@]}" "$bundle/cuda_preflight" --nocapture --test-threads=1
    tail -60 "$logs/diag_preflight.log" | tee -a "$summary"
  fi
  for t in $failing; do
    run_stage "diag_$t" 60 env "${diag_env[@]}" "$bundle/cuda_ops" --exact "$t" --nocapture --test-threads=1
    grep -vE '^\s+at /rustc' "$logs/diag_$t.log" | tail -60 | tee -a "$summary"
  done
  {
    echo "-- libraries on the search path and in the linker cache --"
    for d in "${path[@]}"; do ls -l "$d" 2>/dev/null | grep -E 'libcuda|libnvrtc|libcublas|libcudnn|libnvJitLink' | sed "s|^|$d: |"; done
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.|libnvrtc|libcublas|libcudnn' | head -20
    nvidia-smi 2>&1 | head -25
  } > "$logs/diag_libraries.log" 2>&1
  head -60 "$logs/diag_libraries.log" | tee -a "$summary"
fi

# --- tables ------------------------------------------------------------------------------
# training_table: ours beside PyTorch per RESULT name, into table_training.txt and printed.
training_table() {
  "$py" - "$logs"/train_*.log > "$logs/table_training.txt" 2>&1 <<'PY'
import os, sys
cols = {"ours": {}, "torch NCHW": {}, "torch CL": {}}
for path in sys.argv[1:]:
    base = os.path.basename(path)
    col = "ours" if base.startswith("train_ours") else "torch CL" if "_cl" in base else "torch NCHW"
    for line in open(path, errors="replace"):
        p = line.split()
        if len(p) == 4 and p[0] == "RESULT":
            cols[col][p[1]] = (float(p[2]), p[3])
names = list(dict.fromkeys(n for c in cols.values() for n in c))
def mode(name):
    tags = {"_graph": "graph", "_tf32": "TF32", "_bench": "measured", "_bf16": "bf16-amp", "_compile": "compiled"}
    return "+".join(v for k, v in tags.items() if k in name) or "f32"
print(f"\n{'training (seed ResNet18, Adam)':<36} {'mode':<9} {'tapegrad':>9} {'torch NCHW':>10} {'torch CL':>9} {'unit':<6} {'ratio':>6}")
for name in names:
    precision = mode(name)
    # A CUDA-graph row of ours stands beside PyTorch eager's row of the same batch.
    eager = name.replace("_cuda_graph", "_cuda")
    v = [cols[c].get(name, cols[c].get(eager, (None, "")) if c != "ours" else (None, ""))[0] for c in cols]
    unit = next(cols[c][name][1] for c in cols if name in cols[c])
    torch = [x for x in v[1:] if x]
    ratio = "-"
    if v[0] and torch:
        ratio = f"{(v[0] / max(torch)) if unit == 'img/s' else (min(torch) / v[0]):.2f}"
    fmt = lambda x: f"{x:.1f}" if x is not None else "-"
    print(f"{name:<36} {precision:<9} {fmt(v[0]):>9} {fmt(v[1]):>10} {fmt(v[2]):>9} {unit:<6} {ratio:>6}")
print("(ratio > 1: tapegrad ahead of PyTorch eager's better memory format; memory ratio = torch / ours)")
PY
  cat "$logs/table_training.txt"
}

# micro_table: ours beside PyTorch per RESULT name, into table_micro.txt and printed.
micro_table() {
  "$py" - "$logs"/micro_ours*.log -- "$logs"/micro_torch*.log > "$logs/table_micro.txt" 2>&1 <<'PY'
import sys
args = sys.argv[1:]
split = args.index("--")
def read(paths):
    rows = {}
    for path in paths:
        try:
            for line in open(path, errors="replace"):
                p = line.split()
                if len(p) == 4 and p[0] == "RESULT":
                    rows[p[1]] = (float(p[2]), p[3])
        except FileNotFoundError:
            pass
    return rows
ours, torch = read(args[:split]), read(args[split + 1:])
print(f"\n{'micro-benchmark':<34} {'precision':<9} {'tapegrad':>10} {'torch':>10} {'unit':<8} {'ratio':>6}")
for name in list(ours) + [n for n in torch if n not in ours]:
    o, t = ours.get(name, (None, "")), torch.get(name, (None, ""))
    precision = "TF32" if name.endswith("_tf32") else "f32"
    ratio = f"{o[0] / t[0]:.2f}" if o[0] and t[0] else "-"
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    print(f"{name:<34} {precision:<9} {fmt(o[0]):>10} {fmt(t[0]):>10} {o[1] or t[1]:<8} {ratio:>6}")
print("(ratio = tapegrad / torch, higher is better; f32 rows: TF32 off on both sides)")
PY
  cat "$logs/table_micro.txt"
}

test_table() {
  note ""
  note "== GPU tests =="
  for t in "${tests[@]}"; do
    local log="$logs/test_$t.log" counts
    counts=$(grep -hE '^test result' "$log" 2>/dev/null | tail -1 | sed -E 's/^test result: //; s/; finished.*//')
    note "$(printf '%-22s %-34s %s' "$t" "${outcome[test_$t]:-not run}" "$counts")"
    if [[ "${outcome[test_$t]:-}" != passed* && -f "$log" ]]; then
      test_failures "$log" | sed 's/^/    /' | tee -a "$summary"
    fi
  done
}

# train MODE BATCH [FLAGS...]: one training measurement into its log.
train() {
  local who="$1" b="$2"
  shift 2
  case "$who" in
    ours) run_stage "train_ours_b${b}$1" 120 "$bundle/resnet_train" --device cuda --batch "$b" "${train_steps[@]}" "${@:2}" ;;
    torch) run_stage "train_torch_b${b}$1" 120 "$py" benches/resnet_train_torch.py --device cuda --batch "$b" \
      "${train_steps[@]}" "${@:2}" ;;
  esac
}

if ((preflight_ok)); then
  # --- 2. training at the first batch size, strict f32 -----------------------------------
  b="${train_batches[0]}"
  train ours "$b" ""
  train ours "$b" "_graph" --cuda-graph
  train torch "$b" "_nchw"
  train torch "$b" "_cl" --channels-last
  training_table
fi

# --- 3. the GPU tests ----------------------------------------------------------------------
all_tests=(cuda_ops cuda_conv_algorithms cuda_activations cuda_training cuda_graph cuda_low_precision cuda_conv_relu cuda_graph_training cuda_gather
  cuda_group_norm cuda_grouped_conv cuda_resize_pad cuda_fit torch_trajectory)
# Quick mode: the op tests, the convolution algorithms, one whole training step, bf16/f16
# and the fused conv-bias-activation call (its cuDNN rules are the least tried).
[[ "$quick" == 1 ]] && all_tests=("${all_tests[@]:0:7}")
tests=()
for t in "${all_tests[@]}"; do
  [[ -x "$bundle/$t" ]] && tests+=("$t")
done
for t in "${tests[@]}"; do
  run_stage "test_$t" 180 env CUDA_LAUNCH_BLOCKING=1 "$bundle/$t" --test-threads=1
done
test_table

# NCCL on one GPU: a single-rank communicator (the 2-GPU tests run on the emulator in CI).
nccl_lib=""
for d in "${path[@]}"; do
  for f in "$d/libnccl.so" "$d/libnccl.so.2"; do
    [[ -e "$f" && -z "$nccl_lib" ]] && nccl_lib="$f"
  done
done
[[ -z "$nccl_lib" ]] && nccl_lib="$(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*libnccl\.so(\.2)?$' | head -1)"
if [[ ! -x "$bundle/nccl" ]]; then
  note "stage test_nccl: skipped (no nccl binary in the bundle; rebuild it with scripts/build-gpu-bundle.sh)"
elif [[ -z "$nccl_lib" ]]; then
  note "stage test_nccl: skipped (no libnccl.so or libnccl.so.2 on LD_LIBRARY_PATH or in ldconfig's cache;" \
    "pip install nvidia-nccl-cu12, or apt-get install libnccl2)"
else
  nccl_dir="$work/nccl-lib"
  mkdir -p "$nccl_dir"
  ln -sf "$nccl_lib" "$nccl_dir/libnccl.so"
  note "nccl: $nccl_lib"
  run_stage test_nccl 90 env CUDA_LAUNCH_BLOCKING=1 LD_LIBRARY_PATH="$nccl_dir:$LD_LIBRARY_PATH" \
    "$bundle/nccl" --test-threads=1 single_rank_all_reduce_and_data_parallel_step bad_groups_are_refused_naming_the_problem
  grep -E '^test |^test result' "$logs/test_nccl.log" | tee -a "$summary"
  [[ "${outcome[test_nccl]}" == passed* ]] || test_failures "$logs/test_nccl.log" | sed 's/^/    /' | tee -a "$summary"
fi

if ((preflight_ok)); then
  # --- 4. micro-benchmarks, strict f32 ---------------------------------------------------
  run_stage micro_ours 90 "$bundle/cuda_micro" "${micro_flags[@]}"
  run_stage micro_torch 90 "$py" benches/cuda_micro_torch.py "${micro_flags[@]}"
  micro_table

  # --- 5. larger batches and TF32 (full mode) ----------------------------------------------
  if [[ "$quick" != 1 ]]; then
    for b in "${train_batches[@]:1}"; do
      train ours "$b" ""
      train torch "$b" "_nchw"
      train torch "$b" "_cl" --channels-last
    done
    b="${train_batches[0]}"
    train ours "$b" "_tf32" --tf32
    train torch "$b" "_cl_tf32" --channels-last --tf32
    # cuDNN algorithms chosen by measurement on both sides (cudnn.benchmark).
    train ours "$b" "_bench" --cudnn-benchmark
    train torch "$b" "_cl_bench" --channels-last --cudnn-benchmark
    training_table
    run_stage micro_ours_tf32 60 "$bundle/cuda_micro" --tf32
    run_stage micro_torch_tf32 60 "$py" benches/cuda_micro_torch.py --tf32
    micro_table
  fi

  # --- 6. the flagship ---------------------------------------------------------------------
  if [[ -x "$bundle/resnet_cifar100" ]]; then
    flagship_dir="$(mktemp -d)"
    run_stage flagship 120 "$bundle/resnet_cifar100" "${flagship[@]}" --device cuda --checkpoint-dir "$flagship_dir"
    note "flagship (${flagship[*]}): $(grep -E '^done:' "$logs/flagship.log" | tail -1)"
  fi

  # --- 7. PyTorch's faster modes, for tapegrad's bf16 and CUDA-graph modes (full mode) ------
  if [[ "$quick" != 1 ]]; then
    b="${train_batches[0]}"
    train ours "$b" "_bf16" --bf16
    train ours "$b" "_graph_bf16" --cuda-graph --bf16
    train torch "$b" "_cl_bf16" --channels-last --bf16
    train torch "$b" "_cl_compile" --channels-last --compile reduce-overhead
    training_table
  fi
fi

# --- summary -------------------------------------------------------------------------------
warnings=$(cat "$logs"/*.log 2>/dev/null | grep -h 'tapegrad warning' | sort | uniq -c | head -20)
cache_entries=$(find "$TAPEGRAD_KERNEL_CACHE" -name '*.bin' 2>/dev/null | wc -l)
{
  echo
  echo "== gpu-check summary (quick=$quick, $SECONDS s of ${budget} s) =="
  for s in "${order[@]}"; do printf '%-34s %s\n' "$s" "${outcome[$s]}"; done
  echo "kernel cache: $cache_entries images in $TAPEGRAD_KERNEL_CACHE"
  [[ -n "$warnings" ]] && echo "warnings:" && echo "$warnings"
} | tee -a "$summary"
# The tables again, so that they sit at the end of the output (and in the summary file).
cat "$logs"/table_training.txt "$logs"/table_micro.txt 2>/dev/null | tee -a "$summary"
echo "gpu-check: exit status $status"
exit $status
