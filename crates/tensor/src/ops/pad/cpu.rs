//! CPU kernels of padding: a pass over output rows (forward) or input rows (the adjoint's
//! gather), the last axis handled as three contiguous runs (before, copy, after).

use super::{PadMode, PadSpec};
use crate::utilities::alloc::try_vec;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use smallvec::SmallVec;

/// Elements of work below which a parallel task is not worth its overhead.
const MIN_TASK: usize = 1 << 14;

/// The input index output index `o` reads along an axis of `n` elements padded by
/// `before`, or `None` for a constant.
#[inline]
fn source(o: usize, n: usize, before: usize, reflect: bool) -> Option<usize> {
    let i = o as isize - before as isize;
    if i >= 0 && (i as usize) < n {
        Some(i as usize)
    } else if !reflect {
        None
    } else if i < 0 {
        Some((-i) as usize)
    } else {
        Some(2 * (n - 1) - i as usize)
    }
}

/// Up to three output indices along one axis and how many of them there are.
type Readers = ([usize; 3], usize);

/// The output indices that read input index `i` along an axis (ascending): the copy and,
/// when reflecting, up to two mirror images. Returns them and their count.
#[inline]
pub(crate) fn readers(i: usize, n: usize, (before, after): (usize, usize), reflect: bool) -> Readers {
    let mut out = [0; 3];
    let mut k = 0;
    if reflect && i >= 1 && i <= before {
        out[k] = before - i;
        k += 1;
    }
    out[k] = i + before;
    k += 1;
    if reflect && i + 1 + after >= n && i + 2 <= n {
        out[k] = before + 2 * (n - 1) - i;
        k += 1;
    }
    (out, k)
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * dims[d + 1];
    }
    s
}

/// Rows (of the last axis) per parallel task.
fn rows_per_task(row_len: usize) -> usize {
    MIN_TASK.div_ceil(row_len.max(1))
}

/// The forward pad.
pub(crate) fn pad<T: FloatElement>(x: &[T], s: &PadSpec) -> Result<Vec<T>> {
    const OP: &str = "pad";
    let out_dims = s.out_dims();
    let n_out: usize = out_dims.iter().product();
    let (reflect, value) = match s.mode {
        PadMode::Reflect => (true, T::zero()),
        PadMode::Constant(v) => (false, <T as num_traits::NumCast>::from(v).unwrap_or_else(T::nan)),
    };
    let mut out = try_vec(OP, n_out, value)?;
    let last = s.in_dims.len() - 1;
    let (n_last, out_last) = (s.in_dims[last], out_dims[last]);
    if n_out == 0 || (n_last == 0 && !reflect) {
        return Ok(out);
    }
    let (lb, la) = s.pads[last];
    let in_strides = strides(&s.in_dims);
    out.par_chunks_mut(out_last).with_min_len(rows_per_task(out_last)).enumerate().for_each(|(row, dst)| {
        // The input row this output row reads, unless an outer axis lands in a constant.
        let mut rem = row;
        let mut offset = 0;
        for axis in (0..last).rev() {
            let o = rem % out_dims[axis];
            rem /= out_dims[axis];
            match source(o, s.in_dims[axis], s.pads[axis].0, reflect) {
                Some(i) => offset += i * in_strides[axis],
                None => return,
            }
        }
        let src = &x[offset..offset + n_last];
        dst[lb..lb + n_last].copy_from_slice(src);
        if reflect {
            for (j, d) in dst[..lb].iter_mut().enumerate() {
                *d = src[lb - j];
            }
            for (t, d) in dst[lb + n_last..].iter_mut().enumerate() {
                *d = src[n_last - 2 - t];
            }
        }
        debug_assert_eq!(dst.len(), lb + n_last + la);
    });
    Ok(out)
}

/// The adjoint of the pad: every input element is the sum of the output elements that
/// read it (a gather over input rows, so no two tasks write the same element).
pub(crate) fn pad_backward<T: FloatElement>(dy: &[T], s: &PadSpec) -> Result<Vec<T>> {
    const OP: &str = "pad_backward";
    let out_dims = s.out_dims();
    let n_in: usize = s.in_dims.iter().product();
    let mut dx = try_vec(OP, n_in, T::zero())?;
    if n_in == 0 {
        return Ok(dx);
    }
    let reflect = s.mode == PadMode::Reflect;
    let last = s.in_dims.len() - 1;
    let n_last = s.in_dims[last];
    let (lb, la) = s.pads[last];
    let out_strides = strides(&out_dims);
    dx.par_chunks_mut(n_last).with_min_len(rows_per_task(n_last)).enumerate().for_each(|(row, dst)| {
        // Per outer axis, the output indices that read this row's index.
        let mut per_axis: SmallVec<[(usize, Readers); 8]> = SmallVec::new();
        let mut rem = row;
        for axis in (0..last).rev() {
            let i = rem % s.in_dims[axis];
            rem /= s.in_dims[axis];
            per_axis.push((axis, readers(i, s.in_dims[axis], s.pads[axis], reflect)));
        }
        // An odometer over every combination of readers.
        let mut pick: SmallVec<[usize; 8]> = smallvec::smallvec![0; per_axis.len()];
        loop {
            let offset: usize =
                per_axis.iter().zip(&pick).map(|(&(axis, (idx, _)), &p)| idx[p] * out_strides[axis]).sum();
            let g = &dy[offset..offset + out_dims[last]];
            for (d, &v) in dst.iter_mut().zip(&g[lb..lb + n_last]) {
                *d = *d + v;
            }
            if reflect {
                for j in 1..=lb {
                    dst[j] = dst[j] + g[lb - j];
                }
                for t in 0..la {
                    dst[n_last - 2 - t] = dst[n_last - 2 - t] + g[lb + n_last + t];
                }
            }
            let mut axis = 0;
            loop {
                if axis == pick.len() {
                    return;
                }
                pick[axis] += 1;
                if pick[axis] < per_axis[axis].1 .1 {
                    break;
                }
                pick[axis] = 0;
                axis += 1;
            }
        }
    });
    Ok(dx)
}
