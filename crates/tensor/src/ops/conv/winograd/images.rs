//! The per-image steps of a Winograd convolution: the kernel transform, the input
//! transform of an image's tiles, and the output transform back into its pixels.

use super::transforms::{
    block, block_mut, gradient_tile, input_tile, kernel_tile, output_tile, Lane, Tile, Variant, LANES, ROW,
};
use super::{KernelLayout, Tiles};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::{Element, FloatElement, Result};
use rayon::prelude::*;

/// `G g G^T` of every (output, input) channel pair: `[c_in, position, c_out]`, so that
/// each position's GEMM reads its right-hand matrix `[c_in, c_out]` with rows
/// `positions * c_out` apart. Computed in f64 and rounded once; in parallel over input
/// channels, each writing its own contiguous block in output-channel order (the deep
/// layers' kernels hold millions of taps).
///
/// `kernel` is in `layout`: this convolution's own `[c_out, 3, 3, c_in]`, or the kernel of
/// the convolution whose input gradient this one is, read flipped in place.
pub(super) fn transform_kernel<V: Variant, T: FloatElement + ZeroBits>(
    kernel: &[T],
    s: &Conv2dSpec,
    layout: KernelLayout,
) -> Result<Vec<T>> {
    let (ci, co) = (s.in_channels, s.out_channels);
    let positions = V::ALPHA * V::ALPHA;
    let mut u = try_zeros("conv2d", positions * ci * co)?;
    u.par_chunks_mut(positions * co).enumerate().for_each(|(c, dst)| {
        for o in 0..co {
            let tap = |ky: usize, kx: usize| {
                Element::to_f64(match layout {
                    KernelLayout::Own => kernel[((o * 3 + ky) * 3 + kx) * ci + c],
                    // `[c_in, 3, 3, c_out]` of this convolution, taps reversed.
                    KernelLayout::FlippedForward => kernel[((c * 3 + 2 - ky) * 3 + 2 - kx) * co + o],
                })
            };
            let t = kernel_tile::<V>(std::array::from_fn(|ky| std::array::from_fn(|kx| tap(ky, kx))));
            for (r, row) in t.iter().enumerate().take(V::ALPHA) {
                for (col, &value) in row.iter().enumerate().take(V::ALPHA) {
                    dst[(r * V::ALPHA + col) * co + o] = T::from_f64(value);
                }
            }
        }
    });
    Ok(u)
}

/// `src` (at most [`LANES`] values) into a block, zeros after it. A full block is one
/// fixed-size copy: a copy of run-time length became a `memcpy` call. The partial
/// block (a channel tail) is kept out of line, so that the full blocks' loops stay plain
/// vector loads and stores (with it inlined, they compiled to masked scatters).
#[inline(always)]
fn load<T: FloatElement>(lane: &mut Lane<T>, src: &[T]) {
    match src.first_chunk::<LANES>() {
        Some(full) => *lane = *full,
        None => load_partial(lane, src),
    }
}

#[inline(never)]
fn load_partial<T: FloatElement>(lane: &mut Lane<T>, src: &[T]) {
    *lane = [T::zero(); LANES];
    lane[..src.len()].copy_from_slice(src);
}

/// The first `dst.len()` (at most [`LANES`]) values of a block into `dst`.
#[inline(always)]
fn store<T: FloatElement>(dst: &mut [T], lane: &Lane<T>) {
    match dst.first_chunk_mut::<LANES>() {
        Some(full) => *full = *lane,
        None => store_partial(dst, lane),
    }
}

#[inline(never)]
fn store_partial<T: FloatElement>(dst: &mut [T], lane: &Lane<T>) {
    let width = dst.len();
    dst.copy_from_slice(&lane[..width]);
}

/// The transformed tiles of one image `x` (`[in_h, in_w, c_in]` and beyond) into `v`
/// (`[tile, position, c_in]`); pixels outside the image (padding, the last tiles'
/// overhang) read as zeros.
#[inline(always)]
pub(super) fn transform_image<V: Variant, T: FloatElement>(x: &[T], s: &Conv2dSpec, tiles: Tiles, v: &mut [T]) {
    let ci = s.in_channels;
    let mut d: Tile<T> = [[T::zero(); ROW]; super::transforms::MAX_ALPHA];
    let mut tile_out = v.chunks_exact_mut(tiles.positions * ci);
    for ty in 0..tiles.rows {
        for tx in 0..tiles.cols {
            let dst = tile_out.next().expect("v holds one block per tile");
            let y0 = (ty * V::M) as isize - s.pad_top as isize;
            let x0 = (tx * V::M) as isize - s.pad_left as isize;
            for c0 in (0..ci).step_by(LANES) {
                let width = LANES.min(ci - c0);
                for (r, row) in d.iter_mut().enumerate().take(V::ALPHA) {
                    let iy = y0 + r as isize;
                    for col in 0..V::ALPHA {
                        let pixel = block_mut(row, col);
                        let ix = x0 + col as isize;
                        if iy >= 0 && iy < s.in_h as isize && ix >= 0 && ix < s.in_w as isize {
                            let at = (iy as usize * s.in_w + ix as usize) * ci + c0;
                            load(pixel, &x[at..at + width]);
                        } else {
                            *pixel = [T::zero(); LANES];
                        }
                    }
                }
                input_tile::<V, T>(&mut d);
                for (r, row) in d.iter().enumerate().take(V::ALPHA) {
                    for col in 0..V::ALPHA {
                        store(&mut dst[(r * V::ALPHA + col) * ci + c0..][..width], &block(row, col));
                    }
                }
            }
        }
    }
}

/// The transformed output-gradient tiles of one image `dy` (`[out_h, out_w, c_out]`) into
/// `m` (`[tile, position, c_out]`): `A dy A^T` per tile, the kernel gradient's counterpart
/// of [`transform_image`]. Pixels past the map (the last tiles' overhang, which
/// [`untransform_image`] drops) read as zeros: no gradient flows from them.
#[inline(always)]
pub(super) fn transform_gradient_image<V: Variant, T: FloatElement>(
    dy: &[T],
    s: &Conv2dSpec,
    tiles: Tiles,
    m: &mut [T],
) {
    let co = s.out_channels;
    let mut d: Tile<T> = [[T::zero(); ROW]; super::transforms::MAX_ALPHA];
    let mut tile_out = m.chunks_exact_mut(tiles.positions * co);
    for ty in 0..tiles.rows {
        for tx in 0..tiles.cols {
            let dst = tile_out.next().expect("m holds one block per tile");
            for c0 in (0..co).step_by(LANES) {
                let width = LANES.min(co - c0);
                // Only the top-left M x M blocks are read by the transform.
                for (r, row) in d.iter_mut().enumerate().take(V::M) {
                    let oy = ty * V::M + r;
                    for col in 0..V::M {
                        let ox = tx * V::M + col;
                        let pixel = block_mut(row, col);
                        if oy < s.out_h && ox < s.out_w {
                            let at = (oy * s.out_w + ox) * co + c0;
                            load(pixel, &dy[at..at + width]);
                        } else {
                            *pixel = [T::zero(); LANES];
                        }
                    }
                }
                gradient_tile::<V, T>(&mut d);
                for (r, row) in d.iter().enumerate().take(V::ALPHA) {
                    for col in 0..V::ALPHA {
                        store(&mut dst[(r * V::ALPHA + col) * co + c0..][..width], &block(row, col));
                    }
                }
            }
        }
    }
}

/// The output tiles of image `b` of a chunk of `n` tiles from the products `m`
/// (`[position, tile, c_out]`), plus the bias, into `dst` (`[out_h, out_w, c_out]`); the
/// last tiles' overhang is dropped.
#[inline(always)]
pub(super) fn untransform_image<V: Variant, T: FloatElement>(
    m: &[T],
    (b, n): (usize, usize),
    bias: Option<&[T]>,
    s: &Conv2dSpec,
    tiles: Tiles,
    dst: &mut [T],
) {
    let co = s.out_channels;
    let mut p: Tile<T> = [[T::zero(); ROW]; super::transforms::MAX_ALPHA];
    for ty in 0..tiles.rows {
        for tx in 0..tiles.cols {
            let tile = (b * tiles.rows + ty) * tiles.cols + tx;
            for c0 in (0..co).step_by(LANES) {
                let width = LANES.min(co - c0);
                for (r, row) in p.iter_mut().enumerate().take(V::ALPHA) {
                    for col in 0..V::ALPHA {
                        let at = ((r * V::ALPHA + col) * n + tile) * co + c0;
                        load(block_mut(row, col), &m[at..at + width]);
                    }
                }
                output_tile::<V, T>(&mut p);
                let mut shift: Lane<T> = [T::zero(); LANES];
                if let Some(bias) = bias {
                    load(&mut shift, &bias[c0..c0 + width]);
                }
                for (r, row) in p.iter().enumerate().take(V::M) {
                    let oy = ty * V::M + r;
                    if oy >= s.out_h {
                        break;
                    }
                    for col in 0..V::M {
                        let ox = tx * V::M + col;
                        if ox >= s.out_w {
                            break;
                        }
                        let lane = block(row, col);
                        let y: Lane<T> = std::array::from_fn(|i| lane[i] + shift[i]);
                        store(&mut dst[(oy * s.out_w + ox) * co + c0..][..width], &y);
                    }
                }
            }
        }
    }
}
