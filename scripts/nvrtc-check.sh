#!/usr/bin/env bash
# scripts/nvrtc-check.sh — run a command with NVIDIA's NVRTC (and optionally ptxas, cuBLAS, cuDNN)
# installed from PyPI into a local folder. No GPU, no CUDA toolkit, no driver needed.
#
# Usage:
#   ./nvrtc-check.sh [--ptxas] [--libs] [--] COMMAND [ARGS...]
#
#   --ptxas   also install nvidia-cuda-nvcc (for the standalone `ptxas` binary, ~37 MB)
#   --libs    also install nvidia-cublas + nvidia-cudnn-cu13 (~930 MB download, ~1.5 GB on disk)
#
# What COMMAND gets:
#   LD_LIBRARY_PATH     += <prefix>/nvidia/cu13/lib (libnvrtc.so.13, libcublas*.so.13, libcudart.so.13)
#                        + <prefix>/nvidia/cudnn/lib (libcudnn*.so.9, with --libs)
#   NVRTC_INCLUDE_PATH  =  <prefix>/nvidia/cu13/include (cuda_fp16.h, cuda_bf16.h, ... — NVRTC
#                          has no built-in copies of these; pass it as an include path)
#   PATH                += <prefix>/nvidia/cu13/bin (ptxas, with --ptxas)
#   REQUIRE_NVRTC=1        so tests that would skip without libnvrtc fail instead
#
# Environment overrides:
#   CUDA_PY_PREFIX   install folder (default: $HOME/.cache/nvrtc-check; must be writable)
#   NVRTC_VERSION    nvidia-cuda-nvrtc version   (default 13.0.88  -> PTX ISA 9.0, loads on any CUDA 13 driver)
#   CUDART_VERSION   nvidia-cuda-runtime version (default 13.0.96  -> headers only are used)
#   NVCC_VERSION     nvidia-cuda-nvcc version    (default 13.0.88)
#   CUBLAS_VERSION   nvidia-cublas version       (default 13.0.2.14)
#   CUDNN_VERSION    nvidia-cudnn-cu13 version   (default 9.21.1.3 = cudarc 0.19's cudnn-09021 bindings)
#   PIP              pip command (default: python3 -m pip)
set -euo pipefail


prefix="${CUDA_PY_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/nvrtc-check}"
want_ptxas=0
want_libs=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ptxas) want_ptxas=1; shift ;;
    --libs) want_libs=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "usage: $0 [--ptxas] [--libs] [--] COMMAND [ARGS...]" >&2
  exit 2
fi

pkgs=(
  "nvidia-cuda-nvrtc==${NVRTC_VERSION:-13.0.88}"
  "nvidia-cuda-runtime==${CUDART_VERSION:-13.0.96}"
)
[[ $want_ptxas == 1 ]] && pkgs+=("nvidia-cuda-nvcc==${NVCC_VERSION:-13.0.88}")
[[ $want_libs == 1 ]] && pkgs+=(
  "nvidia-cublas==${CUBLAS_VERSION:-13.0.2.14}"
  "nvidia-cudnn-cu13==${CUDNN_VERSION:-9.21.1.3}"
)

# Install everything in ONE pip call into a fresh folder: `pip install --target` does not
# merge into an existing nvidia/ folder (it warns "Target directory ... already exists" and
# skips it), so adding packages one call at a time silently loses files.
stamp="$prefix/.nvrtc-check-packages"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "${pkgs[*]}" ]]; then
  echo "nvrtc-check: installing ${pkgs[*]} into $prefix" >&2
  rm -rf "$prefix"
  start=$SECONDS
  # --no-deps: nvidia-cuda-nvcc would pull nvidia-nvvm (75 MB) + crt, which ptxas does not need;
  # nvidia-cudnn-cu13 depends on nvidia-cublas, which --libs lists explicitly.
  ${PIP:-python3 -m pip} install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --only-binary=:all: --target "$prefix" "${pkgs[@]}"
  echo "${pkgs[*]}" > "$stamp"
  echo "nvrtc-check: installed in $((SECONDS - start))s ($(du -sh "$prefix" | cut -f1))" >&2
fi

lib="$prefix/nvidia/cu13/lib"
[[ -e "$lib/libnvrtc.so.13" ]] || { echo "nvrtc-check: $lib/libnvrtc.so.13 missing" >&2; exit 1; }
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[[ -d "$prefix/nvidia/cudnn/lib" ]] && export LD_LIBRARY_PATH="$prefix/nvidia/cudnn/lib:$LD_LIBRARY_PATH"
export NVRTC_INCLUDE_PATH="$prefix/nvidia/cu13/include"
[[ -d "$prefix/nvidia/cu13/bin" ]] && export PATH="$prefix/nvidia/cu13/bin:$PATH"
export REQUIRE_NVRTC="${REQUIRE_NVRTC:-1}"

exec "$@"
