#line 1 "resize.cu"
// Resizing NHWC images by integer factors, forward and adjoint, matching ops/resize/cpu.rs.
//   resize_<dtype>           a thread per output element
//   resize_backward_<dtype>  a thread per input element: the weighted sum of the output gradients
//                            that read it, in ascending output order (as the CPU), no atomics
// Taps use half-pixel centres (TF's resize, PyTorch's align_corners=False), computed in double
// exactly as `tap` in ops/resize/mod.rs.
// bf16 and f16 elements are loaded to f32, computed in f32 exactly as the f32 kernels
// compute, and rounded once when stored, as the CPU computes them.

// ResizeSpec of ops/resize/mod.rs.
struct ResizeGeom {
    u64 batch, in_h, in_w, channels;
    u64 factor_h, factor_w;
    u64 bilinear;
};

// Output pixel o along an axis of n input pixels upsampled by f reads w0 * x[i0] + w1 * x[i1].
__device__ __forceinline__ void resize_tap(u64 o, u64 f, u64 n, u64 bilinear, u64* i0, u64* i1, double* w0,
                                           double* w1) {
    if (!bilinear) {
        u64 i = o / f;
        if (i > n - 1) i = n - 1;
        *i0 = i;
        *i1 = i;
        *w0 = 1.0;
        *w1 = 0.0;
        return;
    }
    double src = ((double)o + 0.5) / (double)f - 0.5;
    if (src < 0.0) src = 0.0;
    u64 a = (u64)floor(src);
    if (a > n - 1) a = n - 1;
    *i0 = a;
    *i1 = a + 1 < n ? a + 1 : n - 1;
    *w1 = src - (double)a;
    *w0 = 1.0 - *w1;
}

// The weight with which output pixel o reads input pixel i (0 if it does not); `reads` says
// whether it does at all.
__device__ __forceinline__ double resize_weight(u64 o, u64 i, u64 f, u64 n, u64 bilinear, bool* reads) {
    u64 i0, i1;
    double w0, w1;
    resize_tap(o, f, n, bilinear, &i0, &i1, &w0, &w1);
    *reads = i0 == i || i1 == i;
    if (i0 == i && i1 == i) return w0 + w1;
    return i0 == i ? w0 : (i1 == i ? w1 : 0.0);
}

template <typename T>
__device__ __forceinline__ void resize_forward(const T* x, T* y, const ResizeGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels, out_h = g.in_h * g.factor_h, out_w = g.in_w * g.factor_w;
    GRID_STRIDE_LOOP(t, g.batch * out_h * out_w * c) {
        const u64 ch = t % c, pixel = t / c;
        const u64 ox = pixel % out_w, oy = (pixel / out_w) % out_h, b = pixel / (out_w * out_h);
        u64 y0, y1, x0, x1;
        double wy0, wy1, wx0, wx1;
        resize_tap(oy, g.factor_h, g.in_h, g.bilinear, &y0, &y1, &wy0, &wy1);
        resize_tap(ox, g.factor_w, g.in_w, g.bilinear, &x0, &x1, &wx0, &wx1);
        const T* img = x + b * g.in_h * g.in_w * c + ch;
        if (!g.bilinear) {
            store(y + t, load(img + (y0 * g.in_w + x0) * c));
        } else {
            const C a = load(img + (y0 * g.in_w + x0) * c), bb = load(img + (y0 * g.in_w + x1) * c);
            const C p = load(img + (y1 * g.in_w + x0) * c), q = load(img + (y1 * g.in_w + x1) * c);
            const C ty0 = (C)wy0, ty1 = (C)wy1, tx0 = (C)wx0, tx1 = (C)wx1;
            store(y + t, ty0 * (tx0 * a + tx1 * bb) + ty1 * (tx0 * p + tx1 * q));
        }
    }
}

template <typename T>
__device__ __forceinline__ void resize_backward(const T* dy, T* dx, const ResizeGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels, out_h = g.in_h * g.factor_h, out_w = g.in_w * g.factor_w;
    GRID_STRIDE_LOOP(t, g.batch * g.in_h * g.in_w * c) {
        const u64 ch = t % c, pixel = t / c;
        const u64 ix = pixel % g.in_w, iy = (pixel / g.in_w) % g.in_h, b = pixel / (g.in_w * g.in_h);
        const T* grad = dy + b * out_h * out_w * c + ch;
        // The output pixels that can read (iy, ix): reader_range in ops/resize/mod.rs.
        const u64 oy_lo = (iy > 0 ? iy - 1 : 0) * g.factor_h, oy_hi = min((iy + 2) * g.factor_h, out_h);
        const u64 ox_lo = (ix > 0 ? ix - 1 : 0) * g.factor_w, ox_hi = min((ix + 2) * g.factor_w, out_w);
        C acc = C(0);
        for (u64 oy = oy_lo; oy < oy_hi; ++oy) {
            bool reads_y;
            const C wy = (C)resize_weight(oy, iy, g.factor_h, g.in_h, g.bilinear, &reads_y);
            if (!reads_y) continue;
            for (u64 ox = ox_lo; ox < ox_hi; ++ox) {
                bool reads_x;
                const C wx = (C)resize_weight(ox, ix, g.factor_w, g.in_w, g.bilinear, &reads_x);
                if (!reads_x) continue;
                acc += (wy * wx) * load(grad + (oy * out_w + ox) * c);
            }
        }
        store(dx + t, acc);
    }
}

#define RESIZE(T)                                                                                            \
    extern "C" __global__ void resize_##T(const T* x, T* y, const ResizeGeom g) { resize_forward(x, y, g); } \
    extern "C" __global__ void resize_backward_##T(const T* dy, T* dx, const ResizeGeom g) {                \
        resize_backward(dy, dx, g);                                                                          \
    }

RESIZE(f32)
RESIZE(f64)
RESIZE(bf16)
RESIZE(f16)
