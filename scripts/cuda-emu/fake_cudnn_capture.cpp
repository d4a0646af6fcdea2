// Stream capture for the fake cuDNN: build.sh compiles fake_cudnn.cpp with the entry points
// below renamed `emu_eager_<name>`, and these wrappers take their names, so that a cuDNN
// call queued on a capturing stream is recorded (its host alpha and beta copied by value, as
// the real library copies them into the graph) and run when the graph runs. A new cuDNN
// call that does work on the stream must be added here and to build.sh's WRAPPED list, or
// it would run at capture time instead of at every replay.
#include "capture.h"
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>

extern "C" {
int emu_eager_cudnnSetStream(void* h, void* s);
int emu_eager_cudnnSetTensor4dDescriptor(void* d, int format, int dtype, int n, int c, int h, int w);
int emu_eager_cudnnConvolutionForward(void*, const void*, void*, const void*, void*, const void*, void*, int, void*,
                                      size_t, const void*, void*, void*);
int emu_eager_cudnnConvolutionBackwardData(void*, const void*, void*, const void*, void*, const void*, void*, int,
                                           void*, size_t, const void*, void*, void*);
int emu_eager_cudnnConvolutionBackwardFilter(void*, const void*, void*, const void*, void*, const void*, void*, int,
                                             void*, size_t, const void*, void*, void*);
int emu_eager_cudnnAddTensor(void*, const void*, void*, const void*, const void*, void*, void*);
int emu_eager_cudnnConvolutionBiasActivationForward(void*, const void*, void*, const void*, void*, const void*, void*,
                                                    int, void*, size_t, const void*, void*, const void*, void*,
                                                    const void*, void*, void*, void*);
int emu_eager_cudnnFindConvolutionForwardAlgorithmEx(void*, void*, const void*, void*, const void*, void*, void*, void*,
                                                     int, int*, void*, void*, size_t);
int emu_eager_cudnnFindConvolutionBackwardDataAlgorithmEx(void*, void*, const void*, void*, const void*, void*, void*,
                                                          void*, int, int*, void*, void*, size_t);
int emu_eager_cudnnFindConvolutionBackwardFilterAlgorithmEx(void*, void*, const void*, void*, const void*, void*, void*,
                                                            void*, int, int*, void*, void*, size_t);
}

namespace {
constexpr int CUDNN_DATA_DOUBLE = 1;
std::mutex mutex;
std::map<void*, void*> handle_streams;
std::map<void*, int> tensor_dtypes;

void* stream_of(void* handle) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = handle_streams.find(handle);
    return it == handle_streams.end() ? nullptr : it->second;
}

// alpha and beta by value: doubles for DOUBLE data, floats otherwise (cuDNN's rule).
struct Scaling {
    uint64_t alpha = 0, beta = 0;
    Scaling(void* desc, const void* a, const void* b) {
        int dtype;
        {
            std::lock_guard<std::mutex> lock(mutex);
            auto it = tensor_dtypes.find(desc);
            dtype = it == tensor_dtypes.end() ? -1 : it->second;
        }
        size_t n = dtype == CUDNN_DATA_DOUBLE ? 8 : 4;
        if (a) memcpy(&alpha, a, n);
        if (b) memcpy(&beta, b, n);
    }
    const void* a() const { return &alpha; }
    const void* b() const { return &beta; }
};
}  // namespace

#pragma GCC visibility push(default)
extern "C" {
int cudnnSetStream(void* h, void* s) {
    int e = emu_eager_cudnnSetStream(h, s);
    if (e == 0) {
        std::lock_guard<std::mutex> lock(mutex);
        handle_streams[h] = s;
    }
    return e;
}
int cudnnSetTensor4dDescriptor(void* d, int format, int dtype, int n, int c, int h, int w) {
    int e = emu_eager_cudnnSetTensor4dDescriptor(d, format, dtype, n, c, h, w);
    if (e == 0) {
        std::lock_guard<std::mutex> lock(mutex);
        tensor_dtypes[d] = dtype;
    }
    return e;
}
int cudnnConvolutionForward(void* h, const void* alpha, void* xd, const void* x, void* wd, const void* w, void* cv,
                            int algo, void* ws, size_t wsb, const void* beta, void* yd, void* y) {
    Scaling s(yd, alpha, beta);
    return emu_stream_work(stream_of(h), [=] {
        return emu_eager_cudnnConvolutionForward(h, s.a(), xd, x, wd, w, cv, algo, ws, wsb, s.b(), yd, y);
    });
}
int cudnnConvolutionBackwardData(void* h, const void* alpha, void* wd, const void* w, void* dyd, const void* dy,
                                 void* cv, int algo, void* ws, size_t wsb, const void* beta, void* dxd, void* dx) {
    Scaling s(dxd, alpha, beta);
    return emu_stream_work(stream_of(h), [=] {
        return emu_eager_cudnnConvolutionBackwardData(h, s.a(), wd, w, dyd, dy, cv, algo, ws, wsb, s.b(), dxd, dx);
    });
}
int cudnnConvolutionBackwardFilter(void* h, const void* alpha, void* xd, const void* x, void* dyd, const void* dy,
                                   void* cv, int algo, void* ws, size_t wsb, const void* beta, void* dwd, void* dw) {
    Scaling s(xd, alpha, beta);
    return emu_stream_work(stream_of(h), [=] {
        return emu_eager_cudnnConvolutionBackwardFilter(h, s.a(), xd, x, dyd, dy, cv, algo, ws, wsb, s.b(), dwd, dw);
    });
}
// Measuring runs the convolutions and waits for them: what a capture forbids. It runs
// eagerly (after the stream's earlier work, which the fake has already run).
constexpr int EXECUTION_FAILED_CUDA_DRIVER = 5001;
int refuse_find(void* h, const char* what) {
    if (!emu_records(stream_of(h))) return 0;
    emu_uncapturable(what);
    return EXECUTION_FAILED_CUDA_DRIVER;
}
int cudnnFindConvolutionForwardAlgorithmEx(void* h, void* xd, const void* x, void* wd, const void* w, void* cv, void* yd,
                                           void* y, int req, int* ret, void* perf, void* ws, size_t wsb) {
    if (int e = refuse_find(h, "cudnnFindConvolutionForwardAlgorithmEx")) return e;
    return emu_eager_cudnnFindConvolutionForwardAlgorithmEx(h, xd, x, wd, w, cv, yd, y, req, ret, perf, ws, wsb);
}
int cudnnFindConvolutionBackwardDataAlgorithmEx(void* h, void* wd, const void* w, void* dyd, const void* dy, void* cv,
                                                void* dxd, void* dx, int req, int* ret, void* perf, void* ws, size_t wsb) {
    if (int e = refuse_find(h, "cudnnFindConvolutionBackwardDataAlgorithmEx")) return e;
    return emu_eager_cudnnFindConvolutionBackwardDataAlgorithmEx(h, wd, w, dyd, dy, cv, dxd, dx, req, ret, perf, ws, wsb);
}
int cudnnFindConvolutionBackwardFilterAlgorithmEx(void* h, void* xd, const void* x, void* dyd, const void* dy, void* cv,
                                                  void* dwd, void* dw, int req, int* ret, void* perf, void* ws,
                                                  size_t wsb) {
    if (int e = refuse_find(h, "cudnnFindConvolutionBackwardFilterAlgorithmEx")) return e;
    return emu_eager_cudnnFindConvolutionBackwardFilterAlgorithmEx(h, xd, x, dyd, dy, cv, dwd, dw, req, ret, perf, ws,
                                                                   wsb);
}
int cudnnConvolutionBiasActivationForward(void* h, const void* alpha1, void* xd, const void* x, void* wd, const void* w,
                                          void* cv, int algo, void* ws, size_t wsb, const void* alpha2, void* zd,
                                          const void* z, void* bd, const void* b, void* act, void* yd, void* y) {
    Scaling s(yd, alpha1, alpha2);
    return emu_stream_work(stream_of(h), [=] {
        return emu_eager_cudnnConvolutionBiasActivationForward(h, s.a(), xd, x, wd, w, cv, algo, ws, wsb, s.b(), zd, z,
                                                               bd, b, act, yd, y);
    });
}
int cudnnAddTensor(void* h, const void* alpha, void* ad, const void* a, const void* beta, void* cd, void* c) {
    Scaling s(cd, alpha, beta);
    return emu_stream_work(stream_of(h), [=] { return emu_eager_cudnnAddTensor(h, s.a(), ad, a, s.b(), cd, c); });
}
}
#pragma GCC visibility pop
