#!/usr/bin/env bash
# scripts/cuda-emu/run.sh — runs a command against the emulated GPU (see build.sh), e.g.
#   scripts/nvrtc-check.sh -- scripts/cuda-emu/run.sh -- cargo test -p tapegrad-tensor --features cuda --test cuda_ops
# (NVRTC must be loadable: nvrtc-check.sh provides it.) Sets REQUIRE_GPU=1 so a test that
# would skip fails instead. The fake libnccl (libnccl.so, fake_nccl.cpp) is in the same folder;
# TAPEGRAD_EMU_DEVICES=2 before the command gives the emulated GPU two devices.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[[ "${1:-}" == "--" ]] && shift
"$root/scripts/cuda-emu/build.sh"
export LD_LIBRARY_PATH="$root/target/cuda-emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REQUIRE_GPU=1
exec "$@"
