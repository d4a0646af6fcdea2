//! CPU kernels of convolutions whose windows tile the input without overlap: kernel size
//! equal to the stride, no dilation, no padding, one group (the convolution behind a 2x2
//! stride-2 `Conv2DTranspose`, or a patch embedding). Each output pixel reads its own
//! `kh x kw` block of input pixels and each input pixel is read by at most one output
//! pixel (the bottom/right rows and columns that 'valid' drops by none), so im2col is a
//! permutation (space-to-depth) and col2im a scatter without sums (depth-to-space):
//! - forward: gather the blocks of a run of output rows, then one GEMM with `kernel^T`;
//! - input gradient (the transposed convolution): one GEMM `dy @ kernel` into a buffer,
//!   then copy each block into place; what no block covers stays zero;
//! - kernel gradient: gather, then `dy^T @ cols`.
//!
//! The work is cut into runs of output rows (`(image, row)` pairs), not whole images, so
//! that every thread has work at batch 1 and each run's buffer stays in cache; the
//! generic path (cpu.rs) makes one batch-sized column buffer for these shapes and gathers
//! or scatters it on one thread.

#[cfg(test)]
mod tests;

use super::cpu::{ensure_len, gemm_into, MatRef};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_with_capacity, try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Elements of one run's buffer, at most (256 KiB of f32): it stays in a core's L2.
const RUN_BUDGET: usize = 1 << 16;

/// Runs the rows are split into at least (where there are that many), enough to keep 16
/// threads busy.
const MIN_RUNS: usize = 16;

/// Runs (partial sums) the kernel gradient's sum over pixels is cut into, at most.
const FILTER_RUNS: usize = 16;

/// Elements of the kernel gradient's partial sums together, at most (8 MiB of f32).
const FILTER_PARTIALS_BUDGET: usize = 1 << 21;

/// Whether the windows of a convolution tile its input without overlap (and are not 1x1:
/// a pointwise convolution needs no gather at all, cpu.rs reads its input in place).
pub(super) fn applies(s: &Conv2dSpec) -> bool {
    s.groups == 1
        && s.kernel_h == s.stride_h
        && s.kernel_w == s.stride_w
        && s.kernel_h * s.kernel_w > 1
        && s.dilation_h == 1
        && s.dilation_w == 1
        && s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0
}

/// Sizes shared by the three kernels.
#[derive(Clone, Copy)]
struct Tiles {
    /// Output rows over the batch (`(image, row)` pairs).
    rows: usize,
    /// Output pixels of one output row.
    row_pixels: usize,
    /// Elements of one patch, `kh * kw * c_in`.
    patch: usize,
    /// Elements of one kernel row of a patch, `kw * c_in`: contiguous in the input.
    block_row: usize,
    /// Elements of one input row, `in_w * c_in`.
    in_row: usize,
    /// Elements of one input image.
    in_image: usize,
}

impl Tiles {
    fn new(s: &Conv2dSpec) -> Self {
        Tiles {
            rows: s.batch * s.out_h,
            row_pixels: s.out_w,
            patch: s.kernel_h * s.kernel_w * s.in_channels,
            block_row: s.kernel_w * s.in_channels,
            in_row: s.in_w * s.in_channels,
            in_image: s.in_h * s.in_w * s.in_channels,
        }
    }

    /// Output rows per run from the buffer budget alone.
    fn budget_rows(&self) -> usize {
        (RUN_BUDGET / (self.row_pixels * self.patch).max(1)).max(1)
    }

    /// Output rows per run for the forward pass and the input gradient: within the
    /// budget, and at least [`MIN_RUNS`] runs where there are enough rows. Set by the shape
    /// alone, never by the thread count: the GEMM's row count decides its blocking, and
    /// with it the bits of the result, which must not change with the pool's size.
    fn run_rows(&self) -> usize {
        self.budget_rows().min(self.rows.div_ceil(MIN_RUNS)).max(1)
    }

    /// Element offset in the input of the block row `ky` of output row `r`, pixel 0.
    fn block_start(&self, s: &Conv2dSpec, r: usize, ky: usize) -> usize {
        let (b, oy) = (r / s.out_h, r % s.out_h);
        b * self.in_image + (oy * s.kernel_h + ky) * self.in_row
    }

    /// Gathers the patches of output rows `first..first + count` into `col`
    /// (`[count * row_pixels, patch]`, im2col's layout): a copy of `kw * c_in` elements
    /// per pixel and kernel row.
    fn gather<T: Copy>(&self, x: &[T], s: &Conv2dSpec, (first, count): (usize, usize), col: &mut [T]) {
        let mut dst = col.chunks_exact_mut(self.patch);
        for r in first..first + count {
            for ox in 0..self.row_pixels {
                let patch = dst.next().expect("col holds count * row_pixels patches");
                for (ky, part) in patch.chunks_exact_mut(self.block_row).enumerate() {
                    let src = self.block_start(s, r, ky) + ox * self.block_row;
                    part.copy_from_slice(&x[src..src + self.block_row]);
                }
            }
        }
    }
}

/// The forward convolution: `[batch, out_h, out_w, c_out]`.
pub(super) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d";
    let t = Tiles::new(s);
    let co = s.out_channels;
    let mut out = try_zeros(OP, t.rows * t.row_pixels * co)?;
    if out.is_empty() {
        return Ok(out);
    }
    let run = t.run_rows();
    out.par_chunks_mut(run * t.row_pixels * co).enumerate().try_for_each_init(Vec::new, |col, (i, dst)| {
        let count = dst.len() / (t.row_pixels * co);
        let pixels = count * t.row_pixels;
        ensure_len(OP, col, pixels * t.patch)?;
        t.gather(x, s, (i * run, count), col);
        if let Some(b) = bias {
            for row in dst.chunks_exact_mut(co) {
                row.copy_from_slice(b);
            }
        }
        let (lhs, rhs) = (MatRef::row_major(&col[..pixels * t.patch], t.patch), MatRef::transposed(kernel, t.patch));
        gemm_into(dst, co, (pixels, co, t.patch), lhs, rhs, bias.is_some(), Parallelism::None);
        Ok(())
    })?;
    Ok(out)
}

/// The input gradient: `[batch, in_h, in_w, c_in]`, plus a per-channel `bias` `[c_in]`
/// (a transposed convolution's). Each run of output rows owns the input rows its blocks
/// cover; the rows and columns no block covers stay zero (or the bias).
pub(super) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    let t = Tiles::new(s);
    let co = s.out_channels;
    let mut dx = try_zeros(OP, s.batch * t.in_image)?;
    if dx.is_empty() || t.rows * t.row_pixels == 0 {
        return Ok(dx);
    }
    // The input rows of each output row, as disjoint slices (`kh` input rows each).
    let band = s.kernel_h * t.in_row;
    let mut bands: Vec<&mut [T]> = try_with_capacity(OP, t.rows)?;
    for image in dx.chunks_exact_mut(t.in_image) {
        bands.extend(image.chunks_exact_mut(band).take(s.out_h));
    }
    let run = t.run_rows();
    bands.par_chunks_mut(run).enumerate().try_for_each_init(Vec::new, |col, (i, bands)| {
        let pixels = bands.len() * t.row_pixels;
        let first = i * run * t.row_pixels;
        ensure_len(OP, col, pixels * t.patch)?;
        if let Some(b) = bias {
            // Every patch element is one input pixel's channel: start the sums at the bias.
            for px in col[..pixels * t.patch].chunks_exact_mut(s.in_channels) {
                px.copy_from_slice(b);
            }
        }
        let lhs = MatRef::row_major(&dy[first * co..(first + pixels) * co], co);
        let rhs = MatRef::row_major(kernel, t.patch);
        gemm_into(col, t.patch, (pixels, t.patch, co), lhs, rhs, bias.is_some(), Parallelism::None);
        let mut patches = col.chunks_exact(t.patch);
        for band in bands.iter_mut() {
            for ox in 0..t.row_pixels {
                let patch = patches.next().expect("col holds the run's patches");
                for (ky, part) in patch.chunks_exact(t.block_row).enumerate() {
                    let dst = ky * t.in_row + ox * t.block_row;
                    band[dst..dst + t.block_row].copy_from_slice(part);
                }
            }
        }
        Ok(())
    })?;
    if let Some(b) = bias {
        fill_uncovered(&mut dx, s, &t, b);
    }
    Ok(dx)
}

/// Sets the input pixels no block covers (the bottom rows and right columns that 'valid'
/// leaves out, if any) to `bias`.
fn fill_uncovered<T: Copy>(dx: &mut [T], s: &Conv2dSpec, t: &Tiles, bias: &[T]) {
    let (covered_h, covered_w) = (s.out_h * s.kernel_h, s.out_w * s.kernel_w);
    if covered_h == s.in_h && covered_w == s.in_w {
        return;
    }
    let c = s.in_channels;
    for image in dx.chunks_exact_mut(t.in_image) {
        for (y, row) in image.chunks_exact_mut(t.in_row).enumerate() {
            let from = if y < covered_h { covered_w } else { 0 };
            for px in row[from * c..].chunks_exact_mut(c) {
                px.copy_from_slice(bias);
            }
        }
    }
}

/// The kernel gradient: `[c_out, kh, kw, c_in]`. The output rows are cut into runs by the
/// shape alone; each run sums its products in order into its own buffer and the buffers
/// are added in run order, so the result does not depend on the thread count.
pub(super) fn conv2d_backward_filter<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_filter";
    let t = Tiles::new(s);
    let co = s.out_channels;
    let kernel_len = co * t.patch;
    let chunk = t.budget_rows();
    let chunks = t.rows.div_ceil(chunk);
    let runs = chunks.min(FILTER_RUNS).min(FILTER_PARTIALS_BUDGET / kernel_len.max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    // Too few runs to keep every thread busy: split each GEMM too. gemm splits over
    // output blocks only, so a split GEMM sums in the same order.
    let par = if threads > 1 && runs < 2 * threads { Parallelism::Rayon(threads) } else { Parallelism::None };
    let partial = |w: usize| -> Result<Vec<T>> {
        let mut acc = try_zeros(OP, kernel_len)?;
        let mut col = Vec::new();
        for c in chunks * w / runs..chunks * (w + 1) / runs {
            let first = c * chunk;
            let count = chunk.min(t.rows - first);
            let pixels = count * t.row_pixels;
            ensure_len(OP, &mut col, pixels * t.patch)?;
            t.gather(x, s, (first, count), &mut col);
            let p0 = first * t.row_pixels;
            let grad = MatRef { data: &dy[p0 * co..(p0 + pixels) * co], row_stride: 1, col_stride: co };
            let cols = MatRef::row_major(&col[..pixels * t.patch], t.patch);
            gemm_into(&mut acc, t.patch, (co, t.patch, pixels), grad, cols, true, par);
        }
        Ok(acc)
    };
    let partials: Vec<Result<Vec<T>>> = (0..runs).into_par_iter().map(partial).collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().expect("at least one run")?;
    for p in partials {
        for (d, &v) in total.iter_mut().zip(&p?) {
            *d = *d + v;
        }
    }
    Ok(total)
}
