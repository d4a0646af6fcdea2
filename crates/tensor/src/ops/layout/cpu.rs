//! CPU kernels of the layout ops.

use crate::backend::StridedLayout;
use crate::utilities::alloc::{try_vec, try_with_capacity};
use crate::utilities::coalesce::coalesce;
use crate::utilities::PAR_MIN_LEN;
use crate::Result;
use rayon::prelude::*;

/// Copies a strided view into a new contiguous buffer, row by row over the coalesced
/// innermost dimension.
pub(crate) fn strided_copy<T: Copy + Send + Sync + Default>(x: &[T], l: &StridedLayout) -> Result<Vec<T>> {
    let n = l.shape.elem_count();
    if n == 0 {
        return Ok(Vec::new());
    }
    let (dims, strides, _) = coalesce(l.shape.dims(), std::slice::from_ref(&l.strides));
    let rank = dims.len();
    let inner = dims[rank - 1];
    let step = strides[rank - 1];
    let mut out = try_vec("strided_copy", n, T::default())?;
    let row = |(r, chunk): (usize, &mut [T])| {
        let (mut off, mut rem) = (l.offset, r);
        for d in (0..rank - 1).rev() {
            off += (rem % dims[d]) * strides[d];
            rem /= dims[d];
        }
        match step {
            1 => chunk.copy_from_slice(&x[off..off + inner]),
            0 => chunk.fill(x[off]),
            s => {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = x[off + j * s];
                }
            }
        }
    };
    if n < PAR_MIN_LEN {
        out.chunks_mut(inner).enumerate().for_each(row);
    } else {
        let rows_per_task = (PAR_MIN_LEN / 8 / inner).max(1);
        out.par_chunks_mut(inner).enumerate().with_min_len(rows_per_task).for_each(row);
    }
    Ok(out)
}

/// Concatenates `[outer, inner_i]` buffers along the second dimension.
pub(crate) fn concat<T: Copy>(parts: &[&[T]], outer: usize, inners: &[usize]) -> Result<Vec<T>> {
    let total: usize = inners.iter().sum();
    let mut out = try_with_capacity("concat", outer.saturating_mul(total))?;
    for o in 0..outer {
        for (p, &inner) in parts.iter().zip(inners) {
            out.extend_from_slice(&p[o * inner..(o + 1) * inner]);
        }
    }
    Ok(out)
}
