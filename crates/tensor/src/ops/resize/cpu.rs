//! CPU kernels of bilinear resizing over NHWC: whole pixel vectors of `channels` elements
//! at a time, output rows (forward) or input rows (the adjoint's gather) in parallel, each
//! separable (rows first, into a row buffer, then pixels). Nearest, a replication, has
//! its own kernels (nearest_cpu.rs). The inner loops are in bilinear_rows.rs, compiled for
//! each instruction set; the outputs are written once, never zeroed first.

use super::{bilinear_rows, nearest_cpu, reader_range, tap, weight_of, Interpolation, ResizeSpec, Tap};
use crate::utilities::alloc::{host_oom, try_with_capacity, ZeroBits};
use crate::utilities::isa::Isa;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// A vector of `len` elements cut into rows of `row_len`, each written by
/// `fill(row, buffer, slots)` in parallel (tasks of at least `min_rows` rows, each with its
/// own scratch `buffer` of `scratch` elements), without zeroing it first: every row is
/// written once. `fill` must write every slot of its row.
fn par_rows<T: FloatElement>(
    op: &'static str,
    len: usize,
    row_len: usize,
    min_rows: usize,
    scratch: usize,
    fill: impl Fn(usize, &mut [T], &mut [MaybeUninit<T>]) + Sync,
) -> Result<Vec<T>> {
    let mut out = try_with_capacity::<T>(op, len)?;
    if len == 0 {
        return Ok(out);
    }
    let tasks = out.spare_capacity_mut()[..len].par_chunks_mut(row_len).with_min_len(min_rows).enumerate();
    tasks.try_for_each_init(Vec::new, |buffer, (r, dst)| {
        ensure_len(op, buffer, scratch)?;
        fill(r, &mut buffer[..scratch], dst);
        Ok::<(), crate::Error>(())
    })?;
    // SAFETY: the capacity is at least `len` (reserved above), and every row of `0..len`
    // was written in full by `fill` (its callers' promise); an error returns above.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The forward resize. Bilinear is separable: each output row first blends its two input
/// rows into a row buffer (one pass over whole rows, which vectorises), then each output
/// pixel blends two pixels of that buffer: three multiply-adds per output element where
/// the four-tap formula takes four, and the buffer stays in L1. The output is written
/// once, never zeroed first.
pub(crate) fn resize<T: FloatElement + ZeroBits>(x: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    resize_with(Isa::detect(), x, s)
}

/// [`resize`] with its row functions compiled for `isa`.
fn resize_with<T: FloatElement + ZeroBits>(isa: Isa, x: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize";
    if s.interpolation == Interpolation::Nearest {
        return nearest_cpu::resize(x, s);
    }
    let c = s.channels;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let len = s.batch * out_h * out_w * c;
    if len == 0 {
        return Ok(Vec::new());
    }
    let rows = taps(OP, out_h, s.factor_h, s.in_h, s.interpolation)?;
    let cols = scaled_taps::<T>(OP, out_w, s.factor_w, s.in_w, s.interpolation, c)?;
    let in_row = s.in_w * c;
    let in_image = s.in_h * in_row;
    let row_len = out_w * c;
    let min_rows = MIN_TASK.div_ceil(row_len * 3);
    par_rows(OP, len, row_len, min_rows, in_row, |r, blend, dst| {
        let (b, oy) = (r / out_h, r % out_h);
        let img = &x[b * in_image..(b + 1) * in_image];
        let ty = rows[oy];
        let row = bilinear_rows::ForwardRow {
            row0: &img[ty.i0 * in_row..][..in_row],
            row1: &img[ty.i1 * in_row..][..in_row],
            w: (cast::<T>(ty.w0), cast::<T>(ty.w1)),
            cols: &cols,
            channels: c,
        };
        bilinear_rows::forward(isa, &row, blend, dst);
    })
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
    resize_backward_with(Isa::detect(), dy, s)
}

/// [`resize_backward`] with its row functions compiled for `isa`.
fn resize_backward_with<T: FloatElement + ZeroBits>(isa: Isa, dy: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    const OP: &str = "resize_backward";
    if s.interpolation == Interpolation::Nearest {
        return nearest_cpu::resize_backward(dy, s);
    }
    let c = s.channels;
    let len = s.batch * s.in_h * s.in_w * c;
    if len == 0 {
        return Ok(Vec::new());
    }
    let rows = Readers::<T>::new(OP, s.in_h, s.factor_h, s.interpolation)?;
    let cols = Readers::<T>::new(OP, s.in_w, s.factor_w, s.interpolation)?;
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let out_row = out_w * c;
    let out_image = out_h * out_row;
    let row_len = s.in_w * c;
    let min_rows = MIN_TASK.div_ceil(row_len * s.factor_h * s.factor_w * 3);
    par_rows(OP, len, row_len, min_rows, out_row, |r, sum, dst| {
        let (b, iy) = (r / s.in_h, r % s.in_h);
        let Some((&first, rest)) = rows.of(iy).split_first() else {
            // Read by no output row: its gradient is zero.
            dst.iter_mut().for_each(|d| {
                d.write(T::zero());
            });
            return;
        };
        let row = bilinear_rows::BackwardRow {
            dy: &dy[b * out_image..(b + 1) * out_image],
            first,
            rest,
            col_starts: &cols.starts,
            col_entries: &cols.entries,
            channels: c,
        };
        bilinear_rows::backward(isa, &row, sum, dst);
    })
}

#[cfg(test)]
mod tests {
    use super::{resize_backward_with, resize_with, scaled_taps, taps, Readers};
    use crate::ops::resize::{Interpolation, ResizeSpec};
    use crate::utilities::isa::Isa;

    /// Odd sizes and factors, channel counts that are and are not a whole number of SIMD
    /// lanes, a factor of 1 (rows read whole) and a batch large enough to split in tasks.
    fn specs() -> Vec<ResizeSpec> {
        let spec = |batch, in_h, in_w, channels, factor_h, factor_w| ResizeSpec {
            batch,
            in_h,
            in_w,
            channels,
            factor_h,
            factor_w,
            interpolation: Interpolation::Bilinear,
        };
        vec![
            spec(1, 1, 1, 1, 2, 2),
            spec(2, 3, 5, 3, 2, 3),
            spec(3, 4, 2, 5, 1, 2),
            spec(2, 5, 4, 37, 3, 1),
            spec(16, 8, 8, 32, 2, 2),
            spec(4, 16, 16, 64, 2, 2),
        ]
    }

    fn values(len: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37) % 101) as f32 - 50.0) / 7.0).collect()
    }

    /// The separable forward, one scalar at a time, in the kernels' order of operations.
    fn forward_reference(x: &[f32], s: &ResizeSpec) -> Vec<f32> {
        let c = s.channels;
        let rows = taps("test", s.out_h(), s.factor_h, s.in_h, s.interpolation).unwrap();
        let cols = scaled_taps::<f32>("test", s.out_w(), s.factor_w, s.in_w, s.interpolation, 1).unwrap();
        let at = |b: usize, y: usize, xx: usize, ch: usize| x[((b * s.in_h + y) * s.in_w + xx) * c + ch];
        let mut out = Vec::new();
        for b in 0..s.batch {
            for t in &rows {
                let (w0, w1) = (t.w0 as f32, t.w1 as f32);
                let v = |xx, ch| {
                    if w1 == 0.0 {
                        at(b, t.i0, xx, ch)
                    } else {
                        w0 * at(b, t.i0, xx, ch) + w1 * at(b, t.i1, xx, ch)
                    }
                };
                for &(i0, i1, w0, w1) in &cols {
                    out.extend((0..c).map(|ch| w0 * v(i0, ch) + w1 * v(i1, ch)));
                }
            }
        }
        out
    }

    /// The gathered adjoint, one scalar at a time, in the kernels' order of operations.
    fn backward_reference(dy: &[f32], s: &ResizeSpec) -> Vec<f32> {
        let c = s.channels;
        let rows = Readers::<f32>::new("test", s.in_h, s.factor_h, s.interpolation).unwrap();
        let cols = Readers::<f32>::new("test", s.in_w, s.factor_w, s.interpolation).unwrap();
        let at = |b: usize, y: usize, xx: usize, ch: usize| dy[((b * s.out_h() + y) * s.out_w() + xx) * c + ch];
        let mut dx = Vec::new();
        for b in 0..s.batch {
            for iy in 0..s.in_h {
                let sum = |ox, ch| {
                    let (&(oy, wy), rest) = rows.of(iy).split_first().unwrap();
                    rest.iter().fold(wy * at(b, oy, ox, ch), |acc, &(oy, wy)| acc + wy * at(b, oy, ox, ch))
                };
                for ix in 0..s.in_w {
                    dx.extend((0..c).map(|ch| cols.of(ix).iter().fold(0.0, |acc, &(ox, wx)| acc + wx * sum(ox, ch))));
                }
            }
        }
        dx
    }

    #[test]
    fn every_instruction_set_gives_the_reference_bits() {
        for s in specs() {
            let x = values(s.batch * s.in_h * s.in_w * s.channels);
            let dy = values(s.batch * s.out_h() * s.out_w() * s.channels);
            let (y_ref, dx_ref) = (forward_reference(&x, &s), backward_reference(&dy, &s));
            for isa in Isa::available() {
                let y = resize_with(isa, &x, &s).unwrap();
                let dx = resize_backward_with(isa, &dy, &s).unwrap();
                assert!(y.iter().map(|v| v.to_bits()).eq(y_ref.iter().map(|v| v.to_bits())), "{isa:?} {s:?}");
                assert!(dx.iter().map(|v| v.to_bits()).eq(dx_ref.iter().map(|v| v.to_bits())), "{isa:?} {s:?}");
            }
        }
    }

    #[test]
    fn the_adjoint_is_the_forward_transposed() {
        for s in specs() {
            let x: Vec<f64> = values(s.batch * s.in_h * s.in_w * s.channels).into_iter().map(f64::from).collect();
            let dy: Vec<f64> =
                values(s.batch * s.out_h() * s.out_w() * s.channels).into_iter().rev().map(f64::from).collect();
            for isa in Isa::available() {
                let y = resize_with(isa, &x, &s).unwrap();
                let dx = resize_backward_with(isa, &dy, &s).unwrap();
                let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
                let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
                assert!((lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0), "{isa:?} {s:?}: {lhs} vs {rhs}");
            }
        }
    }
}
