//! The forward pass: each task is a band of output rows of one image; each output pixel
//! sums its taps.

use super::columns::interior_columns;
use super::forward_3x3;
use super::lanes::{block_at, lanes, lanes_mut, mul_add_block, mul_add_lanes, mul_add_spread, LANES};
use super::output::{as_slots, zeroed};
use super::{Depthwise, PIXELS};
use crate::ops::conv::cpu::taps;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// The rows `ky0..ky1` of the kernel that output row `oy` reads, and the first input row.
pub(super) type RowTaps = (usize, usize, usize);

/// Output rows `first..` of one image plus `bias` (`[c_out]`, zeros where the op has
/// none): `dst` is `[rows, out_w, c_out]`, uninitialised, and every element is written. A
/// 3x3 kernel at stride 1 or 2 goes to [`forward_3x3`] (its channel tail here), anything else
/// row by row (on zeros: those paths add into their output).
#[inline(always)]
pub(super) fn forward_rows<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    x: &[T],
    bias: &[T],
    first: usize,
    dst: &mut [MaybeUninit<T>],
) {
    let s = d.s;
    let co = s.out_channels;
    let row_len = s.out_w * co;
    let (b, oy0) = (first / s.out_h, first % s.out_h);
    let n = dst.len() / row_len;
    debug_assert!(oy0 + n <= s.out_h, "a band stays inside one image");
    if forward_3x3::applies(d) {
        let img = &x[b * d.in_image()..][..d.in_image()];
        let full = d.full_blocks();
        if full == co {
            // Every element is a full block's: written once, never zeroed.
            forward_3x3::rows::<T, FUSED>(d, img, bias, oy0..oy0 + n, full, dst);
            return;
        }
        let dst = zeroed(dst);
        // SAFETY: the 3x3 rows write values only.
        forward_3x3::rows::<T, FUSED>(d, img, bias, oy0..oy0 + n, full, unsafe { as_slots(dst) });
        for (oy, dst) in (oy0..oy0 + n).zip(dst.chunks_exact_mut(row_len)) {
            let rows = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
            for p in 0..s.out_w {
                forward_pixel::<T, FUSED>(d, img, bias, rows, p, full, &mut dst[p * co..][..co]);
            }
        }
        return;
    }
    for (i, dst) in zeroed(dst).chunks_exact_mut(row_len).enumerate() {
        forward_row::<T, FUSED>(d, x, bias, first + i, dst);
    }
}

/// One output row `(image, oy)` plus `bias` (`[c_out]`, zeros where the op has none): `dst`
/// is `[out_w, c_out]`, written once, never read (reading the output before writing it
/// stalled every pixel).
///
/// The full channel blocks go [`PIXELS`] pixels at a time; the channel tail and depth
/// multipliers above 1 one pixel at a time.
#[inline(always)]
fn forward_row<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    x: &[T],
    bias: &[T],
    row: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let co = s.out_channels;
    let (b, oy) = (row / s.out_h, row % s.out_h);
    let img = &x[b * d.in_image()..][..d.in_image()];
    let rows = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    let full = d.full_blocks();
    let (lo, hi) = interior_columns(s);
    let wide = full > 0 && s.kernel_w == 3;
    let mut ox = 0;
    while ox < s.out_w {
        if wide && ox >= lo && ox + WIDE <= hi {
            forward_interior_3::<T, FUSED>(d, img, bias, rows, ox, full, &mut dst[ox * co..][..WIDE * co]);
            if full < co {
                for p in ox..ox + WIDE {
                    forward_pixel::<T, FUSED>(d, img, bias, rows, p, full, &mut dst[p * co..][..co]);
                }
            }
            ox += WIDE;
            continue;
        }
        let n = PIXELS.min(s.out_w - ox);
        if full > 0 {
            forward_group::<T, FUSED>(d, img, bias, rows, (ox, n), full, &mut dst[ox * co..][..n * co]);
        }
        if full < co {
            for p in ox..ox + n {
                forward_pixel::<T, FUSED>(d, img, bias, rows, p, full, &mut dst[p * co..][..co]);
            }
        }
        ox += n;
    }
}

/// Output pixels of the interior fast path, computed together: 4 pixels of 16 channels
/// are 8 AVX2 accumulators, beside the row's 6 kernel registers. 8 pixels (16
/// accumulators) did not fit AVX2's 16 registers and spilled around every multiply-add.
const WIDE: usize = 4;

/// [`WIDE`] interior output pixels `ox..` (every tap reads a real column) of a kernel 3
/// wide, channels `0..full`: the block's three taps of a kernel row stay in registers, the
/// loops are unrolled, and no column is tested.
#[inline(always)]
fn forward_interior_3<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    (ky0, ky1, iy0): RowTaps,
    ox: usize,
    full: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (sw, dw) = (s.stride_w * c, s.dilation_w * c);
    // The interior's first tap reads a real column: ox * stride >= pad_left.
    let first = (ox * s.stride_w - s.pad_left) * c;
    // The last tap of the last pixel ends inside the row.
    let span = (WIDE - 1) * sw + 2 * dw + full;
    for start in (0..full).step_by(LANES) {
        let mut acc = [*lanes(&bias[start..]); WIDE];
        for ky in ky0..ky1 {
            let iy = iy0 + (ky - ky0) * s.dilation_h;
            let window = &img[(iy * s.in_w * c + first)..][..span];
            let kernel_row = &d.taps_kernel[ky * 3 * co + start..];
            let k = [*lanes(kernel_row), *lanes(&kernel_row[co..]), *lanes(&kernel_row[2 * co..])];
            for (p, acc) in acc.iter_mut().enumerate() {
                for (kx, k) in k.iter().enumerate() {
                    // SAFETY: p < WIDE, kx < 3 and start + LANES <= full, so the block ends
                    // by (WIDE - 1) * sw + 2 * dw + full = span = window.len().
                    let x = unsafe { block_at::<T, LANES>(window, p * sw + kx * dw + start) };
                    mul_add_lanes::<T, FUSED>(acc, x, k);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            *lanes_mut(&mut dst[p * co + start..]) = *acc;
        }
    }
}

/// Output pixels `ox..ox + n` (`n <= PIXELS`), channels `0..full`: each kernel block is
/// loaded once for all of them, and their accumulators are independent chains. Taps that
/// read padding are skipped; in the interior, where none do, the test is skipped too.
#[inline(always)]
fn forward_group<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    (ky0, ky1, iy0): RowTaps,
    (ox, n): (usize, usize),
    full: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (lo, hi) = interior_columns(s);
    let inside = n == PIXELS && ox >= lo && ox + PIXELS <= hi;
    for start in (0..full).step_by(LANES) {
        let mut acc = [*lanes(&bias[start..]); PIXELS];
        for ky in ky0..ky1 {
            let iy = iy0 + (ky - ky0) * s.dilation_h;
            let input_row = &img[iy * s.in_w * c..][..s.in_w * c];
            let kernel_row = &d.taps_kernel[ky * s.kernel_w * co + start..];
            for kx in 0..s.kernel_w {
                let k = lanes(&kernel_row[kx * co..]);
                for (p, acc) in acc.iter_mut().enumerate() {
                    // The input column plus pad_left.
                    let at = (ox + p) * s.stride_w + kx * s.dilation_w;
                    if !inside && (p >= n || at < s.pad_left || at - s.pad_left >= s.in_w) {
                        continue;
                    }
                    mul_add_lanes::<T, FUSED>(acc, &input_row[(at - s.pad_left) * c + start..], k);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate().take(n) {
            *lanes_mut(&mut dst[p * co + start..]) = *acc;
        }
    }
}

/// Output pixel `ox`, channels `from..c_out` (`from` is 0 or a block boundary).
#[inline(always)]
fn forward_pixel<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    (ky0, ky1, iy0): RowTaps,
    ox: usize,
    from: usize,
    y: &mut [T],
) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
    let input = |ky: usize, kx: usize| {
        let (iy, ix) = (iy0 + (ky - ky0) * s.dilation_h, ix0 + (kx - kx0) * s.dilation_w);
        &img[(iy * s.in_w + ix) * c..][..c]
    };
    let kernel = |ky: usize, kx: usize| &d.taps_kernel[(ky * s.kernel_w + kx) * co..][..co];
    let y = &mut y[from..];
    y.copy_from_slice(&bias[from..]);
    for ky in ky0..ky1 {
        for kx in kx0..kx1 {
            if d.m == 1 {
                mul_add_block::<T, FUSED>(y, &input(ky, kx)[from..], &kernel(ky, kx)[from..]);
            } else {
                mul_add_spread::<T, FUSED>(y, input(ky, kx), kernel(ky, kx), d.m);
            }
        }
    }
}
