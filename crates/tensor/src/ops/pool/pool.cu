#line 1 "pool.cu"
// Max and average pooling over NHWC, forward and backward, matching ops/pool/cpu.rs.
//   max_pool2d_<dtype>, avg_pool2d_<dtype>                  a thread per output element
//   max_pool2d_backward_<dtype>, avg_pool2d_backward_<dtype> a thread per input element
// each as `<kind>_u32_<dtype>` and `<kind>_u64_<dtype>`: index arithmetic in 32 or 64 bits
// (see INDEX_LOOP in the prelude).
// The backward passes gather (each input element sums the output gradients of the windows
// that contain it, in row-major window order, as the CPU adds them) instead of scattering
// with atomics: no races, and the same result on every run.
// bf16 and f16 elements are loaded to f32 (`load`), computed in f32 exactly as the f32
// kernels compute, and rounded once when stored (`store`): bit for bit the f32 pooling of
// the widened input, rounded, as on the CPU.

// The geometry of a pooling (Pool2dSpec in backend.rs).
struct PoolGeom {
    u64 batch, in_h, in_w, channels;
    u64 window_h, window_w, stride_h, stride_w;
    u64 pad_top, pad_left;
    u64 out_h, out_w;
};

// The real input range [lo, hi) that window `o` covers along one axis (padding excluded).
__device__ __forceinline__ void pool_window(u64 o, u64 stride, u64 pad, u64 size, u64 input, i64* lo, i64* hi) {
    const i64 start = (i64)(o * stride) - (i64)pad;
    const i64 l = start > 0 ? start : 0;
    i64 h = start + (i64)size;
    if (h > (i64)input) h = (i64)input;
    *lo = l;
    *hi = h > l ? h : l;
}

// The windows [lo, hi] (inclusive) along one axis that contain input index `i`.
__device__ __forceinline__ void windows_containing(i64 i, u64 stride, u64 pad, u64 size, u64 out, i64* lo, i64* hi) {
    // Window o covers o * stride - pad .. o * stride - pad + size - 1.
    const i64 s = (i64)stride, p = (i64)pad, k = (i64)size;
    const i64 first = i + p - k + 1;
    i64 l = first <= 0 ? 0 : (first + s - 1) / s;
    i64 h = (i + p) / s;
    if (h > (i64)out - 1) h = (i64)out - 1;
    *lo = l;
    *hi = h;
}

// Splits flat NHWC index t of a [*, h, w, c] tensor into (b, y, x, ch), dividing in index
// type I (u32 when the launch's indices fit, see INDEX_LOOP).
template <typename I>
__device__ __forceinline__ void split_nhwc(I t, u64 h, u64 w, u64 c, u64* b, u64* y, u64* x, u64* ch) {
    const I ci = (I)c, wi = (I)w, hi = (I)h;
    const I pixel = t / ci;
    const I row = pixel / wi;
    const I image = row / hi;
    *ch = (u64)(t - pixel * ci);
    *x = (u64)(pixel - row * wi);
    *y = (u64)(row - image * hi);
    *b = (u64)image;
}

template <typename T, typename I>
__device__ __forceinline__ void max_pool2d_forward(const T* x, T* y, PoolGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels;
    INDEX_LOOP(I, t, g.batch * g.out_h * g.out_w * c) {
        u64 b, oy, ox, ch;
        split_nhwc<I>(t, g.out_h, g.out_w, c, &b, &oy, &ox, &ch);
        i64 y0, y1, x0, x1;
        pool_window(oy, g.stride_h, g.pad_top, g.window_h, g.in_h, &y0, &y1);
        pool_window(ox, g.stride_w, g.pad_left, g.window_w, g.in_w, &x0, &x1);
        const T* img = x + b * g.in_h * g.in_w * c + ch;
        // Strictly greater, from the window's first element: the first maximum wins ties
        // and a NaN first element stays (as on the CPU).
        C best = load(img + ((u64)y0 * g.in_w + (u64)x0) * c);
        for (i64 iy = y0; iy < y1; ++iy)
            for (i64 ix = x0; ix < x1; ++ix) {
                const C v = load(img + ((u64)iy * g.in_w + (u64)ix) * c);
                best = v > best ? v : best;
            }
        store(y + t, best);
    }
}

template <typename T, typename I>
__device__ __forceinline__ void avg_pool2d_forward(const T* x, T* y, PoolGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels;
    INDEX_LOOP(I, t, g.batch * g.out_h * g.out_w * c) {
        u64 b, oy, ox, ch;
        split_nhwc<I>(t, g.out_h, g.out_w, c, &b, &oy, &ox, &ch);
        i64 y0, y1, x0, x1;
        pool_window(oy, g.stride_h, g.pad_top, g.window_h, g.in_h, &y0, &y1);
        pool_window(ox, g.stride_w, g.pad_left, g.window_w, g.in_w, &x0, &x1);
        const T* img = x + b * g.in_h * g.in_w * c + ch;
        C sum = C(0);
        for (i64 iy = y0; iy < y1; ++iy)
            for (i64 ix = x0; ix < x1; ++ix) sum += load(img + ((u64)iy * g.in_w + (u64)ix) * c);
        const C inv = C(1) / C((y1 - y0) * (x1 - x0));
        store(y + t, sum * inv);
    }
}

// Input element (iy, ix) receives window o's gradient iff it is the first element of the
// window, in row-major order, equal to the window's maximum y[o].
template <typename T, typename I>
__device__ __forceinline__ void max_pool2d_backward(const T* x, const T* y, const T* dy, T* dx, PoolGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels;
    INDEX_LOOP(I, t, g.batch * g.in_h * g.in_w * c) {
        u64 b, y_, x_, ch;
        split_nhwc<I>(t, g.in_h, g.in_w, c, &b, &y_, &x_, &ch);
        const i64 ix = (i64)x_, iy = (i64)y_;
        const T* img = x + b * g.in_h * g.in_w * c + ch;
        const u64 out_base = b * g.out_h * g.out_w * c + ch;
        const C v = load(x + (u64)t);
        i64 oy0, oy1, ox0, ox1;
        windows_containing(iy, g.stride_h, g.pad_top, g.window_h, g.out_h, &oy0, &oy1);
        windows_containing(ix, g.stride_w, g.pad_left, g.window_w, g.out_w, &ox0, &ox1);
        C acc = C(0);
        for (i64 oy = oy0; oy <= oy1; ++oy)
            for (i64 ox = ox0; ox <= ox1; ++ox) {
                const u64 o = out_base + ((u64)oy * g.out_w + (u64)ox) * c;
                const C m = load(y + o);
                if (!(v == m)) continue;
                i64 y0, y1, x0, x1;
                pool_window((u64)oy, g.stride_h, g.pad_top, g.window_h, g.in_h, &y0, &y1);
                pool_window((u64)ox, g.stride_w, g.pad_left, g.window_w, g.in_w, &x0, &x1);
                // Is an earlier element of the window equal to the maximum too?
                bool earlier = false;
                for (i64 jy = y0; jy <= iy && !earlier; ++jy)
                    for (i64 jx = x0; jx < x1; ++jx) {
                        if (jy == iy && jx == ix) break;
                        if (load(img + ((u64)jy * g.in_w + (u64)jx) * c) == m) {
                            earlier = true;
                            break;
                        }
                    }
                if (!earlier) acc += load(dy + o);
            }
        store(dx + t, acc);
    }
}

template <typename T, typename I>
__device__ __forceinline__ void avg_pool2d_backward(const T* dy, T* dx, PoolGeom g) {
    typedef compute_t<T> C;
    const u64 c = g.channels;
    INDEX_LOOP(I, t, g.batch * g.in_h * g.in_w * c) {
        u64 b, y_, x_, ch;
        split_nhwc<I>(t, g.in_h, g.in_w, c, &b, &y_, &x_, &ch);
        const i64 ix = (i64)x_, iy = (i64)y_;
        const u64 out_base = b * g.out_h * g.out_w * c + ch;
        i64 oy0, oy1, ox0, ox1;
        windows_containing(iy, g.stride_h, g.pad_top, g.window_h, g.out_h, &oy0, &oy1);
        windows_containing(ix, g.stride_w, g.pad_left, g.window_w, g.out_w, &ox0, &ox1);
        C acc = C(0);
        for (i64 oy = oy0; oy <= oy1; ++oy) {
            i64 y0, y1;
            pool_window((u64)oy, g.stride_h, g.pad_top, g.window_h, g.in_h, &y0, &y1);
            for (i64 ox = ox0; ox <= ox1; ++ox) {
                i64 x0, x1;
                pool_window((u64)ox, g.stride_w, g.pad_left, g.window_w, g.in_w, &x0, &x1);
                const C inv = C(1) / C((y1 - y0) * (x1 - x0));
                acc += load(dy + out_base + ((u64)oy * g.out_w + (u64)ox) * c) * inv;
            }
        }
        store(dx + t, acc);
    }
}

#define POOL_INDEXED(T, I)                                                                                    \
    extern "C" __global__ void max_pool2d_##I##_##T(const T* x, T* y, PoolGeom g) {                              \
        max_pool2d_forward<T, I>(x, y, g);                                                                       \
    }                                                                                                            \
    extern "C" __global__ void avg_pool2d_##I##_##T(const T* x, T* y, PoolGeom g) {                              \
        avg_pool2d_forward<T, I>(x, y, g);                                                                       \
    }                                                                                                            \
    extern "C" __global__ void max_pool2d_backward_##I##_##T(const T* x, const T* y, const T* dy, T* dx,         \
                                                             PoolGeom g) {                                       \
        max_pool2d_backward<T, I>(x, y, dy, dx, g);                                                              \
    }                                                                                                            \
    extern "C" __global__ void avg_pool2d_backward_##I##_##T(const T* dy, T* dx, PoolGeom g) {                   \
        avg_pool2d_backward<T, I>(dy, dx, g);                                                                    \
    }

POOL_INDEXED(f32, u32)
POOL_INDEXED(f32, u64)
POOL_INDEXED(f64, u32)
POOL_INDEXED(f64, u64)
POOL_INDEXED(bf16, u32)
POOL_INDEXED(bf16, u64)
POOL_INDEXED(f16, u32)
POOL_INDEXED(f16, u64)
