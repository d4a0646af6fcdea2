//! CPU kernels of the depthwise convolution (`groups == in_channels`, any depth
//! multiplier `m = out_channels / in_channels`): direct loops over NHWC, vectorised over
//! channels, no im2col.
//!
//! Output channel `c * m + j` reads input channel `c` only, so an NHWC pixel's channels
//! are independent lanes: each kernel tap is one multiply-add across a pixel's channels.
//! The kernel `[c * m, kh, kw, 1]` is first transposed to `[kh * kw, c * m]` (tap-major),
//! so that a tap's weights are contiguous too. Channels run in fixed blocks of
//! [`lanes::LANES`], and [`PIXELS`] neighbouring pixels at a time, whose accumulators the
//! compiler keeps in SIMD registers. The row functions are compiled three times: for
//! AVX-512, for AVX2 (both with FMA) and for any CPU, chosen at run time ([`Isa`]).
//!
//! - forward ([`forward`]): each task is a band of output rows of one image (its size set
//!   by the shape, [`band_rows`]), written into an output that is not zeroed first
//!   ([`output`]). A 3x3 kernel at stride 1 or 2 ([`forward_3x3`]) keeps its taps in registers
//!   for the whole row.
//! - input gradient ([`backward_input`]): gathered, not scattered: each input row is one
//!   task, and each input pixel sums the output pixels that read it (`dy * kernel`), so no
//!   two tasks write the same element. At stride 1 and multiplier 1 it is the forward
//!   pass over `dy` with the kernel flipped in space instead, which is faster; a 3x3
//!   kernel at stride 2 reads `dy` through a fixed stencil per input-column parity
//!   ([`backward_input_s2`]).
//! - f32 on AVX2 at MobileNet's stride-1 3x3 shapes: forward rows and kernel gradient
//!   written with intrinsics ([`avx2_f32`]), the same sums in the same order.
//! - kernel gradient ([`backward_filter`]): the output rows are cut into [`FILTER_CHUNKS`]
//!   fixed runs (the cut depends on the shape only); each run sums into its own buffer,
//!   and the buffers are added in run order, so the result does not depend on the thread
//!   count or on rayon's scheduling.

mod avx2_f32;
mod backward_filter;
mod backward_input;
mod backward_input_s2;
mod columns;
mod forward;
mod forward_3x3;
mod lanes;
mod output;
#[cfg(test)]
mod tests;

use super::cpu::backward_input_geometry;
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::utilities::isa::Isa;
use crate::{FloatElement, Result};
use backward_input::Readers;
use rayon::prelude::*;

/// Output pixels computed together: independent accumulator chains that share each kernel
/// load (one chain per pixel was bound by the latency of its additions).
const PIXELS: usize = 4;

/// Runs of output rows the kernel gradient is split into (at most).
const FILTER_CHUNKS: usize = 64;

/// Runs a row function compiled for `isa`: `dispatch!(isa, forward_rows(args))`.
macro_rules! dispatch {
    ($isa:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $isa {
            // SAFETY: `Isa::detect_fused` saw these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { simd::avx512::$f($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { simd::avx2::$f($($arg),*) },
            Isa::Portable => simd::portable::$f($($arg),*),
        }
    };
}

/// The row functions compiled for each instruction set (the same code), with FMA or not.
mod simd {
    macro_rules! compiled_for {
        ($name:ident, $fused:literal $(, $features:literal)?) => {
            pub(super) mod $name {
                use super::super::{backward_filter, backward_input, forward, Depthwise, Readers};
                use crate::FloatElement;

                $(#[target_feature(enable = $features)])?
                pub(in super::super) fn forward_rows<T: FloatElement>(
                    d: &Depthwise<'_, T>,
                    x: &[T],
                    bias: &[T],
                    first: usize,
                    dst: &mut [std::mem::MaybeUninit<T>],
                ) {
                    forward::forward_rows::<T, $fused>(d, x, bias, first, dst)
                }

                $(#[target_feature(enable = $features)])?
                pub(in super::super) fn backward_input_row<T: FloatElement>(
                    d: &Depthwise<'_, T>,
                    dy: &[T],
                    readers: (&Readers, &Readers),
                    row: usize,
                    dst: &mut [T],
                ) {
                    backward_input::backward_input_row::<T, $fused>(d, dy, readers, row, dst)
                }

                $(#[target_feature(enable = $features)])?
                pub(in super::super) fn backward_input_row_s2<T: FloatElement>(
                    d: &Depthwise<'_, T>,
                    dy: &[T],
                    rows: &Readers,
                    row: usize,
                    dst: &mut [std::mem::MaybeUninit<T>],
                ) {
                    backward_input::backward_input_row_s2::<T, $fused>(d, dy, rows, row, dst)
                }

                $(#[target_feature(enable = $features)])?
                pub(in super::super) fn backward_filter_row<T: FloatElement>(
                    d: &Depthwise<'_, T>,
                    x: &[T],
                    dy: &[T],
                    row: usize,
                    acc: &mut [T],
                ) {
                    backward_filter::backward_filter_row::<T, $fused>(d, x, dy, row, acc)
                }
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    compiled_for!(avx512, true, "avx512f,avx2,fma");
    #[cfg(target_arch = "x86_64")]
    compiled_for!(avx2, true, "avx2,fma");
    compiled_for!(portable, false);
}

/// The shared read-only state of one depthwise op.
pub(super) struct Depthwise<'a, T> {
    pub(super) s: &'a Conv2dSpec,
    /// The kernel, tap-major: `[kh * kw, out_channels]`.
    pub(super) taps_kernel: &'a [T],
    /// Depth multiplier.
    pub(super) m: usize,
}

impl<T> Depthwise<'_, T> {
    pub(super) fn in_image(&self) -> usize {
        self.s.in_h * self.s.in_w * self.s.in_channels
    }

    pub(super) fn out_image(&self) -> usize {
        self.s.out_h * self.s.out_w * self.s.out_channels
    }

    /// The channels in full [`lanes::LANES`] blocks, which the grouped paths take (multiplier 1 only).
    pub(super) fn full_blocks(&self) -> usize {
        if self.m == 1 {
            self.s.out_channels / lanes::LANES * lanes::LANES
        } else {
            0
        }
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

/// `[c, kh, kw, 1]` flipped along kh and kw.
fn flip_taps<T: FloatElement + ZeroBits>(op: &'static str, kernel: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    let (kh, kw) = (s.kernel_h, s.kernel_w);
    let mut out = try_zeros(op, kernel.len())?;
    for (src, dst) in kernel.chunks_exact(kh * kw).zip(out.chunks_exact_mut(kh * kw)) {
        for (t, v) in dst.iter_mut().enumerate() {
            *v = src[kh * kw - 1 - t];
        }
    }
    Ok(out)
}

/// The forward depthwise convolution: `[batch, out_h, out_w, c_out]`.
pub(crate) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    forward_with(Isa::detect_fused(), x, kernel, bias, s)
}

fn forward_with<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d";
    let taps_kernel = tap_major(OP, kernel, s)?;
    let d = Depthwise { s, taps_kernel: &taps_kernel, m: s.out_channels / s.in_channels };
    // No bias is a bias of zeros (the same sums): each row then starts from a plain load,
    // where choosing between a bias block and zeros per channel block compiled to a
    // stack round trip that stalled.
    let zero_bias;
    let bias = match bias {
        Some(b) => b,
        None => {
            zero_bias = try_zeros(OP, s.out_channels)?;
            &zero_bias[..]
        }
    };
    let row_len = s.out_w * s.out_channels;
    let band = band_rows(s.out_h, row_len * std::mem::size_of::<T>());
    #[cfg(target_arch = "x86_64")]
    let intrinsics = avx2_f32::forward_applies(isa, &d);
    let fill = |task: usize, dst: &mut [std::mem::MaybeUninit<T>]| {
        #[cfg(target_arch = "x86_64")]
        if intrinsics {
            if let (Some(x), Some(k), Some(b), Some(dst)) =
                (avx2_f32::f32s(x), avx2_f32::f32s(d.taps_kernel), avx2_f32::f32s(bias), avx2_f32::f32_slots(dst))
            {
                // SAFETY: `applies` saw `isa` be AVX2, which `Isa::detect_fused` saw with FMA.
                return unsafe { avx2_f32::forward_rows(s, x, k, b, task * band, dst) };
            }
        }
        dispatch!(isa, forward_rows(&d, x, bias, task * band, dst))
    };
    // SAFETY: `forward_rows` writes every element of its band.
    unsafe { output::par_filled(OP, s.batch * s.out_h * row_len, band * row_len, fill) }
}

/// Output bytes a forward task aims at: enough that the per-task work (scheduling, the
/// row set-up) is small beside the pixels, few enough that its input and output rows stay
/// in the first cache levels.
const TASK_BYTES: usize = 16 << 10;

/// The output rows of one forward task: the largest divisor of `out_h` whose rows hold at
/// most [`TASK_BYTES`] (one row at least), so that a task never crosses images. Set by the
/// shape only, never by the thread count (the results do not depend on it anyway: each
/// element is written by one task, from the same sums).
fn band_rows(out_h: usize, row_bytes: usize) -> usize {
    let most = (TASK_BYTES / row_bytes.max(1)).clamp(1, out_h.max(1));
    (1..=most).rev().find(|&n| out_h.is_multiple_of(n)).unwrap_or(1)
}

/// The input gradient of a depthwise convolution: `[batch, in_h, in_w, c_in]`.
pub(crate) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    backward_input_with(Isa::detect_fused(), dy, kernel, s)
}

fn backward_input_with<T: FloatElement + ZeroBits>(isa: Isa, dy: &[T], kernel: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    // At stride 1 and multiplier 1: a depthwise convolution of `dy` with the kernel flipped
    // in space, whose forward row functions run faster than the gathered ones.
    let flipped = (s.out_channels == s.in_channels).then(|| backward_input_geometry(s)).flatten();
    if let Some(flipped) = flipped {
        return forward_with(isa, dy, &flip_taps(OP, kernel, s)?, None, &flipped);
    }
    let taps_kernel = tap_major(OP, kernel, s)?;
    let d = Depthwise { s, taps_kernel: &taps_kernel, m: s.out_channels / s.in_channels };
    let rows = Readers::new(OP, s.in_h, s.out_h, (s.stride_h, s.pad_top, s.dilation_h, s.kernel_h))?;
    let cols = Readers::new(OP, s.in_w, s.out_w, (s.stride_w, s.pad_left, s.dilation_w, s.kernel_w))?;
    let row_len = s.in_w * s.in_channels;
    if backward_input_s2::applies(&d) && d.full_blocks() == s.in_channels {
        let fill = |row: usize, dst: &mut [std::mem::MaybeUninit<T>]| {
            dispatch!(isa, backward_input_row_s2(&d, dy, &rows, row, dst))
        };
        // SAFETY: `backward_input_row_s2` writes every element of its row.
        return unsafe { output::par_filled(OP, s.batch * s.in_h * row_len, row_len, fill) };
    }
    let mut dx = try_zeros(OP, s.batch * s.in_h * row_len)?;
    if dx.is_empty() {
        return Ok(dx);
    }
    dx.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, dst)| dispatch!(isa, backward_input_row(&d, dy, (&rows, &cols), row, dst)));
    Ok(dx)
}

/// The kernel gradient of a depthwise convolution: `[c_out, kh, kw, 1]`.
pub(crate) fn conv2d_backward_filter<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    backward_filter_with(Isa::detect_fused(), x, dy, s)
}

fn backward_filter_with<T: FloatElement + ZeroBits>(isa: Isa, x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_filter";
    let d = Depthwise { s, taps_kernel: &[], m: s.out_channels / s.in_channels };
    let (taps, co) = (s.kernel_h * s.kernel_w, s.out_channels);
    let rows = s.batch * s.out_h;
    let per_chunk = rows.div_ceil(FILTER_CHUNKS).max(1);
    let chunks = rows.div_ceil(per_chunk);
    #[cfg(target_arch = "x86_64")]
    let intrinsics = avx2_f32::applies(isa, &d);
    let partials: Vec<Result<Vec<T>>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut acc = try_zeros(OP, taps * co)?;
            let run = chunk * per_chunk..((chunk + 1) * per_chunk).min(rows);
            #[cfg(target_arch = "x86_64")]
            if intrinsics {
                if let (Some(x), Some(dy), Some(sums)) =
                    (avx2_f32::f32s(x), avx2_f32::f32s(dy), avx2_f32::f32s_mut(&mut acc[..]))
                {
                    // SAFETY: `applies` saw `isa` be AVX2, which `Isa::detect_fused` saw with FMA.
                    unsafe { avx2_f32::filter_rows(s, x, dy, run, sums) };
                    return Ok(acc);
                }
            }
            for row in run {
                dispatch!(isa, backward_filter_row(&d, x, dy, row, &mut acc));
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
