//! The input gradient, gathered, not scattered: each input row is one task, and each input
//! pixel sums the output pixels that read it (`dy * kernel`), so no two tasks write the same
//! element.

use super::backward_input_s2;
use super::lanes::{lanes, lanes_mut, madd, mul_add_block, mul_add_lanes, LANES};
use super::output::as_slots;
use super::{Depthwise, PIXELS};
use crate::utilities::alloc::try_vec;
use crate::FloatElement;
use crate::Result;
use std::mem::MaybeUninit;

/// The `(tap, output coordinate)` pairs that read one input coordinate.
type ReadBy = [(usize, usize)];

/// For each input coordinate along one axis, the `(tap, output coordinate)` pairs that
/// read it: `starts[i]..starts[i + 1]` index `pairs`.
pub(super) struct Readers {
    starts: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

impl Readers {
    pub(super) fn new(
        op: &'static str,
        input: usize,
        out: usize,
        (stride, pad, dilation, taps): (usize, usize, usize, usize),
    ) -> Result<Self> {
        let mut starts = try_vec(op, input + 1, 0)?;
        let mut pairs = try_vec(op, input.saturating_mul(taps), (0, 0))?;
        let mut len = 0;
        for (i, start) in starts.iter_mut().take(input).enumerate() {
            *start = len;
            for t in 0..taps {
                // Output o reads input o * stride - pad + t * dilation.
                let Some(at) = (i + pad).checked_sub(t * dilation) else { continue };
                if at % stride == 0 && at / stride < out {
                    pairs[len] = (t, at / stride);
                    len += 1;
                }
            }
        }
        starts[input] = len;
        pairs.truncate(len);
        Ok(Readers { starts, pairs })
    }

    fn of(&self, i: usize) -> &ReadBy {
        &self.pairs[self.starts[i]..self.starts[i + 1]]
    }
}

/// One input-gradient row `(image, iy)`: `dst` is `[in_w, c_in]`, zeros.
///
/// Gathered, as the forward pass: over the full channel blocks, input pixels
/// `ix, ix + stride, ...` (read by the same taps, from consecutive output pixels) go
/// [`PIXELS`] at a time; the channel tail and depth multipliers above 1 one pixel at a time.
/// A 3x3 kernel at stride 2 takes its full blocks through [`backward_input_s2`] instead.
#[inline(always)]
pub(super) fn backward_input_row<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    dy: &[T],
    (rows, cols): (&Readers, &Readers),
    row: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let c = s.in_channels;
    let (b, iy) = (row / s.in_h, row % s.in_h);
    let grad = &dy[b * d.out_image()..][..d.out_image()];
    let full = d.full_blocks();
    if backward_input_s2::applies(d) {
        // SAFETY: the stride-2 rows write values only.
        backward_input_s2::row::<T, FUSED>(d, grad, rows.of(iy), full, unsafe { as_slots(dst) });
        for at in (0..s.in_w).filter(|_| full < c) {
            backward_input_pixel::<T, FUSED>(d, grad, (rows.of(iy), cols.of(at)), full, &mut dst[at * c..][..c]);
        }
        return;
    }
    for first in 0..s.stride_w.min(s.in_w) {
        let count = (s.in_w - first).div_ceil(s.stride_w);
        for g in (0..count).step_by(PIXELS) {
            let (ix, n) = (first + g * s.stride_w, PIXELS.min(count - g));
            if full > 0 {
                backward_input_group::<T, FUSED>(d, grad, rows.of(iy), (ix, n), full, dst);
            }
            for p in (0..n).filter(|_| full < c) {
                let at = ix + p * s.stride_w;
                backward_input_pixel::<T, FUSED>(d, grad, (rows.of(iy), cols.of(at)), full, &mut dst[at * c..][..c]);
            }
        }
    }
}

/// One input-gradient row `(image, iy)` of a 3x3 kernel at stride 2 whose channels are all
/// in full blocks ([`backward_input_s2::applies`], `full_blocks() == c_in`): `dst` is `[in_w,
/// c_in]`, uninitialised, and every element is written (no zero pass first: zeroing the
/// whole input gradient was one more write of a buffer four times `dy`'s size).
#[inline(always)]
pub(super) fn backward_input_row_s2<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    dy: &[T],
    rows: &Readers,
    row: usize,
    dst: &mut [MaybeUninit<T>],
) {
    let s = d.s;
    debug_assert!(backward_input_s2::applies(d) && d.full_blocks() == s.in_channels);
    let (b, iy) = (row / s.in_h, row % s.in_h);
    let grad = &dy[b * d.out_image()..][..d.out_image()];
    backward_input_s2::row::<T, FUSED>(d, grad, rows.of(iy), s.in_channels, dst);
}

/// Input pixels `ix + p * stride` (`p < n <= PIXELS`), channels `0..full`. Tap `kx` of
/// pixel `p` is read by output column `(ix + pad - kx * dilation) / stride + p`, when that
/// divides and lies in the row.
#[inline(always)]
fn backward_input_group<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    grad: &[T],
    row_readers: &ReadBy,
    (ix, n): (usize, usize),
    full: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let co = s.out_channels;
    let (stride, out_w) = (s.stride_w as isize, s.out_w as isize);
    for start in (0..full).step_by(LANES) {
        let mut acc = [[T::zero(); LANES]; PIXELS];
        for &(ky, oy) in row_readers {
            let grad_row = &grad[oy * s.out_w * co..][..s.out_w * co];
            let kernel_row = &d.taps_kernel[ky * s.kernel_w * co + start..];
            for kx in 0..s.kernel_w {
                let at = (ix + s.pad_left) as isize - (kx * s.dilation_w) as isize;
                if at.rem_euclid(stride) != 0 {
                    continue;
                }
                let ox0 = at.div_euclid(stride);
                let inside = ox0 >= 0 && ox0 + PIXELS as isize <= out_w;
                let k = lanes(&kernel_row[kx * co..]);
                for (p, acc) in acc.iter_mut().enumerate() {
                    let ox = ox0 + p as isize;
                    if !inside && (p >= n || ox < 0 || ox >= out_w) {
                        continue;
                    }
                    mul_add_lanes::<T, FUSED>(acc, &grad_row[ox as usize * co + start..], k);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate().take(n) {
            *lanes_mut(&mut dst[(ix + p * s.stride_w) * s.in_channels + start..]) = *acc;
        }
    }
}

/// One input pixel, channels `from..c_in` (`from` is 0 or a block boundary); `dx` is zeros.
#[inline(always)]
fn backward_input_pixel<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    grad: &[T],
    (row_readers, col_readers): (&ReadBy, &ReadBy),
    from: usize,
    dx: &mut [T],
) {
    let s = d.s;
    let co = s.out_channels;
    for &(ky, oy) in row_readers {
        for &(kx, ox) in col_readers {
            let (g, k) = (&grad[(oy * s.out_w + ox) * co..][..co], &d.taps_kernel[(ky * s.kernel_w + kx) * co..][..co]);
            if d.m == 1 {
                mul_add_block::<T, FUSED>(&mut dx[from..], &g[from..], &k[from..]);
            } else {
                for ((v, gs), ks) in dx.iter_mut().zip(g.chunks_exact(d.m)).zip(k.chunks_exact(d.m)) {
                    for (&u, &w) in gs.iter().zip(ks) {
                        *v = madd::<T, FUSED>(*v, u, w);
                    }
                }
            }
        }
    }
}
