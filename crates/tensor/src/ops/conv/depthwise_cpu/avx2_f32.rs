//! MobileNet's stride-1 3x3 depthwise layers ('same' padding of one pixel each side) in
//! f32 on AVX2, written with intrinsics: the forward rows (and so the stride-1 input
//! gradient, the forward pass over `dy`) and the kernel gradient.
//!
//! The generic row functions leave the vectorisation of each 16-lane multiply-add to the
//! compiler; at 128 channels on 8x8 maps (both groups of four pixels of a row are border
//! groups, which skip a padding tap) it built each kernel register out of scalar loads and
//! shuffles, per multiply-add, and the forward pass ran 20% behind PyTorch. Here each
//! block is one register of 8 channels, chosen by hand:
//!
//! - forward (maps up to 16 wide, [`forward_applies`]): a block's 9 taps, its bias and 4
//!   accumulators (4 pixels) fill 14 of the 16 registers; the input is read as the
//!   multiply-add's memory operand.
//! - kernel gradient: a block's 9 tap sums stay in registers over all the rows of a chunk
//!   (9 independent chains), where the generic code loaded and stored 3 of them per row and
//!   kernel row.
//!
//! Every sum adds the same terms in the same order as the generic paths (forward: the bias,
//! then kernel row by row, column by column; kernel gradient: each tap over the chunk's rows,
//! then columns, in ascending order), so the results are the same bits as on AVX-512. One
//! exception: with a tail of 8 channels past the last 16-channel block (24, 40, ...
//! channels), the generic kernel gradient sums the tail in 4 interleaved partials, and its
//! bits there differ from these (which still depend on the shape only).

use super::Depthwise;
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::taps;
use crate::utilities::isa::Isa;
use std::any::TypeId;
use std::mem::MaybeUninit;

/// Channels per register.
const W: usize = 8;

/// Output pixels per group.
const GROUP: usize = 4;

/// Whether these kernels compute this op: f32 on AVX2 (with FMA), multiplier 1, channels
/// in whole registers, a 3x3 kernel at stride 1 and dilation 1 with one row and column of
/// padding each side ('same'), at least 2 rows, and a width that is a multiple of 4.
/// AVX-512 keeps the generic rows (32 registers, 16-lane blocks).
pub(super) fn applies<T: 'static>(isa: Isa, d: &Depthwise<'_, T>) -> bool {
    let s = d.s;
    #[cfg(target_arch = "x86_64")]
    let avx2 = isa == Isa::Avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = {
        let _ = isa;
        false
    };
    avx2 && TypeId::of::<T>() == TypeId::of::<f32>()
        && d.m == 1
        && s.out_channels.is_multiple_of(W)
        && s.out_channels > 0
        && (s.kernel_h, s.kernel_w, s.stride_h, s.stride_w, s.dilation_h, s.dilation_w) == (3, 3, 1, 1, 1, 1)
        && (s.pad_top, s.pad_left) == (1, 1)
        && (s.in_h, s.in_w) == (s.out_h, s.out_w)
        && s.out_h >= 2
        && s.out_w >= GROUP
        && s.out_w.is_multiple_of(GROUP)
}

/// Whether [`forward_rows`] computes this op: [`applies`], on maps at most [`FORWARD_WIDTH`]
/// wide.
pub(super) fn forward_applies<T: 'static>(isa: Isa, d: &Depthwise<'_, T>) -> bool {
    applies(isa, d) && d.s.out_w <= FORWARD_WIDTH
}

/// The widest map the forward rows here run. Their groups are 4 independent chains (one
/// register per pixel), against the generic rows' 8 (two per pixel): on 32-wide rows,
/// where the generic rows compile well, they were 30% slower (1 thread), and on 16- to
/// 4-wide rows, where the generic rows do not, 15-55% faster.
const FORWARD_WIDTH: usize = 16;

/// `s` as f32 values, where `T` is f32 (checked by [`applies`]'s caller).
pub(super) fn f32s<T: 'static>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is `f32` (same type id), so the slice is one of f32.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// [`f32s`] for a mutable slice.
pub(super) fn f32s_mut<T: 'static>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `f32s`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// [`f32s`] for output slots.
pub(super) fn f32_slots<T: 'static>(s: &mut [MaybeUninit<T>]) -> Option<&mut [MaybeUninit<f32>]> {
    // SAFETY: as in `f32s`; `MaybeUninit<T>` has the layout of `T`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{filter_rows, forward_rows};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{taps, Conv2dSpec, MaybeUninit, GROUP, W};
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};

    /// Output rows `first..` of one image (`first / out_h`; `dst` is whole rows, inside
    /// that image) of an op [`applies`](super::applies) to: `x` is the input, `kernel` the
    /// tap-major kernel (`[9, c]`), `bias` `[c]`. Every element of `dst` is written.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn forward_rows(
        s: &Conv2dSpec,
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
        first: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let (h, w, c) = (s.out_h, s.out_w, s.out_channels);
        let row_len = w * c;
        let (b, oy0) = (first / h, first % h);
        let n = dst.len() / row_len;
        let image = h * w * c;
        // Every read and write below stays inside these (all offsets are smaller).
        assert!(
            oy0 + n <= h && (b + 1) * image <= x.len() && kernel.len() >= 9 * c && bias.len() >= c,
            "depthwise rows outside their tensors"
        );
        let img = x[b * image..].as_ptr();
        for (oy, out) in (oy0..oy0 + n).zip(dst.chunks_exact_mut(row_len)) {
            let (ky0, ky1, iy0) = taps(oy, 1, 1, 1, 3, h);
            // SAFETY: input row iy0 + r (r < ky1 - ky0) is a row of the image.
            let input = unsafe { img.add(iy0 * row_len) };
            let out = out.as_mut_ptr().cast::<f32>();
            for cb in (0..c).step_by(W) {
                // SAFETY (all three): the rows read exist (taps), columns and channels
                // stay inside the row; out is `row_len` long.
                match (ky0, ky1) {
                    (0, 3) => unsafe { row::<0, 3>(input, kernel, bias, cb, (w, c), out) },
                    (1, 3) => unsafe { row::<1, 3>(input, kernel, bias, cb, (w, c), out) },
                    _ => unsafe { row::<0, 2>(input, kernel, bias, cb, (w, c), out) },
                }
            }
        }
    }

    /// Channels `cb..cb + 8` of one output row reading kernel rows `KY0..KY1` (input rows
    /// from `input`, the first one read).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row<const KY0: usize, const KY1: usize>(
        input: *const f32,
        kernel: &[f32],
        bias: &[f32],
        cb: usize,
        (w, c): (usize, usize),
        out: *mut f32,
    ) {
        // A loop, not `array::from_fn`: a closure is compiled without this function's
        // target features.
        let mut k = [_mm256_setzero_ps(); 9];
        for (t, k) in k.iter_mut().enumerate() {
            // SAFETY: the slice holds W values.
            *k = unsafe { _mm256_loadu_ps(kernel[t * c + cb..][..W].as_ptr()) };
        }
        let bias = unsafe { _mm256_loadu_ps(bias[cb..][..W].as_ptr()) };
        let input = unsafe { input.add(cb) };
        let out = unsafe { out.add(cb) };
        if w == GROUP {
            unsafe { group::<KY0, KY1, true, true>(input, &k, bias, 0, (w, c), out) };
            return;
        }
        unsafe { group::<KY0, KY1, true, false>(input, &k, bias, 0, (w, c), out) };
        let mut ox = GROUP;
        while ox + GROUP < w {
            unsafe { group::<KY0, KY1, false, false>(input, &k, bias, ox, (w, c), out) };
            ox += GROUP;
        }
        unsafe { group::<KY0, KY1, false, true>(input, &k, bias, ox, (w, c), out) };
    }

    /// Pixels `ox..ox + 4` of one block: pixel `p`'s tap `kx` reads input column
    /// `ox + p + kx - 1`; with `LEFT` pixel 0 skips kernel column 0, with `RIGHT` pixel 3
    /// column 2 (they would read padding). Each pixel: the bias, then its taps in kernel
    /// row, then column order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const KY0: usize, const KY1: usize, const LEFT: bool, const RIGHT: bool>(
        input: *const f32,
        k: &[__m256; 9],
        bias: __m256,
        ox: usize,
        (w, c): (usize, usize),
        out: *mut f32,
    ) {
        let mut acc = [bias; GROUP];
        for ky in KY0..KY1 {
            let line = unsafe { input.add((ky - KY0) * w * c) };
            for kx in 0..3 {
                for (p, acc) in acc.iter_mut().enumerate() {
                    if (LEFT && p == 0 && kx == 0) || (RIGHT && p == GROUP - 1 && kx == 2) {
                        continue;
                    }
                    // SAFETY: column ox + p + kx - 1 is inside the row (the skipped taps are
                    // the only ones outside).
                    let x = unsafe { _mm256_loadu_ps(line.add((ox + p + kx - 1) * c)) };
                    *acc = _mm256_fmadd_ps(x, k[ky * 3 + kx], *acc);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            // SAFETY: pixel ox + p < w of the row.
            unsafe { _mm256_storeu_ps(out.add((ox + p) * c), *acc) };
        }
    }

    /// Adds the kernel gradient of output rows `rows` (of the whole batch) into `acc`
    /// (`[9, c]`, tap-major) for an op [`applies`](super::applies) to: per block of 8
    /// channels, each tap's sum runs over the rows in order, then over the columns in order.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn filter_rows(
        s: &Conv2dSpec,
        x: &[f32],
        dy: &[f32],
        rows: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        let (h, w, c) = (s.out_h, s.out_w, s.out_channels);
        let row_len = w * c;
        assert!(
            rows.end * row_len <= x.len().min(dy.len()) && acc.len() >= 9 * c,
            "depthwise rows outside their tensors"
        );
        for cb in (0..c).step_by(W) {
            let mut sums = [_mm256_setzero_ps(); 9];
            for (t, sum) in sums.iter_mut().enumerate() {
                // SAFETY: the slice holds W values.
                *sum = unsafe { _mm256_loadu_ps(acc[t * c + cb..][..W].as_ptr()) };
            }
            for r in rows.clone() {
                let (b, oy) = (r / h, r % h);
                let (ky0, ky1, iy0) = taps(oy, 1, 1, 1, 3, h);
                // SAFETY: input row iy0 of image b exists (taps); the gradient row is r's.
                let (input, grad) =
                    unsafe { (x.as_ptr().add((b * h + iy0) * row_len + cb), dy.as_ptr().add(r * row_len + cb)) };
                // SAFETY (all three): as above; columns stay inside the rows.
                match (ky0, ky1) {
                    (0, 3) => unsafe { filter_row::<0, 3>(input, grad, (w, c), &mut sums) },
                    (1, 3) => unsafe { filter_row::<1, 3>(input, grad, (w, c), &mut sums) },
                    _ => unsafe { filter_row::<0, 2>(input, grad, (w, c), &mut sums) },
                }
            }
            for (t, sum) in sums.iter().enumerate() {
                // SAFETY: acc holds 9 * c values (asserted above).
                unsafe { _mm256_storeu_ps(acc[t * c + cb..][..W].as_mut_ptr(), *sum) };
            }
        }
    }

    /// One output row's share of a block's 9 tap sums, kernel rows `KY0..KY1`: column 0
    /// skips kernel column 0, the last column kernel column 2 (padding).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn filter_row<const KY0: usize, const KY1: usize>(
        input: *const f32,
        grad: *const f32,
        (w, c): (usize, usize),
        sums: &mut [__m256; 9],
    ) {
        unsafe { filter_pixel::<KY0, KY1, true, false>(input, grad, 0, (w, c), sums) };
        for ox in 1..w - 1 {
            unsafe { filter_pixel::<KY0, KY1, false, false>(input, grad, ox, (w, c), sums) };
        }
        unsafe { filter_pixel::<KY0, KY1, false, true>(input, grad, w - 1, (w, c), sums) };
    }

    /// Output column `ox`'s gradient times each input pixel its taps read, into `sums`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn filter_pixel<const KY0: usize, const KY1: usize, const LEFT: bool, const RIGHT: bool>(
        input: *const f32,
        grad: *const f32,
        ox: usize,
        (w, c): (usize, usize),
        sums: &mut [__m256; 9],
    ) {
        // SAFETY: column ox of the gradient row.
        let g = unsafe { _mm256_loadu_ps(grad.add(ox * c)) };
        for ky in KY0..KY1 {
            let line = unsafe { input.add((ky - KY0) * w * c) };
            for kx in 0..3 {
                if (LEFT && kx == 0) || (RIGHT && kx == 2) {
                    continue;
                }
                // SAFETY: column ox + kx - 1 is inside the row (the skipped taps are the
                // only ones outside).
                let x = unsafe { _mm256_loadu_ps(line.add((ox + kx - 1) * c)) };
                sums[ky * 3 + kx] = _mm256_fmadd_ps(x, g, sums[ky * 3 + kx]);
            }
        }
    }
}
