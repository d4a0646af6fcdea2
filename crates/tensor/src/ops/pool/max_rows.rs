//! The row loops of max pooling on the CPU (cpu.rs), as [`IsaKernel`]s: compiled for
//! AVX-512, AVX2 and any CPU and chosen at run time. They only compare, select and add, so
//! every version gives the same bits.
//!
//! The backward pass gathers: first [`ArgmaxRow`] records, per output element, the
//! ordinal of its window's first maximum (found as the forward pass finds it), then
//! [`GatherRow`] gives each input element the sum of the output gradients of the windows
//! whose recorded ordinal is its own. Each input gradient is written once (no zeroed buffer
//! added into once per window element), and `y` is not read.

use super::cpu::window;
use crate::backend::Pool2dSpec;
use crate::utilities::alloc::assume_init_mut;
use crate::utilities::isa::IsaKernel;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// The row-major positions `(iy, ix)` of a window's real elements after the first.
#[inline(always)]
fn after_first((y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> impl Iterator<Item = (usize, usize)> {
    (y0..y1).flat_map(move |iy| (if iy == y0 { x0 + 1 } else { x0 }..x1).map(move |ix| (iy, ix)))
}

/// One output row of the forward pass: each window's maximum, comparing strictly greater
/// from its first element, so the first maximum wins ties and a NaN only when it comes first.
pub(super) struct MaxRow<'a, T> {
    pub(super) img: &'a [T],
    pub(super) s: &'a Pool2dSpec,
    pub(super) oy: usize,
    pub(super) dst: &'a mut [MaybeUninit<T>],
}

impl<T: FloatElement> IsaKernel for MaxRow<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (s, c, img) = (self.s, self.s.channels, self.img);
        let rows = window(self.oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
        for (ox, px) in self.dst.chunks_exact_mut(c).enumerate() {
            let cols = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
            for (d, &v) in px.iter_mut().zip(&img[(rows.0 * s.in_w + cols.0) * c..][..c]) {
                d.write(v);
            }
            // SAFETY: every element of `px` was written just above.
            let best = unsafe { assume_init_mut(px) };
            for (iy, ix) in after_first(rows, cols) {
                for (m, &v) in best.iter_mut().zip(&img[(iy * s.in_w + ix) * c..][..c]) {
                    // A select, not a branch, so that the loop vectorises.
                    *m = if v > *m { v } else { *m };
                }
            }
        }
    }
}

/// The ordinal that marks a window whose maximum is NaN: it matches no element, so such a
/// window's gradient goes nowhere (as the rule "the first element equal to `y`" says).
pub(super) fn no_position<T: FloatElement>() -> T {
    -T::one()
}

/// The ordinal of input `(iy, ix)` in output `(oy, ox)`'s window: its row-major position
/// in the window, padding counted (so both passes compute it from the geometry alone).
#[inline(always)]
pub(super) fn ordinal(s: &Pool2dSpec, (oy, ox): (usize, usize), (iy, ix): (usize, usize)) -> usize {
    (iy + s.pad_top - oy * s.stride_h) * s.window_w + (ix + s.pad_left - ox * s.stride_w)
}

/// One output row of the backward pass's first step: for each output element, the
/// ordinal (as a `T`, exact: the caller checks the window size) of its window's first
/// maximum in the forward pass's order, or [`no_position`] where that maximum is NaN.
pub(super) struct ArgmaxRow<'a, T> {
    pub(super) img: &'a [T],
    pub(super) s: &'a Pool2dSpec,
    pub(super) oy: usize,
    /// Scratch of `channels` elements: the running maxima.
    pub(super) best: &'a mut [T],
    pub(super) arg: &'a mut [T],
}

impl<T: FloatElement> IsaKernel for ArgmaxRow<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (s, c, img, best) = (self.s, self.s.channels, self.img, self.best);
        let rows = window(self.oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
        for (ox, arg) in self.arg.chunks_exact_mut(c).enumerate() {
            let cols = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
            let first = <T as num_traits::NumCast>::from(ordinal(s, (self.oy, ox), (rows.0, cols.0)))
                .expect("an ordinal converts to a float");
            best.copy_from_slice(&img[(rows.0 * s.in_w + cols.0) * c..][..c]);
            arg.fill(first);
            for (iy, ix) in after_first(rows, cols) {
                let k = <T as num_traits::NumCast>::from(ordinal(s, (self.oy, ox), (iy, ix)))
                    .expect("an ordinal converts to a float");
                for ((m, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(&img[(iy * s.in_w + ix) * c..][..c]) {
                    let greater = v > *m;
                    *m = if greater { v } else { *m };
                    *a = if greater { k } else { *a };
                }
            }
            // The maximum is NaN only where the first element is (nothing compares greater).
            let none = no_position::<T>();
            for (a, &m) in arg.iter_mut().zip(best.iter()) {
                *a = if m.is_nan() { none } else { *a };
            }
        }
    }
}

/// One input row of the backward pass's second step: each input element's gradient, the
/// output gradients of the windows that contain it (rows `oy`, then columns `ox`,
/// ascending: the order in which a scatter would add them) whose recorded ordinal is its
/// own, summed from zero.
pub(super) struct GatherRow<'a, T> {
    pub(super) arg: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) s: &'a Pool2dSpec,
    pub(super) iy: usize,
    /// The output rows whose windows contain input row `iy`.
    pub(super) out_rows: (usize, usize),
    /// Per input column, the output columns whose windows contain it.
    pub(super) out_cols: &'a [(usize, usize)],
    pub(super) dst: &'a mut [MaybeUninit<T>],
}

impl<T: FloatElement> IsaKernel for GatherRow<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (s, c, zero) = (self.s, self.s.channels, T::zero());
        let (oy0, oy1) = self.out_rows;
        for ((ix, px), &(ox0, ox1)) in self.dst.chunks_exact_mut(c).enumerate().zip(self.out_cols) {
            let mut windows = (oy0..oy1).flat_map(|oy| (ox0..ox1).map(move |ox| (oy, ox)));
            let lanes = |(oy, ox): (usize, usize)| {
                let o = (oy * s.out_w + ox) * c;
                let k = <T as num_traits::NumCast>::from(ordinal(s, (oy, ox), (self.iy, ix)))
                    .expect("an ordinal converts to a float");
                (k, self.arg[o..o + c].iter().zip(&self.dy[o..o + c]))
            };
            let Some(first) = windows.next() else {
                px.iter_mut().for_each(|d| {
                    d.write(zero);
                });
                continue;
            };
            // `0 + g`, not `g`: the bits of the zeroed buffer that a scatter adds into (-0
            // becomes +0).
            let (k, terms) = lanes(first);
            for (d, (&a, &g)) in px.iter_mut().zip(terms) {
                d.write(zero + if a == k { g } else { zero });
            }
            // SAFETY: every element of `px` was written just above.
            let px = unsafe { assume_init_mut(px) };
            for w in windows {
                let (k, terms) = lanes(w);
                for (d, (&a, &g)) in px.iter_mut().zip(terms) {
                    *d = *d + if a == k { g } else { zero };
                }
            }
        }
    }
}
