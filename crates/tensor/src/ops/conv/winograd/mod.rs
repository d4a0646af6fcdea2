//! Winograd convolution on the CPU: 3x3 kernels, stride 1, no dilation, one group, NHWC.
//!
//! The output is cut into `m x m` tiles (F(2x2,3x3): m = 2, F(4x4,3x3): m = 4); the
//! tile's `(m + 2)^2` input pixels, transformed (`B^T d B`), meet the transformed kernel
//! (`G g G^T`) elementwise, and the output transform (`A^T . A`) turns the products back
//! into the tile. Summed over input channels, the elementwise products of the `(m + 2)^2`
//! positions are `(m + 2)^2` independent GEMMs `[tiles, c_in] @ [c_in, c_out]`, run by the
//! `gemm` crate: 16 products per 4 outputs (F2) or 36 per 16 (F4), against 9 per output
//! for direct convolution, for the price of the two data transforms (see `transforms`).
//!
//! The batch is cut into chunks of whole images whose transformed input and products stay
//! within [`CHUNK_BUDGET`] elements, allocated once per call (fallibly). Within a chunk
//! each step runs in parallel: the input transform over images, the GEMMs over tile
//! positions (each single-threaded), the output transform over images. The chunking
//! depends on the shape alone and no sum crosses threads, so the result is the same for
//! every thread count.
//!
//! The kernel gradient runs the transposed algorithm (`kernel_gradient`): the same input
//! transform, the output-gradient tiles through `A . A^T`, one GEMM per position summing
//! over tiles, and `G^T . G` back to 3x3.
//!
//! Rounding: the transforms add and scale values before the products, so f32 results
//! differ from direct convolution by more than one rounding (F4 more than F2);
//! `docs/performance.md` has the measured errors. `select` only picks Winograd for f32.

mod images;
mod isa;
mod kernel_gradient;
mod transforms;

#[cfg(test)]
mod tests;

use super::cpu::{ensure_len, gemm_into, MatRef};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::{DType, FloatElement, Result};
use gemm::Parallelism;
use isa::Isa;
use rayon::prelude::*;
use transforms::{Variant, F2, F4};

pub(crate) use kernel_gradient::{conv2d_backward_filter, select_kernel_gradient};

/// Elements of one chunk's transformed input and products together (2 MiB of f32): large
/// enough that each GEMM has a hundred rows or more, small enough to stay in cache.
const CHUNK_BUDGET: usize = 1 << 19;

/// The Winograd variant a convolution runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tiling {
    /// F(2x2,3x3).
    F2,
    /// F(4x4,3x3).
    F4,
}

/// Whether `s` is a convolution Winograd computes: 3x3, stride 1, no dilation, one group.
fn applies(s: &Conv2dSpec) -> bool {
    (s.kernel_h, s.kernel_w, s.stride_h, s.stride_w, s.dilation_h, s.dilation_w, s.groups) == (3, 3, 1, 1, 1, 1, 1)
}

/// The variant to run `s` with in element type `T`, or `None` for im2col + GEMM: f64
/// keeps the exact direct convolution (the gradient checks rely on it); few channels make
/// GEMMs too thin to pay for the transforms; and small maps waste most of a tile.
pub(crate) fn select<T: FloatElement>(s: &Conv2dSpec) -> Option<Tiling> {
    if T::DTYPE != DType::F32 || !applies(s) || s.in_channels < 16 || s.out_channels < 16 {
        return None;
    }
    // Measured on the seed's shapes (docs/performance.md): F4 from 8x8 maps up, F2 at
    // 4x4 (where F4's single tile costs more in transforms than it saves), im2col at 2x2
    // (one F2 tile for four outputs: no fewer products than the 4 real taps of each).
    let side = s.out_h.min(s.out_w);
    if side >= 8 {
        Some(Tiling::F4)
    } else if side >= 3 {
        Some(Tiling::F2)
    } else {
        None
    }
}

/// The forward convolution `[batch, out_h, out_w, c_out]` computed with `tiling`; `s`
/// must be one `applies` accepts.
pub(crate) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    conv2d_with(Isa::detect(), x, kernel, bias, s, tiling)
}

/// [`conv2d`] with its transforms compiled for `isa`.
fn conv2d_with<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    assert!(applies(s), "winograd::conv2d: not a 3x3 stride-1 dense convolution");
    match tiling {
        Tiling::F2 => run::<F2, T>(isa, x, kernel, bias, s),
        Tiling::F4 => run::<F4, T>(isa, x, kernel, bias, s),
    }
}

/// Tile counts of one convolution under variant `V`.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    /// Tiles down and across one image.
    rows: usize,
    cols: usize,
    /// Tile positions, `ALPHA^2`.
    positions: usize,
}

impl Tiles {
    fn new<V: Variant>(s: &Conv2dSpec) -> Self {
        Tiles { rows: s.out_h.div_ceil(V::M), cols: s.out_w.div_ceil(V::M), positions: V::ALPHA * V::ALPHA }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }
}

/// The convolution under variant `V`, chunk by chunk: input transform, one GEMM per tile
/// position, output transform. A chunk is at least one image, so an image larger than
/// the budget gets a workspace of its own size and a serial transform.
fn run<V: Variant, T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d";
    let (ci, co) = (s.in_channels, s.out_channels);
    let out_image = s.out_h * s.out_w * co;
    let mut out = try_zeros(OP, s.batch * out_image)?;
    if out.is_empty() {
        return Ok(out);
    }
    let tiles = Tiles::new::<V>(s);
    let u = images::transform_kernel::<V, T>(kernel, s)?;
    let per_image = tiles.positions * tiles.per_image() * (ci + co);
    let chunk_images = (CHUNK_BUDGET / per_image).clamp(1, s.batch);
    let (mut v, mut m) = (Vec::new(), Vec::new());
    let chunk_tiles = chunk_images * tiles.per_image();
    ensure_len(OP, &mut v, chunk_tiles * tiles.positions * ci)?;
    ensure_len(OP, &mut m, chunk_tiles * tiles.positions * co)?;
    for (chunk, dst) in out.chunks_mut(chunk_images * out_image).enumerate() {
        let first = chunk * chunk_images;
        let images = dst.len() / out_image;
        let n = images * tiles.per_image();
        // Transformed input, tile-major: [tile, position, c_in].
        let v = &mut v[..n * tiles.positions * ci];
        v.par_chunks_mut(tiles.per_image() * tiles.positions * ci)
            .enumerate()
            .for_each(|(b, v)| isa.transform_image::<V, T>(&x[(first + b) * s.in_h * s.in_w * ci..], s, tiles, v));
        // Products, position-major: [position, tile, c_out]; one GEMM per position.
        let m = &mut m[..n * tiles.positions * co];
        m.par_chunks_mut(n * co).enumerate().for_each(|(p, dst)| {
            let lhs = MatRef { data: &v[p * ci..], row_stride: tiles.positions * ci, col_stride: 1 };
            let rhs = MatRef { data: &u[p * co..], row_stride: tiles.positions * co, col_stride: 1 };
            gemm_into(dst, co, (n, co, ci), lhs, rhs, false, Parallelism::None);
        });
        let m = &*m;
        dst.par_chunks_mut(out_image)
            .enumerate()
            .for_each(|(b, dst)| isa.untransform_image::<V, T>(m, (b, n), bias, s, tiles, dst));
    }
    Ok(out)
}
