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
//! within [`CHUNK_BUDGET`] elements, allocated once per call (fallibly). Where there are
//! at least two chunks per thread, each thread runs whole chunks; otherwise within a chunk
//! each step runs in parallel: the input transform over images, the GEMMs over tile
//! positions (each single-threaded), the output transform over images. No sum crosses
//! threads or depends on a chunk's size, so the result is the same for every thread
//! count.
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

/// How the kernel given to [`run`] is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KernelLayout {
    /// The convolution's own kernel, `[c_out, 3, 3, c_in]`.
    Own,
    /// The kernel of the convolution whose input gradient this one is: `[c_in, 3, 3,
    /// c_out]` of this one, taps reversed. The kernel transform reads it flipped in place,
    /// so no flipped copy is made.
    FlippedForward,
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
    conv2d_with(Isa::detect(), x, kernel, KernelLayout::Own, bias, s, tiling)
}

/// The input gradient of a stride-1 convolution with kernel `kernel`, as the convolution
/// `flipped` (its `backward_input_geometry`) of `dy`, computed with `tiling`: the same
/// bits as [`conv2d`] with the flipped kernel.
pub(crate) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    flipped: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    conv2d_with(Isa::detect(), dy, kernel, KernelLayout::FlippedForward, bias, flipped, tiling)
}

/// [`conv2d`] with its transforms compiled for `isa` and its kernel in `layout`.
fn conv2d_with<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    kernel: &[T],
    layout: KernelLayout,
    bias: Option<&[T]>,
    s: &Conv2dSpec,
    tiling: Tiling,
) -> Result<Vec<T>> {
    assert!(applies(s), "winograd::conv2d: not a 3x3 stride-1 dense convolution");
    match tiling {
        Tiling::F2 => run::<F2, T>(isa, x, (kernel, layout), bias, s),
        Tiling::F4 => run::<F4, T>(isa, x, (kernel, layout), bias, s),
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
///
/// Where the batch makes at least two chunks per thread, each thread runs whole chunks,
/// all three steps on its own workspace, and the batch is cut into a multiple of the
/// thread count of chunks of equal size (to an image); otherwise the chunks run one after another, each step in parallel. A chunk's
/// size only sets the row count of its GEMMs, and `gemm` sums each output along its inner
/// dimension in an order set by that dimension alone, so both ways give the same bits.
/// Why: at 2 threads the seed's 15x15 64-channel layers (10 chunks of at most 7 images,
/// 36 GEMMs of 112 rows each) spent a third of their time at the three barriers of each
/// chunk and in the last thread's share of 7 images.
fn run<V: Variant, T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    (kernel, layout): (&[T], KernelLayout),
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
    let u = images::transform_kernel::<V, T>(kernel, s, layout)?;
    let per_image = tiles.positions * tiles.per_image() * (ci + co);
    let chunk_images = (CHUNK_BUDGET / per_image).clamp(1, s.batch);
    let chunks = s.batch.div_ceil(chunk_images);
    let threads = rayon::current_num_threads();
    let chunk = Chunk { isa, x, u: &u, bias, s, tiles };
    if threads > 1 && chunks >= 2 * threads {
        // A multiple of the thread count of chunks, their sizes differing by one image at
        // most, so that every thread gets the same work (5 chunks on 2 threads would
        // leave one thread 3 to the other's 2).
        let chunks = chunks.next_multiple_of(threads).min(s.batch);
        let (small, extra) = (s.batch / chunks, s.batch % chunks);
        let mut pieces = Vec::with_capacity(chunks);
        let mut rest = &mut out[..];
        let mut first = 0;
        for c in 0..chunks {
            let images = small + usize::from(c < extra);
            let (piece, tail) = rest.split_at_mut(images * out_image);
            pieces.push((first, piece));
            (rest, first) = (tail, first + images);
        }
        pieces.into_par_iter().try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(v, m), (first, dst)| chunk.run_serial::<V>(first, dst, v, m),
        )?;
        return Ok(out);
    }
    let (mut v, mut m) = (Vec::new(), Vec::new());
    for (c, dst) in out.chunks_mut(chunk_images * out_image).enumerate() {
        chunk.run_parallel::<V>(c * chunk_images, dst, &mut v, &mut m)?;
    }
    Ok(out)
}

/// What every chunk of one [`run`] shares.
struct Chunk<'a, T> {
    isa: Isa,
    x: &'a [T],
    /// The transformed kernel, position-major: `[position, c_in, c_out]`.
    u: &'a [T],
    bias: Option<&'a [T]>,
    s: &'a Conv2dSpec,
    tiles: Tiles,
}

impl<T: FloatElement + ZeroBits> Chunk<'_, T> {
    /// The images from `first` that `dst` holds, each step in parallel.
    fn run_parallel<V: Variant>(&self, first: usize, dst: &mut [T], v: &mut Vec<T>, m: &mut Vec<T>) -> Result<()> {
        let (s, tiles, isa) = (self.s, self.tiles, self.isa);
        let (n, out_image, v, m) = self.workspaces(dst.len(), v, m)?;
        let ci = s.in_channels;
        v.par_chunks_mut(tiles.per_image() * tiles.positions * ci)
            .enumerate()
            .for_each(|(b, v)| isa.transform_image::<V, T>(&self.x[(first + b) * s.in_h * s.in_w * ci..], s, tiles, v));
        m.par_chunks_mut(n * s.out_channels).enumerate().for_each(|(p, dst)| self.product(p, n, v, dst));
        let m = &*m;
        dst.par_chunks_mut(out_image)
            .enumerate()
            .for_each(|(b, dst)| isa.untransform_image::<V, T>(m, (b, n), self.bias, s, tiles, dst));
        Ok(())
    }

    /// The images from `first` that `dst` holds, on the calling thread.
    fn run_serial<V: Variant>(&self, first: usize, dst: &mut [T], v: &mut Vec<T>, m: &mut Vec<T>) -> Result<()> {
        let (s, tiles, isa) = (self.s, self.tiles, self.isa);
        let (n, out_image, v, m) = self.workspaces(dst.len(), v, m)?;
        let ci = s.in_channels;
        for (b, v) in v.chunks_mut(tiles.per_image() * tiles.positions * ci).enumerate() {
            isa.transform_image::<V, T>(&self.x[(first + b) * s.in_h * s.in_w * ci..], s, tiles, v);
        }
        for (p, dst) in m.chunks_mut(n * s.out_channels).enumerate() {
            self.product(p, n, v, dst);
        }
        for (b, dst) in dst.chunks_mut(out_image).enumerate() {
            isa.untransform_image::<V, T>(m, (b, n), self.bias, s, tiles, dst);
        }
        Ok(())
    }

    /// For an output chunk of `dst_len` elements: its tile count `n`, the elements of one
    /// output image, and the chunk's transformed input (tile-major: `[tile, position,
    /// c_in]`) and products (position-major: `[position, tile, c_out]`, one GEMM per
    /// position) within the workspaces `v` and `m`, grown as needed.
    fn workspaces<'w>(
        &self,
        dst_len: usize,
        v: &'w mut Vec<T>,
        m: &'w mut Vec<T>,
    ) -> Result<(usize, usize, &'w mut [T], &'w mut [T])> {
        let (s, positions) = (self.s, self.tiles.positions);
        let out_image = s.out_h * s.out_w * s.out_channels;
        let n = dst_len / out_image * self.tiles.per_image();
        ensure_len("conv2d", v, n * positions * s.in_channels)?;
        ensure_len("conv2d", m, n * positions * s.out_channels)?;
        Ok((n, out_image, &mut v[..n * positions * s.in_channels], &mut m[..n * positions * s.out_channels]))
    }

    /// Position `p`'s GEMM over the chunk's `n` tiles: `dst [n, c_out] = v_p @ u_p`.
    fn product(&self, p: usize, n: usize, v: &[T], dst: &mut [T]) {
        let (ci, co, positions) = (self.s.in_channels, self.s.out_channels, self.tiles.positions);
        let lhs = MatRef { data: &v[p * ci..], row_stride: positions * ci, col_stride: 1 };
        let rhs = MatRef { data: &self.u[p * co..], row_stride: positions * co, col_stride: 1 };
        gemm_into(dst, co, (n, co, ci), lhs, rhs, false, Parallelism::None);
    }
}
