#line 1 "layout.cu"
// Layout kernels: copying a strided view into a contiguous buffer (permute, broadcast_to,
// narrow), concatenation, and filling a buffer with one value (Tensor::full). They only move bits, so they exist per element size:
// `_b16` (bf16, f16), `_b32` (f32) and `_b64` (f64, i64). The copies index in 32 or 64 bits (`_u32_` /
// `_u64_`, see INDEX_LOOP in the prelude). ops/layout/cuda.rs launches them.

// The view: element i of the output, decomposed over `dims` (innermost first), is read
// at `offset + sum(idx[d] * strides[d])`.
struct StridedMeta {
    u64 rank;
    u64 offset;
    u64 dims[MAX_DIMS];
    u64 strides[MAX_DIMS];
};

template <typename T, typename I>
__device__ __forceinline__ void strided_copy(const T* x, T* y, u64 n, const StridedMeta m) {
    INDEX_LOOP(I, i, n) {
        I rem = i, src = (I)m.offset;
#pragma unroll
        for (int d = 0; d < MAX_DIMS; ++d) {
            if (d < m.rank) {
                const I dim = (I)m.dims[d];
                src += (rem % dim) * (I)m.strides[d];
                rem /= dim;
            }
        }
        y[i] = x[src];
    }
}

// Writes a `[outer, inner]` part into columns `col..col + inner` of a `[outer, total]` output.
template <typename T, typename I>
__device__ __forceinline__ void concat_part(const T* src, T* dst, u64 outer, u64 inner, u64 total, u64 col) {
    const I in = (I)inner, tot = (I)total, c = (I)col;
    INDEX_LOOP(I, i, outer * inner) {
        const I o = i / in, j = i - o * in;
        dst[o * tot + c + j] = src[i];
    }
}

#define LAYOUT_COPIES(W, I)                                                                                   \
    extern "C" __global__ void strided_copy_##I##_##W(const W* x, W* y, u64 n, const StridedMeta m) {         \
        strided_copy<W, I>(x, y, n, m);                                                                       \
    }                                                                                                         \
    extern "C" __global__ void concat_part_##I##_##W(const W* src, W* dst, u64 outer, u64 inner, u64 total,   \
                                                    u64 col) {                                                \
        concat_part<W, I>(src, dst, outer, inner, total, col);                                                \
    }

// Bit widths as the unsigned types that carry them (b16 = u16, b32 = u32, b64 = u64).
typedef unsigned short b16;
typedef u32 b32;
typedef u64 b64;
LAYOUT_COPIES(b16, u32)
LAYOUT_COPIES(b16, u64)
LAYOUT_COPIES(b32, u32)
LAYOUT_COPIES(b32, u64)
LAYOUT_COPIES(b64, u32)
LAYOUT_COPIES(b64, u64)

// Every element set to the same bit pattern.
extern "C" __global__ void fill_b16(b16* y, u64 n, b16 bits) { GRID_STRIDE_LOOP(i, n) { y[i] = bits; } }
extern "C" __global__ void fill_b32(u32* y, u64 n, u32 bits) { GRID_STRIDE_LOOP(i, n) { y[i] = bits; } }
extern "C" __global__ void fill_b64(u64* y, u64 n, u64 bits) { GRID_STRIDE_LOOP(i, n) { y[i] = bits; } }
