//! The kernel gradient of a Winograd-shaped convolution (3x3, stride 1) with Winograd's
//! algorithm.
//!
//! The forward output tile is `Y = A^T [U * V] A` with `U = G g G^T` and `V = B^T d B`;
//! it is linear in the kernel `g`, so (the transposition principle) the kernel gradient
//! of one tile is `G^T [V * (A dy A^T)] G`, `dy` the tile's output gradient. Summed over
//! tiles and images, the `(m + 2)^2` positions' elementwise products become
//! `(m + 2)^2` GEMMs `Û[p] [c_out, c_in] += M[p]^T [c_out, tiles] @ V[p] [tiles, c_in]`
//! (`M = A dy A^T`, zero past the map's edge, where the forward drops its overhang),
//! then each `(c_out, c_in)` pair's `Û` goes back to 3x3 through `G^T . G` (in f64,
//! rounded once). Products per kernel tap and tile: `(m + 2)^2` against `9 m^2` for
//! im2col (F2: 16 vs 36, F4: 36 vs 144).
//!
//! The GEMMs sum over every tile of the batch (a long `K`). The batch is cut into chunks of
//! whole images by the shape alone ([`CHUNK_BUDGET`]); the chunks run one after another,
//! each adding its GEMMs into `Û` in chunk order, and within a chunk the transforms run in
//! parallel over images and the GEMMs over positions (each single-threaded, each writing
//! its own position's block). No sum crosses threads: the bits do not depend on the
//! thread count.
//!
//! Rounding: the two data transforms add and scale values before the products, so f32
//! results differ from im2col by more than its rounding (F4 more than F2);
//! `docs/performance.md` has the measured errors. [`select_kernel_gradient`] only picks
//! Winograd for f32.

use super::isa::Isa;
use super::transforms::{kernel_adjoint_tile, Variant, F2, F4, MAX_ALPHA};
use super::{applies, select, Tiles, Tiling};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::{ensure_len, gemm_into, MatRef};
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::{Element, FloatElement, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Elements of one chunk's two transformed operands together (8 MiB of f32): the GEMMs'
/// `K` is the chunk's tile count, and each chunk re-reads and re-writes the whole `Û`
/// (up to `36 * c_out * c_in`), so chunks are larger than the forward's.
const CHUNK_BUDGET: usize = 1 << 21;

/// The variant to compute the kernel gradient of `s` with in element type `T`, or `None`
/// for im2col + GEMM: the forward pass's choice ([`select`]), which the measurements on the
/// seed's shapes at batch 64 (`tests::seed_kernel_gradient_timings`, docs/performance.md)
/// confirmed: F4 at 15x15 and 8x8 (1.3-2x faster than im2col), F2 at 4x4 (F4's single tile
/// per image gives GEMMs of 64 rows), im2col at 2x2 (F2 1.7x, F4 4x slower) and in f64.
pub(crate) fn select_kernel_gradient<T: FloatElement>(s: &Conv2dSpec) -> Option<Tiling> {
    select::<T>(s)
}

/// The kernel gradient `[c_out, 3, 3, c_in]` of the convolution `s` of `x`
/// (`[batch, in_h, in_w, c_in]`) given its output gradient `dy`, computed with `tiling`;
/// `s` must be one `select_kernel_gradient` can accept.
pub(crate) fn conv2d_backward_filter<T: FloatElement + ZeroBits>(
    x: &[T],
    dy: &[T],
    s: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    backward_filter_with(Isa::detect(), x, dy, s, tiling)
}

/// [`conv2d_backward_filter`] with its transforms compiled for `isa`.
pub(super) fn backward_filter_with<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    dy: &[T],
    s: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    assert!(applies(s), "winograd::conv2d_backward_filter: not a 3x3 stride-1 dense convolution");
    match tiling {
        Tiling::F2 => run::<F2, T>(isa, x, dy, s),
        Tiling::F4 => run::<F4, T>(isa, x, dy, s),
    }
}

/// The kernel gradient under variant `V`: per chunk, both data transforms and one
/// accumulating GEMM per position; then the kernel-side back-transform.
fn run<V: Variant, T: FloatElement + ZeroBits>(isa: Isa, x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_filter";
    let (ci, co) = (s.in_channels, s.out_channels);
    let mut dw = try_zeros(OP, co * 9 * ci)?;
    let tiles = Tiles::new::<V>(s);
    if dw.is_empty() || s.batch * tiles.per_image() == 0 {
        return Ok(dw);
    }
    let positions = tiles.positions;
    let (in_image, out_image) = (s.in_h * s.in_w * ci, s.out_h * s.out_w * co);
    let per_image = positions * tiles.per_image() * (ci + co);
    let chunk_images = (CHUNK_BUDGET / per_image).clamp(1, s.batch);
    // Û, position-major: [position, c_out, c_in], each GEMM's destination contiguous.
    let mut acc = try_zeros(OP, positions * co * ci)?;
    let (mut v, mut m) = (Vec::new(), Vec::new());
    let chunk_tiles = chunk_images * tiles.per_image();
    ensure_len(OP, &mut v, chunk_tiles * positions * ci)?;
    ensure_len(OP, &mut m, chunk_tiles * positions * co)?;
    for first in (0..s.batch).step_by(chunk_images) {
        let images = chunk_images.min(s.batch - first);
        let n = images * tiles.per_image();
        // Both transformed operands tile-major: [tile, position, channel].
        let v = &mut v[..n * positions * ci];
        v.par_chunks_mut(tiles.per_image() * positions * ci)
            .enumerate()
            .for_each(|(b, v)| isa.transform_image::<V, T>(&x[(first + b) * in_image..], s, tiles, v));
        let m = &mut m[..n * positions * co];
        m.par_chunks_mut(tiles.per_image() * positions * co).enumerate().for_each(|(b, m)| {
            isa.transform_gradient_image::<V, T>(&dy[(first + b) * out_image..][..out_image], s, tiles, m)
        });
        let (v, m) = (&*v, &*m);
        acc.par_chunks_mut(co * ci).enumerate().for_each(|(p, dst)| {
            let lhs = MatRef { data: &m[p * co..], row_stride: 1, col_stride: positions * co };
            let rhs = MatRef { data: &v[p * ci..], row_stride: positions * ci, col_stride: 1 };
            gemm_into(dst, ci, (co, ci, n), lhs, rhs, true, Parallelism::None);
        });
    }
    let acc = &acc;
    dw.par_chunks_mut(9 * ci).enumerate().for_each(|(o, dst)| {
        for c in 0..ci {
            let at = |r: usize, col: usize| ((r * V::ALPHA + col) * co + o) * ci + c;
            let u: [[f64; MAX_ALPHA]; MAX_ALPHA] =
                std::array::from_fn(|r| {
                    std::array::from_fn(|col| {
                        if r < V::ALPHA && col < V::ALPHA {
                            Element::to_f64(acc[at(r, col)])
                        } else {
                            0.0
                        }
                    })
                });
            for (ky, row) in kernel_adjoint_tile::<V>(u).iter().enumerate() {
                for (kx, &tap) in row.iter().enumerate() {
                    dst[(ky * 3 + kx) * ci + c] = T::from_f64(tap);
                }
            }
        }
    });
    Ok(dw)
}
