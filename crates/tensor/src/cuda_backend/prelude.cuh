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
