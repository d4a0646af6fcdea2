#line 1 "elementwise.cu"
// Elementwise kernels: unary ops, binary ops (contiguous, scalar and broadcast operands)
// and dtype casts. Entry points are named `unary_<op>_<dtype>`, `binary_<op>_<dtype>`,
// `binary_<op>_<dtype>_bcast` and `cast_<from>_<to>`; ops/elementwise/cuda.rs launches them.
// bf16 and f16 elements are loaded to f32, computed in f32 and rounded once when stored
// (`load` / `store` in the prelude), as the CPU computes them.
// The semantics follow the CPU kernels in ops/elementwise/cpu.rs exactly (NaN handling,
// integer division by zero giving 0, wrapping integer arithmetic).

// ---- unary ----------------------------------------------------------------------------

enum UnaryCode { U_NEG, U_EXP, U_LOG, U_SQRT, U_SQUARE, U_RELU, U_SIGMOID, U_TANH, U_ABS, U_SIGN, U_RECIP, U_POWF, U_CLAMP, U_AFFINE,
                 U_ERF, U_LOG1P, U_EXPM1, U_SOFTPLUS, U_SOFTSIGN, U_GELU, U_GELU_TANH, U_SILU, U_MISH,
                 U_HARD_SIGMOID, U_HARD_SWISH, U_ELU, U_LEAKY_RELU };

__device__ __forceinline__ f32 mul_rn(f32 a, f32 b) { return __fmul_rn(a, b); }
__device__ __forceinline__ f64 mul_rn(f64 a, f64 b) { return __dmul_rn(a, b); }

// The logistic function; never exponentiates a large positive number.
template <typename T>
__device__ __forceinline__ T sigmoid_fn(T v) {
    if (v >= T(0)) return T(1) / (T(1) + exp(-v));
    const T e = exp(v);
    return e / (T(1) + e);
}

// ln(1 + e^v) as max(v, 0) + ln(1 + e^-|v|), as on the CPU.
template <typename T>
__device__ __forceinline__ T softplus_fn(T v) {
    return (v > T(0) ? v : T(0)) + log1p(exp(-fabs(v)));
}

// relu6(v + 3), NaN passing through.
template <typename T>
__device__ __forceinline__ T relu6_shifted(T v) {
    const T u = v + T(3);
    return u < T(0) ? T(0) : (u > T(6) ? T(6) : u);
}

// p0, p1: the exponent (powf), bounds (clamp), factor and offset (affine), alpha (elu)
// or slope (leaky_relu).
template <int OP, typename T>
__device__ __forceinline__ T unary_float(T v, T p0, T p1) {
    const T zero = T(0), one = T(1), half = T(0.5);
    if constexpr (OP == U_NEG) return -v;
    else if constexpr (OP == U_EXP) return exp(v);
    else if constexpr (OP == U_LOG) return log(v);
    else if constexpr (OP == U_SQRT) return sqrt(v);
    else if constexpr (OP == U_SQUARE) return v * v;
    // `v < 0`, not `v > 0`: NaN passes through, as on the CPU (a diverged run stays visible).
    else if constexpr (OP == U_RELU) return v < zero ? zero : v;
    else if constexpr (OP == U_SIGMOID) return sigmoid_fn(v);
    else if constexpr (OP == U_TANH) return tanh(v);
    else if constexpr (OP == U_ABS) return fabs(v);
    else if constexpr (OP == U_SIGN) return v > zero ? one : (v < zero ? -one : zero);
    else if constexpr (OP == U_RECIP) return one / v;
    else if constexpr (OP == U_POWF) return pow(v, p0);
    else if constexpr (OP == U_CLAMP) return v < p0 ? p0 : (v > p1 ? p1 : v);
    else if constexpr (OP == U_ERF) return erf(v);
    else if constexpr (OP == U_LOG1P) return log1p(v);
    else if constexpr (OP == U_EXPM1) return expm1(v);
    else if constexpr (OP == U_SOFTPLUS) return softplus_fn(v);
    else if constexpr (OP == U_SOFTSIGN) return v / (one + fabs(v));
    // erfc keeps the far negative tail's precision (1 + erf cancels there), as on the CPU.
    else if constexpr (OP == U_GELU) return v * half * erfc(-v * T(0.70710678118654752440));
    else if constexpr (OP == U_GELU_TANH)
        return half * v * (one + tanh(T(0.79788456080286535588) * (v + T(0.044715) * v * v * v)));
    else if constexpr (OP == U_SILU) return v * sigmoid_fn(v);
    else if constexpr (OP == U_MISH) return v * tanh(softplus_fn(v));
    else if constexpr (OP == U_HARD_SIGMOID) return relu6_shifted(v) / T(6);
    else if constexpr (OP == U_HARD_SWISH) return v * relu6_shifted(v) / T(6);
    else if constexpr (OP == U_ELU) return v > zero ? v : p0 * expm1(v);
    else if constexpr (OP == U_LEAKY_RELU) return v < zero ? v * p0 : v;
    // Rounded product then sum, as the CPU computes it (no fused multiply-add).
    else return mul_rn(v, p0) + p1;
}

// Integer ops wrap on overflow, like Rust's wrapping_* used by the CPU kernels.
template <int OP>
__device__ __forceinline__ i64 unary_int(i64 v, i64 p0, i64 p1) {
    if constexpr (OP == U_NEG) return (i64)(0ull - (u64)v);
    else if constexpr (OP == U_ABS) return v < 0 ? (i64)(0ull - (u64)v) : v;
    else if constexpr (OP == U_SIGN) return (i64)(v > 0) - (i64)(v < 0);
    else if constexpr (OP == U_SQUARE) return (i64)((u64)v * (u64)v);
    else if constexpr (OP == U_RELU) return v > 0 ? v : 0;
    else return v < p0 ? p0 : (v > p1 ? p1 : v);  // U_CLAMP
}

#define UNARY_FLOAT(NAME, CODE, T)                                                              \
    extern "C" __global__ void unary_##NAME##_##T(const T* x, T* y, u64 n, T p0, T p1) {         \
        GRID_STRIDE_LOOP(i, n) { y[i] = unary_float<CODE, T>(x[i], p0, p1); }                    \
    }
// bf16 / f16 in, f32 math (with f32 parameters), one rounding out.
#define UNARY_LOW(NAME, CODE, S)                                                                \
    extern "C" __global__ void unary_##NAME##_##S(const S* x, S* y, u64 n, f32 p0, f32 p1) {     \
        GRID_STRIDE_LOOP(i, n) { store(y + i, unary_float<CODE, f32>(load(x + i), p0, p1)); }    \
    }
#define UNARY_INT(NAME, CODE)                                                                   \
    extern "C" __global__ void unary_##NAME##_i64(const i64* x, i64* y, u64 n, i64 p0, i64 p1) { \
        GRID_STRIDE_LOOP(i, n) { y[i] = unary_int<CODE>(x[i], p0, p1); }                         \
    }
#define UNARY_FLOATS(NAME, CODE) \
    UNARY_FLOAT(NAME, CODE, f32) UNARY_FLOAT(NAME, CODE, f64) UNARY_LOW(NAME, CODE, bf16) UNARY_LOW(NAME, CODE, f16)

UNARY_FLOATS(neg, U_NEG)
UNARY_FLOATS(exp, U_EXP)
UNARY_FLOATS(log, U_LOG)
UNARY_FLOATS(sqrt, U_SQRT)
UNARY_FLOATS(square, U_SQUARE)
UNARY_FLOATS(relu, U_RELU)
UNARY_FLOATS(sigmoid, U_SIGMOID)
UNARY_FLOATS(tanh, U_TANH)
UNARY_FLOATS(abs, U_ABS)
UNARY_FLOATS(sign, U_SIGN)
UNARY_FLOATS(recip, U_RECIP)
UNARY_FLOATS(powf, U_POWF)
UNARY_FLOATS(clamp, U_CLAMP)
UNARY_FLOATS(affine, U_AFFINE)
UNARY_FLOATS(erf, U_ERF)
UNARY_FLOATS(log1p, U_LOG1P)
UNARY_FLOATS(expm1, U_EXPM1)
UNARY_FLOATS(softplus, U_SOFTPLUS)
UNARY_FLOATS(softsign, U_SOFTSIGN)
UNARY_FLOATS(gelu, U_GELU)
UNARY_FLOATS(gelu_tanh, U_GELU_TANH)
UNARY_FLOATS(silu, U_SILU)
UNARY_FLOATS(mish, U_MISH)
UNARY_FLOATS(hard_sigmoid, U_HARD_SIGMOID)
UNARY_FLOATS(hard_swish, U_HARD_SWISH)
UNARY_FLOATS(elu, U_ELU)
UNARY_FLOATS(leaky_relu, U_LEAKY_RELU)
UNARY_INT(neg, U_NEG)
UNARY_INT(abs, U_ABS)
UNARY_INT(sign, U_SIGN)
UNARY_INT(square, U_SQUARE)
UNARY_INT(relu, U_RELU)
UNARY_INT(clamp, U_CLAMP)

// ---- binary ---------------------------------------------------------------------------

enum BinaryCode { B_ADD, B_SUB, B_MUL, B_DIV, B_MAXIMUM, B_MINIMUM, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE };

__device__ __forceinline__ f32 add_elem(f32 a, f32 b) { return a + b; }
__device__ __forceinline__ f64 add_elem(f64 a, f64 b) { return a + b; }
__device__ __forceinline__ i64 add_elem(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }
__device__ __forceinline__ f32 sub_elem(f32 a, f32 b) { return a - b; }
__device__ __forceinline__ f64 sub_elem(f64 a, f64 b) { return a - b; }
__device__ __forceinline__ i64 sub_elem(i64 a, i64 b) { return (i64)((u64)a - (u64)b); }
__device__ __forceinline__ f32 mul_elem(f32 a, f32 b) { return a * b; }
__device__ __forceinline__ f64 mul_elem(f64 a, f64 b) { return a * b; }
__device__ __forceinline__ i64 mul_elem(i64 a, i64 b) { return (i64)((u64)a * (u64)b); }
__device__ __forceinline__ f32 div_elem(f32 a, f32 b) { return a / b; }
__device__ __forceinline__ f64 div_elem(f64 a, f64 b) { return a / b; }
// Integer division by zero (and the one overflowing quotient) gives 0, as on the CPU.
__device__ __forceinline__ i64 div_elem(i64 a, i64 b) { return (b == 0 || (a == I64_MIN && b == -1)) ? 0 : a / b; }

template <int OP, typename T>
__device__ __forceinline__ T binary_fn(T x, T y) {
    const T zero = T(0), one = T(1);
    if constexpr (OP == B_ADD) return add_elem(x, y);
    else if constexpr (OP == B_SUB) return sub_elem(x, y);
    else if constexpr (OP == B_MUL) return mul_elem(x, y);
    else if constexpr (OP == B_DIV) return div_elem(x, y);
    // `x != x`: a NaN on the left wins, as on the CPU.
    else if constexpr (OP == B_MAXIMUM) return (x >= y || x != x) ? x : y;
    else if constexpr (OP == B_MINIMUM) return (x <= y || x != x) ? x : y;
    else if constexpr (OP == B_EQ) return x == y ? one : zero;
    else if constexpr (OP == B_NE) return x != y ? one : zero;
    else if constexpr (OP == B_LT) return x < y ? one : zero;
    else if constexpr (OP == B_LE) return x <= y ? one : zero;
    else if constexpr (OP == B_GT) return x > y ? one : zero;
    else return x >= y ? one : zero;  // B_GE
}

// Both operands contiguous with the output's shape, or one of them a single value:
// `a_step` / `b_step` are 1 for a full operand and 0 for a scalar.
// The broadcast form reads operands through strides, `dims` and strides listed innermost
// dimension first. Its loop over the dimensions is deliberately not unrolled: unrolled,
// the 36 broadcast kernels take NVRTC twice as long to compile (seconds at first use).
struct BroadcastMeta {
    u64 rank;
    u64 dims[MAX_DIMS];
    u64 lhs_strides[MAX_DIMS];
    u64 rhs_strides[MAX_DIMS];
};

// Broadcast operand offsets of output element i, in index type I (u32 when every index
// of the launch fits, see INDEX_LOOP).
template <int OP, typename T, typename I>
__device__ __forceinline__ void binary_bcast(const T* a, const T* b, T* out, u64 n, const BroadcastMeta& m) {
    INDEX_LOOP(I, i, n) {
        I rem = i, ia = 0, ib = 0;
#pragma unroll 1
        for (u64 d = 0; d < m.rank; ++d) {
            const I dim = (I)m.dims[d];
            const I q = rem / dim;
            const I idx = rem - q * dim;
            rem = q;
            ia += idx * (I)m.lhs_strides[d];
            ib += idx * (I)m.rhs_strides[d];
        }
        store(out + i, binary_fn<OP, compute_t<T>>(load(a + ia), load(b + ib)));
    }
}

#define BINARY(NAME, CODE, T)                                                                           \
    extern "C" __global__ void binary_##NAME##_##T(const T* a, const T* b, T* out, u64 n, u64 a_step,     \
                                                   u64 b_step) {                                         \
        GRID_STRIDE_LOOP(i, n) { store(out + i, binary_fn<CODE, compute_t<T>>(load(a + i * a_step), load(b + i * b_step))); } \
    }                                                                                                     \
    extern "C" __global__ void binary_##NAME##_##T##_bcast_u32(const T* a, const T* b, T* out, u64 n,     \
                                                               const BroadcastMeta m) {                  \
        binary_bcast<CODE, T, u32>(a, b, out, n, m);                                                      \
    }                                                                                                     \
    extern "C" __global__ void binary_##NAME##_##T##_bcast_u64(const T* a, const T* b, T* out, u64 n,     \
                                                               const BroadcastMeta m) {                  \
        binary_bcast<CODE, T, u64>(a, b, out, n, m);                                                      \
    }
#define BINARY_ALL(NAME, CODE) \
    BINARY(NAME, CODE, f32) BINARY(NAME, CODE, f64) BINARY(NAME, CODE, i64) BINARY(NAME, CODE, bf16) BINARY(NAME, CODE, f16)

BINARY_ALL(add, B_ADD)
BINARY_ALL(sub, B_SUB)
BINARY_ALL(mul, B_MUL)
BINARY_ALL(div, B_DIV)
BINARY_ALL(maximum, B_MAXIMUM)
BINARY_ALL(minimum, B_MINIMUM)
BINARY_ALL(eq, B_EQ)
BINARY_ALL(ne, B_NE)
BINARY_ALL(lt, B_LT)
BINARY_ALL(le, B_LE)
BINARY_ALL(gt, B_GT)
BINARY_ALL(ge, B_GE)

// ---- casts ----------------------------------------------------------------------------
// Float to integer conversion truncates toward zero, saturates and maps NaN to 0, which is
// what Rust's `as` does on the CPU. Spelt out rather than left to `(i64)v`: that is
// undefined in C++ for NaN and out-of-range values (PTX's cvt.rzi happens to saturate, a
// host compiler gives I64_MIN).

template <typename A>
__device__ __forceinline__ i64 float_to_i64(A v) {
    if (v != v) return 0;
    if (v >= A(9223372036854775808.0)) return I64_MAX;
    if (v <= A(-9223372036854775808.0)) return I64_MIN;
    return (i64)v;
}
template <typename B, typename A> __device__ __forceinline__ B cast_value(A v) { return (B)v; }
template <> __device__ __forceinline__ i64 cast_value<i64, f32>(f32 v) { return float_to_i64(v); }
template <> __device__ __forceinline__ i64 cast_value<i64, f64>(f64 v) { return float_to_i64(v); }

#define CAST(A, B)                                                               \
    extern "C" __global__ void cast_##A##_##B(const A* x, B* y, u64 n) {         \
        GRID_STRIDE_LOOP(i, n) { y[i] = cast_value<B, A>(x[i]); }                \
    }

CAST(f32, f64)
CAST(f32, i64)
CAST(f64, f32)
CAST(f64, i64)
CAST(i64, f32)
CAST(i64, f64)

// Casts to bf16 / f16 round once to nearest, ties to even, as the CPU's (low_precision.rs):
// through f32 exactly from f32, bf16 and f16; from f64 (and i64, which the CPU converts to
// f64 first) through the f32 rounded to odd, which keeps the one rounding.
__device__ __forceinline__ f32 narrowable(f32 v) { return v; }
__device__ __forceinline__ f32 narrowable(f64 v) { return f64_to_f32_odd(v); }
__device__ __forceinline__ f32 narrowable(i64 v) { return f64_to_f32_odd((f64)v); }
__device__ __forceinline__ f32 narrowable(bf16 v) { return bf16_to_f32(v); }
__device__ __forceinline__ f32 narrowable(f16 v) { return f16_to_f32(v); }

#define CAST_TO_LOW(A, B)                                                        \
    extern "C" __global__ void cast_##A##_##B(const A* x, B* y, u64 n) {         \
        GRID_STRIDE_LOOP(i, n) { store(y + i, narrowable(x[i])); }               \
    }
// From bf16 / f16: widened exactly to f32, then converted as an f32 is.
#define CAST_FROM_LOW(A, B)                                                      \
    extern "C" __global__ void cast_##A##_##B(const A* x, B* y, u64 n) {         \
        GRID_STRIDE_LOOP(i, n) { y[i] = cast_value<B, f32>(load(x + i)); }       \
    }

CAST_TO_LOW(f32, bf16)
CAST_TO_LOW(f64, bf16)
CAST_TO_LOW(i64, bf16)
CAST_TO_LOW(f16, bf16)
CAST_TO_LOW(f32, f16)
CAST_TO_LOW(f64, f16)
CAST_TO_LOW(i64, f16)
CAST_TO_LOW(bf16, f16)
CAST_FROM_LOW(bf16, f32)
CAST_FROM_LOW(bf16, f64)
CAST_FROM_LOW(bf16, i64)
CAST_FROM_LOW(f16, f32)
CAST_FROM_LOW(f16, f64)
CAST_FROM_LOW(f16, i64)
