// A fake libcuda + libcublas that runs tapegrad's kernels on the host (see build.sh).
// TAPEGRAD_EMU_DEVICES=n (default 1, at most 8) gives n devices, each with its own context
// and streams, which threads may drive at once (kernels run one at a time: fake_graph.cpp's
// emu_stream_work holds one lock while work runs); fake_nccl.cpp reduces across them.
// Device pointers are host pointers; every call completes before it returns, which is
// what a single in-order stream guarantees anyway, except while a stream captures a graph:
// then work queued on it is recorded and checked as a real driver would (fake_graph.cpp),
// and except for work that completes later (the fake libnccl's queued collectives), which
// later work, synchronisation and events on its stream wait for (pending.h). Only the
// entry points cudarc calls for tapegrad are here: a missing one makes cudarc panic with
// "Missing symbol ...".
#include "emu.h"
#include "capture.h"
#include "pending.h"
#include <condition_variable>
#include <map>
#include <string>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <atomic>

thread_local dim3 threadIdx, blockIdx;
thread_local std::unique_ptr<EmuParamCopy>* emu_param_copy = nullptr;
dim3 blockDim, gridDim;

static std::map<std::string, KernelEntry>& registry() { static std::map<std::string, KernelEntry> r; return r; }
void emu_register(KernelEntry e) { registry()[e.name] = e; }


// Two-byte matrices (cuBLAS's CUDA_R_16BF / CUDA_R_16F), widened to float and rounded back
// to nearest even: f16 through the compiler's _Float16, bf16 by hand (the high half of a
// float). Written independently of prelude.cuh's routines, so the tests cross-check both.
struct Bf16 { uint16_t bits; };
static float widen(float v) { return v; }
static double widen(double v) { return v; }
static float widen(_Float16 v) { return (float)v; }
static float widen(Bf16 v) { uint32_t b = (uint32_t)v.bits << 16; float f; memcpy(&f, &b, 4); return f; }
template <typename S> static S narrow(float v) { return (S)v; }
template <typename S> static S narrow(double v) { return (S)v; }
template <> Bf16 narrow<Bf16>(float v) {
    uint32_t x; memcpy(&x, &v, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return Bf16{uint16_t((x >> 16) | 0x40)};
    x += 0x7FFFu + ((x >> 16) & 1);  // round to nearest, ties to even
    return Bf16{uint16_t(x >> 16)};
}

// Column-major C = alpha op(A) op(B) + beta C, accumulated in T over elements stored as S.
template <typename T, typename S = T>
static void gemm(int ta, int tb, int m, int n, int k, T alpha, const S* A, int lda, long long sa, const S* B, int ldb,
                 long long sb, T beta, S* C, int ldc, long long sc, int batch) {
    for (int b = 0; b < batch; ++b) {
        const S* a = A + b * sa; const S* bb = B + b * sb; S* c = C + b * sc;
        for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
                T acc = 0;
                for (int l = 0; l < k; ++l) {
                    T x = widen(ta ? a[l + (size_t)i * lda] : a[i + (size_t)l * lda]);
                    T y = widen(tb ? bb[j + (size_t)l * ldb] : bb[l + (size_t)j * ldb]);
                    acc += x * y;
                }
                T old = beta == T(0) ? T(0) : beta * widen(c[i + (size_t)j * ldc]);
                c[i + (size_t)j * ldc] = narrow<S>(alpha * acc + old);
            }
    }
}
static int check_dims(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return 7;
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) { fprintf(stderr, "fake cublas: bad leading dims\n"); return 7; }
    return 0;
}
// Devices: contexts are 0x1000 + 0x100 * ordinal; streams remember their context's device.
static const int MAX_DEVICES = 8;
static thread_local void* current_ctx = nullptr;
static std::atomic<uint64_t> kernel_launches[MAX_DEVICES];
static std::mutex streams_mutex;
static std::map<void*, int> stream_devices;
static std::atomic<uintptr_t> next_stream{0x2000};
int emu_device_count() {
    static int n = [] {
        const char* s = getenv("TAPEGRAD_EMU_DEVICES");
        int v = s ? atoi(s) : 1;
        return v < 1 ? 1 : v > MAX_DEVICES ? MAX_DEVICES : v;
    }();
    return n;
}
int emu_current_device() {
    uintptr_t c = (uintptr_t)current_ctx;
    return c < 0x1000 ? 0 : int((c - 0x1000) / 0x100);
}
static int stream_device(void* s) {
    std::lock_guard<std::mutex> lock(streams_mutex);
    auto it = stream_devices.find(s);
    return it == stream_devices.end() ? emu_current_device() : it->second;
}
uint64_t emu_kernel_launches(int device) {
    return device >= 0 && device < MAX_DEVICES ? kernel_launches[device].load() : 0;
}

// ---- Work that completes later (pending.h) ----
struct EmuFence {
    std::mutex mutex;
    std::condition_variable signalled;
    bool done = false;
};
std::shared_ptr<EmuFence> emu_fence_new() { return std::make_shared<EmuFence>(); }
void emu_fence_signal(EmuFence& f) {
    std::lock_guard<std::mutex> lock(f.mutex);
    f.done = true;
    f.signalled.notify_all();
}
bool emu_fence_done(EmuFence& f) {
    std::lock_guard<std::mutex> lock(f.mutex);
    return f.done;
}
static void fence_wait(EmuFence& f) {
    std::unique_lock<std::mutex> lock(f.mutex);
    f.signalled.wait(lock, [&] { return f.done; });
}
using Fences = std::vector<std::shared_ptr<EmuFence>>;
// The fences held on each stream and not yet seen signalled (under streams_mutex).
static std::map<void*, Fences> stream_fences;
// The stream's unsignalled fences (those seen signalled are forgotten).
static Fences fences_of(void* s) {
    std::lock_guard<std::mutex> lock(streams_mutex);
    auto it = stream_fences.find(s);
    if (it == stream_fences.end()) return {};
    Fences& f = it->second;
    std::erase_if(f, [](auto& x) { return emu_fence_done(*x); });
    return f;
}
void emu_stream_hold(void* s, std::shared_ptr<EmuFence> f) {
    std::lock_guard<std::mutex> lock(streams_mutex);
    stream_fences[s].push_back(std::move(f));
}
void emu_stream_wait(void* s) {
    if (!s) return;
    for (auto& f : fences_of(s)) fence_wait(*f);
}
// Waits for every stream of `device`.
static void device_wait(int device) {
    std::vector<void*> streams;
    {
        std::lock_guard<std::mutex> lock(streams_mutex);
        for (auto& [s, d] : stream_devices)
            if (d == device) streams.push_back(s);
    }
    for (void* s : streams) emu_stream_wait(s);
}
// An event: the fences its stream held when it was recorded.
struct EmuEvent { Fences fences; };

#pragma GCC visibility push(default)
extern "C" {
typedef int CUresult;

CUresult cuInit(unsigned) { return 0; }
CUresult cuDeviceGetCount(int* n) { *n = emu_device_count(); return 0; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal < 0 || ordinal >= emu_device_count()) return 101; *d = ordinal; return 0; }
CUresult cuDevicePrimaryCtxRetain(void** ctx, int d) { *ctx = (void*)(uintptr_t)(0x1000 + 0x100 * d); return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    switch (attr) { case 75: *v = 9; break; case 76: *v = 0; break; case 16: *v = 132; break; default: *v = 0; }
    return 0;
}
CUresult cuCtxGetCurrent(void** ctx) { *ctx = current_ctx; return 0; }
CUresult cuCtxSetCurrent(void* ctx) { current_ctx = ctx; return 0; }
CUresult cuStreamCreate(void** s, unsigned) {
    *s = (void*)(next_stream += 0x10);
    std::lock_guard<std::mutex> lock(streams_mutex);
    stream_devices[*s] = emu_current_device();
    return 0;
}
CUresult cuStreamSynchronize(void* s) {
    if (int e = emu_forbidden_during_capture("cuStreamSynchronize")) return e;
    emu_stream_wait(s);
    return 0;
}
CUresult cuCtxSynchronize() {
    if (int e = emu_forbidden_during_capture("cuCtxSynchronize")) return e;
    device_wait(emu_current_device());
    return 0;
}
CUresult cuStreamDestroy_v2(void*) { return 0; }
CUresult cuModuleLoadData(void** m, const void* image) { if (!image) return 1; *m = (void*)0x3000; return 0; }
CUresult cuModuleUnload(void*) { return 0; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
    auto it = registry().find(name);
    if (it == registry().end()) { fprintf(stderr, "fake cuda: no kernel %s\n", name); return 500; }
    *f = &it->second;
    return 0;
}
static const size_t LIMIT = size_t(8) << 30;
static std::atomic<size_t> allocated{0};
CUresult cuMemAlloc_v2(uint64_t* p, size_t bytes) {
    if (int e = emu_forbidden_during_capture("cuMemAlloc")) return e;
    if (bytes == 0) return 1;
    if (bytes > LIMIT || allocated + bytes > LIMIT) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    void* m = malloc(bytes + 8);
    if (!m) return 2;
    memset(m, 0xAB, bytes);  // garbage, like real uninitialised memory
    *(size_t*)m = bytes;
    allocated += bytes;
    *p = (uint64_t)((char*)m + 8);
    return 0;
}
CUresult cuMemFree_v2(uint64_t p) {
    if (int e = emu_forbidden_during_capture("cuMemFree")) return e;
    device_wait(emu_current_device());  // queued work may still write the memory
    char* m = (char*)p - 8;
    allocated -= *(size_t*)m;
    free(m);
    return 0;
}
CUresult cuMemGetInfo_v2(size_t* free_, size_t* total) { *free_ = LIMIT - allocated; *total = LIMIT; return 0; }
// A captured copy reads (or writes) the host buffer when the graph runs, so it must be
// page-locked memory, which outlives the call; a copy from pageable memory cannot be captured.
CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t n, void* s) {
    if (emu_records(s) && !emu_is_pinned(src, n)) return emu_uncapturable("a copy from pageable host memory");
    return emu_stream_work(s, [=] { memcpy((void*)dst, src, n); return 0; });
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t n, void* s) {
    if (emu_records(s) && !emu_is_pinned(dst, n)) return emu_uncapturable("a copy to pageable host memory");
    return emu_stream_work(s, [=] { memcpy(dst, (void*)src, n); return 0; });
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void* s) {
    return emu_stream_work(s, [=] { memcpy((void*)dst, (void*)src, n); return 0; });
}
CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void* s) {
    return emu_stream_work(s, [=] { memset((void*)dst, v, n); return 0; });
}
// Pinned host memory and events (upload staging, the NCCL watchdog): plain host memory,
// remembered as pinned; copies are synchronous, so an event has passed unless its stream
// held a fence (pending.h) when it was recorded.
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    if (int e = emu_forbidden_during_capture("cuMemHostAlloc")) return e;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return 2;
    emu_note_pinned(*p, bytes);
    return 0;
}
CUresult cuMemFreeHost(void* p) {
    if (int e = emu_forbidden_during_capture("cuMemFreeHost")) return e;
    emu_forget_pinned(p);
    free(p);
    return 0;
}
CUresult cuEventCreate(void** e, unsigned) { *e = new EmuEvent; return 0; }
// The fake libnccl's TAPEGRAD_EMU_NCCL_UNTRACKED hook: the calling thread's next
// cuEventRecord fails, as a real one can (a failed context, exhausted resources).
static thread_local bool fail_next_event_record = false;
extern "C++" void emu_fail_next_event_record() { fail_next_event_record = true; }

CUresult cuEventRecord(void* e, void* s) {
    if (!e) return 400;  // CUDA_ERROR_INVALID_HANDLE
    if (fail_next_event_record) {
        fail_next_event_record = false;
        return 999;  // CUDA_ERROR_UNKNOWN
    }
    // Recorded while capturing (or refused on the legacy stream then), as stream work is.
    if (emu_records(s) || (!s && emu_capturing())) return emu_stream_work(s, [] { return 0; });
    // Not stream work: recording never waits, the event passes when the fences do.
    ((EmuEvent*)e)->fences = fences_of(s);
    return 0;
}
CUresult cuEventQuery(void* e) {
    if (!e) return 400;
    if (int err = emu_forbidden_during_capture("cuEventQuery")) return err;
    for (auto& f : ((EmuEvent*)e)->fences)
        if (!emu_fence_done(*f)) return 600;  // CUDA_ERROR_NOT_READY
    return 0;
}
CUresult cuEventSynchronize(void* e) {
    if (!e) return 400;
    if (int err = emu_forbidden_during_capture("cuEventSynchronize")) return err;
    for (auto& f : ((EmuEvent*)e)->fences) fence_wait(*f);
    return 0;
}
// A real driver lets an event be destroyed before it passes (resources go when it does).
CUresult cuEventDestroy_v2(void* e) { delete (EmuEvent*)e; return 0; }
CUresult cuGetErrorString(int, const char** s) { *s = "fake cuda error"; return 0; }
CUresult cuGetErrorName(int, const char** s) { *s = "CUDA_ERROR_FAKE"; return 0; }

static int run_kernel(KernelEntry* k, unsigned gx, unsigned bx, void** params) {
    emu_running_kernel = k->name;
    gridDim = {gx, 1, 1};
    blockDim = {bx, 1, 1};
    if (k->sync) return emu_run_cooperative(k, gx, bx, params);
    for (unsigned b = 0; b < gx; ++b) {
        blockIdx.x = b;
        for (unsigned t = 0; t < bx; ++t) { threadIdx.x = t; k->invoke(params); }
    }
    return 0;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void* stream, void** params, void** extra) {
    KernelEntry* k = (KernelEntry*)f;
    if (gx == 0 || bx == 0 || gy != 1 || gz != 1 || by != 1 || bz != 1 || shmem != 0 || extra) return 1;
    if (bx > 1024 || gx > 2147483647u) return 1;
    if (!emu_records(stream)) {
        int device = stream_device(stream);
        if (device >= 0 && device < MAX_DEVICES) kernel_launches[device]++;
        return emu_stream_work(stream, [&] { return run_kernel(k, gx, bx, params); });
    }
    // Captured: the arguments are copied now (the caller's may be gone when the graph runs).
    auto copy = std::make_shared<std::unique_ptr<EmuParamCopy>>();
    emu_param_copy = copy.get();
    k->invoke(params);
    emu_param_copy = nullptr;
    return emu_stream_work(stream, [=] { return run_kernel(k, gx, bx, (*copy)->ptrs.data()); });
}

// ---- cuBLAS ----
// The stream set on the (one) handle: a GEMM is queued there, so it is captured with it.
static void* blas_stream = nullptr;
int cublasCreate_v2(void** h) { *h = (void*)0x4000; return 0; }
int cublasDestroy_v2(void*) { return 0; }
int cublasSetStream_v2(void*, void* s) { blas_stream = s; return 0; }
int cublasGemmStridedBatchedEx(void*, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int at,
                               int lda, long long sa, const void* B, int bt, int ldb, long long sb, const void* beta,
                               void* C, int ct, int ldc, long long sc, int batch, int compute, int algo) {
    // Data types: CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14, all three matrices
    // alike. Compute types: CUBLAS_COMPUTE_32F = 68, ..._32F_FAST_TF32 = 77 (f32 data only).
    // Other combinations are refused with CUBLAS_STATUS_NOT_SUPPORTED (15), as real cuBLAS
    // refuses the ones it lacks, and an unknown algorithm with INVALID_VALUE (7).
    if (algo != -1 || (compute != 68 && compute != 77)) return 7;
    if (at != bt || at != ct || (at != 0 && at != 2 && at != 14) || (at != 0 && compute != 68)) return 15;
    if (int e = check_dims(ta, tb, m, n, k, lda, ldb, ldc)) return e;
    float al = *(const float*)alpha, be = *(const float*)beta;
    return emu_stream_work(blas_stream, [=] {
        if (at == 0)
            gemm<float>(ta, tb, m, n, k, al, (const float*)A, lda, sa, (const float*)B, ldb, sb, be, (float*)C, ldc,
                        sc, batch);
        else if (at == 2)
            gemm<float, _Float16>(ta, tb, m, n, k, al, (const _Float16*)A, lda, sa, (const _Float16*)B, ldb, sb, be,
                                  (_Float16*)C, ldc, sc, batch);
        else
            gemm<float, Bf16>(ta, tb, m, n, k, al, (const Bf16*)A, lda, sa, (const Bf16*)B, ldb, sb, be, (Bf16*)C,
                              ldc, sc, batch);
        return 0;
    });
}
int cublasDgemmStridedBatched(void*, int ta, int tb, int m, int n, int k, const double* alpha, const double* A, int lda,
                              long long sa, const double* B, int ldb, long long sb, const double* beta, double* C,
                              int ldc, long long sc, int batch) {
    if (int e = check_dims(ta, tb, m, n, k, lda, ldb, ldc)) return e;
    double al = *alpha, be = *beta;
    return emu_stream_work(blas_stream, [=] {
        gemm<double>(ta, tb, m, n, k, al, A, lda, sa, B, ldb, sb, be, C, ldc, sc, batch);
        return 0;
    });
}
}
#pragma GCC visibility pop
