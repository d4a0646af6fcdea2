#line 1 "gather.cu"
// gather: out[i, j] = table[indices[i], j]; segment_sum_rows (under scatter_add):
// out[s, j] = sum of values[order[k], j] for k in offsets[s]..offsets[s + 1], in order.
// One thread per output element, so each sum has one fixed order and no atomics: the
// result is the same at every run. The host checks the indices before launching; an
// index outside the table still reads nothing (it gives 0) rather than stray memory.
// bf16 and f16 elements are loaded to f32, summed in f32 and rounded once when stored, as
// the CPU computes them.

template <typename T>
__device__ __forceinline__ void gather_rows_impl(const T* table, const i64* indices, T* out, u64 n, u64 rows,
                                                 u64 row_len) {
    GRID_STRIDE_LOOP(i, n * row_len) {
        const u64 r = i / row_len, j = i % row_len;
        const i64 v = indices[r];
        store(out + i, (v >= 0 && (u64)v < rows) ? load(table + (u64)v * row_len + j) : compute_t<T>(0));
    }
}

template <typename T>
__device__ __forceinline__ void segment_sum_rows_impl(const T* values, const i64* order, const i64* offsets, T* out,
                                                      u64 segments, u64 row_len) {
    GRID_STRIDE_LOOP(i, segments * row_len) {
        const u64 s = i / row_len, j = i % row_len;
        compute_t<T> acc = 0;
        for (i64 k = offsets[s]; k < offsets[s + 1]; ++k) acc += load(values + (u64)order[k] * row_len + j);
        store(out + i, acc);
    }
}

#define GATHER(T)                                                                                        \
    extern "C" __global__ void gather_rows_##T(const T* t, const i64* idx, T* out, u64 n, u64 rows,      \
                                               u64 row_len) {                                            \
        gather_rows_impl(t, idx, out, n, rows, row_len);                                                 \
    }                                                                                                    \
    extern "C" __global__ void segment_sum_rows_##T(const T* v, const i64* order, const i64* offsets,    \
                                                    T* out, u64 segments, u64 row_len) {                 \
        segment_sum_rows_impl(v, order, offsets, out, segments, row_len);                                \
    }

GATHER(f32)
GATHER(f64)
GATHER(bf16)
GATHER(f16)
