//! CPU kernels of gather and of the segmented row sum under scatter_add.

use crate::utilities::alloc::{try_with_capacity, try_zeros, ZeroBits};
use crate::utilities::PAR_MIN_LEN;
use crate::{Error, Result};
use num_traits::Float;
use rayon::prelude::*;

/// Row `indices[i]` of `table` (`[rows, row_len]`) for every `i`: `[indices.len(), row_len]`.
pub(crate) fn gather_rows<T: Copy + Send + Sync>(table: &[T], indices: &[i64], row_len: usize) -> Result<Vec<T>> {
    const OP: &str = "gather";
    if row_len == 0 {
        return Ok(Vec::new());
    }
    let rows = table.len() / row_len;
    let len = indices.len().checked_mul(row_len).ok_or_else(|| Error::invalid(OP, "output size overflows"))?;
    let mut out = try_with_capacity(OP, len)?;
    for (i, &v) in indices.iter().enumerate() {
        // The op checked the indices on the host; a kernel called directly still refuses.
        if v < 0 || v as usize >= rows {
            return Err(Error::invalid(OP, format!("index {v} at position {i} is outside 0..{rows}")));
        }
        let start = v as usize * row_len;
        out.extend_from_slice(&table[start..start + row_len]);
    }
    Ok(out)
}

/// Row `s` of the output is the sum of the rows `values[order[k]]` for `k` in
/// `offsets[s]..offsets[s + 1]`, added in that order: `[offsets.len() - 1, row_len]`.
/// Rows are independent, so the parallel split does not change any sum.
pub(crate) fn segment_sum_rows<T: Float + ZeroBits + Send + Sync>(
    values: &[T],
    order: &[i64],
    offsets: &[i64],
    row_len: usize,
) -> Result<Vec<T>> {
    const OP: &str = "scatter_add";
    let segments = offsets.len().saturating_sub(1);
    let len = segments.checked_mul(row_len).ok_or_else(|| Error::invalid(OP, "output size overflows"))?;
    let mut out = try_zeros::<T>(OP, len)?;
    if row_len == 0 {
        return Ok(out);
    }
    let sum_segment = |(s, dst): (usize, &mut [T])| {
        for &position in &order[offsets[s] as usize..offsets[s + 1] as usize] {
            let src = &values[position as usize * row_len..][..row_len];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = *d + v;
            }
        }
    };
    if values.len() + len < PAR_MIN_LEN {
        out.chunks_mut(row_len).enumerate().for_each(sum_segment);
    } else {
        out.par_chunks_mut(row_len).enumerate().for_each(sum_segment);
    }
    Ok(out)
}
