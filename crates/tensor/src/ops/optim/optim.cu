#line 1 "optim.cu"
// Fused optimizer updates, one thread per element (grid-stride), matching
// ops/optim/cpu.rs operation for operation. State pointers may be null on a variable's
// first step (the state starts at zero); the hyperparameters come rounded to T.
//   sgd_update_<dtype>   new value (and new velocity when momentum != 0)
//   adam_update_<dtype>  new value, m and v
//   sgd_update_multi_<dtype>, adam_update_multi_<dtype>: the same per-element functions
//     over up to MT_MAX_TENSORS parameters in one launch. The table of pointers and sizes
//     is a kernel parameter (copied into the launch, so nothing is uploaded and the launch
//     is capture-safe; it stays under the 4 KiB parameter limit); each block takes chunks
//     of MT_CHUNK elements of one tensor, found in the table's chunk prefix sums.
//   sgd_update_multi_dev_<dtype>, adam_update_multi_dev_<dtype>: the multi-tensor updates
//     with the per-step values read from a small device buffer `s` when the kernel runs
//     (SGD: lr, momentum, decay; Adam: lr_t, 1 - beta_1, 1 - beta_2, epsilon,
//     decay_factor), so that a CUDA graph replays them with each step's learning rate and
//     bias correction. The host writes `s` before each replay (optim/in_place.rs). The
//     updates run in place there (out == var, out_a == state_a, ...): each element is read
//     before it is written, by the thread that writes it. A step whose `s[7]` is not 0 is
//     skipped: nothing is written (a loss-scaled step with non-finite gradients).
//   all_finite_multi_<dtype>, loss_scale_decide_<dtype>, loss_scale_mul_<dtype>: dynamic
//     loss scaling decided on the device (optim/loss_scale.rs). `state` is f64[8]:
//     [scale, good steps, applied steps, table base, growth steps, inverse of this step's
//     scale, table overrun, non-finite flag]. all_finite_multi sets the flag when a
//     gradient holds an Inf or NaN (every writer writes 1, so the race is benign);
//     loss_scale_decide (one thread) reads and clears it, keeps this step's inverse scale,
//     and either copies the step's row of the host-written table into `s` (row = applied -
//     base) and counts a good step (doubling the scale after `growth` of them), or marks
//     `s` skipped and halves the scale; loss_scale_mul is affine's `x * p + 0` with
//     p = (T)state[index], so it equals `mul_scalar` bit for bit.

#define MT_MAX_TENSORS 40
#define MT_CHUNK 4096

template <typename T>
__device__ __forceinline__ void sgd_element(const T* var, const T* grad, const T* velocity, T* out, T* out_velocity,
                                            u64 i, T lr, T momentum, T decay, u64 has_decay, u64 has_momentum,
                                            u64 nesterov) {
    const T g = has_decay ? grad[i] + var[i] * decay : grad[i];
    const T lr_g = g * lr;
    if (!has_momentum) {
        out[i] = var[i] - lr_g;
        return;
    }
    const T v = velocity ? velocity[i] * momentum - lr_g : -lr_g;
    out[i] = nesterov ? (var[i] + v * momentum) - lr_g : var[i] + v;
    out_velocity[i] = v;
}

template <typename T>
__device__ __forceinline__ void sgd_update(const T* var, const T* grad, const T* velocity, T* out, T* out_velocity,
                                           u64 n, T lr, T momentum, T decay, u64 has_decay, u64 has_momentum,
                                           u64 nesterov) {
    GRID_STRIDE_LOOP(i, n) {
        sgd_element(var, grad, velocity, out, out_velocity, i, lr, momentum, decay, has_decay, has_momentum, nesterov);
    }
}

template <typename T>
__device__ __forceinline__ void adam_element(const T* var, const T* grad, const T* m_in, const T* v_in, T* out,
                                             T* m_out, T* v_out, u64 i, T lr_t, T one_minus_beta_1,
                                             T one_minus_beta_2, T epsilon, T decay_factor, u64 has_decay) {
    const T g = grad[i];
    const T m = m_in ? m_in[i] + (g - m_in[i]) * one_minus_beta_1 : g * one_minus_beta_1;
    const T g2 = g * g;
    const T v = v_in ? v_in[i] + (g2 - v_in[i]) * one_minus_beta_2 : g2 * one_minus_beta_2;
    const T w = has_decay ? var[i] * decay_factor : var[i];
    out[i] = w - (m / (sqrt(v) + epsilon)) * lr_t;
    m_out[i] = m;
    v_out[i] = v;
}

template <typename T>
__device__ __forceinline__ void adam_update(const T* var, const T* grad, const T* m_in, const T* v_in, T* out,
                                            T* m_out, T* v_out, u64 n, T lr_t, T one_minus_beta_1,
                                            T one_minus_beta_2, T epsilon, T decay_factor, u64 has_decay) {
    GRID_STRIDE_LOOP(i, n) {
        adam_element(var, grad, m_in, v_in, out, m_out, v_out, i, lr_t, one_minus_beta_1, one_minus_beta_2, epsilon,
                     decay_factor, has_decay);
    }
}

// The parameters of one multi-tensor launch: per tensor, its operands (null where absent)
// and length; first_chunk[k] is the index of tensor k's first chunk, first_chunk[count] the
// total. Laid out as `MultiTable` in optim/cuda.rs.
template <typename T>
struct MultiTable {
    const T* var[MT_MAX_TENSORS];
    const T* grad[MT_MAX_TENSORS];
    const T* state_a[MT_MAX_TENSORS];  // Adam's m, SGD's velocity
    const T* state_b[MT_MAX_TENSORS];  // Adam's v
    T* out[MT_MAX_TENSORS];
    T* out_a[MT_MAX_TENSORS];
    T* out_b[MT_MAX_TENSORS];
    u64 n[MT_MAX_TENSORS];
    u64 first_chunk[MT_MAX_TENSORS + 1];
    u64 count;
};

// Calls element(k, i) for every element i of every tensor k of the table, a block per chunk.
template <typename T, typename Element>
__device__ __forceinline__ void for_each_chunk(const MultiTable<T>& t, Element element) {
    const u64 chunks = t.first_chunk[t.count];
    for (u64 chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
        u64 k = 0;
        while (chunk >= t.first_chunk[k + 1]) ++k;
        const u64 lo = (chunk - t.first_chunk[k]) * MT_CHUNK;
        const u64 hi = min(lo + MT_CHUNK, t.n[k]);
        for (u64 i = lo + threadIdx.x; i < hi; i += blockDim.x) element(k, i);
    }
}

#define OPTIM(T)                                                                                                \
    extern "C" __global__ void sgd_update_##T(const T* var, const T* grad, const T* velocity, T* out,         \
                                              T* out_velocity, u64 n, T lr, T momentum, T decay,              \
                                              u64 has_decay, u64 has_momentum, u64 nesterov) {                 \
        sgd_update(var, grad, velocity, out, out_velocity, n, lr, momentum, decay, has_decay, has_momentum,    \
                   nesterov);                                                                                  \
    }                                                                                                          \
    extern "C" __global__ void adam_update_##T(const T* var, const T* grad, const T* m_in, const T* v_in, T* out, \
                                               T* m_out, T* v_out, u64 n, T lr_t, T one_minus_beta_1,          \
                                               T one_minus_beta_2, T epsilon, T decay_factor, u64 has_decay) {  \
        adam_update(var, grad, m_in, v_in, out, m_out, v_out, n, lr_t, one_minus_beta_1, one_minus_beta_2,     \
                    epsilon, decay_factor, has_decay);                                                         \
    }

#define OPTIM_MULTI(T)                                                                                          \
    extern "C" __global__ void sgd_update_multi_##T(const MultiTable<T> t, T lr, T momentum, T decay,          \
                                                    u64 has_decay, u64 has_momentum, u64 nesterov) {           \
        for_each_chunk(t, [&](u64 k, u64 i) {                                                                  \
            sgd_element(t.var[k], t.grad[k], t.state_a[k], t.out[k], t.out_a[k], i, lr, momentum, decay,       \
                        has_decay, has_momentum, nesterov);                                                    \
        });                                                                                                    \
    }                                                                                                          \
    extern "C" __global__ void adam_update_multi_##T(const MultiTable<T> t, T lr_t, T one_minus_beta_1,        \
                                                     T one_minus_beta_2, T epsilon, T decay_factor,            \
                                                     u64 has_decay) {                                          \
        for_each_chunk(t, [&](u64 k, u64 i) {                                                                  \
            adam_element(t.var[k], t.grad[k], t.state_a[k], t.state_b[k], t.out[k], t.out_a[k], t.out_b[k], i, \
                         lr_t, one_minus_beta_1, one_minus_beta_2, epsilon, decay_factor, has_decay);          \
        });                                                                                                    \
    }

#define OPTIM_MULTI_DEV(T)                                                                                      \
    extern "C" __global__ void sgd_update_multi_dev_##T(const MultiTable<T> t, const T* s, u64 has_decay,      \
                                                        u64 has_momentum, u64 nesterov) {                      \
        if (s[7] != T(0)) return;                                                                              \
        const T lr = s[0], momentum = s[1], decay = s[2];                                                      \
        for_each_chunk(t, [&](u64 k, u64 i) {                                                                  \
            sgd_element(t.var[k], t.grad[k], t.state_a[k], t.out[k], t.out_a[k], i, lr, momentum, decay,       \
                        has_decay, has_momentum, nesterov);                                                    \
        });                                                                                                    \
    }                                                                                                          \
    extern "C" __global__ void adam_update_multi_dev_##T(const MultiTable<T> t, const T* s, u64 has_decay) {   \
        if (s[7] != T(0)) return;                                                                              \
        const T lr_t = s[0], one_minus_beta_1 = s[1], one_minus_beta_2 = s[2], epsilon = s[3],                 \
                decay_factor = s[4];                                                                           \
        for_each_chunk(t, [&](u64 k, u64 i) {                                                                  \
            adam_element(t.var[k], t.grad[k], t.state_a[k], t.state_b[k], t.out[k], t.out_a[k], t.out_b[k], i, \
                         lr_t, one_minus_beta_1, one_minus_beta_2, epsilon, decay_factor, has_decay);          \
        });                                                                                                    \
    }

OPTIM(f32)
OPTIM(f64)
OPTIM_MULTI(f32)
OPTIM_MULTI(f64)
OPTIM_MULTI_DEV(f32)
OPTIM_MULTI_DEV(f64)

// A value is finite when subtracting it from itself gives 0 (Inf - Inf and NaN - NaN are NaN).
#define LOSS_SCALE(T)                                                                                           \
    extern "C" __global__ void all_finite_multi_##T(const MultiTable<T> t, f64* state) {                       \
        for_each_chunk(t, [&](u64 k, u64 i) {                                                                  \
            const T g = t.var[k][i];                                                                           \
            if (!(g - g == T(0))) state[7] = 1.0;                                                              \
        });                                                                                                    \
    }                                                                                                          \
    extern "C" __global__ void loss_scale_decide_##T(f64* state, const T* table, u64 rows, T* s) {             \
        if (blockIdx.x != 0 || threadIdx.x != 0) return;                                                       \
        const f64 scale = state[0];                                                                            \
        const bool finite = state[7] == 0.0;                                                                   \
        state[7] = 0.0;                                                                                        \
        state[5] = 1.0 / scale;                                                                                \
        const u64 row = (u64)state[2] - (u64)state[3];                                                         \
        if (finite && row >= rows) {                                                                           \
            /* The host refills the table before this can happen; if not, change nothing. */                  \
            state[6] = 1.0;                                                                                    \
            s[7] = T(1);                                                                                       \
            return;                                                                                            \
        }                                                                                                      \
        if (finite) {                                                                                          \
            for (int j = 0; j < 8; ++j) s[j] = table[row * 8 + j];                                             \
            s[7] = T(0);                                                                                       \
            state[2] += 1.0;                                                                                   \
            if (state[1] + 1.0 >= state[4]) {                                                                  \
                state[0] = scale * 2.0;                                                                        \
                state[1] = 0.0;                                                                                \
            } else {                                                                                           \
                state[1] += 1.0;                                                                               \
            }                                                                                                  \
        } else {                                                                                               \
            s[7] = T(1);                                                                                       \
            state[0] = scale / 2.0;                                                                            \
            state[1] = 0.0;                                                                                    \
        }                                                                                                      \
    }                                                                                                          \
    extern "C" __global__ void loss_scale_mul_##T(const T* x, T* y, u64 n, const f64* state, u64 index) {      \
        const T p = (T)state[index];                                                                           \
        GRID_STRIDE_LOOP(i, n) { y[i] = mul_rn(x[i], p) + T(0); }                                              \
    }

__device__ __forceinline__ f32 mul_rn(f32 a, f32 b) { return __fmul_rn(a, b); }
__device__ __forceinline__ f64 mul_rn(f64 a, f64 b) { return __dmul_rn(a, b); }

LOSS_SCALE(f32)
LOSS_SCALE(f64)
