//! CPU kernels of the depthwise convolution (`groups == in_channels`, any depth
//! multiplier `m = out_channels / in_channels`): direct loops over NHWC, vectorised over
//! channels, no im2col.
//!
//! Output channel `c * m + j` reads input channel `c` only, so an NHWC pixel's channels
//! are independent lanes: each kernel tap is one multiply-add across a pixel's channels.
//! The kernel `[c * m, kh, kw, 1]` is first transposed to `[kh * kw, c * m]` (tap-major),
//! so that a tap's weights are contiguous too. Channels run in blocks of [`LANES`] held in
//! a local array across all taps of a pixel, which the compiler keeps in SIMD registers
//! (AVX2 and FMA where the CPU has them, chosen at run time).
//!
//! - forward: each output row `(image, oy)` is one task; each output pixel sums its taps.
//! - input gradient: gathered, not scattered: each input row is one task, and each input
//!   pixel sums the output pixels that read it (`dy * kernel`), so no two tasks write the
//!   same element.
//! - kernel gradient: the output rows are cut into [`FILTER_CHUNKS`] fixed runs (the cut
//!   depends on the shape only); each run sums into its own buffer, and the buffers are
//!   added in run order, so the result does not depend on the thread count or on rayon's
//!   scheduling.

use super::cpu::taps;
use crate::backend::Conv2dSpec;
use crate::cpu_backend::alloc::{try_vec, try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Channels per register block: 16 f32 are two AVX registers.
const LANES: usize = 16;

/// Runs of output rows the kernel gradient is split into (at most).
const FILTER_CHUNKS: usize = 64;

/// Whether the AVX2 + FMA variants may run.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The shared read-only state of one depthwise op.
struct Depthwise<'a, T> {
    s: &'a Conv2dSpec,
    /// The kernel, tap-major: `[kh * kw, out_channels]`.
    taps_kernel: &'a [T],
    /// Depth multiplier.
    m: usize,
}

impl<T> Depthwise<'_, T> {
    fn in_image(&self) -> usize {
        self.s.in_h * self.s.in_w * self.s.in_channels
    }

    fn out_image(&self) -> usize {
        self.s.out_h * self.s.out_w * self.s.out_channels
    }
}

/// `[c_out, kh, kw, 1]` -> `[kh * kw, c_out]`.
fn tap_major<T: FloatElement + ZeroBits>(op: &'static str, kernel: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    let (taps, co) = (s.kernel_h * s.kernel_w, s.out_channels);
    let mut out = try_zeros(op, kernel.len())?;
    for o in 0..co {
        for t in 0..taps {
            out[t * co + o] = kernel[o * taps + t];
        }
    }
    Ok(out)
}

/// `acc[i] += a[i] * b[i]` over one block.
#[inline(always)]
fn mul_add_block<T: FloatElement>(acc: &mut [T], a: &[T], b: &[T]) {
    for ((y, &u), &v) in acc.iter_mut().zip(a).zip(b) {
        *y = *y + u * v;
    }
}

/// `acc[c * m + j] += x[c] * k[c * m + j]`: one tap of a multiplier-`m` depthwise kernel.
#[inline(always)]
fn mul_add_spread<T: FloatElement>(acc: &mut [T], x: &[T], k: &[T], m: usize) {
    for ((ys, &u), ks) in acc.chunks_exact_mut(m).zip(x).zip(k.chunks_exact(m)) {
        for (y, &v) in ys.iter_mut().zip(ks) {
            *y = *y + u * v;
        }
    }
}

/// Channel blocks `(start, len)` of a pixel: full [`LANES`] blocks, then the rest.
#[inline(always)]
fn blocks(channels: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..channels.div_ceil(LANES)).map(move |b| (b * LANES, LANES.min(channels - b * LANES)))
}

/// One output row `(image, oy)`: `dst` is `[out_w, c_out]`, already holding the bias or zeros.
#[inline(always)]
fn forward_row<T: FloatElement>(d: &Depthwise<'_, T>, x: &[T], row: usize, dst: &mut [T]) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (b, oy) = (row / s.out_h, row % s.out_h);
    let img = &x[b * d.in_image()..][..d.in_image()];
    let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    for ox in 0..s.out_w {
        let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
        let y = &mut dst[ox * co..][..co];
        let input = |ky: usize, kx: usize| {
            let (iy, ix) = (iy0 + (ky - ky0) * s.dilation_h, ix0 + (kx - kx0) * s.dilation_w);
            &img[(iy * s.in_w + ix) * c..][..c]
        };
        if d.m == 1 {
            for (start, len) in blocks(co) {
                let mut acc = [T::zero(); LANES];
                let acc = &mut acc[..len];
                acc.copy_from_slice(&y[start..start + len]);
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let k = &d.taps_kernel[(ky * s.kernel_w + kx) * co + start..][..len];
                        mul_add_block(acc, &input(ky, kx)[start..start + len], k);
                    }
                }
                y[start..start + len].copy_from_slice(acc);
            }
        } else {
            for ky in ky0..ky1 {
                for kx in kx0..kx1 {
                    let k = &d.taps_kernel[(ky * s.kernel_w + kx) * co..][..co];
                    mul_add_spread(y, input(ky, kx), k, d.m);
                }
            }
        }
    }
}

/// For each input coordinate along one axis, the `(tap, output coordinate)` pairs that
/// read it: `starts[i]..starts[i + 1]` index `pairs`.
struct Readers {
    starts: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

impl Readers {
    fn new(
        op: &'static str,
        input: usize,
        out: usize,
        (stride, pad, dilation, taps): (usize, usize, usize, usize),
    ) -> Result<Self> {
        let mut starts = try_vec(op, input + 1, 0)?;
        let mut pairs = try_vec(op, input.saturating_mul(taps), (0, 0))?;
        let mut len = 0;
        for i in 0..input {
            starts[i] = len;
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

    fn of(&self, i: usize) -> &[(usize, usize)] {
        &self.pairs[self.starts[i]..self.starts[i + 1]]
    }
}

/// One input-gradient row `(image, iy)`: `dst` is `[in_w, c_in]`, zeros.
#[inline(always)]
fn backward_input_row<T: FloatElement>(
    d: &Depthwise<'_, T>,
    dy: &[T],
    (rows, cols): (&Readers, &Readers),
    row: usize,
    dst: &mut [T],
) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (b, iy) = (row / s.in_h, row % s.in_h);
    let grad = &dy[b * d.out_image()..][..d.out_image()];
    for ix in 0..s.in_w {
        let dx = &mut dst[ix * c..][..c];
        let readers = || {
            rows.of(iy).iter().flat_map(move |&(ky, oy)| {
                cols.of(ix).iter().map(move |&(kx, ox)| ((oy * s.out_w + ox) * co, (ky * s.kernel_w + kx) * co))
            })
        };
        if d.m == 1 {
            for (start, len) in blocks(c) {
                let mut acc = [T::zero(); LANES];
                let acc = &mut acc[..len];
                for (g, k) in readers() {
                    mul_add_block(acc, &grad[g + start..][..len], &d.taps_kernel[k + start..][..len]);
                }
                dx[start..start + len].copy_from_slice(acc);
            }
        } else {
            for (g, k) in readers() {
                let (g, k) = (&grad[g..][..co], &d.taps_kernel[k..][..co]);
                for ((v, gs), ks) in dx.iter_mut().zip(g.chunks_exact(d.m)).zip(k.chunks_exact(d.m)) {
                    for (&u, &w) in gs.iter().zip(ks) {
                        *v = *v + u * w;
                    }
                }
            }
        }
    }
}

/// The output columns `lo..hi` whose tap `kx` reads a real (unpadded) input column.
#[inline(always)]
fn reading_columns(s: &Conv2dSpec, kx: usize) -> (usize, usize) {
    // Input column of output ox: ox * stride - pad + kx * dilation, in 0..in_w.
    let offset = kx * s.dilation_w;
    let lo = s.pad_left.saturating_sub(offset).div_ceil(s.stride_w);
    let hi = if s.in_w + s.pad_left > offset { (s.in_w + s.pad_left - offset - 1) / s.stride_w + 1 } else { 0 };
    (lo.min(s.out_w), hi.min(s.out_w).max(lo.min(s.out_w)))
}

/// Adds one output row's `(image, oy)` share of the kernel gradient into `acc`
/// (`[kh * kw, c_out]`).
#[inline(always)]
fn backward_filter_row<T: FloatElement>(d: &Depthwise<'_, T>, x: &[T], dy: &[T], row: usize, acc: &mut [T]) {
    let s = d.s;
    let (c, co) = (s.in_channels, s.out_channels);
    let (b, oy) = (row / s.out_h, row % s.out_h);
    let img = &x[b * d.in_image()..][..d.in_image()];
    let grad = &dy[row * s.out_w * co..][..s.out_w * co];
    let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    for ky in ky0..ky1 {
        let iy = iy0 + (ky - ky0) * s.dilation_h;
        let input_row = &img[iy * s.in_w * c..][..s.in_w * c];
        for kx in 0..s.kernel_w {
            let (lo, hi) = reading_columns(s, kx);
            let tap = &mut acc[(ky * s.kernel_w + kx) * co..][..co];
            let column = |ox: usize| ox * s.stride_w + kx * s.dilation_w - s.pad_left;
            if d.m == 1 {
                for (start, len) in blocks(co) {
                    let mut sum = [T::zero(); LANES];
                    let sum = &mut sum[..len];
                    sum.copy_from_slice(&tap[start..start + len]);
                    for ox in lo..hi {
                        let xs = &input_row[column(ox) * c + start..][..len];
                        mul_add_block(sum, &grad[ox * co + start..][..len], xs);
                    }
                    tap[start..start + len].copy_from_slice(sum);
                }
            } else {
                for ox in lo..hi {
                    mul_add_spread(tap, &input_row[column(ox) * c..][..c], &grad[ox * co..][..co], d.m);
                }
            }
        }
    }
}

/// AVX2 + FMA builds of the row functions (the same code, compiled for wider registers).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward_row<T: FloatElement>(d: &Depthwise<'_, T>, x: &[T], row: usize, dst: &mut [T]) {
        super::forward_row(d, x, row, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backward_input_row<T: FloatElement>(
        d: &Depthwise<'_, T>,
        dy: &[T],
        readers: (&Readers, &Readers),
        row: usize,
        dst: &mut [T],
    ) {
        super::backward_input_row(d, dy, readers, row, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backward_filter_row<T: FloatElement>(
        d: &Depthwise<'_, T>,
        x: &[T],
        dy: &[T],
        row: usize,
        acc: &mut [T],
    ) {
        super::backward_filter_row(d, x, dy, row, acc)
    }
}

/// The forward depthwise convolution: `[batch, out_h, out_w, c_out]`.
pub(crate) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d";
    let taps_kernel = tap_major(OP, kernel, s)?;
    let d = Depthwise { s, taps_kernel: &taps_kernel, m: s.out_channels / s.in_channels };
    let row_len = s.out_w * s.out_channels;
    let mut out = try_zeros(OP, s.batch * s.out_h * row_len)?;
    if out.is_empty() {
        return Ok(out);
    }
    let avx2 = has_avx2();
    out.par_chunks_mut(row_len).enumerate().for_each(|(row, dst)| {
        if let Some(b) = bias {
            for y in dst.chunks_exact_mut(s.out_channels) {
                y.copy_from_slice(b);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time above).
            return unsafe { avx2::forward_row(&d, x, row, dst) };
        }
        let _ = avx2;
        forward_row(&d, x, row, dst)
    });
    Ok(out)
}

/// The input gradient of a depthwise convolution: `[batch, in_h, in_w, c_in]`.
pub(crate) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    let taps_kernel = tap_major(OP, kernel, s)?;
    let d = Depthwise { s, taps_kernel: &taps_kernel, m: s.out_channels / s.in_channels };
    let rows = Readers::new(OP, s.in_h, s.out_h, (s.stride_h, s.pad_top, s.dilation_h, s.kernel_h))?;
    let cols = Readers::new(OP, s.in_w, s.out_w, (s.stride_w, s.pad_left, s.dilation_w, s.kernel_w))?;
    let row_len = s.in_w * s.in_channels;
    let mut dx = try_zeros(OP, s.batch * s.in_h * row_len)?;
    if dx.is_empty() {
        return Ok(dx);
    }
    let avx2 = has_avx2();
    dx.par_chunks_mut(row_len).enumerate().for_each(|(row, dst)| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time above).
            return unsafe { avx2::backward_input_row(&d, dy, (&rows, &cols), row, dst) };
        }
        let _ = avx2;
        backward_input_row(&d, dy, (&rows, &cols), row, dst)
    });
    Ok(dx)
}

/// The kernel gradient of a depthwise convolution: `[c_out, kh, kw, 1]`.
pub(crate) fn conv2d_backward_filter<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_filter";
    let d = Depthwise { s, taps_kernel: &[], m: s.out_channels / s.in_channels };
    let (taps, co) = (s.kernel_h * s.kernel_w, s.out_channels);
    let rows = s.batch * s.out_h;
    let per_chunk = rows.div_ceil(FILTER_CHUNKS).max(1);
    let chunks = rows.div_ceil(per_chunk);
    let avx2 = has_avx2();
    let partials: Vec<Result<Vec<T>>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut acc = try_zeros(OP, taps * co)?;
            for row in chunk * per_chunk..((chunk + 1) * per_chunk).min(rows) {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU has AVX2 and FMA (checked at run time above).
                    unsafe { avx2::backward_filter_row(&d, x, dy, row, &mut acc) };
                    continue;
                }
                let _ = avx2;
                backward_filter_row(&d, x, dy, row, &mut acc);
            }
            Ok(acc)
        })
        .collect();
    let mut total = try_zeros(OP, taps * co)?;
    for partial in partials {
        for (t, &p) in total.iter_mut().zip(&partial?) {
            *t = *t + p;
        }
    }
    let mut out = try_zeros(OP, taps * co)?;
    for t in 0..taps {
        for o in 0..co {
            out[o * taps + t] = total[t * co + o];
        }
    }
    Ok(out)
}
