// Host emulation of the CUDA builtins tapegrad's kernels use (scripts/cuda-emu/build.sh):
// included in front of prelude.cuh and a .cu source, the kernels compile with g++ into host
// functions that fake_driver.cpp's cuLaunchKernel runs for every (block, thread).
// `__shared__` becomes `static`: the fake driver runs one block at a time.
#pragma once
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <vector>
#include <memory>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static

void emu_syncthreads();
void emu_syncwarp();
uint64_t* emu_shuffle_slots();
inline void __syncthreads() { emu_syncthreads(); }

template <typename T> T __shfl_down_sync(unsigned, T v, int offset) {
    uint64_t* slots = emu_shuffle_slots();
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    slots[threadIdx.x] = bits;
    emu_syncwarp();
    T r = v;
    if ((threadIdx.x % 32) + offset < 32) memcpy(&r, &slots[threadIdx.x + offset], sizeof(T));
    emu_syncwarp();
    return r;
}
template <typename T> inline T min(T a, T b) { return a < b ? a : b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double f; memcpy(&f, &i, 8); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }

// Kernel registry: `invoke` unpacks cuLaunchKernel's parameter pointers into the kernel's
// own parameter types; `sync` kernels run their threads as fibers (fibers.cpp: barriers work).
struct KernelEntry { const char* name; void (*invoke)(void**); bool sync; };
void emu_register(KernelEntry e);
// Runs every block of a `sync` kernel, one fiber per CUDA thread; nonzero on failure.
int emu_run_cooperative(KernelEntry* kernel, unsigned grid, unsigned block, void** params);
// The kernel being run, for messages.
extern const char* emu_running_kernel;
#include <utility>
#include <type_traits>
template <typename... A, size_t... I>
void emu_call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(p[I])...);
}
template <typename... A> void emu_call_f(void (*f)(A...), void** p) { emu_call(f, p, std::index_sequence_for<A...>{}); }

// Stream capture (fake_graph.cpp) must keep a launch's arguments by value, as a real driver
// copies them into the graph's kernel node: while `emu_param_copy` is set, `invoke` does not
// run the kernel but stores a copy of its arguments there (whose `ptrs` a replay passes back).
#include <tuple>
struct EmuParamCopy {
    virtual ~EmuParamCopy() = default;
    std::vector<void*> ptrs;
};
template <typename... A> struct EmuParamTuple : EmuParamCopy {
    std::tuple<std::remove_cv_t<A>...> values;
    template <size_t... I>
    EmuParamTuple(void** p, std::index_sequence<I...>) : values(*static_cast<std::remove_cv_t<A>*>(p[I])...) {
        std::apply([this](auto&... v) { (ptrs.push_back(static_cast<void*>(&v)), ...); }, values);
    }
};
extern thread_local std::unique_ptr<EmuParamCopy>* emu_param_copy;
template <typename... A> void emu_copy_f(void (*)(A...), void** p) {
    emu_param_copy->reset(new EmuParamTuple<A...>(p, std::index_sequence_for<A...>{}));
}
template <auto F> void emu_invoke(void** p) {
    if (emu_param_copy) return emu_copy_f(F, p);
    emu_call_f(F, p);
}
