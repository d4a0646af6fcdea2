//! The input gradient of a 3x3 kernel at stride 2 and dilation 1 (multiplier 1, full
//! channel blocks): MobileNet's stride-2 layers.
//!
//! Output pixel `o` reads input `2 * o - pad + k`, so input column `ix` (with `q = ix +
//! pad_left`) is read by kernel columns of `q`'s parity only: an even `q` by columns 0 and
//! 2 (output columns `q / 2` and `q / 2 - 1`), an odd one by column 1 (output column
//! `(q - 1) / 2`); rows alike. So each pair of input columns `(2j - pad, 2j + 1 - pad)`
//! reads output columns `j - 1` and `j` of the one or two output rows that read its input
//! row, through a fixed stencil: per such row, three multiply-adds for the pair, no test
//! per tap. The interior pairs go two at a time (four input pixels, eight AVX2
//! accumulators, beside three output vectors per row); the border columns (where a tap
//! would read past the output row) go one pixel at a time, skipping those taps.
//!
//! Every pixel sums its taps in the order of the general gather ([`super::backward_input`]):
//! output rows by ascending kernel row, then ascending kernel column, from zero; so the
//! sums are the same, bit for bit, whichever path computes them.

use super::lanes::{block, block_at, mul_add, store, LANES};
use super::Depthwise;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// Whether [`row`] computes this op's full channel blocks.
pub(super) fn applies<T>(d: &Depthwise<'_, T>) -> bool {
    let s = d.s;
    d.full_blocks() > 0
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && (s.stride_h, s.stride_w) == (2, 2)
        && (s.dilation_h, s.dilation_w) == (1, 1)
}

/// Channels `0..full` of one input-gradient row: `grad` is one image's output gradient
/// (`[out_h, out_w, c_out]`), `readers` the `(kernel row, output row)` pairs that read the
/// input row (ascending kernel row), `dst` the row (`[in_w, c_in]`, possibly
/// uninitialised), whose channels `0..full` are all written.
#[inline(always)]
pub(super) fn row<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    grad: &[T],
    readers: &[(usize, usize)],
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    match readers {
        [a] => row_r::<T, FUSED, LANES, 1>(d, grad, [*a, *a], full, dst),
        [a, b] => row_r::<T, FUSED, LANES, 2>(d, grad, [*a, *b], full, dst),
        // No output row reads this input row (a 3x3 kernel at stride 2 is never read
        // by more than two): its gradient is zero.
        _ => {
            debug_assert!(readers.is_empty(), "at most two output rows read an input row at stride 2");
            for pixel in dst.chunks_exact_mut(d.s.in_channels) {
                for v in &mut pixel[..full] {
                    v.write(T::zero());
                }
            }
        }
    }
}

/// [`row`] with `R` reading output rows (the first `R` of `readers`), blocks of `W` channels.
#[inline(always)]
fn row_r<T: FloatElement, const FUSED: bool, const W: usize, const R: usize>(
    d: &Depthwise<'_, T>,
    grad: &[T],
    readers: [(usize, usize); 2],
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    let s = d.s;
    let (c, co, out_w, in_w, pad) = (s.in_channels, s.out_channels, s.out_w, s.in_w, s.pad_left);
    // The output rows read, whole (one bounds test each, here).
    let rows = readers.map(|(_, oy)| &grad[oy * out_w * co..][..out_w * co]);
    // Pairs j whose four taps read real output columns (j - 1 >= 0, j < out_w) and whose
    // two pixels are real input columns (2j - pad >= 0, 2j + 1 - pad < in_w).
    let lo = 1.max(pad.div_ceil(2));
    let hi = if in_w + pad >= 2 { ((in_w + pad - 2) / 2 + 1).min(out_w) } else { 0 };
    let hi = hi.max(lo);
    for start in (0..full).step_by(W) {
        let mut k = [[T::zero(); W]; 6];
        for (r, &(ky, _)) in readers.iter().enumerate().take(R) {
            for kx in 0..3 {
                k[r * 3 + kx] = *block(&d.taps_kernel[(ky * 3 + kx) * co + start..]);
            }
        }
        let g = Grad { rows, start };
        // The border pixels: input columns whose pair lies outside lo..hi.
        for ix in (0..in_w).filter(|&ix| {
            let j = (ix + pad) / 2;
            j < lo || j >= hi
        }) {
            let y = border::<T, FUSED, W, R>(&g, &k, ix + pad, (out_w, co));
            store(&mut dst[ix * c + start..], y);
        }
        let mut j = lo;
        while j + 2 <= hi {
            pairs::<T, FUSED, W, R, 2>(&g, &k, j, &mut dst[(2 * j - pad) * c + start..], c);
            j += 2;
        }
        if j < hi {
            pairs::<T, FUSED, W, R, 1>(&g, &k, j, &mut dst[(2 * j - pad) * c + start..], c);
        }
    }
}

/// The output-gradient rows one input row reads, from one channel block.
struct Grad<'a, T> {
    /// Whole output rows (`[out_w, c_out]`), in the order of their kernel rows.
    rows: [&'a [T]; 2],
    /// The block's first channel.
    start: usize,
}

impl<T: FloatElement> Grad<'_, T> {
    /// The block of row `r`, output column `ox`.
    ///
    /// # Safety
    ///
    /// `ox < out_w`, and the block ends by `c_out` (`start + W <= c_out`).
    #[inline(always)]
    unsafe fn at<const W: usize>(&self, r: usize, ox: usize, co: usize) -> &[T; W] {
        // SAFETY: the row holds out_w * c_out elements; ox * c_out + start + W <= out_w * c_out
        // by the caller's promise.
        unsafe { block_at(self.rows[r], ox * co + self.start) }
    }
}

/// `N` interior pairs from `j` (input pixels `2j - pad ..` four or two in a row, written to
/// `dst[p * c..]`): per output row, output columns `j - 1 ..= j + N - 1` are loaded once
/// and feed every pixel that reads them. The accumulators are indexed by constants, so
/// that they stay in registers.
#[inline(always)]
fn pairs<T: FloatElement, const FUSED: bool, const W: usize, const R: usize, const N: usize>(
    g: &Grad<'_, T>,
    k: &[[T; W]; 6],
    j: usize,
    dst: &mut [MaybeUninit<T>],
    c: usize,
) {
    // Multiplier 1: the output gradient's pixels hold `c` channels too.
    let co = c;
    let mut acc = [[T::zero(); W]; 4];
    for r in 0..R {
        let (k0, k1, k2) = (&k[r * 3], &k[r * 3 + 1], &k[r * 3 + 2]);
        // SAFETY: the caller's pairs satisfy 1 <= j and j + N - 1 < out_w, and the block
        // ends by the full channels (`start + W <= full <= c_out`).
        let (a, b) = unsafe { (g.at::<W>(r, j - 1, co), g.at::<W>(r, j, co)) };
        // Even pixel 2j: kernel column 0 reads output column j, column 2 column j - 1.
        mul_add::<T, FUSED, W>(&mut acc[0], b, k0);
        mul_add::<T, FUSED, W>(&mut acc[0], a, k2);
        mul_add::<T, FUSED, W>(&mut acc[1], b, k1);
        if N == 2 {
            // SAFETY: as above, j + 1 < out_w.
            let e = unsafe { g.at::<W>(r, j + 1, co) };
            mul_add::<T, FUSED, W>(&mut acc[2], e, k0);
            mul_add::<T, FUSED, W>(&mut acc[2], b, k2);
            mul_add::<T, FUSED, W>(&mut acc[3], e, k1);
        }
    }
    store(dst, acc[0]);
    store(&mut dst[c..], acc[1]);
    if N == 2 {
        store(&mut dst[2 * c..], acc[2]);
        store(&mut dst[3 * c..], acc[3]);
    }
}

/// One border pixel (`q` = its input column plus `pad_left`): each kernel column of `q`'s
/// parity whose output column lies in the row.
#[inline(always)]
fn border<T: FloatElement, const FUSED: bool, const W: usize, const R: usize>(
    g: &Grad<'_, T>,
    k: &[[T; W]; 6],
    q: usize,
    (out_w, co): (usize, usize),
) -> [T; W] {
    let mut acc = [T::zero(); W];
    for r in 0..R {
        for kx in (q % 2..3).step_by(2).filter(|&kx| kx <= q) {
            let ox = (q - kx) / 2;
            if ox < out_w {
                mul_add::<T, FUSED, W>(&mut acc, &g.rows[r][ox * co + g.start..], &k[r * 3 + kx]);
            }
        }
    }
    acc
}
