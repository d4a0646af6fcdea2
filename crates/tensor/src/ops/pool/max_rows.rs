//! The row loops of max pooling on the CPU (cpu.rs), as [`IsaKernel`]s: compiled for
//! AVX-512, AVX2 and any CPU and chosen at run time. They only compare, select and add, so
//! every version gives the same bits.
//!
//! A window's running maxima (and their positions) are kept per block of [`LANES`]
//! channels in local arrays, which the compiler holds in registers and updates with blends.
//! Updated in place in memory instead (`*m = if v > *m { v } else { *m }`), the select
//! became a masked store (`vmaskmovps`), which AMD's Zen cores run as slow microcode: max
//! pooling's forward and backward took twice as long as with plain stores.
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

/// Channels per register block: 16 f32 are one AVX-512 register or two AVX ones.
const LANES: usize = 16;

/// The `W` values at `img[at..]`.
#[inline(always)]
fn block<T, const W: usize>(img: &[T], at: usize) -> &[T; W] {
    img[at..].first_chunk().expect("a window element holds every channel")
}

/// The elementwise maximum of the `W` channels from `c0` over a window's elements (`first`,
/// then `rest`: offsets of pixels in `img`), comparing strictly greater, so the first
/// maximum wins ties and a NaN only when it comes first.
#[inline(always)]
fn block_max<T: FloatElement, const W: usize>(
    img: &[T],
    c0: usize,
    first: usize,
    rest: impl Iterator<Item = usize>,
) -> [T; W] {
    let mut best = *block::<T, W>(img, first + c0);
    for at in rest {
        let v = block::<T, W>(img, at + c0);
        for (m, &v) in best.iter_mut().zip(v) {
            *m = if v > *m { v } else { *m };
        }
    }
    best
}

/// The channel blocks `(c0, width)` of a pixel: full [`LANES`] blocks, then single channels.
fn channel_blocks(c: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = c - c % LANES;
    (0..full).step_by(LANES).map(|c0| (c0, LANES)).chain((full..c).map(|c0| (c0, 1)))
}

/// One output row of the forward pass: each window's maximum ([`block_max`]).
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
            let first = (rows.0 * s.in_w + cols.0) * c;
            let rest = || after_first(rows, cols).map(|(iy, ix)| (iy * s.in_w + ix) * c);
            for (c0, width) in channel_blocks(c) {
                let dst = &mut px[c0..c0 + width];
                if width == LANES {
                    write(dst, &block_max::<T, LANES>(img, c0, first, rest()));
                } else {
                    write(dst, &block_max::<T, 1>(img, c0, first, rest()));
                }
            }
        }
    }
}

/// `dst = src`.
#[inline(always)]
fn write<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
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

/// [`block_max`] with each maximum's window ordinal (`first` and `rest` carry theirs), or
/// [`no_position`] where the maximum is NaN.
#[inline(always)]
fn block_argmax<T: FloatElement, const W: usize>(
    img: &[T],
    c0: usize,
    (first, first_ordinal): (usize, T),
    rest: impl Iterator<Item = (usize, T)>,
) -> [T; W] {
    let mut best = *block::<T, W>(img, first + c0);
    let mut arg = [first_ordinal; W];
    for (at, k) in rest {
        let v = block::<T, W>(img, at + c0);
        for ((m, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(v) {
            let greater = v > *m;
            *m = if greater { v } else { *m };
            *a = if greater { k } else { *a };
        }
    }
    // The maximum is NaN only where the first element is (nothing compares greater).
    for (a, m) in arg.iter_mut().zip(best) {
        *a = if m.is_nan() { no_position() } else { *a };
    }
    arg
}

/// One output row of the backward pass's first step: for each output element, the
/// ordinal (as a `T`, exact: the caller checks the window size) of its window's first
/// maximum in the forward pass's order ([`block_argmax`]).
pub(super) struct ArgmaxRow<'a, T> {
    pub(super) img: &'a [T],
    pub(super) s: &'a Pool2dSpec,
    pub(super) oy: usize,
    pub(super) arg: &'a mut [T],
}

impl<T: FloatElement> IsaKernel for ArgmaxRow<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (s, c, img, oy) = (self.s, self.s.channels, self.img, self.oy);
        let rows = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
        let as_float = |k: usize| <T as num_traits::NumCast>::from(k).expect("an ordinal converts to a float");
        for (ox, arg) in self.arg.chunks_exact_mut(c).enumerate() {
            let cols = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
            let at = |(iy, ix): (usize, usize)| ((iy * s.in_w + ix) * c, as_float(ordinal(s, (oy, ox), (iy, ix))));
            let first = at((rows.0, cols.0));
            let rest = || after_first(rows, cols).map(at);
            for (c0, width) in channel_blocks(c) {
                let dst = &mut arg[c0..c0 + width];
                if width == LANES {
                    dst.copy_from_slice(&block_argmax::<T, LANES>(img, c0, first, rest()));
                } else {
                    dst.copy_from_slice(&block_argmax::<T, 1>(img, c0, first, rest()));
                }
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
