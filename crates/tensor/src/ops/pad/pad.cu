#line 1 "pad.cu"
// Padding of a contiguous tensor, forward and adjoint, matching ops/pad/cpu.rs.
//   pad_<dtype>           a thread per output element: the input element it reads, or the constant
//   pad_backward_<dtype>  a thread per input element: the sum of the output elements that read it
// The adjoint gathers (at most three readers per axis under reflection) instead of scattering
// with atomics: no races, and the same result on every run.
// bf16 and f16 elements are loaded to f32, summed in f32 and rounded once when stored; the
// constant is rounded to f32 first, as the f32 kernel on the widened input would.

#define PAD_MAX_DIMS 8

// PadSpec of ops/pad/mod.rs; axes outermost first.
struct PadGeom {
    u64 rank;
    u64 reflect;
    double value;
    u64 in_dims[PAD_MAX_DIMS];
    u64 out_dims[PAD_MAX_DIMS];
    u64 before[PAD_MAX_DIMS];
    u64 after[PAD_MAX_DIMS];
};

template <typename T>
__device__ __forceinline__ void pad_forward(const T* x, T* y, u64 n, const PadGeom g) {
    GRID_STRIDE_LOOP(t, n) {
        u64 rem = t, src = 0, stride = 1;
        bool inside = true;
        for (int d = (int)g.rank - 1; d >= 0; --d) {
            const u64 o = rem % g.out_dims[d];
            rem /= g.out_dims[d];
            const i64 size = (i64)g.in_dims[d];
            i64 i = (i64)o - (i64)g.before[d];
            if (i < 0 || i >= size) {
                if (!g.reflect) {
                    inside = false;
                } else {
                    i = i < 0 ? -i : 2 * (size - 1) - i;
                }
            }
            src += (u64)i * stride;
            stride *= g.in_dims[d];
        }
        store(y + t, inside ? load(x + src) : (compute_t<T>)g.value);
    }
}

template <typename T>
__device__ __forceinline__ void pad_backward(const T* dy, T* dx, u64 n, const PadGeom g) {
    GRID_STRIDE_LOOP(t, n) {
        u64 readers[PAD_MAX_DIMS][3];
        int count[PAD_MAX_DIMS];
        int pick[PAD_MAX_DIMS];
        u64 out_stride[PAD_MAX_DIMS];
        u64 rem = t, stride = 1;
        for (int d = (int)g.rank - 1; d >= 0; --d) {
            const u64 size = g.in_dims[d], before = g.before[d], after = g.after[d];
            const u64 i = rem % size;
            rem /= size;
            int k = 0;
            if (g.reflect && i >= 1 && i <= before) readers[d][k++] = before - i;
            readers[d][k++] = i + before;
            if (g.reflect && i + 1 + after >= size && i + 2 <= size) readers[d][k++] = before + 2 * (size - 1) - i;
            count[d] = k;
            pick[d] = 0;
            out_stride[d] = stride;
            stride *= g.out_dims[d];
        }
        compute_t<T> acc = 0;
        for (;;) {
            u64 offset = 0;
            for (int d = 0; d < (int)g.rank; ++d) offset += readers[d][pick[d]] * out_stride[d];
            acc += load(dy + offset);
            int d = (int)g.rank - 1;
            while (d >= 0) {
                if (++pick[d] < count[d]) break;
                pick[d] = 0;
                --d;
            }
            if (d < 0) break;
        }
        store(dx + t, acc);
    }
}

#define PAD(T)                                                                                              \
    extern "C" __global__ void pad_##T(const T* x, T* y, u64 n, const PadGeom g) { pad_forward(x, y, n, g); } \
    extern "C" __global__ void pad_backward_##T(const T* dy, T* dx, u64 n, const PadGeom g) {               \
        pad_backward(dy, dx, n, g);                                                                         \
    }

PAD(f32)
PAD(f64)
PAD(bf16)
PAD(f16)
