#!/usr/bin/env bash
# scripts/cuda-emu/build.sh — builds a fake CUDA driver + cuBLAS that run tapegrad's kernels on
# the host, into target/cuda-emu/ (libcuda.so, libcublas.so, libcudnn.so and libnccl.so, one
# library; TAPEGRAD_EMU_DEVICES=n gives it n devices, between which fake_nccl.cpp reduces).
#
# Why: without a GPU, the CUDA backend's host code (cudarc calls, allocator, launch
# arguments, kernel names, reduction plans, the cuBLAS mapping) and its kernels' index
# arithmetic still run end to end: crates/tensor/tests/cuda_ops.rs compares every op with
# the CPU backend. The kernels are the real .cu sources compiled with g++ behind emu.h;
# kernels run synchronously (one stream is in order anyway; only the fake NCCL's queued
# collectives complete later, pending.h); cuBLAS is a naive
# column-major GEMM; cuDNN's convolutions are naive loops (fake_cudnn.cpp). Stream capture
# and graph replay record and replay that work, and reject what a real driver rejects
# during capture (fake_graph.cpp, capture.h). NVRTC (real,
# from scripts/nvrtc-check.sh) still compiles every kernel for sm_90; the fake driver
# ignores the CUBIN and runs the host build.
#
# Not covered: anything only a GPU shows (timing, real memory limits, races between
# threads, the driver's handling of our CUBINs).
#
# Note: there is deliberately no libcuda.so.1: NVRTC dlopens that name when it exists and
# crashes on a fake one. cudarc tries libcuda.so first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/scripts/cuda-emu"
out="$root/target/cuda-emu"
mkdir -p "$out"
python3 "$here/register.py" "$root/crates/tensor/src" "$out"
# The cuDNN calls that queue work are wrapped for stream capture (fake_cudnn_capture.cpp):
# fake_cudnn.cpp is compiled with them renamed emu_eager_<name>.
WRAPPED=(cudnnSetStream cudnnSetTensor4dDescriptor cudnnConvolutionForward cudnnConvolutionBackwardData
  cudnnConvolutionBackwardFilter cudnnConvolutionBiasActivationForward cudnnAddTensor cudnnFindConvolutionForwardAlgorithmEx
  cudnnFindConvolutionBackwardDataAlgorithmEx cudnnFindConvolutionBackwardFilterAlgorithmEx)
renames=()
for name in "${WRAPPED[@]}"; do renames+=("-D$name=emu_eager_$name"); done
export EMU_RENAMES="${renames[*]}"
# CI runs the emulator three times: rebuild only when a source (or this script) changed.
stamp="$(cat "$0" "$here"/*.cpp "$here"/*.h "$out"/k_*.cpp | sha256sum | cut -d' ' -f1)"
if [[ -f "$out/libtapegrad_cuda_emu.so" && "$(cat "$out/stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "cuda-emu: up to date"
else
  rm -f "$out/stamp" "$out"/*.o
  flags=(-std=c++20 -O2 -fPIC -w -fvisibility=hidden -I"$here")
  # One object per source, compiled in parallel (one g++ over all of them is serial).
  {
    printf '%s\0' "$here/fake_cudnn.cpp"
    for src in "$here/fake_driver.cpp" "$here/fibers.cpp" "$here/fake_graph.cpp" "$here/fake_cudnn_capture.cpp" "$here/fake_nccl.cpp" "$here/fake_nccl_shm.cpp" \
      "$out"/k_*.cpp; do
      printf '%s\0' "$src"
    done
  } | xargs -0 -P "$(nproc)" -I{} sh -c '
      src="$1"; shift; out="$1"; shift
      obj="$out/$(basename "$src" .cpp).o"
      case "$src" in */fake_cudnn.cpp) set -- "$@" $EMU_RENAMES ;; esac
      exec g++ "$@" -c -o "$obj" "$src"' _ {} "$out" "${flags[@]}"
  g++ -shared -o "$out/libtapegrad_cuda_emu.so" "$out"/*.o -lpthread
  echo "$stamp" >"$out/stamp"
fi
ln -sf libtapegrad_cuda_emu.so "$out/libcuda.so"
ln -sf libtapegrad_cuda_emu.so "$out/libcublas.so"
ln -sf libtapegrad_cuda_emu.so "$out/libcudnn.so"
# The fake NCCL (fake_nccl.cpp) is in the same library, so it sees the fake driver's
# devices; cudarc loads `libnccl.so`, real installs ship `libnccl.so.2`: both names.
ln -sf libtapegrad_cuda_emu.so "$out/libnccl.so"
ln -sf libtapegrad_cuda_emu.so "$out/libnccl.so.2"
rm -f "$out/libcuda.so.1"
