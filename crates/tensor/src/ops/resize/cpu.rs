//! CPU kernels of bilinear resizing over NHWC: whole pixel vectors of `channels` elements
//! at a time, output rows (forward) or input rows (the adjoint's gather) in parallel, each
//! separable (rows first, into a row buffer, then pixels). Nearest, a replication, has
//! its own kernels (nearest_cpu.rs).

use super::{nearest_cpu, reader_range, tap, weight_of, Interpolation, ResizeSpec, Tap};
use crate::utilities::alloc::{host_oom, try_with_capacity, try_zeros, ZeroBits};
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

/// Per output pixel along one axis, its two taps as element offsets (`pixel * channels`)
/// and their weights in `T`: computed once per call, not once per row.
fn scaled_taps<T: FloatElement>(
    op: &'static str,
    out: usize,
    factor: usize,
    n: usize,
    interpolation: Interpolation,
    channels: usize,
) -> Result<Vec<(usize, usize, T, T)>> {
    let mut t = try_with_capacity(op, out)?;
    t.extend(
        taps(op, out, factor, n, interpolation)?
            .into_iter()
            .map(|t| (t.i0 * channels, t.i1 * channels, cast::<T>(t.w0), cast::<T>(t.w1))),
    );
    Ok(t)
}

/// Grows a per-thread row buffer to `len` elements (fallibly: its size is the user's shapes').
fn ensure_len<T: FloatElement>(op: &'static str, buf: &mut Vec<T>, len: usize) -> Result<()> {
    if buf.len() < len {
        buf.try_reserve_exact(len - buf.len()).map_err(|_| host_oom::<T>(op, len))?;
        buf.resize(len, T::zero());
    }
    Ok(())
}

/// The forward resize. Bilinear is separable: each output row first blends its two input
/// rows into a row buffer (one pass over whole rows, which vectorises), then each output
/// pixel blends two pixels of that buffer: three multiply-adds per output element where
/// the four-tap formula takes four, and the buffer stays in L1.
pub(crate) fn resize<T: FloatElement + ZeroBits>(x: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize";
    if s.interpolation == Interpolation::Nearest {
        return nearest_cpu::resize(x, s);
    }
    let c = s.channels;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    // Every element is written below: the zero pages are never filled here.
    let mut out = try_zeros(OP, s.batch * out_h * out_w * c)?;
    if out.is_empty() {
        return Ok(out);
    }
    let rows = taps(OP, out_h, s.factor_h, s.in_h, s.interpolation)?;
    let cols = scaled_taps::<T>(OP, out_w, s.factor_w, s.in_w, s.interpolation, c)?;
    let in_row = s.in_w * c;
    let in_image = s.in_h * in_row;
    let row_len = out_w * c;
    let tasks = out.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(row_len * 3)).enumerate();
    tasks.try_for_each_init(Vec::new, |blend, (r, dst)| {
        let (b, oy) = (r / out_h, r % out_h);
        let img = &x[b * in_image..(b + 1) * in_image];
        let ty = rows[oy];
        let row0 = &img[ty.i0 * in_row..][..in_row];
        // w1 == 0 means w0 == 1 exactly: the row itself.
        let v: &[T] = if ty.w1 == 0.0 {
            row0
        } else {
            let row1 = &img[ty.i1 * in_row..][..in_row];
            let (w0, w1) = (cast::<T>(ty.w0), cast::<T>(ty.w1));
            ensure_len(OP, blend, in_row)?;
            for ((d, &a), &b) in blend[..in_row].iter_mut().zip(row0).zip(row1) {
                *d = w0 * a + w1 * b;
            }
            &blend[..in_row]
        };
        for (pixel, &(i0, i1, w0, w1)) in dst.chunks_exact_mut(c).zip(&cols) {
            for ((d, &a), &b) in pixel.iter_mut().zip(&v[i0..i0 + c]).zip(&v[i1..i1 + c]) {
                *d = w0 * a + w1 * b;
            }
        }
        Ok(())
    })?;
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
/// it, gathered (never scattered), so no two tasks write the same element and no atomics
/// are needed. Bilinear is separable as the forward: for each input row, the output rows
/// that read it are first summed (weighted) into a row buffer, in passes over whole rows,
/// then each input pixel sums the buffer's pixels that read it. The order of the sums
/// differs from resize.cu's (one sum over the 2-D window per input pixel), so the two
/// backends agree to rounding, not bit for bit.
pub(crate) fn resize_backward<T: FloatElement + ZeroBits>(dy: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize_backward";
    if s.interpolation == Interpolation::Nearest {
        return nearest_cpu::resize_backward(dy, s);
    }
    let c = s.channels;
    let mut dx = try_zeros(OP, s.batch * s.in_h * s.in_w * c)?;
    if dx.is_empty() {
        return Ok(dx);
    }
    let rows = Readers::<T>::new(OP, s.in_h, s.factor_h, s.interpolation)?;
    let cols = Readers::<T>::new(OP, s.in_w, s.factor_w, s.interpolation)?;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let out_row = out_w * c;
    let out_image = out_h * out_row;
    let row_len = s.in_w * c;
    let work = row_len * s.factor_h * s.factor_w * 3;
    let tasks = dx.par_chunks_mut(row_len).with_min_len(MIN_TASK.div_ceil(work)).enumerate();
    tasks.try_for_each_init(Vec::new, |sum, (r, dst)| {
        let (b, iy) = (r / s.in_h, r % s.in_h);
        let g = &dy[b * out_image..(b + 1) * out_image];
        ensure_len(OP, sum, out_row)?;
        let sum = &mut sum[..out_row];
        let mut readers = rows.of(iy).iter();
        let Some(&(oy, wy)) = readers.next() else {
            // Read by no output row: its gradient is zero, as `dx` already is.
            return Ok(());
        };
        for (d, &v) in sum.iter_mut().zip(&g[oy * out_row..][..out_row]) {
            *d = wy * v;
        }
        for &(oy, wy) in readers {
            for (d, &v) in sum.iter_mut().zip(&g[oy * out_row..][..out_row]) {
                *d = *d + wy * v;
            }
        }
        for (ix, pixel) in dst.chunks_exact_mut(c).enumerate() {
            for &(ox, wx) in cols.of(ix) {
                for (d, &v) in pixel.iter_mut().zip(&sum[ox * c..][..c]) {
                    *d = *d + wx * v;
                }
            }
        }
        Ok(())
    })?;
    Ok(dx)
}
