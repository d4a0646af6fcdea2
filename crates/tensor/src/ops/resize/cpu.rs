//! CPU kernels of resizing over NHWC: whole pixel vectors of `channels` elements at a
//! time, output rows (forward) or input rows (the adjoint's gather) in parallel.

use super::{reader_range, tap, weight_of, Interpolation, ResizeSpec, Tap};
use crate::utilities::alloc::{try_vec, try_with_capacity};
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Elements of work below which a parallel task is not worth its overhead.
const MIN_TASK: usize = 1 << 14;

fn cast<T: FloatElement>(w: f64) -> T {
    <T as num_traits::NumCast>::from(w).expect("a weight in [0, 1] fits every float")
}

/// The taps of every output pixel along one axis.
fn taps(op: &'static str, out: usize, factor: usize, n: usize, interpolation: Interpolation) -> Result<Vec<Tap>> {
    let mut t = try_with_capacity(op, out)?;
    t.extend((0..out).map(|o| tap(o, factor, n, interpolation)));
    Ok(t)
}

/// The forward resize.
pub(crate) fn resize<T: FloatElement>(x: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize";
    let c = s.channels;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let mut out = try_vec(OP, s.batch * out_h * out_w * c, T::zero())?;
    if out.is_empty() {
        return Ok(out);
    }
    let rows = taps(OP, out_h, s.factor_h, s.in_h, s.interpolation)?;
    let cols = taps(OP, out_w, s.factor_w, s.in_w, s.interpolation)?;
    let in_image = s.in_h * s.in_w * c;
    let row_len = out_w * c;
    out.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(row_len * 4)).enumerate().for_each(|(r, dst)| {
        let (b, oy) = (r / out_h, r % out_h);
        let img = &x[b * in_image..(b + 1) * in_image];
        let ty = rows[oy];
        let row0 = &img[ty.i0 * s.in_w * c..][..s.in_w * c];
        let row1 = &img[ty.i1 * s.in_w * c..][..s.in_w * c];
        match s.interpolation {
            Interpolation::Nearest => {
                for (pixel, tx) in dst.chunks_exact_mut(c).zip(&cols) {
                    pixel.copy_from_slice(&row0[tx.i0 * c..][..c]);
                }
            }
            Interpolation::Bilinear => {
                let (wy0, wy1) = (cast::<T>(ty.w0), cast::<T>(ty.w1));
                for (pixel, tx) in dst.chunks_exact_mut(c).zip(&cols) {
                    let (wx0, wx1) = (cast::<T>(tx.w0), cast::<T>(tx.w1));
                    let (a, b) = (&row0[tx.i0 * c..][..c], &row0[tx.i1 * c..][..c]);
                    let (p, q) = (&row1[tx.i0 * c..][..c], &row1[tx.i1 * c..][..c]);
                    for ((((d, &a), &b), &p), &q) in pixel.iter_mut().zip(a).zip(b).zip(p).zip(q) {
                        *d = wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * p + wx1 * q);
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Per input pixel along one axis, the output pixels that read it and their weights, as
/// offsets into one list (ascending output order).
struct Readers<T> {
    starts: Vec<usize>,
    entries: Vec<(usize, T)>,
}

impl<T: FloatElement> Readers<T> {
    fn new(op: &'static str, n: usize, factor: usize, interpolation: Interpolation) -> Result<Self> {
        let out = n * factor;
        let mut starts = try_with_capacity(op, n + 1)?;
        let mut entries = try_with_capacity(op, out * 2)?;
        for i in 0..n {
            starts.push(entries.len());
            for o in reader_range(i, factor, out) {
                if let Some(w) = weight_of(tap(o, factor, n, interpolation), i) {
                    entries.push((o, cast::<T>(w)));
                }
            }
        }
        starts.push(entries.len());
        Ok(Readers { starts, entries })
    }

    fn of(&self, i: usize) -> &[(usize, T)] {
        &self.entries[self.starts[i]..self.starts[i + 1]]
    }
}

/// The adjoint: every input pixel is the weighted sum of the output gradients that read
/// it, gathered in ascending output order (as resize.cu), so no two tasks write the same
/// element and no atomics are needed.
pub(crate) fn resize_backward<T: FloatElement>(dy: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize_backward";
    let c = s.channels;
    let mut dx = try_vec(OP, s.batch * s.in_h * s.in_w * c, T::zero())?;
    if dx.is_empty() {
        return Ok(dx);
    }
    let rows = Readers::<T>::new(OP, s.in_h, s.factor_h, s.interpolation)?;
    let cols = Readers::<T>::new(OP, s.in_w, s.factor_w, s.interpolation)?;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let out_image = out_h * out_w * c;
    let row_len = s.in_w * c;
    let work = row_len * s.factor_h * s.factor_w * 4;
    dx.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(work)).enumerate().for_each(|(r, dst)| {
        let (b, iy) = (r / s.in_h, r % s.in_h);
        let g = &dy[b * out_image..(b + 1) * out_image];
        for &(oy, wy) in rows.of(iy) {
            let g_row = &g[oy * out_w * c..][..out_w * c];
            for (ix, pixel) in dst.chunks_exact_mut(c).enumerate() {
                for &(ox, wx) in cols.of(ix) {
                    let w = wy * wx;
                    for (d, &v) in pixel.iter_mut().zip(&g_row[ox * c..][..c]) {
                        *d = *d + w * v;
                    }
                }
            }
        }
    });
    Ok(dx)
}
