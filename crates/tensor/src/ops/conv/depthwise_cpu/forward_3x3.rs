//! The forward pass of a 3x3 kernel at stride 1 and dilation 1 (multiplier 1, full channel
//! blocks): MobileNet's stride-1 layers, and the input gradient of every stride-1 3x3 layer
//! (the forward pass over `dy` with the kernel flipped).
//!
//! Per channel block, the kernel rows that the output row reads stay in registers for the
//! whole row (up to nine vectors), and the interior pixels go [`GROUP`] at a time: per
//! kernel row, `GROUP + 2` input vectors feed `3 * GROUP` multiply-adds, with no column test.
//! The border pixels (the taps that would read padding are skipped, not multiplied by zero,
//! so an infinite input or weight gives what the naive sum gives) and the last few interior
//! pixels go one at a time.

use super::columns::interior_columns;
use super::forward::RowTaps;
use super::lanes::{lanes, lanes_mut, mul_add_lanes, LANES};
use super::Depthwise;
use crate::FloatElement;

/// Output pixels computed together in the interior.
const GROUP: usize = 4;

/// Whether [`row`] computes this op's full channel blocks.
pub(super) fn applies<T>(d: &Depthwise<'_, T>) -> bool {
    let s = d.s;
    d.full_blocks() > 0
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && (s.stride_h, s.stride_w) == (1, 1)
        && (s.dilation_h, s.dilation_w) == (1, 1)
}

/// Channels `0..full` of one output row (`dst` is `[out_w, c_out]`) whose kernel rows
/// `ky0..ky1` read input rows `iy0..`.
#[inline(always)]
pub(super) fn row<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    (ky0, ky1, iy0): RowTaps,
    full: usize,
    dst: &mut [T],
) {
    // The kernel rows as a constant count, so that their registers are a fixed array.
    match ky1 - ky0 {
        3 => rows::<T, FUSED, 3>(d, img, bias, (ky0, iy0), full, dst),
        2 => rows::<T, FUSED, 2>(d, img, bias, (ky0, iy0), full, dst),
        1 => rows::<T, FUSED, 1>(d, img, bias, (ky0, iy0), full, dst),
        _ => rows::<T, FUSED, 0>(d, img, bias, (ky0, iy0), full, dst),
    }
}

/// [`row`] with `R` kernel rows `ky0..ky0 + R`.
#[inline(always)]
fn rows<T: FloatElement, const FUSED: bool, const R: usize>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    (ky0, iy0): (usize, usize),
    full: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let (c, co, pad) = (s.in_channels, s.out_channels, s.pad_left);
    let input_rows: [&[T]; R] = std::array::from_fn(|r| &img[(iy0 + r) * s.in_w * c..][..s.in_w * c]);
    let (lo, hi) = interior_columns(s);
    for start in (0..full).step_by(LANES) {
        let k: [[[T; LANES]; 3]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|kx| *lanes(&d.taps_kernel[((ky0 + r) * 3 + kx) * co + start..]))
        });
        let b = *lanes(&bias[start..]);
        for ox in (0..lo).chain(hi..s.out_w) {
            *lanes_mut(&mut dst[ox * co + start..]) =
                pixel::<T, FUSED, R>(&k, b, (&input_rows, start, c), ox, (pad, s.in_w));
        }
        let mut ox = lo;
        while ox + GROUP <= hi {
            // Every tap of these pixels reads a real column: ox >= pad.
            let first = ox - pad;
            let mut acc = [b; GROUP];
            for (k, input_row) in k.iter().zip(&input_rows) {
                let window = &input_row[first * c..][..(GROUP + 2) * c];
                for (p, acc) in acc.iter_mut().enumerate() {
                    for (kx, k) in k.iter().enumerate() {
                        mul_add_lanes::<T, FUSED>(acc, &window[(p + kx) * c + start..], k);
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                *lanes_mut(&mut dst[(ox + p) * co + start..]) = *acc;
            }
            ox += GROUP;
        }
        for ox in ox..hi {
            *lanes_mut(&mut dst[ox * co + start..]) =
                pixel::<T, FUSED, R>(&k, b, (&input_rows, start, c), ox, (pad, s.in_w));
        }
    }
}

/// One output pixel `ox`, any column, of the block at `start` (`c` input channels): taps
/// that would read padding (`pad` columns left of `0..in_w`) are skipped. A function, not
/// a closure: a closure is compiled without the caller's target features, and its
/// multiply-adds became library calls.
#[inline(always)]
fn pixel<T: FloatElement, const FUSED: bool, const R: usize>(
    k: &[[[T; LANES]; 3]; R],
    bias: [T; LANES],
    (input_rows, start, c): (&[&[T]; R], usize, usize),
    ox: usize,
    (pad, in_w): (usize, usize),
) -> [T; LANES] {
    let mut acc = bias;
    for (k, input_row) in k.iter().zip(input_rows) {
        for (kx, k) in k.iter().enumerate() {
            // Input column plus pad.
            let at = ox + kx;
            if at < pad || at - pad >= in_w {
                continue;
            }
            mul_add_lanes::<T, FUSED>(&mut acc, &input_row[(at - pad) * c + start..], k);
        }
    }
    acc
}
