#line 1 "reduce.cu"
// Reduction kernels. The host (ops/reduce/cuda.rs) splits any reduction into passes over
// `[outer, r, inner]` views, as the CPU does, and runs each pass with one of:
//   reduce_rows_<op>_<dtype>  inner == 1: a block per (row, chunk of the row)
//   reduce_cols_<op>_<dtype>  inner > 1:  a thread per (outer, chunk, inner) output
// Long rows or few columns are split into chunks whose partial results a second launch
// combines, so there is enough parallel work either way. And arg-reductions:
//   argmax_<dtype>, argmin_<dtype>  a thread per output, first index on ties, NaN wins.
// bf16 and f16 elements are loaded to f32 and combined in f32. Their partial results
// between launches and passes stay in f32, as the f32 reduction keeps them, so the host
// chains `reduce_*_<op>_<s>_f32` (first launch), f32 launches, and `reduce_*_<op>_f32_<s>`
// (last launch, the one rounding); `reduce_*_<op>_<s>` does all in one launch. The result
// is bit for bit the f32 reduction of the widened input, rounded once.

template <typename T> struct Sum {
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
    __device__ __forceinline__ static T identity() { return T(0); }
};
// `b != b` keeps a NaN: a max or min over a NaN is NaN, as on the CPU.
template <typename T> struct Max {
    __device__ __forceinline__ T operator()(T a, T b) const { return (b > a || b != b) ? b : a; }
    __device__ __forceinline__ static T identity();
};
template <typename T> struct Min {
    __device__ __forceinline__ T operator()(T a, T b) const { return (b < a || b != b) ? b : a; }
    __device__ __forceinline__ static T identity();
};
template <> __device__ __forceinline__ f32 Max<f32>::identity() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ f64 Max<f64>::identity() { return -__longlong_as_double(0x7ff0000000000000ll); }
template <> __device__ __forceinline__ i64 Max<i64>::identity() { return I64_MIN; }
template <> __device__ __forceinline__ f32 Min<f32>::identity() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ f64 Min<f64>::identity() { return __longlong_as_double(0x7ff0000000000000ll); }
template <> __device__ __forceinline__ i64 Min<i64>::identity() { return I64_MAX; }

// `[rows, r] -> [rows, chunks]`: output `task` reduces elements
// `[c * chunk, min((c + 1) * chunk, r))` of row `task / chunks`, with `c = task % chunks`.
// In and Out are the storage types; Op combines in compute_t<In> (f32 for bf16 and f16).
template <typename In, typename Out, typename Op>
__device__ __forceinline__ void reduce_rows(const In* x, Out* out, u64 rows, u64 r, u64 chunk, u64 chunks) {
    typedef compute_t<In> C;
    __shared__ C scratch[32];
    const Op op;
    for (u64 task = blockIdx.x; task < rows * chunks; task += gridDim.x) {
        const u64 row = task / chunks, c = task % chunks;
        const u64 lo = c * chunk, hi = min(lo + chunk, r);
        C acc = Op::identity();
        for (u64 j = lo + threadIdx.x; j < hi; j += blockDim.x) acc = op(acc, load(x + row * r + j));
        acc = block_reduce(acc, Op::identity(), scratch, op);
        if (threadIdx.x == 0) store(out + task, acc);
    }
}

// `[outer, r, inner] -> [outer, chunks, inner]`, one thread per output.
template <typename In, typename Out, typename Op>
__device__ __forceinline__ void reduce_cols(const In* x, Out* out, u64 outer, u64 r, u64 inner, u64 chunk,
                                            u64 chunks) {
    typedef compute_t<In> C;
    const Op op;
    GRID_STRIDE_LOOP(t, outer * chunks * inner) {
        const u64 i = t % inner, rest = t / inner;
        const u64 c = rest % chunks, o = rest / chunks;
        const u64 lo = c * chunk, hi = min(lo + chunk, r);
        C acc = Op::identity();
        for (u64 j = lo; j < hi; ++j) acc = op(acc, load(x + (o * r + j) * inner + i));
        store(out + t, acc);
    }
}

// Entry points `reduce_{rows,cols}_<op>_<SUFFIX>` from storage type IN to OUT.
#define REDUCE(NAME, OP, IN, OUT, SUFFIX)                                                                    \
    extern "C" __global__ void reduce_rows_##NAME##_##SUFFIX(const IN* x, OUT* out, u64 rows, u64 r,          \
                                                             u64 chunk, u64 chunks) {                        \
        reduce_rows<IN, OUT, OP<compute_t<IN> > >(x, out, rows, r, chunk, chunks);                            \
    }                                                                                                         \
    extern "C" __global__ void reduce_cols_##NAME##_##SUFFIX(const IN* x, OUT* out, u64 outer, u64 r,         \
                                                             u64 inner, u64 chunk, u64 chunks) {             \
        reduce_cols<IN, OUT, OP<compute_t<IN> > >(x, out, outer, r, inner, chunk, chunks);                    \
    }
#define REDUCE_ALL(IN, OUT, SUFFIX) \
    REDUCE(sum, Sum, IN, OUT, SUFFIX) REDUCE(max, Max, IN, OUT, SUFFIX) REDUCE(min, Min, IN, OUT, SUFFIX)

REDUCE_ALL(f32, f32, f32)
REDUCE_ALL(f64, f64, f64)
REDUCE_ALL(i64, i64, i64)
REDUCE_ALL(bf16, bf16, bf16)
REDUCE_ALL(bf16, f32, bf16_f32)
REDUCE_ALL(f32, bf16, f32_bf16)
REDUCE_ALL(f16, f16, f16)
REDUCE_ALL(f16, f32, f16_f32)
REDUCE_ALL(f32, f16, f32_f16)

// Index along the middle axis of `[outer, r, inner]` (r >= 1) of the extreme value.
// bf16 and f16 compare in f32 (exact widening, so the same order).
template <typename T, bool MAX>
__device__ __forceinline__ void arg_reduce(const T* x, i64* out, u64 outer, u64 r, u64 inner) {
    typedef compute_t<T> C;
    GRID_STRIDE_LOOP(t, outer * inner) {
        const u64 o = t / inner, i = t % inner;
        const T* base = x + o * r * inner + i;
        C best = load(base);
        i64 best_j = 0;
        for (u64 j = 1; j < r; ++j) {
            const C v = load(base + j * inner);
            const bool better = MAX ? v > best : v < best;
            if (better || (v != v && best == best)) {
                best = v;
                best_j = (i64)j;
            }
        }
        out[t] = best_j;
    }
}

#define ARG_REDUCE(T)                                                                                   \
    extern "C" __global__ void argmax_##T(const T* x, i64* out, u64 outer, u64 r, u64 inner) {           \
        arg_reduce<T, true>(x, out, outer, r, inner);                                                    \
    }                                                                                                    \
    extern "C" __global__ void argmin_##T(const T* x, i64* out, u64 outer, u64 r, u64 inner) {           \
        arg_reduce<T, false>(x, out, outer, r, inner);                                                   \
    }

ARG_REDUCE(f32)
ARG_REDUCE(f64)
ARG_REDUCE(i64)
ARG_REDUCE(bf16)
ARG_REDUCE(f16)
