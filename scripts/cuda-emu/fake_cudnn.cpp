// A fake libcudnn (see build.sh): the legacy convolution API tapegrad calls, as naive host
// loops that follow cuDNN's documented semantics: NCHW or NHWC tensors, KCRS or KRSC
// (NHWC) filters, cross-correlation or convolution mode, symmetric padding, stride,
// dilation, `out = alpha * result + beta * out` (out not read when beta is 0; alpha and
// beta are doubles for DOUBLE data, floats otherwise), and cudnnAddTensor's broadcasting.
//
// The heuristics are made up so that the host code's choices are exercised: for f32 the
// first entry wants tensor-op math (TF32; only for callers that allow it), then an
// algorithm that needs a workspace; for f64 the first entry is NOT_SUPPORTED; f64 with a
// dilation has no algorithm at all (so the caller's fallback runs). The backward
// directions rank algorithm 0 first, which real cuDNN reports as non-deterministic (it
// accumulates with atomics); here it flips the last bit of its first nonzero result on
// every other call, so a caller that takes it cannot repeat its results bit for bit.
// FAKE_CUDNN_NO_ALGO=DIR:C[,DIR:C...] (DIR one of fwd, bwd_data, bwd_filter, all) marks
// the convolutions whose input has C channels as having no algorithm in that direction:
// f32 heuristics rank only NOT_SUPPORTED entries, f64 heuristics fail with BAD_PARAM (real
// cuDNN's f64 NHWC heuristics fail in several ways). It is read on every call, so a test
// can set it. Convolutions whose descriptor has tensor-op math round f32 operands to TF32
// (10-bit mantissa), as a GPU would. FAKE_CUDNN_TRACE=1 prints each call that computes.
// HALF and BFLOAT16 data take a FLOAT compute type only (cuDNN's PSEUDO_HALF/BFLOAT16
// configurations): the operands are widened, accumulated in double and rounded once to
// the 16-bit output; their heuristics rank as f32's do (tensor-op math first, which callers
// may take for 16-bit data). cudnnAddTensor refuses 16-bit data (NOT_SUPPORTED).
// cudnnConvolutionBiasActivationForward (y = act(alpha1 * conv(x, w) + alpha2 * z + bias))
// is as strict as cuDNN's documentation: IDENTITY or RELU only, IDENTITY only with
// IMPLICIT_PRECOMP_GEMM (algorithm 1 here, the heuristics' forward "A"), z of y's
// descriptor, a bias 1 x K x 1 x 1 of y's data type (the FLOAT, DOUBLE, PSEUDO_HALF and
// PSEUDO_BFLOAT16 configurations), else NOT_SUPPORTED (BAD_PARAM for wrong shapes). It
// computes the convolution as the forward direction does, then in the compute type
// (float for 16-bit data): rounds it to float, adds alpha2 * z and the widened bias,
// applies the activation (NaN kept under PROPAGATE_NAN, 0 under NOT_PROPAGATE_NAN) and
// rounds once to y's type. z is read before y is written, so z may be y (with alpha2 = 0
// it is not read at all). FAKE_CUDNN_NO_ALGO's direction `fused` makes the call answer
// NOT_SUPPORTED for those channel counts (the heuristics and workspace queries still
// succeed, as a real refusal would come only at the call).
// The measured rankings (cudnnFind*AlgorithmEx) run every supported candidate once on the
// caller's buffers (so a buffer too small for the descriptors shows) and rank algorithm
// "B" (no workspace) fastest, unlike the heuristics' forward ranking, so a caller that
// measures chooses differently; an algorithm whose workspace exceeds the one offered is
// reported as failing to allocate.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace {
enum : int { SUCCESS = 0, BAD_PARAM = 2000, NOT_SUPPORTED = 3000, DEVICE_ALLOCATION_FAILED = 4004 };
enum : int { FLOAT = 0, DOUBLE = 1, HALF = 2, BFLOAT16 = 9 };

bool known_dtype(int dtype) { return dtype == FLOAT || dtype == DOUBLE || dtype == HALF || dtype == BFLOAT16; }
bool sixteen_bit(int dtype) { return dtype == HALF || dtype == BFLOAT16; }

// bf16 storage: the high half of a float, narrowed to nearest even (NaN kept quiet).
struct Bf16 { uint16_t bits; };
double widen(Bf16 v) { uint32_t b = (uint32_t)v.bits << 16; float f; memcpy(&f, &b, 4); return f; }
template <class T> double widen(T v) { return (double)v; }
template <class T> T narrow(double v) { return (T)v; }
template <> Bf16 narrow<Bf16>(double d) {
    float v = (float)d;
    uint32_t x;
    memcpy(&x, &v, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return Bf16{uint16_t((x >> 16) | 0x40)};
    x += 0x7FFFu + ((x >> 16) & 1);
    return Bf16{uint16_t(x >> 16)};
}
enum : int { NCHW = 0, NHWC = 1 };
enum : int { CONVOLUTION = 0, CROSS_CORRELATION = 1 };
enum : int { DEFAULT_MATH = 0, TENSOR_OP_MATH = 1, ALLOW_CONVERSION = 2, FMA_MATH = 3 };
// Algorithm numbers: "A" needs a workspace, "B" none (per direction).
enum : int { FWD_A = 1, FWD_B = 0, BWD_A = 1, BWD_B = 0 };

struct Tensor { bool set = false; int dtype = -1, format = 0, n = 0, c = 0, h = 0, w = 0; };
struct Filter { bool set = false; int dtype = -1, format = 0, k = 0, c = 0, r = 0, s = 0; };
struct Conv { bool set = false; int ph = 0, pw = 0, u = 1, v = 1, dh = 1, dw = 1, mode = 0, compute = 0, math = 0, groups = 1; };
struct Perf { int algo, status; float time; size_t memory; int determinism, math; int reserved[3]; };

bool trace() { static bool t = getenv("FAKE_CUDNN_TRACE") != nullptr; return t; }

size_t at(const Tensor& t, int n, int c, int h, int w) {
    if (t.format == NHWC) return (((size_t)n * t.h + h) * t.w + w) * t.c + c;
    return (((size_t)n * t.c + c) * t.h + h) * t.w + w;
}
size_t at(const Filter& f, int k, int c, int r, int s) {
    if (f.format == NHWC) return (((size_t)k * f.r + r) * f.s + s) * f.c + c;
    return (((size_t)k * f.c + c) * f.r + r) * f.s + s;
}
size_t count(const Tensor& t) { return (size_t)t.n * t.c * t.h * t.w; }
size_t count(const Filter& f) { return (size_t)f.k * f.c * f.r * f.s; }

// cudnnGetConvolution2dForwardOutputDim's formula.
int out_dim(int in, int pad, int k, int dil, int stride) { return 1 + (in + 2 * pad - ((k - 1) * dil + 1)) / stride; }

int check(const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y) {
    if (!x.set || !w.set || !cv.set || !y.set) return BAD_PARAM;
    if (x.dtype != w.dtype || x.dtype != y.dtype || cv.compute != (sixteen_bit(x.dtype) ? FLOAT : x.dtype))
        return BAD_PARAM;
    // Grouped (cudnnSetConvolutionGroupCount): the filter's C is one group's channels.
    if (x.c != w.c * cv.groups || w.k % cv.groups != 0 || y.c != w.k || y.n != x.n) return BAD_PARAM;
    if (y.h != out_dim(x.h, cv.ph, w.r, cv.dh, cv.u) || y.w != out_dim(x.w, cv.pw, w.s, cv.dw, cv.v)) return BAD_PARAM;
    return SUCCESS;
}

// The made-up workspace of the "A" algorithms, in bytes.
size_t workspace_a(const Tensor& y) { return 256 + 8 * count(y); }

enum Direction { FWD, BWD_DATA, BWD_FILTER, FUSED };

// Whether FAKE_CUDNN_NO_ALGO marks this direction of a convolution whose input has
// `channels` channels.
bool marked(Direction dir, int channels) {
    const char* spec = getenv("FAKE_CUDNN_NO_ALGO");
    if (!spec) return false;
    static const char* names[] = {"fwd", "bwd_data", "bwd_filter", "fused"};
    std::string all(spec);
    size_t start = 0;
    while (start <= all.size()) {
        size_t end = all.find(',', start);
        if (end == std::string::npos) end = all.size();
        std::string item = all.substr(start, end - start);
        size_t colon = item.find(':');
        if (colon != std::string::npos) {
            std::string name = item.substr(0, colon);
            // `all` means the three directions; the fused call is marked only by name.
            if (((name == "all" && dir != FUSED) || name == names[dir]) && atoi(item.c_str() + colon + 1) == channels)
                return true;
        }
        start = end + 1;
    }
    return false;
}

bool supported(Direction dir, const Tensor& x, const Conv& cv, int algo, int algo_a) {
    if (x.dtype == DOUBLE && (cv.dh > 1 || cv.dw > 1)) return false;
    if (marked(dir, x.c)) return false;
    return !(x.dtype == DOUBLE && algo == algo_a);
}

// Real cuDNN reports the backward algorithms numbered 0 (BWD_DATA_ALGO_0,
// BWD_FILTER_ALGO_0, which accumulate with atomics) as non-deterministic; so does this one.
bool deterministic(Direction dir, int algo) { return dir == FWD || algo != 0; }

int heuristics(Direction dir, const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y, int algo_a, int algo_b,
               int requested, int* returned, Perf* out) {
    if (int e = check(x, w, cv, y)) return e;
    if (requested < 1 || !returned || !out) return BAD_PARAM;
    if (x.dtype == DOUBLE && marked(dir, x.c)) return BAD_PARAM;
    auto status = [&](int algo) { return supported(dir, x, cv, algo, algo_a) ? SUCCESS : NOT_SUPPORTED; };
    std::vector<Perf> all;
    size_t ws = workspace_a(y);
    const bool floats = x.dtype != DOUBLE;
    Perf b{algo_b, status(algo_b), 0.5f, 0, deterministic(dir, algo_b), floats ? FMA_MATH : DEFAULT_MATH, {}};
    // The backward directions rank their non-deterministic algorithm first, as real
    // cuDNN's heuristics may.
    if (dir != FWD) all.push_back(b);
    if (floats)
        all.push_back({algo_a, marked(dir, x.c) ? NOT_SUPPORTED : SUCCESS, 1.0f, ws, deterministic(dir, algo_a),
                       TENSOR_OP_MATH, {}});
    all.push_back({algo_a, status(algo_a), 2.0f, ws, deterministic(dir, algo_a), cv.math, {}});
    if (dir == FWD) all.push_back(b);
    *returned = 0;
    for (size_t i = 0; i < all.size() && (int)i < requested; ++i) out[(*returned)++] = all[i];
    return SUCCESS;
}

// alpha = 1 and beta = 0 in the scaling type of `t`'s data (doubles for DOUBLE, else floats).
struct Unit {
    double one_d = 1.0, zero_d = 0.0;
    float one_f = 1.0f, zero_f = 0.0f;
    bool f64;
    explicit Unit(const Tensor& t) : f64(t.dtype == DOUBLE) {}
    const void* one() const { return f64 ? (const void*)&one_d : (const void*)&one_f; }
    const void* zero() const { return f64 ? (const void*)&zero_d : (const void*)&zero_f; }
};

// cudnnFind*AlgorithmEx: `run(algo)` computes the direction with that algorithm and returns
// its status; the successful algorithms come first, fastest ("B") first.
template <class Run>
int find(Direction dir, const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y, int algo_a, int algo_b,
         int requested, int* returned, Perf* out, void* ws, size_t ws_bytes, Run run) {
    if (int e = check(x, w, cv, y)) return e;
    if (requested < 1 || !returned || !out || (ws_bytes > 0 && !ws)) return BAD_PARAM;
    if (x.dtype == DOUBLE && marked(dir, x.c)) return BAD_PARAM;
    std::vector<Perf> ok, failed;
    for (int algo : {algo_b, algo_a}) {
        size_t memory = algo == algo_a ? workspace_a(y) : 0;
        int status = !supported(dir, x, cv, algo, algo_a) ? NOT_SUPPORTED
                     : memory > ws_bytes                  ? DEVICE_ALLOCATION_FAILED
                                                          : run(algo);
        Perf p{algo, status, algo == algo_b ? 0.25f : 0.5f, memory, deterministic(dir, algo), cv.math, {}};
        (status == SUCCESS ? ok : failed).push_back(p);
    }
    ok.insert(ok.end(), failed.begin(), failed.end());
    *returned = 0;
    for (size_t i = 0; i < ok.size() && (int)i < requested; ++i) out[(*returned)++] = ok[i];
    return SUCCESS;
}

// What a non-deterministic algorithm does to its result: the last bit of the first
// nonzero element flips on every other call of its direction (atomics summing in a
// different order). Counted per direction: a training step calls each direction once.
template <class T> void jitter(Direction dir, int algo, T* out, size_t n) {
    static unsigned calls[4] = {0, 0, 0, 0};
    if (deterministic(dir, algo) || (calls[dir]++ & 1) == 0) return;
    for (size_t i = 0; i < n; ++i)
        if (out[i] != 0) {
            out[i] = std::nextafter(out[i], out[i] > 0 ? (T)INFINITY : (T)-INFINITY);
            return;
        }
}

int workspace_size(Direction dir, const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y, int algo,
                   int algo_a, int algo_b, size_t* size) {
    if (int e = check(x, w, cv, y)) return e;
    if (algo != algo_a && algo != algo_b) return BAD_PARAM;
    if (!supported(dir, x, cv, algo, algo_a)) return NOT_SUPPORTED;
    *size = algo == algo_a ? workspace_a(y) : 0;
    return SUCCESS;
}

// Validates an execution's algorithm and workspace, and scribbles over the workspace.
int check_run(Direction dir, const char* what, const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y, int algo,
              int algo_a, int algo_b, void* ws, size_t ws_bytes) {
    if (int e = check(x, w, cv, y)) return e;
    size_t need = 0;
    if (int e = workspace_size(dir, x, w, cv, y, algo, algo_a, algo_b, &need)) return e;
    if (ws_bytes < need || (need > 0 && !ws)) {
        fprintf(stderr, "fake cudnn: %s given a workspace of %zu bytes, needs %zu\n", what, ws_bytes, need);
        return BAD_PARAM;
    }
    if (need > 0) memset(ws, 0x7f, need);
    if (trace())
        fprintf(stderr, "fake cudnn: %s algo %d math %d dtype %d x %dx%dx%dx%d (NCHW order) workspace %zu\n", what, algo,
                cv.math, x.dtype, x.n, x.c, x.h, x.w, ws_bytes);
    return SUCCESS;
}

// TF32: f32 with a 10-bit mantissa (round to nearest), what tensor-op math multiplies.
template <class T> double operand(T v, bool tf32) {
    if (!tf32) return widen(v);
    float f = (float)widen(v);
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits = (bits + 0x1000u) & ~0x1fffu;
    memcpy(&f, &bits, 4);
    return (double)f;
}

bool tensor_math(const Conv& cv, const Tensor& x) {
    return x.dtype == FLOAT && (cv.math == TENSOR_OP_MATH || cv.math == ALLOW_CONVERSION);
}

// Visits every (output pixel, filter tap) pair whose input position is inside the image:
// f(n, oh, ow, ih, iw, filter row, filter column). Kept as one loop so the three directions agree.
template <class F> void taps(const Tensor& x, const Filter& w, const Conv& cv, const Tensor& y, F f) {
    for (int n = 0; n < y.n; ++n)
        for (int oh = 0; oh < y.h; ++oh)
            for (int ow = 0; ow < y.w; ++ow)
                for (int r = 0; r < w.r; ++r) {
                    int ih = oh * cv.u - cv.ph + r * cv.dh;
                    if (ih < 0 || ih >= x.h) continue;
                    for (int s = 0; s < w.s; ++s) {
                        int iw = ow * cv.v - cv.pw + s * cv.dw;
                        if (iw < 0 || iw >= x.w) continue;
                        // Convolution mode flips the filter; cross-correlation does not.
                        int fr = cv.mode == CONVOLUTION ? w.r - 1 - r : r;
                        int fs = cv.mode == CONVOLUTION ? w.s - 1 - s : s;
                        f(n, oh, ow, ih, iw, fr, fs);
                    }
                }
}

// The loops below run on copies in one fixed layout, whatever the descriptors' formats: an
// image tensor as NHWC doubles, a filter as KRSC doubles (channels innermost in both), so
// the innermost loop walks one group's channels contiguously. Every sum is taken in the
// same order as a loop over the descriptors' own layouts would take it.
size_t nhwc(const Tensor& t, int n, int h, int w) { return (((size_t)n * t.h + h) * t.w + w) * t.c; }
size_t krsc(const Filter& f, int k, int r, int s) { return (((size_t)k * f.r + r) * f.s + s) * f.c; }

// Visits every element of an image tensor (a filter): f(index in NHWC (KRSC) order, index
// in the descriptor's layout).
template <class F> void each_element(const Tensor& t, F f) {
    for (int n = 0; n < t.n; ++n)
        for (int c = 0; c < t.c; ++c)
            for (int h = 0; h < t.h; ++h)
                for (int w = 0; w < t.w; ++w) f(nhwc(t, n, h, w) + c, at(t, n, c, h, w));
}
template <class F> void each_element(const Filter& t, F f) {
    for (int k = 0; k < t.k; ++k)
        for (int c = 0; c < t.c; ++c)
            for (int r = 0; r < t.r; ++r)
                for (int s = 0; s < t.s; ++s) f(krsc(t, k, r, s) + c, at(t, k, c, r, s));
}

// `t`'s elements as operands (widened; TF32-rounded under tensor-op math), NHWC (KRSC) order.
template <class D, class T> std::vector<double> operands(const D& t, const T* p, bool tf) {
    std::vector<double> out(count(t));
    each_element(t, [&](size_t fixed, size_t own) { out[fixed] = operand(p[own], tf); });
    return out;
}
// NHWC (KRSC) values back into the descriptor's layout.
template <class D> std::vector<double> own_layout(const D& t, const std::vector<double>& v) {
    std::vector<double> out(v.size());
    each_element(t, [&](size_t fixed, size_t own) { out[own] = v[fixed]; });
    return out;
}

// The first input channel filter k reads: its group's run of w.c channels starts there.
int group_start(const Filter& w, const Conv& cv, int k) { return (k / (w.k / cv.groups)) * w.c; }

// alpha and beta are doubles for double data, floats otherwise (16-bit data included).
template <class T> void blend(T* out, const std::vector<double>& acc, const void* alpha, const void* beta) {
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    double a = *(const S*)alpha, b = *(const S*)beta;
    for (size_t i = 0; i < acc.size(); ++i) out[i] = narrow<T>(a * acc[i] + (b == 0 ? 0.0 : b * widen(out[i])));
}

// The convolution's exact sums (in double), in y's descriptor layout.
template <class T>
std::vector<double> convolve(const Tensor& x, const T* xp, const Filter& w, const T* wp, const Conv& cv, const Tensor& y) {
    bool tf = tensor_math(cv, x);
    std::vector<double> xs = operands(x, xp, tf), ws = operands(w, wp, tf), acc(count(y), 0.0);
    taps(x, w, cv, y, [&](int n, int oh, int ow, int ih, int iw, int r, int s) {
        const double* pixel = &xs[nhwc(x, n, ih, iw)];
        double* out = &acc[nhwc(y, n, oh, ow)];
        for (int k = 0; k < w.k; ++k) {
            const double* a = pixel + group_start(w, cv, k);
            const double* b = &ws[krsc(w, k, r, s)];
            double sum = 0;
            for (int c = 0; c < w.c; ++c) sum += a[c] * b[c];
            out[k] += sum;
        }
    });
    return own_layout(y, acc);
}

template <class T>
void forward(const Tensor& x, const T* xp, const Filter& w, const T* wp, const Conv& cv, const Tensor& y, T* yp,
             const void* alpha, const void* beta) {
    blend<T>(yp, convolve(x, xp, w, wp, cv, y), alpha, beta);
}

template <class T>
void backward_data(const Tensor& x, T* dxp, const Filter& w, const T* wp, const Conv& cv, const Tensor& y, const T* dyp,
                   const void* alpha, const void* beta) {
    bool tf = tensor_math(cv, x);
    std::vector<double> dys = operands(y, dyp, tf), ws = operands(w, wp, tf), acc(count(x), 0.0);
    taps(x, w, cv, y, [&](int n, int oh, int ow, int ih, int iw, int r, int s) {
        const double* g = &dys[nhwc(y, n, oh, ow)];
        double* pixel = &acc[nhwc(x, n, ih, iw)];
        for (int k = 0; k < w.k; ++k) {
            double* a = pixel + group_start(w, cv, k);
            const double* b = &ws[krsc(w, k, r, s)];
            const double gk = g[k];
            for (int c = 0; c < w.c; ++c) a[c] += gk * b[c];
        }
    });
    blend<T>(dxp, own_layout(x, acc), alpha, beta);
}

template <class T>
void backward_filter(const Tensor& x, const T* xp, const Filter& w, T* dwp, const Conv& cv, const Tensor& y, const T* dyp,
                     const void* alpha, const void* beta) {
    bool tf = tensor_math(cv, x);
    std::vector<double> xs = operands(x, xp, tf), dys = operands(y, dyp, tf), acc(count(w), 0.0);
    taps(x, w, cv, y, [&](int n, int oh, int ow, int ih, int iw, int r, int s) {
        const double* g = &dys[nhwc(y, n, oh, ow)];
        const double* pixel = &xs[nhwc(x, n, ih, iw)];
        for (int k = 0; k < w.k; ++k) {
            const double* b = pixel + group_start(w, cv, k);
            double* a = &acc[krsc(w, k, r, s)];
            const double gk = g[k];
            for (int c = 0; c < w.c; ++c) a[c] += gk * b[c];
        }
    });
    blend<T>(dwp, own_layout(w, acc), alpha, beta);
}

enum : int { ACT_RELU = 1, ACT_IDENTITY = 5, NOT_PROPAGATE_NAN = 0, PROPAGATE_NAN = 1 };
struct Activation { bool set = false; int mode = 0, nan = 0; double coef = 0; };

// The fused call's arithmetic (see the top of the file).
template <class T>
void forward_bias_activation(const Tensor& x, const T* xp, const Filter& w, const T* wp, const Conv& cv, const Tensor& y,
                             const T* zp, const T* bp, const Activation& act, T* yp, const void* alpha1,
                             const void* alpha2) {
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    std::vector<double> acc = convolve(x, xp, w, wp, cv, y);
    S a1 = *(const S*)alpha1, a2 = *(const S*)alpha2;
    std::vector<T> out(acc.size());
    for (int n = 0; n < y.n; ++n)
        for (int k = 0; k < y.c; ++k)
            for (int h = 0; h < y.h; ++h)
                for (int ww = 0; ww < y.w; ++ww) {
                    size_t i = at(y, n, k, h, ww);
                    S v = a1 * (S)acc[i];
                    if (a2 != 0) v += a2 * (S)widen(zp[i]);
                    v += (S)widen(bp[k]);
                    if (act.mode == ACT_RELU) {
                        if (v != v) v = act.nan == PROPAGATE_NAN ? v : 0;
                        else if (v < 0) v = 0;
                    }
                    out[i] = narrow<T>((double)v);
                }
    memcpy(yp, out.data(), out.size() * sizeof(T));
}

template <class T>
void add_tensor(const Tensor& a, const T* ap, const Tensor& c, T* cp, const void* alpha, const void* beta) {
    std::vector<double> acc(count(c), 0.0);
    for (int n = 0; n < c.n; ++n)
        for (int ch = 0; ch < c.c; ++ch)
            for (int h = 0; h < c.h; ++h)
                for (int w = 0; w < c.w; ++w)
                    acc[at(c, n, ch, h, w)] = ap[at(a, a.n == 1 ? 0 : n, a.c == 1 ? 0 : ch, a.h == 1 ? 0 : h, a.w == 1 ? 0 : w)];
    blend<T>(cp, acc, alpha, beta);
}
}  // namespace

#pragma GCC visibility push(default)
extern "C" {
int cudnnCreate(void** h) { *h = new int(0); return SUCCESS; }
// 9.21.1 (cudarc 0.19's bindings), so a version report has something to print.
size_t cudnnGetVersion() { return 92101; }
int cudnnDestroy(void* h) { delete (int*)h; return SUCCESS; }
int cudnnSetStream(void* h, void*) { return h ? SUCCESS : BAD_PARAM; }

int cudnnCreateTensorDescriptor(Tensor** d) { *d = new Tensor; return SUCCESS; }
int cudnnDestroyTensorDescriptor(Tensor* d) { delete d; return SUCCESS; }
int cudnnSetTensor4dDescriptor(Tensor* d, int format, int dtype, int n, int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || (format != NCHW && format != NHWC) || !known_dtype(dtype))
        return BAD_PARAM;
    *d = Tensor{true, dtype, format, n, c, h, w};
    return SUCCESS;
}

int cudnnCreateFilterDescriptor(Filter** d) { *d = new Filter; return SUCCESS; }
int cudnnDestroyFilterDescriptor(Filter* d) { delete d; return SUCCESS; }
int cudnnSetFilter4dDescriptor(Filter* d, int dtype, int format, int k, int c, int r, int s) {
    if (k <= 0 || c <= 0 || r <= 0 || s <= 0 || (format != NCHW && format != NHWC) || !known_dtype(dtype))
        return BAD_PARAM;
    *d = Filter{true, dtype, format, k, c, r, s};
    return SUCCESS;
}

int cudnnCreateConvolutionDescriptor(Conv** d) { *d = new Conv; return SUCCESS; }
int cudnnDestroyConvolutionDescriptor(Conv* d) { delete d; return SUCCESS; }
int cudnnSetConvolution2dDescriptor(Conv* d, int ph, int pw, int u, int v, int dh, int dw, int mode, int compute) {
    if (ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0 || (mode != CONVOLUTION && mode != CROSS_CORRELATION))
        return BAD_PARAM;
    int math = d->math, groups = d->groups;
    *d = Conv{true, ph, pw, u, v, dh, dw, mode, compute, math, groups};
    return SUCCESS;
}
int cudnnSetConvolutionGroupCount(Conv* d, int groups) {
    if (!d || groups < 1) return BAD_PARAM;
    d->groups = groups;
    return SUCCESS;
}
int cudnnSetConvolutionMathType(Conv* d, int math) {
    if (math < DEFAULT_MATH || math > FMA_MATH) return BAD_PARAM;
    d->math = math;
    return SUCCESS;
}

int cudnnGetConvolutionForwardAlgorithm_v7(void*, Tensor* x, Filter* w, Conv* cv, Tensor* y, int requested, int* returned,
                                           Perf* perf) {
    return heuristics(FWD, *x, *w, *cv, *y, FWD_A, FWD_B, requested, returned, perf);
}
int cudnnGetConvolutionBackwardDataAlgorithm_v7(void*, Filter* w, Tensor* dy, Conv* cv, Tensor* dx, int requested,
                                                int* returned, Perf* perf) {
    return heuristics(BWD_DATA, *dx, *w, *cv, *dy, BWD_A, BWD_B, requested, returned, perf);
}
int cudnnGetConvolutionBackwardFilterAlgorithm_v7(void*, Tensor* x, Tensor* dy, Conv* cv, Filter* dw, int requested,
                                                  int* returned, Perf* perf) {
    return heuristics(BWD_FILTER, *x, *dw, *cv, *dy, BWD_A, BWD_B, requested, returned, perf);
}
int cudnnGetConvolutionForwardWorkspaceSize(void*, Tensor* x, Filter* w, Conv* cv, Tensor* y, int algo, size_t* size) {
    return workspace_size(FWD, *x, *w, *cv, *y, algo, FWD_A, FWD_B, size);
}
int cudnnGetConvolutionBackwardDataWorkspaceSize(void*, Filter* w, Tensor* dy, Conv* cv, Tensor* dx, int algo,
                                                 size_t* size) {
    return workspace_size(BWD_DATA, *dx, *w, *cv, *dy, algo, BWD_A, BWD_B, size);
}
int cudnnGetConvolutionBackwardFilterWorkspaceSize(void*, Tensor* x, Tensor* dy, Conv* cv, Filter* dw, int algo,
                                                   size_t* size) {
    return workspace_size(BWD_FILTER, *x, *dw, *cv, *dy, algo, BWD_A, BWD_B, size);
}

int cudnnConvolutionForward(void*, const void* alpha, Tensor* xd, const void* x, Filter* wd, const void* w, Conv* cv,
                            int algo, void* ws, size_t ws_bytes, const void* beta, Tensor* yd, void* y) {
    if (int e = check_run(FWD, "ConvolutionForward", *xd, *wd, *cv, *yd, algo, FWD_A, FWD_B, ws, ws_bytes)) return e;
    if (xd->dtype == FLOAT)
        forward<float>(*xd, (const float*)x, *wd, (const float*)w, *cv, *yd, (float*)y, alpha, beta);
    else if (xd->dtype == HALF)
        forward<_Float16>(*xd, (const _Float16*)x, *wd, (const _Float16*)w, *cv, *yd, (_Float16*)y, alpha, beta);
    else if (xd->dtype == BFLOAT16)
        forward<Bf16>(*xd, (const Bf16*)x, *wd, (const Bf16*)w, *cv, *yd, (Bf16*)y, alpha, beta);
    else
        forward<double>(*xd, (const double*)x, *wd, (const double*)w, *cv, *yd, (double*)y, alpha, beta);
    return SUCCESS;
}
int cudnnConvolutionBackwardData(void*, const void* alpha, Filter* wd, const void* w, Tensor* dyd, const void* dy,
                                 Conv* cv, int algo, void* ws, size_t ws_bytes, const void* beta, Tensor* dxd, void* dx) {
    if (int e = check_run(BWD_DATA, "ConvolutionBackwardData", *dxd, *wd, *cv, *dyd, algo, BWD_A, BWD_B, ws, ws_bytes)) return e;
    if (dxd->dtype == FLOAT)
        backward_data<float>(*dxd, (float*)dx, *wd, (const float*)w, *cv, *dyd, (const float*)dy, alpha, beta);
    else if (dxd->dtype == HALF)
        backward_data<_Float16>(*dxd, (_Float16*)dx, *wd, (const _Float16*)w, *cv, *dyd, (const _Float16*)dy, alpha, beta);
    else if (dxd->dtype == BFLOAT16)
        backward_data<Bf16>(*dxd, (Bf16*)dx, *wd, (const Bf16*)w, *cv, *dyd, (const Bf16*)dy, alpha, beta);
    else
        backward_data<double>(*dxd, (double*)dx, *wd, (const double*)w, *cv, *dyd, (const double*)dy, alpha, beta);
    // (16-bit results are not jittered: the last bit of a rounded sum says little.)
    if (dxd->dtype == FLOAT) jitter(BWD_DATA, algo, (float*)dx, count(*dxd));
    else if (dxd->dtype == DOUBLE) jitter(BWD_DATA, algo, (double*)dx, count(*dxd));
    return SUCCESS;
}
int cudnnConvolutionBackwardFilter(void*, const void* alpha, Tensor* xd, const void* x, Tensor* dyd, const void* dy,
                                   Conv* cv, int algo, void* ws, size_t ws_bytes, const void* beta, Filter* dwd, void* dw) {
    if (int e = check_run(BWD_FILTER, "ConvolutionBackwardFilter", *xd, *dwd, *cv, *dyd, algo, BWD_A, BWD_B, ws, ws_bytes)) return e;
    if (xd->dtype == FLOAT)
        backward_filter<float>(*xd, (const float*)x, *dwd, (float*)dw, *cv, *dyd, (const float*)dy, alpha, beta);
    else if (xd->dtype == HALF)
        backward_filter<_Float16>(*xd, (const _Float16*)x, *dwd, (_Float16*)dw, *cv, *dyd, (const _Float16*)dy, alpha, beta);
    else if (xd->dtype == BFLOAT16)
        backward_filter<Bf16>(*xd, (const Bf16*)x, *dwd, (Bf16*)dw, *cv, *dyd, (const Bf16*)dy, alpha, beta);
    else
        backward_filter<double>(*xd, (const double*)x, *dwd, (double*)dw, *cv, *dyd, (const double*)dy, alpha, beta);
    if (xd->dtype == FLOAT) jitter(BWD_FILTER, algo, (float*)dw, count(*dwd));
    else if (xd->dtype == DOUBLE) jitter(BWD_FILTER, algo, (double*)dw, count(*dwd));
    return SUCCESS;
}

// The measured rankings.
int cudnnFindConvolutionForwardAlgorithmEx(void* h, Tensor* xd, const void* x, Filter* wd, const void* w, Conv* cv,
                                           Tensor* yd, void* y, int requested, int* returned, Perf* perf, void* ws,
                                           size_t ws_bytes) {
    Unit u(*xd);
    return find(FWD, *xd, *wd, *cv, *yd, FWD_A, FWD_B, requested, returned, perf, ws, ws_bytes, [&](int algo) {
        return cudnnConvolutionForward(h, u.one(), xd, x, wd, w, cv, algo, ws, ws_bytes, u.zero(), yd, y);
    });
}
int cudnnFindConvolutionBackwardDataAlgorithmEx(void* h, Filter* wd, const void* w, Tensor* dyd, const void* dy, Conv* cv,
                                                Tensor* dxd, void* dx, int requested, int* returned, Perf* perf, void* ws,
                                                size_t ws_bytes) {
    Unit u(*dxd);
    return find(BWD_DATA, *dxd, *wd, *cv, *dyd, BWD_A, BWD_B, requested, returned, perf, ws, ws_bytes, [&](int algo) {
        return cudnnConvolutionBackwardData(h, u.one(), wd, w, dyd, dy, cv, algo, ws, ws_bytes, u.zero(), dxd, dx);
    });
}
int cudnnFindConvolutionBackwardFilterAlgorithmEx(void* h, Tensor* xd, const void* x, Tensor* dyd, const void* dy,
                                                  Conv* cv, Filter* dwd, void* dw, int requested, int* returned,
                                                  Perf* perf, void* ws, size_t ws_bytes) {
    Unit u(*xd);
    return find(BWD_FILTER, *xd, *dwd, *cv, *dyd, BWD_A, BWD_B, requested, returned, perf, ws, ws_bytes, [&](int algo) {
        return cudnnConvolutionBackwardFilter(h, u.one(), xd, x, dyd, dy, cv, algo, ws, ws_bytes, u.zero(), dwd, dw);
    });
}
int cudnnCreateActivationDescriptor(Activation** d) { *d = new Activation; return SUCCESS; }
int cudnnDestroyActivationDescriptor(Activation* d) { delete d; return SUCCESS; }
int cudnnSetActivationDescriptor(Activation* d, int mode, int nan, double coef) {
    // SIGMOID .. SWISH; NOT_PROPAGATE_NAN or PROPAGATE_NAN.
    if (!d || mode < 0 || mode > 6 || (nan != NOT_PROPAGATE_NAN && nan != PROPAGATE_NAN)) return BAD_PARAM;
    *d = Activation{true, mode, nan, coef};
    return SUCCESS;
}

int cudnnConvolutionBiasActivationForward(void*, const void* alpha1, Tensor* xd, const void* x, Filter* wd, const void* w,
                                          Conv* cv, int algo, void* ws, size_t ws_bytes, const void* alpha2, Tensor* zd,
                                          const void* z, Tensor* bd, const void* b, Activation* act, Tensor* yd, void* y) {
    if (!xd || !wd || !cv || !zd || !bd || !act || !yd || !x || !w || !z || !b || !y || !alpha1 || !alpha2)
        return BAD_PARAM;
    if (!zd->set || !bd->set || !act->set) return BAD_PARAM;
    if (zd->dtype != yd->dtype || zd->format != yd->format || zd->n != yd->n || zd->c != yd->c || zd->h != yd->h ||
        zd->w != yd->w)
        return BAD_PARAM;
    if (bd->n != 1 || bd->c != yd->c || bd->h != 1 || bd->w != 1) return BAD_PARAM;
    if (act->mode != ACT_RELU && act->mode != ACT_IDENTITY) return NOT_SUPPORTED;
    if (act->mode == ACT_IDENTITY && algo != FWD_A) return NOT_SUPPORTED;  // IMPLICIT_PRECOMP_GEMM only
    if (bd->dtype != yd->dtype) return NOT_SUPPORTED;
    if (marked(FUSED, xd->c)) return NOT_SUPPORTED;
    if (int e = check_run(FWD, "ConvolutionBiasActivationForward", *xd, *wd, *cv, *yd, algo, FWD_A, FWD_B, ws, ws_bytes))
        return e;
    if (trace()) fprintf(stderr, "fake cudnn: ConvolutionBiasActivationForward activation %d\n", act->mode);
    if (xd->dtype == FLOAT)
        forward_bias_activation<float>(*xd, (const float*)x, *wd, (const float*)w, *cv, *yd, (const float*)z,
                                       (const float*)b, *act, (float*)y, alpha1, alpha2);
    else if (xd->dtype == HALF)
        forward_bias_activation<_Float16>(*xd, (const _Float16*)x, *wd, (const _Float16*)w, *cv, *yd,
                                          (const _Float16*)z, (const _Float16*)b, *act, (_Float16*)y, alpha1, alpha2);
    else if (xd->dtype == BFLOAT16)
        forward_bias_activation<Bf16>(*xd, (const Bf16*)x, *wd, (const Bf16*)w, *cv, *yd, (const Bf16*)z, (const Bf16*)b,
                                      *act, (Bf16*)y, alpha1, alpha2);
    else
        forward_bias_activation<double>(*xd, (const double*)x, *wd, (const double*)w, *cv, *yd, (const double*)z,
                                        (const double*)b, *act, (double*)y, alpha1, alpha2);
    return SUCCESS;
}

int cudnnAddTensor(void*, const void* alpha, Tensor* ad, const void* a, const void* beta, Tensor* cd, void* c) {
    if (!ad->set || !cd->set || ad->dtype != cd->dtype) return BAD_PARAM;
    if (sixteen_bit(cd->dtype)) return NOT_SUPPORTED;
    if ((ad->n != 1 && ad->n != cd->n) || (ad->c != 1 && ad->c != cd->c) || (ad->h != 1 && ad->h != cd->h) ||
        (ad->w != 1 && ad->w != cd->w))
        return BAD_PARAM;
    if (trace()) fprintf(stderr, "fake cudnn: AddTensor dtype %d\n", cd->dtype);
    if (cd->dtype == FLOAT)
        add_tensor<float>(*ad, (const float*)a, *cd, (float*)c, alpha, beta);
    else
        add_tensor<double>(*ad, (const double*)a, *cd, (double*)c, alpha, beta);
    return SUCCESS;
}
}
#pragma GCC visibility pop
