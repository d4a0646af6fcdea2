"""Writes one C++ file per kernel source that compiles the .cu for the host (emu.h in
front of prelude.cuh) and registers each `extern "C"` kernel with the fake driver.

usage: register.py CRATE_SRC OUT_DIR
"""
import pathlib
import re
import subprocess
import sys

# Kernels whose threads cooperate within a block (__syncthreads, warp shuffles): the fake
# driver runs their blocks with one fiber per CUDA thread (fibers.cpp). Every other kernel runs its
# threads one after another (it aborts if one of them synchronises after all).
COOPERATIVE_PREFIXES = (
    "reduce_rows_", "log_softmax_", "gn_moments_", "gn_backward_sums_", "bn_merge_moments_", "bn_backward_merge_"
)

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
here = pathlib.Path(__file__).resolve().parent
prelude = (src / "cuda_backend" / "prelude.cuh").read_text()
total = 0
for cu in sorted(src.glob("ops/*/*.cu")):
    text = prelude + "\n" + cu.read_text()
    expanded = subprocess.run(
        ["g++", "-E", "-P", "-x", "c++", "-std=c++20", "-include", str(here / "emu.h"), "-"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
    names = re.findall(r'extern "C"\s+void\s+(\w+)\s*\(', expanded)
    lines = [
        '#include "emu.h"',
        f'#include "{src / "cuda_backend" / "prelude.cuh"}"',
        f'#include "{cu}"',
        "namespace {",
        "struct Registrar {",
        "    Registrar() {",
    ]
    for name in names:
        coop = "true" if name.startswith(COOPERATIVE_PREFIXES) else "false"
        lines.append(f'        emu_register(KernelEntry{{"{name}", &emu_invoke<&{name}>, {coop}}});')
    lines += ["    }", "} registrar;", "}  // namespace"]
    (out / f"k_{cu.stem}.cpp").write_text("\n".join(lines) + "\n")
    total += len(names)
print(f"cuda-emu: {total} kernels registered", file=sys.stderr)
