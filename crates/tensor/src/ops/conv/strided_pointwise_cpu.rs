//! The input gradient of a 1x1 convolution with a stride above 1 or padding (the
//! ResNet's stride-2 shortcuts), written in one pass.
//!
//! Each output pixel reads one input pixel, so `dcols = dy @ kernel` holds one row per
//! output pixel and every input pixel gets either one such row or nothing. The generic
//! route (`backward_input_col2im`) zero-fills the whole input-sized gradient, which at
//! stride 2 is three-quarters zeros, and then adds the rows into it. Here each chunk's
//! GEMM runs as it does there (same chunks, same products: same bits), and then the
//! chunk's images are written once, front to back: a row of the GEMM's result where a
//! pixel was read, the bias (or zero) where none was. No zero-fill of the output, no
//! read-modify-write.

#[cfg(test)]
mod tests;

use super::cpu::{ensure_len, gemm_into, Geometry, MatRef};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_with_capacity, try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether this route applies: an ungrouped 1x1 convolution whose input is not its own
/// column matrix (a stride above 1 or some padding; the stride-1 unpadded case has no
/// scatter at all and keeps the generic kernel).
pub(super) fn applies(s: &Conv2dSpec) -> bool {
    let padded = s.pad_top + s.pad_bottom + s.pad_left + s.pad_right > 0;
    s.groups == 1 && s.kernel_h == 1 && s.kernel_w == 1 && (s.stride_h > 1 || s.stride_w > 1 || padded)
}

/// The output coordinate whose 1x1 window reads input coordinate `i` along one axis, if any.
#[inline]
fn reader(i: usize, stride: usize, pad: usize, out: usize) -> Option<usize> {
    let padded = i + pad;
    (padded.is_multiple_of(stride) && padded / stride < out).then_some(padded / stride)
}

/// The input gradient plus `bias` (`[c_in]`, a transposed convolution's) of a geometry
/// [`applies`] accepts: `[batch, in_h, in_w, c_in]`.
pub(super) fn backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    debug_assert!(applies(s), "strided_pointwise_cpu: not a strided or padded 1x1 convolution");
    let g = Geometry::new(s);
    let (ci, co) = (s.in_channels, s.out_channels);
    let len = s.batch * g.in_image;
    let mut dx = try_with_capacity::<T>(OP, len)?;
    if len == 0 {
        return Ok(dx);
    }
    let zeros = try_zeros::<T>(OP, ci)?;
    let start = bias.unwrap_or(&zeros);
    let chunk_len = g.chunk_images * g.in_image;
    dx.spare_capacity_mut()[..len].par_chunks_mut(chunk_len).enumerate().try_for_each_init(
        Vec::new,
        |col, (chunk, dst)| -> Result<()> {
            let first = chunk * g.chunk_images;
            let images = dst.len() / g.in_image;
            let rows = images * g.out_pixels;
            // The GEMM of `backward_input_col2im` for this chunk, into a packed buffer.
            let dyc = &dy[first * g.out_pixels * co..(first + images) * g.out_pixels * co];
            let lhs = MatRef::row_major(dyc, co);
            let rhs = MatRef::row_major(kernel, ci);
            ensure_len(OP, col, rows * ci)?;
            gemm_into(col, ci, (rows, ci, co), lhs, rhs, false, g.gemm_par);
            let col = &col[..rows * ci];
            let per_image = g.out_pixels * ci;
            if g.split_passes() && images > 1 {
                // As col2im does where the GEMM itself is split: the images in parallel.
                let pairs = dst.par_chunks_mut(g.in_image).zip(col.par_chunks(per_image));
                pairs.for_each(|(img, c)| write_image(c, s, start, img));
            } else {
                for (img, c) in dst.chunks_mut(g.in_image).zip(col.chunks(per_image)) {
                    write_image(c, s, start, img);
                }
            }
            Ok(())
        },
    )?;
    // SAFETY: the capacity is at least `len`; the chunks cover `0..len` and `write_image`
    // writes every element of each image it is given.
    unsafe { dx.set_len(len) };
    Ok(dx)
}

/// Writes one image of the input gradient: for each pixel, `start + row` of `col` (the
/// GEMM's rows of this image's output pixels) where an output pixel read it, else
/// `start` (the bias, or zeros). `start + v`, not `v`, so that the bits are those of
/// col2im adding into a buffer that starts at `start` (`0 + -0 = +0`).
fn write_image<T: FloatElement>(col: &[T], s: &Conv2dSpec, start: &[T], img: &mut [MaybeUninit<T>]) {
    let ci = s.in_channels;
    for (iy, row) in img.chunks_exact_mut(s.in_w * ci).enumerate() {
        let oy = reader(iy, s.stride_h, s.pad_top, s.out_h);
        for (ix, px) in row.chunks_exact_mut(ci).enumerate() {
            match oy.zip(reader(ix, s.stride_w, s.pad_left, s.out_w)) {
                Some((oy, ox)) => {
                    let src = &col[(oy * s.out_w + ox) * ci..][..ci];
                    for ((d, &b), &v) in px.iter_mut().zip(start).zip(src) {
                        d.write(b + v);
                    }
                }
                None => {
                    for (d, &b) in px.iter_mut().zip(start) {
                        d.write(b);
                    }
                }
            }
        }
    }
}
