// Shared by every kernel source: tapegrad prepends this file to each .cu before NVRTC
// compiles it (see cuda_backend/kernels.rs), so the sources need no #include.

typedef float f32;
typedef double f64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned long long u64;

#define I64_MIN (-9223372036854775807LL - 1)
#define I64_MAX 9223372036854775807LL

// Dimensions a strided kernel accepts after merging contiguous ones (MAX_DIMS in Rust).
#define MAX_DIMS 12

// Every elementwise kernel loops with a grid stride, so any n works with a capped grid.
#define GRID_STRIDE_LOOP(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)blockDim.x * gridDim.x)

// The same loop in index type I (u32 or u64). Kernels doing `/` and `%` per element come
// in both widths (entry points `..._u32_...` and `..._u64_...`): the host picks u32 when
// every index of the launch is below 2^31 (kernels.rs `index_width`), so that `i + stride`
// cannot wrap, and the divisions are 32-bit ones, several times cheaper than 64-bit.
#define INDEX_LOOP(I, i, n)                                                                            \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x, i##_stride = (I)blockDim.x * (I)gridDim.x; \
         i < (I)(n); i += i##_stride)

// Reductions within a block of a multiple of 32 threads (at most 1024). The result is
// valid in every thread. `scratch` holds 32 values; callers pass one array per call site
// and the function synchronises before reading and after writing it, so the array can be
// reused by the next call.
template <typename T, typename Combine>
__device__ __forceinline__ T warp_reduce(T v, Combine combine) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = combine(v, __shfl_down_sync(0xffffffffu, v, offset));
    }
    return v;
}

template <typename T, typename Combine>
__device__ __forceinline__ T block_reduce(T v, T identity, T* scratch, Combine combine) {
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    const unsigned warps = blockDim.x / 32;
    v = warp_reduce(v, combine);
    __syncthreads();  // the previous use of scratch is over
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T total = lane < warps ? scratch[lane] : identity;
    if (warp == 0) {
        total = warp_reduce(total, combine);
        if (lane == 0) scratch[0] = total;
    }
    __syncthreads();
    return scratch[0];
}

// ---- bf16 and f16 storage ---------------------------------------------------------------
// Two-byte floats are stored as their bits and computed in f32: a kernel loads an element
// with `load` (exact widening), computes in f32 (`compute_t`), and rounds once with
// `store`, to nearest with ties to even. The conversions are integer routines written out
// here (not cuda_bf16.h / cuda_fp16.h) so that they compile under NVRTC without include
// files and under g++ for the emulator, and so that they match the CPU (the `half` crate)
// bit for bit, NaN payloads included: a NaN stays a quiet NaN both ways.
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

__device__ __forceinline__ f32 bf16_to_f32(bf16 h) {
    u32 b = h.bits;
    if ((b & 0x7FFFu) > 0x7F80u) b |= 0x0040u;  // a NaN: quieted, as `half` widens it
    return __uint_as_float(b << 16);
}

__device__ __forceinline__ bf16 f32_to_bf16(f32 v) {
    const u32 x = __float_as_uint(v);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return bf16{(unsigned short)((x >> 16) | 0x0040u)};
    // Round up when the dropped half is above a tie, or a tie with an odd kept part.
    const u32 up = (x & 0x8000u) != 0 && (x & 0x17FFFu) != 0;
    return bf16{(unsigned short)((x >> 16) + up)};
}

__device__ __forceinline__ f32 f16_to_f32(f16 h) {
    const u32 sign = (u32)(h.bits & 0x8000u) << 16;
    const u32 exp = h.bits & 0x7C00u;
    const u32 man = h.bits & 0x03FFu;
    if (exp == 0x7C00u) return __uint_as_float(sign | 0x7F800000u | (man != 0 ? 0x00400000u | (man << 13) : 0u));
    if (exp == 0) {
        if (man == 0) return __uint_as_float(sign);
        // A subnormal: man * 2^-24, exact in f32.
        const f32 m = (f32)man * 5.9604644775390625e-8f;
        return sign ? -m : m;
    }
    return __uint_as_float(sign | (((exp >> 10) + 112u) << 23) | (man << 13));
}

__device__ __forceinline__ f16 f32_to_f16(f32 v) {
    const u32 x = __float_as_uint(v);
    const u32 sign = (x >> 16) & 0x8000u;
    const u32 exp = x & 0x7F800000u;
    const u32 man = x & 0x007FFFFFu;
    if (exp == 0x7F800000u) return f16{(unsigned short)(sign | 0x7C00u | (man != 0 ? 0x0200u | (man >> 13) : 0u))};
    const int half_exp = (int)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1F) return f16{(unsigned short)(sign | 0x7C00u)};
    if (half_exp <= 0) {
        if (14 - half_exp > 24) return f16{(unsigned short)sign};  // below half the smallest subnormal
        const u32 full = man | 0x00800000u;
        u32 half_man = full >> (14 - half_exp);
        const u32 round_bit = 1u << (13 - half_exp);
        if ((full & round_bit) != 0 && (full & (3u * round_bit - 1u)) != 0) half_man += 1;
        return f16{(unsigned short)(sign | half_man)};
    }
    const u32 bits = sign | ((u32)half_exp << 10) | (man >> 13);
    const u32 up = (man & 0x1000u) != 0 && (man & 0x2FFFu) != 0;
    return f16{(unsigned short)(bits + up)};  // a carry into the exponent is still right
}

// f64 to f32 "rounded to odd" (exact values pass; inexact ones truncate toward zero and set
// the last bit): rounding that f32 to bf16 or f16 then equals rounding the f64 once, as the
// CPU's f64 -> bf16/f16 casts do (dtype.rs).
__device__ __forceinline__ f32 f64_to_f32_odd(f64 x) {
    const f32 t = (f32)x;
    if (x != x || (f64)t == x) return t;
    u32 b = __float_as_uint(t);
    if (fabs((f64)t) > fabs(x)) b -= 1;  // rounded away from zero (to infinity included)
    return __uint_as_float(b | 1u);
}

// The type a kernel computes an element of storage type T in.
template <typename T> struct Compute { typedef T type; };
template <> struct Compute<bf16> { typedef f32 type; };
template <> struct Compute<f16> { typedef f32 type; };
template <typename T> using compute_t = typename Compute<T>::type;

template <typename T> __device__ __forceinline__ T load(const T* p) { return *p; }
__device__ __forceinline__ f32 load(const bf16* p) { return bf16_to_f32(*p); }
__device__ __forceinline__ f32 load(const f16* p) { return f16_to_f32(*p); }
template <typename T> __device__ __forceinline__ void store(T* p, T v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, f32 v) { *p = f32_to_bf16(v); }
__device__ __forceinline__ void store(f16* p, f32 v) { *p = f32_to_f16(v); }
