#line 1 "layout.cu"
// Layout kernels: copying a strided view into a contiguous buffer (permute, broadcast_to,
// narrow), concatenation, and filling a buffer with one value (Tensor::full). They only move bits, so they exist per element size:
// `_b32` (f32) and `_b64` (f64, i64). ops/layout/cuda.rs launches them.

// The view: element i of the output, decomposed over `dims` (innermost first), is read
// at `offset + sum(idx[d] * strides[d])`.
struct StridedMeta {
    u64 rank;
    u64 offset;
    u64 dims[MAX_DIMS];
    u64 strides[MAX_DIMS];
};

template <typename T>
__device__ __forceinline__ void strided_copy(const T* x, T* y, u64 n, const StridedMeta m) {
    GRID_STRIDE_LOOP(i, n) {
        u64 rem = i, src = m.offset;
#pragma unroll
        for (int d = 0; d < MAX_DIMS; ++d) {
            if (d < m.rank) {
                src += (rem % m.dims[d]) * m.strides[d];
                rem /= m.dims[d];
            }
        }
        y[i] = x[src];
    }
}

// Writes a `[outer, inner]` part into columns `col..col + inner` of a `[outer, total]` output.
template <typename T>
__device__ __forceinline__ void concat_part(const T* src, T* dst, u64 outer, u64 inner, u64 total, u64 col) {
    GRID_STRIDE_LOOP(i, outer * inner) {
        const u64 o = i / inner, j = i % inner;
        dst[o * total + col + j] = src[i];
    }
}

extern "C" __global__ void strided_copy_b32(const u32* x, u32* y, u64 n, const StridedMeta m) { strided_copy(x, y, n, m); }
extern "C" __global__ void strided_copy_b64(const u64* x, u64* y, u64 n, const StridedMeta m) { strided_copy(x, y, n, m); }
extern "C" __global__ void concat_part_b32(const u32* src, u32* dst, u64 outer, u64 inner, u64 total, u64 col) {
    concat_part(src, dst, outer, inner, total, col);
}
extern "C" __global__ void concat_part_b64(const u64* src, u64* dst, u64 outer, u64 inner, u64 total, u64 col) {
    concat_part(src, dst, outer, inner, total, col);
}

// Every element set to the same bit pattern.
extern "C" __global__ void fill_b32(u32* y, u64 n, u32 bits) { GRID_STRIDE_LOOP(i, n) { y[i] = bits; } }
extern "C" __global__ void fill_b64(u64* y, u64 n, u64 bits) { GRID_STRIDE_LOOP(i, n) { y[i] = bits; } }
