//! A convolution and a kernel gradient of the same input, from one column matrix.
//!
//! The backward pass of a transposed convolution (`conv2d_backward_input` as a forward
//! op) needs both `conv2d(g, K)` (its input gradient) and `conv2d_backward_filter(g, x)`
//! (its kernel gradient): two products of the same im2col of `g`. Run apart, each gathers
//! that column matrix on its own; here each chunk is gathered once and feeds both GEMMs
//! while it is in cache:
//! - `out [rows, c_out] = cols @ kernel^T` (the chunk's own slice of the output),
//! - `dkernel += grad_out^T @ cols` (the run's partial sum).
//!
//! Each product must have the bits it has when it runs alone (a gradient asked for alone
//! equals the one computed with the others), so each GEMM is the one its own kernel runs:
//! the route applies where the chunks of `conv2d_im2col` (`Geometry::new`) and of
//! `backward_filter_im2col` (`Geometry::for_kernel_gradient`, by the shape alone) are the
//! same images; the kernel gradient's partial sums run and add in the same order, and each
//! GEMM keeps its own kernel's parallelism. Where the chunks differ (a few small images per
//! chunk) the caller runs the two apart.

use super::cpu::{add_assign, ensure_len, gemm_into, im2col, is_depthwise, Geometry, MatRef};
use super::{patch_cpu, small_map_cpu, winograd};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Whether the shared route applies: an ungrouped convolution that both products run
/// through im2col + GEMM, in chunks of the same images. Winograd's forward and kernel gradient, the tiling
/// case (`patch_cpu`, its own chunks), the tiny maps (`small_map_cpu`: no columns) and the pointwise case (no gather) keep their kernels.
fn applies<T: FloatElement>(s: &Conv2dSpec) -> bool {
    let pointwise = s.kernel_h == 1
        && s.kernel_w == 1
        && s.stride_h == 1
        && s.stride_w == 1
        && s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0;
    s.groups == 1
        && !is_depthwise(s)
        && !pointwise
        && !patch_cpu::applies(s)
        && !small_map_cpu::applies(s)
        && winograd::select::<T>(s).is_none()
        && winograd::select_kernel_gradient::<T>(s).is_none()
        && Geometry::new(s).chunk_images == Geometry::for_kernel_gradient(s).0.chunk_images
}

/// `(conv2d(input, kernel), conv2d_backward_filter(input, grad_out))` for the geometry `s`,
/// or `None` where the shared route does not apply (the caller runs the two apart).
pub(crate) fn conv2d_and_filter_grad<T: FloatElement + ZeroBits>(
    input: &[T],
    kernel: &[T],
    grad_out: &[T],
    s: &Conv2dSpec,
) -> Result<Option<(Vec<T>, Vec<T>)>> {
    const OP: &str = "conv2d_backward_filter";
    if !applies::<T>(s) {
        return Ok(None);
    }
    let (g, runs) = Geometry::for_kernel_gradient(s);
    let forward_par = Geometry::new(s).gemm_par;
    let co = s.out_channels;
    let out_image = g.out_pixels * co;
    let mut out = try_zeros("conv2d", s.batch * out_image)?;
    if out.is_empty() {
        return Ok(Some((out, try_zeros(OP, co * g.patch)?)));
    }
    let chunks = s.batch.div_ceil(g.chunk_images);
    // Run `w` owns chunks `chunks * w / runs ..`: its images and their slice of the output.
    let first_image = |w: usize| (chunks * w / runs * g.chunk_images).min(s.batch);
    let mut slices = Vec::with_capacity(runs);
    let mut rest = out.as_mut_slice();
    for w in 0..runs {
        let (head, tail) = rest.split_at_mut((first_image(w + 1) - first_image(w)) * out_image);
        slices.push((w, head));
        rest = tail;
    }
    let partial = |(w, dst): (usize, &mut [T])| -> Result<Vec<T>> {
        let mut acc = try_zeros(OP, co * g.patch)?;
        let mut col = Vec::new();
        let (start, end) = (first_image(w), first_image(w + 1));
        let mut first = start;
        while first < end {
            let images = g.chunk_images.min(end - first);
            let rows = images * g.out_pixels;
            ensure_len(OP, &mut col, rows * g.patch)?;
            im2col(input, s, &g, (first, images), 0, &mut col);
            let cols = MatRef::row_major(&col[..rows * g.patch], g.patch);
            let out_chunk = &mut dst[(first - start) * out_image..][..rows * co];
            let kernel_t = MatRef::transposed(kernel, g.patch);
            gemm_into(out_chunk, co, (rows, co, g.patch), cols, kernel_t, false, forward_par);
            let dyc = &grad_out[first * out_image..][..rows * co];
            let grad = MatRef { data: dyc, row_stride: 1, col_stride: co };
            gemm_into(&mut acc, g.patch, (co, g.patch, rows), grad, cols, true, g.gemm_par);
            first += images;
        }
        Ok(acc)
    };
    let partials: Vec<Result<Vec<T>>> = slices.into_par_iter().map(partial).collect();
    // The runs' partial sums added in run order, as `backward_filter_im2col` adds them.
    let mut total: Option<Vec<T>> = None;
    for p in partials {
        let p = p?;
        match total.as_mut() {
            Some(sum) => add_assign(sum, &p),
            None => total = Some(p),
        }
    }
    let total = match total {
        Some(sum) => sum,
        None => try_zeros(OP, co * g.patch)?,
    };
    Ok(Some((out, total)))
}

#[cfg(test)]
mod tests;
