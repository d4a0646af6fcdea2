#!/usr/bin/env bash
# The seed ResNet18 on the CPU, tapegrad beside PyTorch, interleaved (ours, theirs, ours,
# theirs, ...) so that both sides see the same machine. Prints one Markdown table with the
# host's CPU model, the date, every round's images/s and the median ratio ours/PyTorch.
#
#   scripts/bench-vs-torch.sh [--rounds 3] [--threads "1 2"] [--batch "64 256"]
#       [--modes "train infer"] [--layouts "channels_last"] [--steps 10] [--warmup 3]
#       [--arch resnet18] [--python python3]
#
# train: forward, tape gradient and Adam (benches/resnet_train.rs against
# benches/resnet_train_torch.py); infer: forward passes in inference mode. PyTorch runs in
# each of --layouts (channels_last, nchw); the ratio is taken against the first. Threads:
# RAYON_NUM_THREADS for us, torch.set_num_threads for PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 threads="1 2" batches="64 256" modes="train infer" layouts="channels_last"
steps=10 warmup=3 arch=resnet18 python="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2" ;;
    --threads) threads="$2" ;;
    --batch) batches="$2" ;;
    --modes) modes="$2" ;;
    --layouts) layouts="$2" ;;
    --steps) steps="$2" ;;
    --warmup) warmup="$2" ;;
    --arch) arch="$2" ;;
    --python) python="$2" ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-vs-torch: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  [[ $# -ge 2 ]] || { echo "bench-vs-torch: $1 needs a value" >&2; exit 2; }
  shift 2
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-torch: --rounds $rounds: expected a positive integer" >&2; exit 2; }
for m in $modes; do
  [[ "$m" == train || "$m" == infer ]] || { echo "bench-vs-torch: --modes: '$m' is neither train nor infer" >&2; exit 2; }
done
for l in $layouts; do
  [[ "$l" == channels_last || "$l" == nchw ]] || { echo "bench-vs-torch: --layouts: '$l' is neither channels_last nor nchw" >&2; exit 2; }
done
"$python" -c 'import torch' 2>/dev/null || { echo "bench-vs-torch: '$python' cannot import torch (give --python)" >&2; exit 2; }

echo "building benches/resnet_train.rs ..." >&2
ours_bin=$(cargo bench --bench resnet_train --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*resnet_train-[0-9a-f]*\)).*/\1/p' | tail -1)
[[ -x "$ours_bin" ]] || { echo "bench-vs-torch: could not build or find the resnet_train bench" >&2; exit 1; }

# The images/s of one RESULT line of a run, or "fail".
result() { awk '$1 == "RESULT" && $2 ~ /^(train|infer)_/ { print $3; found = 1 } END { if (!found) print "fail" }'; }
ours() { # mode batch threads
  local flag=(); [[ "$1" == infer ]] && flag=(--inference)
  RAYON_NUM_THREADS="$3" "$ours_bin" --arch "$arch" --batch "$2" --steps "$steps" --warmup "$warmup" "${flag[@]}" 2>&1 | result
}
theirs() { # mode batch threads layout
  local flag=(); [[ "$1" == infer ]] && flag=(--inference)
  [[ "$4" == channels_last ]] && flag+=(--channels-last)
  "$python" benches/resnet_train_torch.py --device cpu --arch "$arch" --batch "$2" --threads "$3" \
    --steps "$steps" --warmup "$warmup" "${flag[@]}" 2>&1 | result
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
echo
echo "$arch on the CPU, $(date -u '+%Y-%m-%d %H:%M UTC'), ${cpu:-unknown CPU} ($(nproc) cores), torch $torch_version," \
  "tapegrad $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $rounds interleaved rounds of $steps steps after $warmup" \
  "warm-up steps; images/s per round; ratio = ours / PyTorch ${layouts%% *}, median over rounds"
echo
header="| work | batch | threads | ours img/s |"
rule="| --- | ---: | ---: | --- |"
for l in $layouts; do header+=" PyTorch $l img/s |"; rule+=" --- |"; done
echo "$header ratio |"
echo "$rule ---: |"
for mode in $modes; do
  for batch in $batches; do
    for t in $threads; do
      ours_runs="" ratios=""
      declare -A theirs_runs=()
      for ((r = 1; r <= rounds; r++)); do
        o=$(ours "$mode" "$batch" "$t")
        ours_runs+="$o "
        first=""
        for l in $layouts; do
          p=$(theirs "$mode" "$batch" "$t" "$l")
          theirs_runs[$l]+="$p "
          [[ -z "$first" ]] && first=$p
        done
        if [[ "$o" != fail && "$first" != fail ]]; then
          ratios+="$(awk -v a="$o" -v b="$first" 'BEGIN { printf "%.3f", a / b }') "
        fi
      done
      row="| $mode | $batch | $t | ${ours_runs% } |"
      for l in $layouts; do row+=" ${theirs_runs[$l]% } |"; done
      echo "$row $(echo "$ratios" | median) |"
      unset theirs_runs
    done
  done
done
