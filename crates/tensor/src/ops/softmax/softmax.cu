#line 1 "softmax.cu"
// log_softmax over the rows of a `[rows, cols]` buffer: one block per row (grid-stride
// over rows), three passes over the row (max, sum of exponentials, output), matching the
// CPU kernel in ops/softmax/cpu.rs: the max ignores NaN, a row without a finite max is
// shifted by 0, and the result is `x - (log(sum(exp(x - shift))) + shift)`.

template <typename T> struct MaxIgnoringNan {
    __device__ __forceinline__ T operator()(T a, T b) const { return fmax(a, b); }
};
template <typename T> struct Add {
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

template <typename T>
__device__ __forceinline__ void log_softmax_rows(const T* x, T* y, u64 rows, u64 cols) {
    __shared__ T scratch[32];
    const T neg_inf = -T(__longlong_as_double(0x7ff0000000000000ll));
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * cols;
        T* yr = y + row * cols;
        T m = neg_inf;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) m = fmax(m, xr[j]);
        m = block_reduce(m, neg_inf, scratch, MaxIgnoringNan<T>());
        const T shift = isfinite(m) ? m : T(0);
        T s = T(0);
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) s += exp(xr[j] - shift);
        s = block_reduce(s, T(0), scratch, Add<T>());
        const T log_sum = log(s) + shift;
        for (u64 j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = xr[j] - log_sum;
    }
}

extern "C" __global__ void log_softmax_f32(const f32* x, f32* y, u64 rows, u64 cols) { log_softmax_rows(x, y, rows, cols); }
extern "C" __global__ void log_softmax_f64(const f64* x, f64* y, u64 rows, u64 cols) { log_softmax_rows(x, y, rows, cols); }
