#line 1 "group_norm.cu"
// Group (and layer) normalization over a buffer viewed as [outer, spatial, groups, cpg]
// (cpg = channels per group, channels = groups * cpg the fastest axis), matching
// ops/group_norm/cpu.rs. No atomics, so every result is deterministic:
//   forward:   gn_moments (a block per (outer, group) statistic: two-pass mean and
//              variance, block reductions in f64) -> gn_apply (elementwise)
//   backward:  gn_backward_sums (a block per statistic: the d_x coefficients)
//              -> gn_backward_apply (a thread per (block of GN_BLOCK_ROWS rows, channel):
//              d_x of its rows and f64 partials of d_gamma and d_beta)
//              -> gn_param_merge (a thread per channel: adds the partials in block order)

#define GN_BLOCK_ROWS 256

struct GnAdd {
    __device__ __forceinline__ f64 operator()(f64 a, f64 b) const { return a + b; }
};

// Offset of element e (0 <= e < spatial * cpg) of statistic t's group.
__device__ __forceinline__ u64 gn_offset(u64 t, u64 e, u64 spatial, u64 groups, u64 cpg) {
    const u64 c = groups * cpg;
    const u64 n = t / groups, g = t % groups;
    const u64 p = e / cpg, j = e % cpg;
    return (n * spatial + p) * c + g * cpg + j;
}

template <typename T>
__device__ __forceinline__ void gn_moments(const T* x, T* mean, T* rstd, u64 outer, u64 spatial, u64 groups, u64 cpg,
                                           f64 epsilon) {
    __shared__ f64 scratch[32];
    const u64 stats = outer * groups, size = spatial * cpg;
    for (u64 t = blockIdx.x; t < stats; t += gridDim.x) {
        f64 sum = 0.0;
        for (u64 e = threadIdx.x; e < size; e += blockDim.x) sum += (f64)x[gn_offset(t, e, spatial, groups, cpg)];
        sum = block_reduce(sum, 0.0, scratch, GnAdd());
        const f64 mu = sum / (f64)size;
        f64 m2 = 0.0;
        for (u64 e = threadIdx.x; e < size; e += blockDim.x) {
            const f64 d = (f64)x[gn_offset(t, e, spatial, groups, cpg)] - mu;
            m2 += d * d;
        }
        m2 = block_reduce(m2, 0.0, scratch, GnAdd());
        if (threadIdx.x == 0) {
            mean[t] = (T)mu;
            rstd[t] = (T)(1.0 / sqrt(m2 / (f64)size + epsilon));
        }
    }
}

// y = (x - mean) * (rstd * gamma) + beta; gamma and beta may be null (1 and 0).
template <typename T>
__device__ __forceinline__ void gn_apply(const T* x, const T* mean, const T* rstd, const T* gamma, const T* beta, T* y,
                                         u64 outer, u64 spatial, u64 groups, u64 cpg) {
    const u64 c = groups * cpg;
    GRID_STRIDE_LOOP(i, outer * spatial * c) {
        const u64 ch = i % c, n = i / c / spatial;
        const u64 t = n * groups + ch / cpg;
        const T r = rstd[t];
        const T scale = gamma ? r * gamma[ch] : r;
        y[i] = (x[i] - mean[t]) * scale + (beta ? beta[ch] : T(0));
    }
}

// Per statistic, with a = sum(dy * gamma) and b = sum(dy * gamma * (x - mean)) over its
// group: k_x = -rstd^3 * b / M and k_0 = -rstd * a / M, so that
// d_x = rstd * gamma * dy + k_x * (x - mean) + k_0.
template <typename T>
__device__ __forceinline__ void gn_backward_sums(const T* x, const T* dy, const T* gamma, const T* mean, const T* rstd,
                                                 T* k_x, T* k_0, u64 outer, u64 spatial, u64 groups, u64 cpg) {
    __shared__ f64 scratch[32];
    const u64 stats = outer * groups, size = spatial * cpg;
    for (u64 t = blockIdx.x; t < stats; t += gridDim.x) {
        const u64 g = t % groups;
        const f64 mu = (f64)mean[t];
        f64 a = 0.0, b = 0.0;
        for (u64 e = threadIdx.x; e < size; e += blockDim.x) {
            const u64 i = gn_offset(t, e, spatial, groups, cpg);
            const f64 d = (f64)dy[i] * (gamma ? (f64)gamma[g * cpg + e % cpg] : 1.0);
            a += d;
            b += d * ((f64)x[i] - mu);
        }
        a = block_reduce(a, 0.0, scratch, GnAdd());
        b = block_reduce(b, 0.0, scratch, GnAdd());
        if (threadIdx.x == 0) {
            const f64 r = (f64)rstd[t];
            k_x[t] = (T)(-r * r * r * b / (f64)size);
            k_0[t] = (T)(-r * a / (f64)size);
        }
    }
}

// A thread per (block of rows, channel): d_x of those rows, and the block's sums of dy
// and dy * xhat for the channel in partial[(block * c + ch) * 2 + {0, 1}].
template <typename T>
__device__ __forceinline__ void gn_backward_apply(const T* x, const T* dy, const T* gamma, const T* mean, const T* rstd,
                                                  const T* k_x, const T* k_0, T* dx, f64* partial, u64 outer,
                                                  u64 spatial, u64 groups, u64 cpg) {
    const u64 c = groups * cpg, rows = outer * spatial;
    const u64 blocks = (rows + GN_BLOCK_ROWS - 1) / GN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(task, blocks * c) {
        const u64 ch = task % c, block = task / c, g = ch / cpg;
        const u64 lo = block * GN_BLOCK_ROWS, hi = min(lo + GN_BLOCK_ROWS, rows);
        f64 sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (u64 row = lo; row < hi; ++row) {
            const u64 i = row * c + ch, t = (row / spatial) * groups + g;
            const T r = rstd[t], m = mean[t], d = dy[i], v = x[i];
            const T scale = gamma ? r * gamma[ch] : r;
            dx[i] = scale * d + k_x[t] * (v - m) + k_0[t];
            sum_dy += (f64)d;
            sum_dy_xhat += (f64)d * ((f64)v - (f64)m) * (f64)r;
        }
        partial[task * 2] = sum_dy;
        partial[task * 2 + 1] = sum_dy_xhat;
    }
}

template <typename T>
__device__ __forceinline__ void gn_param_merge(const f64* partial, T* d_gamma, T* d_beta, u64 rows, u64 c) {
    const u64 blocks = (rows + GN_BLOCK_ROWS - 1) / GN_BLOCK_ROWS;
    GRID_STRIDE_LOOP(ch, c) {
        f64 sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (u64 b = 0; b < blocks; ++b) {
            sum_dy += partial[(b * c + ch) * 2];
            sum_dy_xhat += partial[(b * c + ch) * 2 + 1];
        }
        d_beta[ch] = (T)sum_dy;
        d_gamma[ch] = (T)sum_dy_xhat;
    }
}

#define GROUP_NORM(T)                                                                                               \
    extern "C" __global__ void gn_moments_##T(const T* x, T* mean, T* rstd, u64 outer, u64 spatial, u64 groups,    \
                                              u64 cpg, f64 epsilon) {                                              \
        gn_moments(x, mean, rstd, outer, spatial, groups, cpg, epsilon);                                           \
    }                                                                                                              \
    extern "C" __global__ void gn_apply_##T(const T* x, const T* mean, const T* rstd, const T* gamma, const T* beta, \
                                            T* y, u64 outer, u64 spatial, u64 groups, u64 cpg) {                   \
        gn_apply(x, mean, rstd, gamma, beta, y, outer, spatial, groups, cpg);                                      \
    }                                                                                                              \
    extern "C" __global__ void gn_backward_sums_##T(const T* x, const T* dy, const T* gamma, const T* mean,        \
                                                    const T* rstd, T* k_x, T* k_0, u64 outer, u64 spatial,        \
                                                    u64 groups, u64 cpg) {                                         \
        gn_backward_sums(x, dy, gamma, mean, rstd, k_x, k_0, outer, spatial, groups, cpg);                         \
    }                                                                                                              \
    extern "C" __global__ void gn_backward_apply_##T(const T* x, const T* dy, const T* gamma, const T* mean,       \
                                                     const T* rstd, const T* k_x, const T* k_0, T* dx,            \
                                                     f64* partial, u64 outer, u64 spatial, u64 groups, u64 cpg) { \
        gn_backward_apply(x, dy, gamma, mean, rstd, k_x, k_0, dx, partial, outer, spatial, groups, cpg);           \
    }                                                                                                              \
    extern "C" __global__ void gn_param_merge_##T(const f64* partial, T* d_gamma, T* d_beta, u64 rows, u64 c) {    \
        gn_param_merge(partial, d_gamma, d_beta, rows, c);                                                         \
    }

GROUP_NORM(f32)
GROUP_NORM(f64)
