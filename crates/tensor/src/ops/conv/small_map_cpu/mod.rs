//! CPU kernels of convolutions whose output maps are tiny (at most [`MAX_PIXELS`] pixels:
//! the 2x2 maps at the end of a CIFAR ResNet), as one GEMM per output pixel and kernel
//! tap, over the batch.
//!
//! On such maps most of a padded kernel's taps read padding: at 2x2 with padding 1 each
//! output pixel sees 4 of a 3x3 kernel's 9 taps, so im2col's GEMM multiplies 5/9 zeros,
//! and the rows of its column matrix are copies of the input. Here each output pixel `p`
//! and each tap that reads a real input pixel `q` is one GEMM over the batch,
//! `out[:, p, :] += x[:, q, :] @ kernel[:, tap, :]^T` (`[batch, c_in] @ [c_in, c_out]`),
//! with both operands read in place: no column matrix and no multiplication by padding.
//! Where taps along a row read adjacent pixels (stride and dilation 1 across), they are one
//! GEMM over their run. The input gradient is the same sum seen from each input pixel and
//! the kernel gradient the same products summed over the pixels instead:
//! - forward: a task per (output pixel, block of output channels);
//! - input gradient: a task per (input pixel, block of input channels), summing what each
//!   output pixel's taps read from it;
//! - kernel gradient: a task per (block of output channels, block of input channels),
//!   summing over the output pixels in order.
//!
//! Every output element is summed in an order that the shape alone fixes (pixels, then
//! taps, then the batch inside one GEMM), so the bits do not follow the thread count.

#[cfg(test)]
mod tests;

use super::cpu::{gemm_raw, taps, MatRef};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Output pixels of one image, at most (2x2 maps and smaller).
const MAX_PIXELS: usize = 4;

/// Images at least: the batch is every GEMM's row count, and below this the GEMMs are
/// too thin to beat im2col's one large GEMM.
const MIN_BATCH: usize = 16;

/// Channels at least, on both sides: the GEMMs' inner and outer sizes.
const MIN_CHANNELS: usize = 16;

/// Tasks a pass is cut into, at least (where the channels allow): enough to keep 16
/// threads busy. The cut depends on the shape only.
const MIN_TASKS: usize = 16;

/// Channels of one block, at least: a block narrower than this makes thin GEMMs.
const MIN_BLOCK: usize = 64;

/// Whether these kernels run a convolution: an ungrouped one with a kernel larger than 1x1
/// on maps of at most [`MAX_PIXELS`] output pixels, a batch of at least [`MIN_BATCH`] and
/// at least [`MIN_CHANNELS`] channels in and out.
pub(super) fn applies(s: &Conv2dSpec) -> bool {
    s.groups == 1
        && s.kernel_h * s.kernel_w > 1
        && s.out_h * s.out_w <= MAX_PIXELS
        && s.batch >= MIN_BATCH
        && s.in_channels >= MIN_CHANNELS
        && s.out_channels >= MIN_CHANNELS
}

/// `channels` cut into blocks so that `pixels` times the block count reaches
/// [`MIN_TASKS`], with no block under [`MIN_BLOCK`] channels (but one): the block width,
/// a multiple of 16 channels (a SIMD register of f32) where the channels allow.
fn block_width(channels: usize, pixels: usize) -> usize {
    let blocks = MIN_TASKS.div_ceil(pixels.max(1)).min(channels / MIN_BLOCK).max(1);
    channels.div_ceil(blocks).next_multiple_of(16).min(channels)
}

/// A run of taps of one kernel row that read adjacent input pixels: taps `kx0..kx0 + len`
/// of row `ky` read input pixels `(iy, ix0..ix0 + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TapRun {
    ky: usize,
    kx0: usize,
    iy: usize,
    ix0: usize,
    len: usize,
}

/// The taps of output pixel `(oy, ox)` that read real input pixels, as runs: one run per
/// kernel row where taps along a row read adjacent pixels (stride and dilation 1 across),
/// one per tap otherwise. In kernel order.
fn tap_runs(s: &Conv2dSpec, oy: usize, ox: usize) -> Vec<TapRun> {
    let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
    let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
    let adjacent = s.stride_w == 1 && s.dilation_w == 1;
    let mut runs = Vec::new();
    for ky in ky0..ky1 {
        let iy = iy0 + (ky - ky0) * s.dilation_h;
        if adjacent {
            if kx1 > kx0 {
                runs.push(TapRun { ky, kx0, iy, ix0, len: kx1 - kx0 });
            }
        } else {
            for kx in kx0..kx1 {
                runs.push(TapRun { ky, kx0: kx, iy, ix0: ix0 + (kx - kx0) * s.dilation_w, len: 1 });
            }
        }
    }
    runs
}

/// The tap through which output coordinate `o` reads input coordinate `i` along one axis
/// (`i = o * stride - pad + tap * dilation`), if any.
fn tap_reading(i: usize, o: usize, stride: usize, pad: usize, dilation: usize, taps: usize) -> Option<usize> {
    let offset = (i + pad).checked_sub(o * stride)?;
    (offset % dilation == 0 && offset / dilation < taps).then_some(offset / dilation)
}

/// A buffer that parallel tasks write through at disjoint elements.
#[derive(Clone, Copy)]
struct Disjoint<T>(*mut T, usize);

// SAFETY: the tasks of this file write disjoint elements of the buffer (each task its own
// pixels and channels), and the buffer outlives the parallel loop that writes it.
unsafe impl<T: Send> Send for Disjoint<T> {}
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T: FloatElement> Disjoint<T> {
    fn new(buf: &mut [T]) -> Self {
        Disjoint(buf.as_mut_ptr(), buf.len())
    }

    /// `self[offset..]` as `[m, n]` with rows `row_stride` apart, `+= lhs @ rhs` (`k`
    /// inner), on the calling thread.
    ///
    /// # Safety
    /// No other thread may access the elements written while this runs.
    unsafe fn gemm_add(
        self,
        offset: usize,
        row_stride: usize,
        (m, n, k): (usize, usize, usize),
        lhs: MatRef<'_, T>,
        rhs: MatRef<'_, T>,
    ) {
        if m * n == 0 {
            return;
        }
        assert!(
            row_stride >= n && offset + (m - 1) * row_stride + n <= self.1,
            "small_map_cpu: destination out of bounds"
        );
        assert!(lhs.covers(m, k) && rhs.covers(k, n), "small_map_cpu: operands out of bounds");
        // SAFETY: the assertions keep every element the strides address inside the buffers;
        // the caller guarantees no other thread touches the written ones.
        unsafe { gemm_raw(self.0.add(offset), row_stride, (m, n, k), lhs, rhs, true, Parallelism::None) }
    }
}

/// `[batch, pixels, channels]` filled with `bias` per pixel, or zeros.
fn start_from<T: FloatElement + ZeroBits>(op: &'static str, len: usize, bias: Option<&[T]>) -> Result<Vec<T>> {
    let mut out = try_zeros(op, len)?;
    if let Some(b) = bias {
        out.par_chunks_mut(b.len() * 64)
            .for_each(|rows| rows.chunks_exact_mut(b.len()).for_each(|r| r.copy_from_slice(b)));
    }
    Ok(out)
}

/// The forward convolution `[batch, out_h, out_w, c_out]` of a geometry [`applies`] accepts.
pub(super) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    let (ci, co, pixels) = (s.in_channels, s.out_channels, s.out_h * s.out_w);
    let (in_image, patch) = (s.in_h * s.in_w * ci, s.kernel_h * s.kernel_w * ci);
    let mut out = start_from("conv2d", s.batch * pixels * co, bias)?;
    let width = block_width(co, pixels);
    let blocks = co.div_ceil(width);
    let dst = Disjoint::new(&mut out);
    (0..pixels * blocks).into_par_iter().for_each(|task| {
        let (p, c0) = (task / blocks, task % blocks * width);
        let cols = width.min(co - c0);
        for run in tap_runs(s, p / s.out_w, p % s.out_w) {
            let k = run.len * ci;
            // The run's input pixels of every image, `[batch, k]`, and its kernel taps for
            // output channels `c0..`, `[k, cols]`: both read in place.
            let lhs = MatRef { data: &x[(run.iy * s.in_w + run.ix0) * ci..], row_stride: in_image, col_stride: 1 };
            let taps = &kernel[c0 * patch + (run.ky * s.kernel_w + run.kx0) * ci..];
            let rhs = MatRef { data: taps, row_stride: 1, col_stride: patch };
            // SAFETY: this task alone writes output pixel p, channels c0..c0 + cols.
            unsafe { dst.gemm_add(p * co + c0, pixels * co, (s.batch, cols, k), lhs, rhs) };
        }
    });
    Ok(out)
}

/// The input gradient plus `bias` (`[c_in]`) of a geometry [`applies`] accepts:
/// `[batch, in_h, in_w, c_in]`.
pub(super) fn backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    let (ci, co, pixels) = (s.in_channels, s.out_channels, s.out_h * s.out_w);
    let (in_pixels, patch) = (s.in_h * s.in_w, s.kernel_h * s.kernel_w * ci);
    let mut dx = start_from("conv2d_backward_input", s.batch * in_pixels * ci, bias)?;
    let width = block_width(ci, in_pixels);
    let blocks = ci.div_ceil(width);
    let dst = Disjoint::new(&mut dx);
    (0..in_pixels * blocks).into_par_iter().for_each(|task| {
        let (q, c0) = (task / blocks, task % blocks * width);
        let cols = width.min(ci - c0);
        let (iy, ix) = (q / s.in_w, q % s.in_w);
        // The output pixels whose window reads input pixel q, in order, each through one tap.
        for p in 0..pixels {
            let (oy, ox) = (p / s.out_w, p % s.out_w);
            let Some(ky) = tap_reading(iy, oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h) else { continue };
            let Some(kx) = tap_reading(ix, ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w) else { continue };
            let tap = ky * s.kernel_w + kx;
            // dy at output pixel p of every image, `[batch, c_out]`, and the tap's kernel
            // slice for input channels `c0..`, `[c_out, cols]`.
            let lhs = MatRef { data: &dy[p * co..], row_stride: pixels * co, col_stride: 1 };
            let rhs = MatRef { data: &kernel[tap * ci + c0..], row_stride: patch, col_stride: 1 };
            // SAFETY: this task alone writes input pixel q, channels c0..c0 + cols.
            unsafe { dst.gemm_add(q * ci + c0, in_pixels * ci, (s.batch, cols, co), lhs, rhs) };
        }
    });
    Ok(dx)
}

/// The kernel gradient `[c_out, kh, kw, c_in]` of a geometry [`applies`] accepts.
pub(super) fn backward_filter<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    let (ci, co, pixels) = (s.in_channels, s.out_channels, s.out_h * s.out_w);
    let (in_image, patch) = (s.in_h * s.in_w * ci, s.kernel_h * s.kernel_w * ci);
    let mut dw = try_zeros("conv2d_backward_filter", co * patch)?;
    let runs: Vec<Vec<TapRun>> = (0..pixels).map(|p| tap_runs(s, p / s.out_w, p % s.out_w)).collect();
    let (row_width, col_width) = (block_width(co, 4), block_width(ci, 4));
    let (row_blocks, col_blocks) = (co.div_ceil(row_width), ci.div_ceil(col_width));
    let dst = Disjoint::new(&mut dw);
    (0..row_blocks * col_blocks).into_par_iter().for_each(|task| {
        let (r0, c0) = (task / col_blocks * row_width, task % col_blocks * col_width);
        let (rows, cols) = (row_width.min(co - r0), col_width.min(ci - c0));
        for (p, runs) in runs.iter().enumerate() {
            for run in runs {
                for j in 0..run.len {
                    // dy at output pixel p, transposed, `[rows, batch]`, and the input
                    // pixel this tap reads there, `[batch, cols]`.
                    let lhs = MatRef { data: &dy[p * co + r0..], row_stride: 1, col_stride: pixels * co };
                    let src = (run.iy * s.in_w + run.ix0 + j) * ci + c0;
                    let rhs = MatRef { data: &x[src..], row_stride: in_image, col_stride: 1 };
                    let tap = run.ky * s.kernel_w + run.kx0 + j;
                    // SAFETY: this task alone writes output channels r0.., input channels c0..
                    unsafe { dst.gemm_add(r0 * patch + tap * ci + c0, patch, (rows, cols, s.batch), lhs, rhs) };
                }
            }
        }
    });
    Ok(dw)
}
