#line 1 "optim.cu"
// Fused optimizer updates, one thread per element (grid-stride), matching
// ops/optim/cpu.rs operation for operation. State pointers may be null on a variable's
// first step (the state starts at zero); the hyperparameters come rounded to T.
//   sgd_update_<dtype>   new value (and new velocity when momentum != 0)
//   adam_update_<dtype>  new value, m and v

template <typename T>
__device__ __forceinline__ void sgd_update(const T* var, const T* grad, const T* velocity, T* out, T* out_velocity,
                                           u64 n, T lr, T momentum, T decay, u64 has_decay, u64 has_momentum,
                                           u64 nesterov) {
    GRID_STRIDE_LOOP(i, n) {
        const T g = has_decay ? grad[i] + var[i] * decay : grad[i];
        const T lr_g = g * lr;
        if (!has_momentum) {
            out[i] = var[i] - lr_g;
            continue;
        }
        const T v = velocity ? velocity[i] * momentum - lr_g : -lr_g;
        out[i] = nesterov ? (var[i] + v * momentum) - lr_g : var[i] + v;
        out_velocity[i] = v;
    }
}

template <typename T>
__device__ __forceinline__ void adam_update(const T* var, const T* grad, const T* m_in, const T* v_in, T* out,
                                            T* m_out, T* v_out, u64 n, T lr_t, T one_minus_beta_1,
                                            T one_minus_beta_2, T epsilon, T decay_factor, u64 has_decay) {
    GRID_STRIDE_LOOP(i, n) {
        const T g = grad[i];
        const T m = m_in ? m_in[i] + (g - m_in[i]) * one_minus_beta_1 : g * one_minus_beta_1;
        const T g2 = g * g;
        const T v = v_in ? v_in[i] + (g2 - v_in[i]) * one_minus_beta_2 : g2 * one_minus_beta_2;
        const T w = has_decay ? var[i] * decay_factor : var[i];
        out[i] = w - (m / (sqrt(v) + epsilon)) * lr_t;
        m_out[i] = m;
        v_out[i] = v;
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

OPTIM(f32)
OPTIM(f64)
