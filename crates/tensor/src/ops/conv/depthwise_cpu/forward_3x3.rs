//! The forward pass of a 3x3 kernel at stride 1 and dilation 1 (multiplier 1, full channel
//! blocks): MobileNet's stride-1 layers, and the input gradient of every stride-1 3x3 layer
//! (the forward pass over `dy` with the kernel flipped).
//!
//! Channels go in blocks of [`BLOCK`] (one AVX register of f32), as oneDNN's depthwise
//! kernels do on AVX2. Per output row and block, the interior pixels go [`WIDE`] at a time
//! (then 4, 2, 1): per kernel row, `WIDE + 2` input vectors feed `3 * WIDE` multiply-adds,
//! with no column test, and the `WIDE` accumulators are independent chains, enough to cover
//! the multiply-add latency. (Blocks of 16 channels and 4 pixels took 8 accumulator and up
//! to 18 weight registers, more than AVX2's 16, and ran 1.5x slower than the multiply-adds
//! allow.) Which kernel rows and columns a row or a border pixel reads is a constant of the
//! function that computes it (the common cases are matched to instances), not a test per
//! tap; taps that would read padding are skipped, not multiplied by zero, so an infinite
//! input or weight gives what the naive sum gives. Every pixel sums its taps in the same
//! order (kernel row, then column), whichever path computes it.

use super::columns::interior_columns;
use super::lanes::{block, mul_add, store, LANES};
use super::Depthwise;
use crate::ops::conv::cpu::taps;
use crate::FloatElement;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Channels per block.
const BLOCK: usize = 8;

/// Output pixels computed together in the interior (then fewer at the row's end).
const WIDE: usize = 8;

/// Whether [`rows`] computes this op's full channel blocks.
pub(super) fn applies<T>(d: &Depthwise<'_, T>) -> bool {
    let s = d.s;
    d.full_blocks() > 0
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && (s.stride_h, s.stride_w) == (1, 1)
        && (s.dilation_h, s.dilation_w) == (1, 1)
}

/// Channels `0..full` of output rows `oys` of one image (`img`; `dst` is
/// `[oys.len(), out_w, c_out]`, whose channels `0..full` are all written).
#[inline(always)]
pub(super) fn rows<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    oys: Range<usize>,
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    rows_w::<T, FUSED, BLOCK>(d, img, bias, oys, full, dst)
}

/// [`rows`] with blocks of `W` channels (a divisor of [`LANES`]).
#[inline(always)]
fn rows_w<T: FloatElement, const FUSED: bool, const W: usize>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    oys: Range<usize>,
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    debug_assert!(full.is_multiple_of(LANES) && LANES.is_multiple_of(W));
    let s = d.s;
    let row_len = s.out_w * s.out_channels;
    for (oy, dst) in oys.zip(dst.chunks_exact_mut(row_len)) {
        let (ky0, ky1, iy0) = taps(oy, 1, s.pad_top, 1, 3, s.in_h);
        let r = Row { d, img, bias, iy0, full };
        // Kernel rows `KY0..KY0 + R` as constants: the middle rows, the top and bottom
        // rows of 'same' padding. Anything else reads its kernel from memory.
        match (ky0, ky1 - ky0) {
            (0, 3) => r.rows::<FUSED, W, 0, 3>(dst),
            (1, 2) => r.rows::<FUSED, W, 1, 2>(dst),
            (0, 2) => r.rows::<FUSED, W, 0, 2>(dst),
            _ => r.any::<FUSED, W>((ky0, ky1), dst),
        }
    }
}

/// One output row: its image, bias, first input row and full channels.
struct Row<'a, T> {
    d: &'a Depthwise<'a, T>,
    img: &'a [T],
    bias: &'a [T],
    iy0: usize,
    full: usize,
}

impl<T: FloatElement> Row<'_, T> {
    /// The row with kernel rows `KY0..KY0 + R`, whose taps are fixed per block.
    #[inline(always)]
    fn rows<const FUSED: bool, const W: usize, const KY0: usize, const R: usize>(&self, dst: &mut [MaybeUninit<T>]) {
        let s = self.d.s;
        let (c, co, pad, in_w) = (s.in_channels, s.out_channels, s.pad_left, s.in_w);
        let input: [&[T]; R] = std::array::from_fn(|r| &self.img[(self.iy0 + r) * in_w * c..][..in_w * c]);
        let (lo, hi) = interior_columns(s);
        for start in (0..self.full).step_by(W) {
            // References, not copies: building an array of copies per row and block
            // compiled to a `memcpy` onto the stack, 12% of the samples at 4x4 maps; the
            // multiply-adds read the weights from L1 (or registers) either way.
            let k: [[&[T; W]; 3]; R] = std::array::from_fn(|r| {
                std::array::from_fn(|kx| block(&self.d.taps_kernel[((KY0 + r) * 3 + kx) * co + start..]))
            });
            let b = *block::<T, W>(&self.bias[start..]);
            let at = |ix: usize| ix * c + start;
            for ox in (0..lo).chain(hi..s.out_w) {
                let (kx0, kx1, ix0) = taps(ox, 1, pad, 1, 3, in_w);
                let y = match (kx0, kx1) {
                    (1, 3) => pixel::<T, FUSED, W, R, 1, 3>(&k, b, &input, at(ix0), c),
                    (0, 2) => pixel::<T, FUSED, W, R, 0, 2>(&k, b, &input, at(ix0), c),
                    _ => self.pixel_any::<FUSED, W>((KY0, KY0 + R), (kx0, kx1, ix0), start),
                };
                store(&mut dst[ox * co + start..], y);
            }
            // Every tap of the interior pixels reads a real column: ox >= pad.
            let mut ox = lo;
            while ox + WIDE <= hi {
                group8::<T, FUSED, W, R>(&k, b, &input, (at(ox - pad), c), (&mut dst[ox * co + start..], co));
                ox += WIDE;
            }
            if ox + 4 <= hi {
                group4::<T, FUSED, W, R>(&k, b, &input, (at(ox - pad), c), (&mut dst[ox * co + start..], co));
                ox += 4;
            }
            if ox + 2 <= hi {
                group2::<T, FUSED, W, R>(&k, b, &input, (at(ox - pad), c), (&mut dst[ox * co + start..], co));
                ox += 2;
            }
            if ox < hi {
                store(&mut dst[ox * co + start..], pixel::<T, FUSED, W, R, 0, 3>(&k, b, &input, at(ox - pad), c));
            }
        }
    }

    /// The row with kernel rows `ky0..ky1` known at run time only (an input fewer than
    /// three rows high, or padding above 1): the kernel is read from memory, so that
    /// indexing it at run time does not move [`Row::rows`]' registers to the stack.
    #[inline(always)]
    fn any<const FUSED: bool, const W: usize>(&self, (ky0, ky1): (usize, usize), dst: &mut [MaybeUninit<T>]) {
        let s = self.d.s;
        for start in (0..self.full).step_by(W) {
            for ox in 0..s.out_w {
                let cols = taps(ox, 1, s.pad_left, 1, 3, s.in_w);
                store(&mut dst[ox * s.out_channels + start..], self.pixel_any::<FUSED, W>((ky0, ky1), cols, start));
            }
        }
    }

    /// One pixel reading kernel rows `ky0..ky1` and columns `kx0..kx1` (input column `ix0`
    /// first), its kernel read from memory.
    #[inline(always)]
    fn pixel_any<const FUSED: bool, const W: usize>(
        &self,
        (ky0, ky1): (usize, usize),
        (kx0, kx1, ix0): (usize, usize, usize),
        start: usize,
    ) -> [T; W] {
        let s = self.d.s;
        let (c, co) = (s.in_channels, s.out_channels);
        let mut acc = *block::<T, W>(&self.bias[start..]);
        for ky in ky0..ky1 {
            let iy = self.iy0 + ky - ky0;
            for kx in kx0..kx1 {
                let x = &self.img[(iy * s.in_w + ix0 + kx - kx0) * c + start..];
                mul_add::<T, FUSED, W>(&mut acc, x, block(&self.d.taps_kernel[(ky * 3 + kx) * co + start..]));
            }
        }
        acc
    }
}

/// One output pixel of the block whose first tap (column `KX0`) reads `input[r][at..]`,
/// over kernel columns `KX0..KX1` (`c` input channels). A function, not a closure: a
/// closure is compiled without the caller's target features, and its multiply-adds
/// became library calls.
#[inline(always)]
fn pixel<T: FloatElement, const FUSED: bool, const W: usize, const R: usize, const KX0: usize, const KX1: usize>(
    k: &[[&[T; W]; 3]; R],
    bias: [T; W],
    input: &[&[T]; R],
    at: usize,
    c: usize,
) -> [T; W] {
    let mut acc = bias;
    for (k, input) in k.iter().zip(input) {
        for kx in KX0..KX1 {
            mul_add::<T, FUSED, W>(&mut acc, &input[at + (kx - KX0) * c..], k[kx]);
        }
    }
    acc
}

/// Defines `$name`: `$g` neighbouring interior pixels of the block (pixels `$p`), the first
/// one's first tap reading `input[r][at..]`, written to `dst[p * co..]`. Their `$g`
/// accumulators are independent chains, and each pixel is written out by the macro with a
/// constant index: a loop over them (a const-generic count) was not unrolled, and kept
/// every accumulator on the stack, a load and a store around each multiply-add.
macro_rules! group {
    ($name:ident, $g:literal, [$($p:literal),*]) => {
        #[inline(always)]
        fn $name<T: FloatElement, const FUSED: bool, const W: usize, const R: usize>(
            k: &[[&[T; W]; 3]; R],
            bias: [T; W],
            input: &[&[T]; R],
            (at, c): (usize, usize),
            (dst, co): (&mut [MaybeUninit<T>], usize),
        ) {
            let mut acc = [bias; $g];
            for (k, input) in k.iter().zip(input) {
                for (kx, k) in k.iter().enumerate() {
                    $(mul_add::<T, FUSED, W>(&mut acc[$p], &input[at + ($p + kx) * c..], k);)*
                }
            }
            $(store(&mut dst[$p * co..], acc[$p]);)*
        }
    };
}
group!(group8, 8, [0, 1, 2, 3, 4, 5, 6, 7]);
group!(group4, 4, [0, 1, 2, 3]);
group!(group2, 2, [0, 1]);
