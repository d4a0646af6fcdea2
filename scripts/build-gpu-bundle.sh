#!/usr/bin/env bash
# scripts/build-gpu-bundle.sh — builds the CUDA test and benchmark binaries here (release,
# no debug info) and copies them into one folder for a GPU machine that has no Rust:
#
#   target/gpu-bundle/cuda_preflight   versions, loaded libraries, a first matmul/conv (tests/cuda_preflight.rs)
#   target/gpu-bundle/cuda_ops         GPU tests of every op family (crates/tensor/tests/cuda_ops.rs), and the
#   target/gpu-bundle/cuda_*           other cuda_* test files: conv algorithms and fallback, activations,
#                                      gather, group norm, grouped conv, resize/pad, bf16/f16 (cuda_low_precision),
#                                      fused conv-bias-activation (cuda_conv_relu)
#   target/gpu-bundle/cuda_micro       micro-benchmarks (benches/cuda_micro.rs)
#   target/gpu-bundle/cuda_training    a seed ResNet18 step on CUDA vs the CPU (tests/cuda_training.rs)
#   target/gpu-bundle/cuda_fit         Trainer::fit on CUDA vs the CPU (tests/cuda_fit.rs)
#   target/gpu-bundle/torch_trajectory six training steps against PyTorch's trajectory (CPU and GPU)
#   target/gpu-bundle/resnet_train     training images/s of the seed ResNet (benches/resnet_train.rs)
#   target/gpu-bundle/resnet_cifar100  the flagship, for a short training run on synthetic data
#   target/gpu-bundle/nccl             the NCCL backend's tests (crates/distributed/tests/nccl.rs); on one
#                                      GPU gpu-check.sh runs its single-rank all-reduce and data-parallel step
#
# (The NVRTC compile test is not in the bundle: CI runs it.) The binaries (about 100 MiB,
# each links the whole tensor crate) are packed into target/gpu-bundle/gpu-bundle.tar.xz
# (xz finds the shared code: about a tenth of that), which scripts/gpu-check.sh unpacks;
# their symbols stay, so that backtraces name functions. Then, on the GPU machine, from the
# repository root: scripts/gpu-check.sh (with the device tool: carry target/gpu-bundle).
# Needs python3 (to read cargo's JSON) and xz. GPU_BUNDLE_PROFILE=dev builds the dev-profile
# binaries instead, unpacked in target/gpu-bundle (quicker here, far larger: for
# scripts/cuda-emu, not for a device).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=target/gpu-bundle
dev=0
[[ "${GPU_BUNDLE_PROFILE:-release}" == dev ]] && dev=1
# Where the binaries go: the bundle itself (dev), or a folder that is packed into it.
out=target/gpu-bundle-bin
((dev)) && out="$bundle"
rm -rf "$bundle" "$out"
mkdir -p "$bundle" "$out"

# Small binaries: no debug info in our code or the dependencies (the bundle travels).
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo

copy_executables() {
  python3 -c '
import json, shutil, sys
out, wanted = sys.argv[1], set(sys.argv[2:])
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] in wanted:
        name = msg["target"]["name"]
        shutil.copy(msg["executable"], out + "/" + name)
        wanted.discard(name)
if wanted:
    sys.exit(f"build-gpu-bundle: no executable for {sorted(wanted)}")
' "$out" "$@"
}

cuda_tests=(cuda_preflight cuda_ops cuda_conv_algorithms cuda_activations cuda_gather cuda_group_norm cuda_grouped_conv
  cuda_resize_pad cuda_graph cuda_low_precision cuda_conv_relu)
if ((dev)); then
  release=()
  # `cargo test` builds benches in the test profile (cargo build would use the bench one).
  bench_build=(test --no-run)
else
  release=(--release)
  # `build --release` rather than `bench --no-run`: the same profile as the tests, so the
  # dependencies are built once.
  bench_build=(build)
fi
cargo test "${release[@]}" --features cuda -p tapegrad-tensor "${cuda_tests[@]/#/--test=}" --no-run \
  --message-format=json-render-diagnostics | copy_executables "${cuda_tests[@]}"
cargo "${bench_build[@]}" "${release[@]}" --features cuda --bench cuda_micro --bench resnet_train \
  --message-format=json-render-diagnostics | copy_executables cuda_micro resnet_train
cargo build "${release[@]}" --features cuda --example resnet_cifar100 \
  --message-format=json-render-diagnostics | copy_executables resnet_cifar100
cargo test "${release[@]}" --features cuda --test cuda_training --test cuda_fit --test cuda_graph_training --test torch_trajectory --no-run \
  --message-format=json-render-diagnostics | copy_executables cuda_training cuda_fit cuda_graph_training torch_trajectory
# libnccl is loaded at run time, so this builds without NCCL installed.
cargo test "${release[@]}" -p tapegrad-distributed --features nccl --test nccl --no-run \
  --message-format=json-render-diagnostics | copy_executables nccl

ls -l "$out"
if ((!dev)); then
  echo "build-gpu-bundle: $(($(du -sb "$out" | cut -f1) / 1024 / 1024)) MiB of binaries; packing them" >&2
  tar -C "$out" -cf - . | xz -9 -T2 > "$bundle/gpu-bundle.tar.xz"
fi
size=$(du -sb "$bundle" | cut -f1)
echo "build-gpu-bundle: $((size / 1024 / 1024)) MiB in $bundle" >&2
if ((!dev)) && ((size > 60 * 1024 * 1024)); then
  echo "build-gpu-bundle: over 60 MiB; the device tool carries at most 64 MiB" >&2
  exit 1
fi
