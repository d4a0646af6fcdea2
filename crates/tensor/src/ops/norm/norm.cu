#line 1 "norm.cu"
// Batch normalization over a `[rows, channels]` view (NHWC flattened), matching
// ops/norm/cpu.rs. Statistics are column reductions done in two launches without atomics
// (deterministic): a thread per (block of BN_BLOCK_ROWS rows, channel) reduces its block in
// the element type, storing f64 partials; then a block of BN_MERGE_THREADS threads per
// channel merges that channel's partials cooperatively (each thread a fixed strided subset
// in order, then a fixed tree), so the merge order depends only on the shape.
// Adjacent threads take adjacent channels, so every row is read coalesced.
//   training forward:  bn_partial_moments -> bn_merge_moments -> bn_scale_shift
//   backward:          bn_backward_partial -> bn_backward_merge -> bn_backward_apply
// The forward block statistics are two-pass (block mean, then squared deviations from it)
// and blocks merge by Chan's formula, so a large mean against a small spread loses nothing.
//
// Epilogues (BatchNormEpilogue in Rust), fused into the elementwise passes:
//   0 identity: y = bn(x);  1 relu: y = relu(bn(x));  2 add-relu: y = relu(residual + bn(x)).
// relu is `v < 0 ? 0 : v` (NaN passes) and its gradient dy * (y > 0 ? 1 : 0), as the
// elementwise relu's, so fused and unfused results agree bit for bit. The backward passes
// read the mask from the forward output y (null for the identity epilogue).
//
// The elementwise passes come in two index widths: `_u32` when rows * c < 2^31 (then
// i + grid stride cannot wrap), where the per-element `% c` is a 32-bit division, several
// times cheaper than the 64-bit one; `_u64` otherwise.

#define BN_BLOCK_ROWS 256
#define BN_MERGE_THREADS 128

template <typename T>
__device__ __forceinline__ T bn_relu(T v) {
    return v < T(0) ? T(0) : v;
}

template <typename T>
__device__ __forceinline__ T bn_relu_grad(T dy, T y) {
    return dy * (y > T(0) ? T(1) : T(0));
}

// Block statistics: partial[(block * c + ch) * 2 + {0, 1}] = (mean, m2) of the block's rows.
template <typename T>
__device__ __forceinline__ void bn_partial_moments(const T* x, f64* partial, u64 rows, u64 c) {
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(t, blocks * c) {
        const u64 ch = t % c, block = t / c;
        const u64 lo = block * BN_BLOCK_ROWS;
        const u64 hi = min(lo + BN_BLOCK_ROWS, rows);
        T sum = T(0);
        for (u64 r = lo; r < hi; ++r) sum += x[r * c + ch];
        const T mean = sum / T(hi - lo);
        T m2 = T(0);
        for (u64 r = lo; r < hi; ++r) {
            const T d = x[r * c + ch] - mean;
            m2 += d * d;
        }
        partial[t * 2] = (f64)mean;
        partial[t * 2 + 1] = (f64)m2;
    }
}

// Chan et al.'s combination of (count, mean, m2) with (n, bm, bm2); an empty side is a no-op.
__device__ __forceinline__ void bn_chan_merge(f64& count, f64& mean, f64& m2, f64 n, f64 bm, f64 bm2) {
    const f64 total = count + n;
    if (total == 0.0) return;
    const f64 delta = bm - mean;
    mean += delta * n / total;
    m2 += bm2 + delta * delta * count * n / total;
    count = total;
}

// A block per channel (BN_MERGE_THREADS threads): merges the channel's partials, writes the
// mean and biased variance, and the affine map y = (x - mean) * scale + shift (scale,
// shift: affine[ch], affine[c + ch]). gamma and beta may be null (1 and 0).
template <typename T>
__device__ __forceinline__ void bn_merge_moments(const f64* partial, const T* gamma, const T* beta, T* mean_out,
                                                 T* var_out, T* affine, u64 rows, u64 c, f64 epsilon) {
    __shared__ f64 s_count[BN_MERGE_THREADS], s_mean[BN_MERGE_THREADS], s_m2[BN_MERGE_THREADS];
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    const unsigned t = threadIdx.x;
    for (u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        f64 count = 0.0, mean = 0.0, m2 = 0.0;
        for (u64 b = t; b < blocks; b += BN_MERGE_THREADS) {
            const f64 n = (f64)(min((b + 1) * BN_BLOCK_ROWS, rows) - b * BN_BLOCK_ROWS);
            bn_chan_merge(count, mean, m2, n, partial[(b * c + ch) * 2], partial[(b * c + ch) * 2 + 1]);
        }
        s_count[t] = count;
        s_mean[t] = mean;
        s_m2[t] = m2;
        __syncthreads();
        for (unsigned stride = BN_MERGE_THREADS / 2; stride > 0; stride >>= 1) {
            if (t < stride) {
                bn_chan_merge(s_count[t], s_mean[t], s_m2[t], s_count[t + stride], s_mean[t + stride], s_m2[t + stride]);
            }
            __syncthreads();
        }
        if (t == 0) {
            const f64 var = s_m2[0] / s_count[0];
            mean_out[ch] = (T)s_mean[0];
            var_out[ch] = (T)var;
            affine[ch] = (T)((gamma ? (f64)gamma[ch] : 1.0) / sqrt(var + epsilon));
            affine[c + ch] = beta ? beta[ch] : T(0);
        }
        __syncthreads();  // the shared arrays are reused by the next channel
    }
}

template <typename T, typename I>
__device__ __forceinline__ void bn_scale_shift(const T* x, const T* mean, const T* affine, const T* residual, T* y,
                                               I n, I c, u32 epilogue) {
    const I stride = (I)blockDim.x * (I)gridDim.x;
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < n; i += stride) {
        const I ch = i % c;
        const T v = (x[i] - mean[ch]) * affine[ch] + affine[c + ch];
        // residual + bn(x), the order in which the unfused `Add` layer sums them.
        y[i] = epilogue == 0 ? v : bn_relu(epilogue == 2 ? residual[i] + v : v);
    }
}

// Block sums of g and g * (x - mean), g = dy masked by y > 0 when y is given:
// partial[(block * c + ch) * 2 + {0, 1}].
template <typename T>
__device__ __forceinline__ void bn_backward_partial(const T* x, const T* dy, const T* mean, const T* y, f64* partial,
                                                    u64 rows, u64 c) {
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(t, blocks * c) {
        const u64 ch = t % c, block = t / c;
        const u64 lo = block * BN_BLOCK_ROWS;
        const u64 hi = min(lo + BN_BLOCK_ROWS, rows);
        const T m = mean[ch];
        T sum_dy = T(0), sum_dy_xc = T(0);
        for (u64 r = lo; r < hi; ++r) {
            const u64 i = r * c + ch;
            const T d = y ? bn_relu_grad(dy[i], y[i]) : dy[i];
            sum_dy += d;
            sum_dy_xc += d * (x[i] - m);
        }
        partial[t * 2] = (f64)sum_dy;
        partial[t * 2 + 1] = (f64)sum_dy_xc;
    }
}

// A block per channel: d_beta = sum(g), d_gamma = sum(g * xhat), and the coefficients of
// d_x = k_dy * g + k_x * (x - mean) + k_0 (coef[ch], coef[c + ch], coef[2c + ch]).
template <typename T>
__device__ __forceinline__ void bn_backward_merge(const f64* partial, const T* gamma, const T* var, T* d_gamma_out,
                                                  T* d_beta_out, T* coef, u64 rows, u64 c, f64 epsilon) {
    __shared__ f64 s_dy[BN_MERGE_THREADS], s_dy_xc[BN_MERGE_THREADS];
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    const unsigned t = threadIdx.x;
    for (u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        f64 sum_dy = 0.0, sum_dy_xc = 0.0;
        for (u64 b = t; b < blocks; b += BN_MERGE_THREADS) {
            sum_dy += partial[(b * c + ch) * 2];
            sum_dy_xc += partial[(b * c + ch) * 2 + 1];
        }
        s_dy[t] = sum_dy;
        s_dy_xc[t] = sum_dy_xc;
        __syncthreads();
        for (unsigned stride = BN_MERGE_THREADS / 2; stride > 0; stride >>= 1) {
            if (t < stride) {
                s_dy[t] += s_dy[t + stride];
                s_dy_xc[t] += s_dy_xc[t + stride];
            }
            __syncthreads();
        }
        if (t == 0) {
            const f64 inv_std = 1.0 / sqrt((f64)var[ch] + epsilon);
            const f64 d_gamma = s_dy_xc[0] * inv_std;
            const f64 inv_rows = 1.0 / (f64)rows;
            const f64 g = (gamma ? (f64)gamma[ch] : 1.0) * inv_std;
            d_gamma_out[ch] = (T)d_gamma;
            d_beta_out[ch] = (T)s_dy[0];
            coef[ch] = (T)g;
            coef[c + ch] = (T)(-g * d_gamma * inv_std * inv_rows);
            coef[2 * c + ch] = (T)(-g * s_dy[0] * inv_rows);
        }
        __syncthreads();
    }
}

// dx = k_dy * g + k_x * (x - mean) + k_0; with y given, g = dy * (y > 0), and d_residual
// (when not null) receives g.
template <typename T, typename I>
__device__ __forceinline__ void bn_backward_apply(const T* x, const T* dy, const T* mean, const T* coef, const T* y,
                                                  T* dx, T* d_residual, I n, I c) {
    const I stride = (I)blockDim.x * (I)gridDim.x;
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < n; i += stride) {
        const I ch = i % c;
        const T g = y ? bn_relu_grad(dy[i], y[i]) : dy[i];
        dx[i] = coef[ch] * g + coef[c + ch] * (x[i] - mean[ch]) + coef[2 * c + ch];
        if (d_residual) d_residual[i] = g;
    }
}

#define NORM_INDEXED(T, I)                                                                                         \
    extern "C" __global__ void bn_scale_shift_##I##_##T(const T* x, const T* mean, const T* affine,               \
                                                        const T* residual, T* y, u64 n, u64 c, u32 epilogue) {    \
        bn_scale_shift<T, I>(x, mean, affine, residual, y, (I)n, (I)c, epilogue);                                 \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_apply_##I##_##T(const T* x, const T* dy, const T* mean, const T* coef, \
                                                           const T* y, T* dx, T* d_residual, u64 n, u64 c) {      \
        bn_backward_apply<T, I>(x, dy, mean, coef, y, dx, d_residual, (I)n, (I)c);                                \
    }

#define NORM(T)                                                                                                   \
    extern "C" __global__ void bn_partial_moments_##T(const T* x, f64* partial, u64 rows, u64 c) {               \
        bn_partial_moments(x, partial, rows, c);                                                                   \
    }                                                                                                              \
    extern "C" __global__ void bn_merge_moments_##T(const f64* partial, const T* gamma, const T* beta, T* mean,   \
                                                    T* var, T* affine, u64 rows, u64 c, f64 epsilon) {             \
        bn_merge_moments(partial, gamma, beta, mean, var, affine, rows, c, epsilon);                               \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_partial_##T(const T* x, const T* dy, const T* mean, const T* y,        \
                                                       f64* partial, u64 rows, u64 c) {                            \
        bn_backward_partial(x, dy, mean, y, partial, rows, c);                                                     \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_merge_##T(const f64* partial, const T* gamma, const T* var,            \
                                                     T* d_gamma, T* d_beta, T* coef, u64 rows, u64 c,             \
                                                     f64 epsilon) {                                                \
        bn_backward_merge(partial, gamma, var, d_gamma, d_beta, coef, rows, c, epsilon);                           \
    }                                                                                                              \
    NORM_INDEXED(T, u32)                                                                                           \
    NORM_INDEXED(T, u64)

NORM(f32)
NORM(f64)
