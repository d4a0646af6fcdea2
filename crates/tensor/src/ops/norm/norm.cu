#line 1 "norm.cu"
// Batch normalization over a `[rows, channels]` view (NHWC flattened), matching
// ops/norm/cpu.rs. Statistics are column reductions done in two launches without atomics
// (deterministic): a thread per (block of BN_BLOCK_ROWS rows, channel) reduces its block in
// the element type, storing f64 partials; a thread per channel merges the partials in f64.
// Adjacent threads take adjacent channels, so every row is read coalesced.
//   training forward:  bn_partial_moments -> bn_merge_moments -> bn_scale_shift
//   backward:          bn_backward_partial -> bn_backward_merge -> bn_backward_apply
// The forward block statistics are two-pass (block mean, then squared deviations from it)
// and blocks merge by Chan's formula, so a large mean against a small spread loses nothing.

#define BN_BLOCK_ROWS 256

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

// Per channel: merges the blocks (Chan et al.), writes the mean and biased variance, and
// the affine map y = (x - mean) * scale + shift (scale, shift: affine[ch], affine[c + ch]).
// gamma and beta may be null (1 and 0).
template <typename T>
__device__ __forceinline__ void bn_merge_moments(const f64* partial, const T* gamma, const T* beta, T* mean_out,
                                                 T* var_out, T* affine, u64 rows, u64 c, f64 epsilon) {
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(ch, c) {
        f64 count = 0.0, mean = 0.0, m2 = 0.0;
        for (u64 b = 0; b < blocks; ++b) {
            const f64 n = (f64)(min((b + 1) * BN_BLOCK_ROWS, rows) - b * BN_BLOCK_ROWS);
            const f64 bm = partial[(b * c + ch) * 2], bm2 = partial[(b * c + ch) * 2 + 1];
            const f64 total = count + n;
            const f64 delta = bm - mean;
            mean += delta * n / total;
            m2 += bm2 + delta * delta * count * n / total;
            count = total;
        }
        const f64 var = m2 / count;
        mean_out[ch] = (T)mean;
        var_out[ch] = (T)var;
        affine[ch] = (T)((gamma ? (f64)gamma[ch] : 1.0) / sqrt(var + epsilon));
        affine[c + ch] = beta ? beta[ch] : T(0);
    }
}

template <typename T>
__device__ __forceinline__ void bn_scale_shift(const T* x, const T* mean, const T* affine, T* y, u64 rows, u64 c) {
    GRID_STRIDE_LOOP(i, rows * c) {
        const u64 ch = i % c;
        y[i] = (x[i] - mean[ch]) * affine[ch] + affine[c + ch];
    }
}

// Block sums of dy and dy * (x - mean): partial[(block * c + ch) * 2 + {0, 1}].
template <typename T>
__device__ __forceinline__ void bn_backward_partial(const T* x, const T* dy, const T* mean, f64* partial, u64 rows,
                                                    u64 c) {
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(t, blocks * c) {
        const u64 ch = t % c, block = t / c;
        const u64 lo = block * BN_BLOCK_ROWS;
        const u64 hi = min(lo + BN_BLOCK_ROWS, rows);
        const T m = mean[ch];
        T sum_dy = T(0), sum_dy_xc = T(0);
        for (u64 r = lo; r < hi; ++r) {
            const T d = dy[r * c + ch];
            sum_dy += d;
            sum_dy_xc += d * (x[r * c + ch] - m);
        }
        partial[t * 2] = (f64)sum_dy;
        partial[t * 2 + 1] = (f64)sum_dy_xc;
    }
}

// Per channel: d_beta = sum(dy), d_gamma = sum(dy * xhat), and the coefficients of
// d_x = k_dy * dy + k_x * (x - mean) + k_0 (coef[ch], coef[c + ch], coef[2c + ch]).
template <typename T>
__device__ __forceinline__ void bn_backward_merge(const f64* partial, const T* gamma, const T* var, T* d_gamma_out,
                                                  T* d_beta_out, T* coef, u64 rows, u64 c, f64 epsilon) {
    const u64 blocks = (rows + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(ch, c) {
        f64 sum_dy = 0.0, sum_dy_xc = 0.0;
        for (u64 b = 0; b < blocks; ++b) {
            sum_dy += partial[(b * c + ch) * 2];
            sum_dy_xc += partial[(b * c + ch) * 2 + 1];
        }
        const f64 inv_std = 1.0 / sqrt((f64)var[ch] + epsilon);
        const f64 d_gamma = sum_dy_xc * inv_std;
        const f64 inv_rows = 1.0 / (f64)rows;
        const f64 g = (gamma ? (f64)gamma[ch] : 1.0) * inv_std;
        d_gamma_out[ch] = (T)d_gamma;
        d_beta_out[ch] = (T)sum_dy;
        coef[ch] = (T)g;
        coef[c + ch] = (T)(-g * d_gamma * inv_std * inv_rows);
        coef[2 * c + ch] = (T)(-g * sum_dy * inv_rows);
    }
}

template <typename T>
__device__ __forceinline__ void bn_backward_apply(const T* x, const T* dy, const T* mean, const T* coef, T* dx,
                                                  u64 rows, u64 c) {
    GRID_STRIDE_LOOP(i, rows * c) {
        const u64 ch = i % c;
        dx[i] = coef[ch] * dy[i] + coef[c + ch] * (x[i] - mean[ch]) + coef[2 * c + ch];
    }
}

#define NORM(T)                                                                                                   \
    extern "C" __global__ void bn_partial_moments_##T(const T* x, f64* partial, u64 rows, u64 c) {               \
        bn_partial_moments(x, partial, rows, c);                                                                   \
    }                                                                                                              \
    extern "C" __global__ void bn_merge_moments_##T(const f64* partial, const T* gamma, const T* beta, T* mean,   \
                                                    T* var, T* affine, u64 rows, u64 c, f64 epsilon) {             \
        bn_merge_moments(partial, gamma, beta, mean, var, affine, rows, c, epsilon);                               \
    }                                                                                                              \
    extern "C" __global__ void bn_scale_shift_##T(const T* x, const T* mean, const T* affine, T* y, u64 rows,     \
                                                  u64 c) {                                                         \
        bn_scale_shift(x, mean, affine, y, rows, c);                                                               \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_partial_##T(const T* x, const T* dy, const T* mean, f64* partial,      \
                                                       u64 rows, u64 c) {                                          \
        bn_backward_partial(x, dy, mean, partial, rows, c);                                                        \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_merge_##T(const f64* partial, const T* gamma, const T* var,            \
                                                     T* d_gamma, T* d_beta, T* coef, u64 rows, u64 c,             \
                                                     f64 epsilon) {                                                \
        bn_backward_merge(partial, gamma, var, d_gamma, d_beta, coef, rows, c, epsilon);                           \
    }                                                                                                              \
    extern "C" __global__ void bn_backward_apply_##T(const T* x, const T* dy, const T* mean, const T* coef, T* dx, \
                                                     u64 rows, u64 c) {                                            \
        bn_backward_apply(x, dy, mean, coef, dx, rows, c);                                                         \
    }

NORM(f32)
NORM(f64)
