//! The kernel gradient of one output row, summed into a `[kh * kw, c_out]` accumulator.

use super::columns::{interior_columns, reading_columns};
use super::lanes::{block, block_at, lanes, lanes_mut, mul_add, mul_add_block, mul_add_lanes, mul_add_spread, LANES};
use super::{Depthwise, PIXELS};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::taps;
use crate::FloatElement;

/// Adds one output row's `(image, oy)` share of the kernel gradient into `acc`
/// (`[kh * kw, c_out]`): 3x3 kernels over full channel blocks by [`row_3x3`], everything
/// else by [`row_any`].
#[inline(always)]
pub(super) fn backward_filter_row<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    x: &[T],
    dy: &[T],
    row: usize,
    acc: &mut [T],
) {
    let s = d.s;
    let done = if s.kernel_h == K && s.kernel_w == K && d.full_blocks() > 0 {
        row_3x3::<T, FUSED>(d, x, dy, row, acc);
        d.full_blocks()
    } else {
        0
    };
    row_any::<T, FUSED>(d, x, dy, row, done, acc);
}

/// The kernel size [`row_3x3`] is for.
const K: usize = 3;

/// Channels per block of [`row_3x3`]. Blocks of one AVX register (8 f32) measured slower
/// at 8x8 maps (twice the blocks, each with its set-up per row).
const BLOCK: usize = LANES;

/// A 3x3 kernel's gradient over the full channel blocks: per block and kernel row, the
/// three taps' sums stay in registers for the whole row, and each output pixel's gradient
/// feeds all three. All nine sums of a block at once (18 AVX2 registers) did not fit, and
/// spilled to the stack around every multiply-add. Each tap sums its columns in ascending
/// order, so the order depends on the shape only.
#[inline(always)]
fn row_3x3<T: FloatElement, const FUSED: bool>(d: &Depthwise<'_, T>, x: &[T], dy: &[T], row: usize, acc: &mut [T]) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (b, oy) = (row / s.out_h, row % s.out_h);
    let img = &x[b * d.in_image()..][..d.in_image()];
    let grad = &dy[row * s.out_w * co..][..s.out_w * co];
    let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    let (lo, hi) = interior_columns(s);
    // Input column of output column `ox`'s tap `kx`, plus pad_left.
    let at = |ox: usize, kx: usize| ox * s.stride_w + kx * s.dilation_w;
    for start in (0..d.full_blocks()).step_by(BLOCK) {
        for ky in ky0..ky1 {
            let input_row = &img[(iy0 + (ky - ky0) * s.dilation_h) * s.in_w * c..][..s.in_w * c];
            let taps = &mut acc[ky * K * co + start..];
            let mut sums = [[T::zero(); BLOCK]; K];
            for (kx, sum) in sums.iter_mut().enumerate() {
                *sum = *block(&taps[kx * co..]);
            }
            for ox in 0..lo {
                border_3x3::<T, FUSED>(s, (input_row, grad), ox, start, &mut sums);
            }
            if lo < hi {
                // Every tap of the interior reads a real column; the last one ends inside
                // the row, and so does the last gradient read: checked once here.
                assert!(
                    (at(hi - 1, K - 1) - s.pad_left) * c + start + BLOCK <= input_row.len()
                        && (hi - 1) * co + start + BLOCK <= grad.len(),
                    "interior outside the row"
                );
                for ox in lo..hi {
                    // SAFETY: `ox < hi`, `kx < K`, and the last column's reads end inside
                    // the rows (asserted above); every index grows with `ox` and `kx`.
                    let g = unsafe { block_at::<T, BLOCK>(grad, ox * co + start) };
                    for (kx, sum) in sums.iter_mut().enumerate() {
                        // SAFETY: as above.
                        let x = unsafe { block_at::<T, BLOCK>(input_row, (at(ox, kx) - s.pad_left) * c + start) };
                        mul_add::<T, FUSED, BLOCK>(sum, x, g);
                    }
                }
            }
            for ox in hi.max(lo)..s.out_w {
                border_3x3::<T, FUSED>(s, (input_row, grad), ox, start, &mut sums);
            }
            for (kx, sum) in sums.iter().enumerate() {
                taps[kx * co..][..BLOCK].copy_from_slice(sum);
            }
        }
    }
}

/// Output column `ox` of [`row_3x3`] outside the interior: its taps that read padding are
/// skipped. A function, not a closure: a closure is compiled without the caller's target
/// features, and its multiply-adds became library calls.
#[inline(always)]
fn border_3x3<T: FloatElement, const FUSED: bool>(
    s: &Conv2dSpec,
    (input_row, grad): (&[T], &[T]),
    ox: usize,
    start: usize,
    sums: &mut [[T; BLOCK]; K],
) {
    let g = block::<T, BLOCK>(&grad[ox * s.out_channels + start..]);
    for (kx, sum) in sums.iter_mut().enumerate() {
        let at = ox * s.stride_w + kx * s.dilation_w;
        if at >= s.pad_left && at - s.pad_left < s.in_w {
            mul_add::<T, FUSED, BLOCK>(sum, &input_row[(at - s.pad_left) * s.in_channels + start..], g);
        }
    }
}

/// Any kernel, channel blocks from `done` (0, or where [`row_3x3`] stopped) on.
///
/// Over full channel blocks, each tap's sum over the row runs in [`PIXELS`] interleaved
/// partial sums (output columns `lo + p` modulo `PIXELS`), added in a fixed
/// order at the end: independent chains, and an order that depends on the shape only.
#[inline(always)]
fn row_any<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    x: &[T],
    dy: &[T],
    row: usize,
    done: usize,
    acc: &mut [T],
) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (b, oy) = (row / s.out_h, row % s.out_h);
    let img = &x[b * d.in_image()..][..d.in_image()];
    let grad = &dy[row * s.out_w * co..][..s.out_w * co];
    let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    let full = d.full_blocks();
    for ky in ky0..ky1 {
        let iy = iy0 + (ky - ky0) * s.dilation_h;
        let input_row = &img[iy * s.in_w * c..][..s.in_w * c];
        for kx in 0..s.kernel_w {
            let (lo, hi) = reading_columns(s, kx);
            let tap = &mut acc[(ky * s.kernel_w + kx) * co..][..co];
            let column = |ox: usize| ox * s.stride_w + kx * s.dilation_w - s.pad_left;
            for start in (done..full).step_by(LANES) {
                let mut partial = [[T::zero(); LANES]; PIXELS];
                let (g, xs) = (|ox: usize| &grad[ox * co + start..], |ox: usize| &input_row[column(ox) * c + start..]);
                // Whole groups first, with a fixed partial per position, so the partials
                // stay in registers; then the last few columns.
                let mut ox = lo;
                while ox + PIXELS <= hi {
                    for (p, partial) in partial.iter_mut().enumerate() {
                        mul_add_lanes::<T, FUSED>(partial, g(ox + p), lanes(xs(ox + p)));
                    }
                    ox += PIXELS;
                }
                for (partial, ox) in partial.iter_mut().zip(ox..hi) {
                    mul_add_lanes::<T, FUSED>(partial, g(ox), lanes(xs(ox)));
                }
                let sum = lanes_mut(&mut tap[start..]);
                for (i, t) in sum.iter_mut().enumerate() {
                    *t = *t + ((partial[0][i] + partial[1][i]) + (partial[2][i] + partial[3][i]));
                }
            }
            let rest = &mut tap[full..];
            for ox in (lo..hi).filter(|_| full < co) {
                if d.m == 1 {
                    mul_add_block::<T, FUSED>(
                        rest,
                        &grad[ox * co + full..][..co - full],
                        &input_row[column(ox) * c + full..][..c - full],
                    );
                } else {
                    mul_add_spread::<T, FUSED>(rest, &input_row[column(ox) * c..][..c], &grad[ox * co..][..co], d.m);
                }
            }
        }
    }
}
