//! CPU kernels of the NHWC convolution: im2col + GEMM (the `gemm` crate).
//!
//! With the kernel `[c_out, kh, kw, c_in]` read as a matrix `[c_out, K]`
//! (`K = kh * kw * c_in`) and the patches of the input as rows `[pixels, K]` (im2col, in
//! the same `(ky, kx, c)` order), the three products are
//! - forward: `y [pixels, c_out] = cols @ kernel^T` (+ bias),
//! - input gradient: `dcols = dy @ kernel`, then col2im adds each patch row back into
//!   the input positions it was read from,
//! - kernel gradient: `dkernel = dy^T @ cols`.
//!
//! The batch is cut into chunks of whole images, so that each chunk's column buffer is
//! bounded (no batch-sized temporaries) and each chunk writes a disjoint slice of the
//! output (no locking); rayon runs the chunks on its threads, each GEMM single-threaded,
//! and each thread reuses one column buffer for all its chunks. A kernel that fits L2 gets
//! chunks that fit L2 too (`SMALL_KERNEL_BUDGET`). When the whole batch has few output
//! pixels and the kernel is large (the deep layers), it is one chunk and the GEMM is split
//! instead. A
//! 1x1 convolution with stride 1 and no padding needs no im2col: the input already is the
//! column matrix. At stride 1 the input gradient runs as a convolution with the flipped
//! kernel (see `backward_input_as_conv`). Dense 3x3 stride-1 convolutions in f32 run with
//! Winograd's algorithm instead where `winograd::select` picks it (forward, and so the
//! flipped input gradient), and their kernel gradient where
//! `winograd::select_kernel_gradient` picks it.
//!
//! A grouped convolution (`groups` > 1) runs these products once per group: the group's
//! input channels gathered by im2col (`K = kh * kw * c_in / groups`), its block of kernel
//! rows, and its run of output channels written in place through the GEMM's strides. The
//! depthwise case (`groups == c_in`) has its own direct kernels (`depthwise_cpu/`), and so
//! has a convolution whose windows tile its input, kernel size == stride (`patch_cpu/`).
//! The input gradient of a strided or padded 1x1 convolution writes its output in one
//! pass instead of zero-fill then col2im (`strided_pointwise_cpu.rs`).

use super::{depthwise_cpu, patch_cpu, small_map_cpu, strided_pointwise_cpu, winograd};
use crate::backend::{Conv2dSpec, ConvActivation};
use crate::utilities::alloc::{host_oom, try_zeros, ZeroBits};
use crate::utilities::PAR_MIN_LEN;
use crate::{FloatElement, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Largest column buffer of one chunk, in elements (4 MiB of f32): big enough that each
/// GEMM is efficient, small enough to stay in cache and keep memory flat.
const COL_BUDGET: usize = 1 << 20;

/// Elements of a kernel small enough to stay in a core's L2 (512 KiB of f32), and then
/// the column buffer of one chunk, at most. Each chunk's GEMM re-reads the kernel, which
/// is cheap when it is this small; a column buffer of this size is written and read back
/// (im2col then GEMM, or GEMM then col2im) within L2, where one of [`COL_BUDGET`]
/// goes through memory. This is what the U-Net's stride-2 transposed convolutions (32 to
/// 128 input channels, 4.6K-74K kernel elements) are bound by.
const SMALL_KERNEL_BUDGET: usize = 1 << 17;

/// Runs (partial sums) the kernel gradient's batch sum is cut into, at most.
const FILTER_RUNS: usize = 16;

/// Elements of the kernel gradient's partial sums together (8 MiB of f32), at most: a
/// large kernel gets fewer runs, each with split GEMMs.
const FILTER_PARTIALS_BUDGET: usize = 1 << 21;

/// A read-only matrix inside a slice: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `[rows, cols]` matrix.
    pub(crate) fn row_major(data: &'a [T], cols: usize) -> Self {
        MatRef { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix whose stored rows hold `stored_cols` elements,
    /// read in place.
    pub(crate) fn transposed(data: &'a [T], stored_cols: usize) -> Self {
        MatRef { data, row_stride: 1, col_stride: stored_cols }
    }

    pub(super) fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst [m, n] = lhs [m, k] @ rhs [k, n]`, or `+=` when `accumulate`; `dst`'s rows are
/// `dst_row_stride` apart (`n` for a packed matrix, more for a run of columns of a wider one).
pub(crate) fn gemm_into<T: FloatElement>(
    dst: &mut [T],
    dst_row_stride: usize,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(
        dst_row_stride >= n && (m == 0 || n == 0 || dst.len() >= (m - 1) * dst_row_stride + n),
        "gemm_into: destination out of bounds"
    );
    assert!(lhs.covers(m, k) && rhs.covers(k, n), "gemm_into: operands out of bounds");
    // SAFETY: the assertion above keeps every element the strides address inside the
    // slices; `dst` is borrowed mutably, so it aliases neither operand.
    unsafe { gemm_raw(dst.as_mut_ptr(), dst_row_stride, (m, n, k), lhs, rhs, accumulate, parallelism) }
}

/// [`gemm_into`] through a pointer: `dst [m, n]` (rows `dst_row_stride` apart) `= lhs @ rhs`,
/// or `+=` when `accumulate`.
///
/// # Safety
/// Every element of `dst` the strides address must be valid for writes, inside one
/// allocation, overlap neither operand, and be accessed by no other thread meanwhile; the
/// operands must cover `[m, k]` and `[k, n]`.
pub(super) unsafe fn gemm_raw<T: FloatElement>(
    dst: *mut T,
    dst_row_stride: usize,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    if m * n == 0 {
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Derived sizes of a convolution.
#[derive(Clone, Copy)]
pub(super) struct Geometry {
    /// Elements of one input image.
    pub(super) in_image: usize,
    /// Output pixels of one image (rows of its column matrix).
    pub(super) out_pixels: usize,
    /// Length of one patch row, `kh * kw * c_in / groups`.
    pub(super) patch: usize,
    /// Input channels of one group.
    pub(super) group_in: usize,
    /// Output channels of one group.
    pub(super) group_out: usize,
    /// Images per chunk.
    pub(super) chunk_images: usize,
    /// Whether the input is its own column matrix (1x1, stride 1, no padding).
    pub(super) pointwise: bool,
    /// Parallelism of each GEMM: all threads when there is a single chunk.
    pub(super) gemm_par: Parallelism,
}

impl Geometry {
    /// Chunks for the forward pass and the input gradient, which write disjoint outputs:
    /// at least one chunk per thread.
    pub(super) fn new(s: &Conv2dSpec) -> Self {
        let threads = rayon::current_num_threads().max(1);
        Self::with_chunks(s, threads, threads)
    }

    /// Chunks and runs for the kernel gradient, a sum over the batch: both cut by the
    /// shape alone, so that the association of the sum never follows the thread count.
    /// Each run holds a kernel-sized partial sum; together they stay within
    /// [`FILTER_PARTIALS_BUDGET`].
    pub(super) fn for_kernel_gradient(s: &Conv2dSpec) -> (Self, usize) {
        let threads = rayon::current_num_threads().max(1);
        let kernel = s.out_channels * s.kernel_h * s.kernel_w * (s.in_channels / s.groups);
        let runs = (FILTER_PARTIALS_BUDGET / kernel.max(1)).clamp(1, FILTER_RUNS);
        let mut g = Self::with_chunks(s, runs, threads);
        let runs = s.batch.div_ceil(g.chunk_images).min(runs).max(1);
        // Too few runs to keep every thread busy: split each GEMM too. gemm splits over
        // output blocks only, so a split GEMM sums in the same order.
        g.gemm_par = if threads > 1 && runs < 2 * threads { Parallelism::Rayon(threads) } else { Parallelism::None };
        (g, runs)
    }

    fn with_chunks(s: &Conv2dSpec, min_chunks: usize, threads: usize) -> Self {
        let out_pixels = s.out_h * s.out_w;
        let group_in = s.in_channels / s.groups;
        let patch = s.kernel_h * s.kernel_w * group_in;
        let per_image = (out_pixels * patch).max(1);
        let small_kernel = s.out_channels / s.groups * patch <= SMALL_KERNEL_BUDGET;
        let budget = if small_kernel { SMALL_KERNEL_BUDGET } else { COL_BUDGET };
        let chunk_images = if !small_kernel && s.batch * per_image <= 2 * COL_BUDGET {
            // Few rows (the deep layers): one chunk, and the GEMM itself is split across
            // threads; chunks of a few rows each would repeat the packing of a large kernel.
            s.batch.max(1)
        } else {
            // At least `min_chunks` chunks, so that every thread has work.
            (budget / per_image).max(1).min(s.batch.div_ceil(min_chunks).max(1))
        };
        let chunks = s.batch.div_ceil(chunk_images);
        let pointwise = s.kernel_h == 1
            && s.kernel_w == 1
            && s.stride_h == 1
            && s.stride_w == 1
            && s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0;
        let gemm_par = if chunks <= 1 && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        Geometry {
            in_image: s.in_h * s.in_w * s.in_channels,
            out_pixels,
            patch,
            group_in,
            group_out: s.out_channels / s.groups,
            chunk_images,
            pointwise,
            gemm_par,
        }
    }

    /// Whether the passes around a chunk's GEMM (im2col, col2im) run over its images in
    /// parallel: where the GEMM itself is split, i.e. the batch is one chunk.
    pub(super) fn split_passes(&self) -> bool {
        matches!(self.gemm_par, Parallelism::Rayon(_))
    }

    /// The rows of a chunk's input read in place as a pointwise convolution's column
    /// matrix for group `group`: `[images * pixels, group_in]`, rows `c_in` apart.
    fn pointwise_cols<'a, T>(
        &self,
        x: &'a [T],
        s: &Conv2dSpec,
        (first, images): (usize, usize),
        group: usize,
    ) -> MatRef<'a, T> {
        let data = &x[first * self.in_image + group * self.group_in..(first + images) * self.in_image];
        MatRef { data, row_stride: s.in_channels, col_stride: 1 }
    }
}

/// Whether a convolution is depthwise (each input channel its own group), which the direct
/// kernels of `depthwise_cpu/` run.
pub(super) fn is_depthwise(s: &Conv2dSpec) -> bool {
    s.groups > 1 && s.groups == s.in_channels
}

/// The valid kernel taps `lo..hi` along one axis for output position `o`, and the input
/// coordinate of tap `lo`: taps reading padding are skipped.
#[inline]
pub(super) fn taps(
    o: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    taps: usize,
    input: usize,
) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let d = dilation as isize;
    // First tap t with start + t*d >= 0, last with start + t*d < input.
    let lo = if start >= 0 { 0 } else { ((-start) + d - 1) / d };
    let hi = if start >= input as isize { 0 } else { ((input as isize - start + d - 1) / d).min(taps as isize) };
    let lo = (lo as usize).min(taps);
    let hi = (hi as usize).max(lo);
    // An empty range reads nothing; its coordinate is any in-bounds one.
    let first = if lo == hi { 0 } else { (start + lo as isize * d) as usize };
    (lo, hi, first)
}

/// Writes the patch rows of `images` images starting at `first` into `col`
/// (`[images * out_pixels, patch]`), reading the channels of group `group`, zeros where
/// the kernel reads padding. When the whole batch is one chunk (its GEMM split across the
/// threads), the images are gathered in parallel too: otherwise this pass would run on
/// one thread.
pub(super) fn im2col<T: FloatElement>(
    x: &[T],
    s: &Conv2dSpec,
    g: &Geometry,
    (first, images): (usize, usize),
    group: usize,
    col: &mut [T],
) {
    let per_image = g.out_pixels * g.patch;
    let col = &mut col[..images * per_image];
    if g.split_passes() && images > 1 {
        col.par_chunks_mut(per_image).enumerate().for_each(|(i, c)| im2col_image(x, s, g, first + i, group, c));
    } else {
        for (i, c) in col.chunks_mut(per_image.max(1)).enumerate() {
            im2col_image(x, s, g, first + i, group, c);
        }
    }
}

/// [`im2col`] of image `b` into its `out_pixels` patch rows.
fn im2col_image<T: FloatElement>(x: &[T], s: &Conv2dSpec, g: &Geometry, b: usize, group: usize, col: &mut [T]) {
    let (c, cg, c0) = (s.in_channels, g.group_in, group * g.group_in);
    let mut rows = col.chunks_exact_mut(g.patch);
    let img = &x[b * g.in_image..(b + 1) * g.in_image];
    for oy in 0..s.out_h {
        let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
        for ox in 0..s.out_w {
            let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
            let row = rows.next().expect("col holds images * out_pixels rows");
            let kernel_row = s.kernel_w * cg;
            for ky in 0..s.kernel_h {
                let dst = &mut row[ky * kernel_row..(ky + 1) * kernel_row];
                if ky < ky0 || ky >= ky1 {
                    dst.fill(T::zero());
                    continue;
                }
                let iy = iy0 + (ky - ky0) * s.dilation_h;
                dst[..kx0 * cg].fill(T::zero());
                dst[kx1 * cg..].fill(T::zero());
                let src_row = &img[iy * s.in_w * c..(iy + 1) * s.in_w * c];
                if s.dilation_w == 1 && cg == c {
                    // Adjacent taps read adjacent pixels: one copy.
                    let len = (kx1 - kx0) * c;
                    dst[kx0 * c..kx1 * c].copy_from_slice(&src_row[ix0 * c..ix0 * c + len]);
                } else {
                    for kx in kx0..kx1 {
                        let ix = ix0 + (kx - kx0) * s.dilation_w;
                        dst[kx * cg..(kx + 1) * cg].copy_from_slice(&src_row[ix * c + c0..][..cg]);
                    }
                }
            }
        }
    }
}

/// Adds each patch row of `col` back into the input positions (channels of group
/// `group`) it was read from: the adjoint of [`im2col`]. `dx` holds the `images` images
/// of the chunk; they are scattered in parallel where [`im2col`] gathers in parallel.
fn col2im_add<T: FloatElement>(col: &[T], s: &Conv2dSpec, g: &Geometry, (images, group): (usize, usize), dx: &mut [T]) {
    let per_image = g.out_pixels * g.patch;
    let (col, dx) = (&col[..images * per_image], &mut dx[..images * g.in_image]);
    if g.split_passes() && images > 1 {
        let pairs = col.par_chunks(per_image).zip(dx.par_chunks_mut(g.in_image));
        pairs.for_each(|(c, img)| col2im_add_image(c, s, g, group, img));
    } else {
        for (c, img) in col.chunks(per_image.max(1)).zip(dx.chunks_mut(g.in_image.max(1))) {
            col2im_add_image(c, s, g, group, img);
        }
    }
}

/// [`col2im_add`] of one image's patch rows into that image.
fn col2im_add_image<T: FloatElement>(col: &[T], s: &Conv2dSpec, g: &Geometry, group: usize, img: &mut [T]) {
    let (c, cg, c0) = (s.in_channels, g.group_in, group * g.group_in);
    let mut rows = col.chunks_exact(g.patch);
    for oy in 0..s.out_h {
        let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
        for ox in 0..s.out_w {
            let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
            let row = rows.next().expect("col holds images * out_pixels rows");
            let kernel_row = s.kernel_w * cg;
            for ky in ky0..ky1 {
                let src = &row[ky * kernel_row..(ky + 1) * kernel_row];
                let iy = iy0 + (ky - ky0) * s.dilation_h;
                let dst_row = &mut img[iy * s.in_w * c..(iy + 1) * s.in_w * c];
                if s.dilation_w == 1 && cg == c {
                    let len = (kx1 - kx0) * c;
                    add_assign(&mut dst_row[ix0 * c..ix0 * c + len], &src[kx0 * c..kx1 * c]);
                } else {
                    for kx in kx0..kx1 {
                        let ix = ix0 + (kx - kx0) * s.dilation_w;
                        add_assign(&mut dst_row[ix * c + c0..][..cg], &src[kx * cg..(kx + 1) * cg]);
                    }
                }
            }
        }
    }
}

#[inline]
pub(super) fn add_assign<T: FloatElement>(dst: &mut [T], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = *d + v;
    }
}

/// Grows a reused column buffer to `len` elements (fallibly: its size is the user's shapes').
pub(super) fn ensure_len<T: FloatElement>(op: &'static str, col: &mut Vec<T>, len: usize) -> Result<()> {
    if col.len() < len {
        col.try_reserve_exact(len - col.len()).map_err(|_| host_oom::<T>(op, len))?;
        col.resize(len, T::zero());
    }
    Ok(())
}

/// The forward convolution with its activation: `[batch, out_h, out_w, c_out]`. The bias
/// is already part of each kernel's sums (the output starts from it), so a ReLU is one
/// more pass over the output, in place; it is `relu`'s own expression, so the result is
/// the bits of `conv2d` followed by `relu`.
pub(crate) fn conv2d_activated<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
    activation: ConvActivation,
) -> Result<Vec<T>> {
    let mut out = conv2d(x, kernel, bias, s)?;
    if activation == ConvActivation::Relu {
        let zero = T::zero();
        // `v < 0`, not `max`: NaN passes through, as in the elementwise relu.
        out.par_chunks_mut(PAR_MIN_LEN).for_each(|chunk| {
            for v in chunk {
                if *v < zero {
                    *v = zero;
                }
            }
        });
    }
    Ok(out)
}

/// The forward convolution: `[batch, out_h, out_w, c_out]`.
pub(crate) fn conv2d<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    if is_depthwise(s) {
        return depthwise_cpu::conv2d(x, kernel, bias, s);
    }
    if patch_cpu::applies(s) {
        return patch_cpu::conv2d(x, kernel, bias, s);
    }
    if small_map_cpu::applies(s) {
        return small_map_cpu::conv2d(x, kernel, bias, s);
    }
    if let Some(tiling) = winograd::select::<T>(s) {
        return winograd::conv2d(x, kernel, bias, s, tiling);
    }
    conv2d_im2col(x, kernel, bias, s)
}

/// The forward convolution through im2col + GEMM, whatever the shape (not depthwise).
pub(super) fn conv2d_im2col<T: FloatElement + ZeroBits>(
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d";
    let g = Geometry::new(s);
    let co = s.out_channels;
    let mut out = try_zeros(OP, s.batch * g.out_pixels * co)?;
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(g.chunk_images * g.out_pixels * co).enumerate().try_for_each_init(
        Vec::new,
        |col, (chunk, dst)| {
            let first = chunk * g.chunk_images;
            let images = dst.len() / (g.out_pixels * co);
            let rows = images * g.out_pixels;
            if let Some(b) = bias {
                for row in dst.chunks_exact_mut(co) {
                    row.copy_from_slice(b);
                }
            }
            for group in 0..s.groups {
                let lhs = if g.pointwise {
                    g.pointwise_cols(x, s, (first, images), group)
                } else {
                    ensure_len(OP, col, rows * g.patch)?;
                    im2col(x, s, &g, (first, images), group, col);
                    MatRef::row_major(&col[..rows * g.patch], g.patch)
                };
                let rhs =
                    MatRef::transposed(&kernel[group * g.group_out * g.patch..][..g.group_out * g.patch], g.patch);
                let dst = &mut dst[group * g.group_out..];
                gemm_into(dst, co, (rows, g.group_out, g.patch), lhs, rhs, bias.is_some(), g.gemm_par);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// At stride 1 the input gradient is itself a convolution: of `dy`, padded by
/// `extent - 1 - pad` on each side, with the kernel flipped in space and its channel axes
/// swapped. This is that convolution's geometry, or `None` where it does not exist (a
/// stride above 1, or padding beyond the kernel's extent, which would need negative
/// padding). The depthwise kernels use it too.
pub(super) fn backward_input_geometry(s: &Conv2dSpec) -> Option<Conv2dSpec> {
    let (reach_h, reach_w) = ((s.kernel_h - 1) * s.dilation_h, (s.kernel_w - 1) * s.dilation_w);
    let fits = s.pad_top.max(s.pad_bottom) <= reach_h && s.pad_left.max(s.pad_right) <= reach_w;
    // `then`, not `then_some`: the paddings below underflow where it does not fit.
    (s.stride_h == 1 && s.stride_w == 1 && fits).then(|| Conv2dSpec {
        in_h: s.out_h,
        in_w: s.out_w,
        in_channels: s.out_channels,
        out_channels: s.in_channels,
        pad_top: reach_h - s.pad_top,
        pad_bottom: reach_h - s.pad_bottom,
        pad_left: reach_w - s.pad_left,
        pad_right: reach_w - s.pad_right,
        out_h: s.in_h,
        out_w: s.in_w,
        ..*s
    })
}

/// [`backward_input_geometry`] where its im2col GEMM pays: it has the forward pass's shape
/// (inner dimension `kh*kw*c_out`), which runs much faster than the GEMM-then-col2im route,
/// whose inner dimension is only `c_out` and whose output is `kh*kw` times larger. Not for
/// groups, where `c_in` is too small for the flipped GEMM to be efficient, or where the
/// kernel is large against the column matrix.
fn backward_input_as_conv<T: FloatElement>(s: &Conv2dSpec) -> Option<Conv2dSpec> {
    // Where Winograd runs the flipped convolution, it beats col2im at any kernel size.
    if let Some(flipped) = backward_input_geometry(s).filter(|f| winograd::select::<T>(f).is_some()) {
        return Some(flipped);
    }
    // Its GEMM has c_in output columns: below a SIMD width (the 3-channel stem) it is slower.
    let wide = s.in_channels >= 16;
    // Flipping costs a pass over the kernel; col2im one over the column matrix. Deep layers
    // (large kernels, few pixels: 512 channels at 2x2) are cheaper the col2im way.
    let kernel_len = s.out_channels * s.kernel_h * s.kernel_w * s.in_channels;
    let columns_len = s.batch * s.out_h * s.out_w * s.kernel_h * s.kernel_w * s.in_channels;
    let small_kernel = 4 * kernel_len < columns_len;
    if s.groups == 1 && wide && small_kernel {
        backward_input_geometry(s)
    } else {
        None
    }
}

/// `[c_out, kh, kw, c_in]` -> `[c_in, kh, kw, c_out]`, flipped along kh and kw, for the
/// im2col route of the input gradient (Winograd reads the kernel flipped in place). In
/// parallel over blocks of `FLIP_BLOCK` input channels, each reading its run of every
/// kernel row: the flip used to run on one thread and did not shrink with threads.
pub(super) fn flip_kernel<T: FloatElement + ZeroBits>(kernel: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const FLIP_BLOCK: usize = 16;
    let (taps, ci, co) = (s.kernel_h * s.kernel_w, s.in_channels, s.out_channels);
    let mut out = try_zeros("conv2d_backward_input", kernel.len())?;
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(FLIP_BLOCK * taps * co).enumerate().for_each(|(block, dst)| {
        let c0 = block * FLIP_BLOCK;
        let channels = dst.len() / (taps * co);
        for o in 0..co {
            for tap in 0..taps {
                let src = &kernel[(o * taps + tap) * ci + c0..][..channels];
                // Tap (ky, kx) lands at (kh-1-ky, kw-1-kx): tap index taps-1-tap.
                let flipped = taps - 1 - tap;
                for (j, &v) in src.iter().enumerate() {
                    dst[(j * taps + flipped) * co + o] = v;
                }
            }
        }
    });
    Ok(out)
}

/// The input gradient: `[batch, in_h, in_w, c_in]`.
pub(crate) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    conv2d_backward_input_bias(dy, kernel, None, s)
}

/// The input gradient plus a per-channel `bias` `[c_in]` (a transposed convolution with
/// its bias): the bias is the output's starting value, in the pass that writes it, instead
/// of a second pass over the output.
pub(crate) fn conv2d_backward_input_bias<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    if is_depthwise(s) {
        let mut dx = depthwise_cpu::conv2d_backward_input(dy, kernel, s)?;
        if let Some(b) = bias {
            dx.par_chunks_mut(s.in_channels).for_each(|px| add_assign(px, b));
        }
        return Ok(dx);
    }
    if patch_cpu::applies(s) {
        return patch_cpu::conv2d_backward_input(dy, kernel, bias, s);
    }
    if strided_pointwise_cpu::applies(s) {
        return strided_pointwise_cpu::backward_input(dy, kernel, bias, s);
    }
    if small_map_cpu::applies(s) {
        return small_map_cpu::backward_input(dy, kernel, bias, s);
    }
    if let Some(transposed) = backward_input_as_conv::<T>(s) {
        if let Some(tiling) = winograd::select::<T>(&transposed) {
            // Winograd reads the kernel flipped while it transforms it: no flipped copy.
            return winograd::conv2d_backward_input(dy, kernel, bias, &transposed, tiling);
        }
        return conv2d(dy, &flip_kernel(kernel, s)?, bias, &transposed);
    }
    backward_input_col2im(dy, kernel, bias, s)
}

/// The input gradient (plus `bias`) through GEMM then col2im, whatever the shape (not
/// depthwise).
pub(super) fn backward_input_col2im<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    let g = Geometry::new(s);
    let co = s.out_channels;
    let mut dx = try_zeros(OP, s.batch * g.in_image)?;
    if dx.is_empty() {
        return Ok(dx);
    }
    dx.par_chunks_mut(g.chunk_images * g.in_image).enumerate().try_for_each_init(Vec::new, |col, (chunk, dst)| {
        let first = chunk * g.chunk_images;
        let images = dst.len() / g.in_image;
        let rows = images * g.out_pixels;
        if let Some(b) = bias {
            // col2im adds into the chunk while it is in cache; the bias is where it starts.
            for px in dst.chunks_exact_mut(s.in_channels) {
                px.copy_from_slice(b);
            }
        }
        let dyc = &dy[first * g.out_pixels * co..(first + images) * g.out_pixels * co];
        for group in 0..s.groups {
            let lhs = MatRef { data: &dyc[group * g.group_out..], row_stride: co, col_stride: 1 };
            let rhs = MatRef::row_major(&kernel[group * g.group_out * g.patch..][..g.group_out * g.patch], g.patch);
            let shape = (rows, g.patch, g.group_out);
            if g.pointwise {
                let dst = &mut dst[group * g.group_in..];
                gemm_into(dst, s.in_channels, shape, lhs, rhs, bias.is_some(), g.gemm_par);
            } else {
                ensure_len(OP, col, rows * g.patch)?;
                gemm_into(col, g.patch, shape, lhs, rhs, false, g.gemm_par);
                col2im_add(&col[..rows * g.patch], s, &g, (images, group), dst);
            }
        }
        Ok(())
    })?;
    Ok(dx)
}

/// The kernel gradient: `[c_out, kh, kw, c_in / groups]`. The chunks are split into a
/// few runs (a count set by the shape, see `Geometry::for_kernel_gradient`); each run sums its products in chunk order into its own
/// buffer, and the buffers are added in run order: the result depends on the shape only,
/// not on the thread count or rayon's scheduling.
pub(crate) fn conv2d_backward_filter<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    if is_depthwise(s) {
        return depthwise_cpu::conv2d_backward_filter(x, dy, s);
    }
    if patch_cpu::applies(s) {
        return patch_cpu::conv2d_backward_filter(x, dy, s);
    }
    if small_map_cpu::applies(s) {
        return small_map_cpu::backward_filter(x, dy, s);
    }
    if let Some(tiling) = winograd::select_kernel_gradient::<T>(s) {
        return winograd::conv2d_backward_filter(x, dy, s, tiling);
    }
    backward_filter_im2col(x, dy, s)
}

/// The kernel gradient through im2col + GEMM, whatever the shape (not depthwise).
pub(super) fn backward_filter_im2col<T: FloatElement + ZeroBits>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_filter";
    let (g, workers) = Geometry::for_kernel_gradient(s);
    let co = s.out_channels;
    let chunks = s.batch.div_ceil(g.chunk_images);
    let partial = |w: usize| -> Result<Vec<T>> {
        let mut acc = try_zeros(OP, co * g.patch)?;
        let mut col = Vec::new();
        for chunk in chunks * w / workers..chunks * (w + 1) / workers {
            let first = chunk * g.chunk_images;
            let images = g.chunk_images.min(s.batch - first);
            let rows = images * g.out_pixels;
            let dyc = &dy[first * g.out_pixels * co..(first + images) * g.out_pixels * co];
            for group in 0..s.groups {
                let cols = if g.pointwise {
                    g.pointwise_cols(x, s, (first, images), group)
                } else {
                    ensure_len(OP, &mut col, rows * g.patch)?;
                    im2col(x, s, &g, (first, images), group, &mut col);
                    MatRef::row_major(&col[..rows * g.patch], g.patch)
                };
                let grad = MatRef { data: &dyc[group * g.group_out..], row_stride: 1, col_stride: co };
                let dst = &mut acc[group * g.group_out * g.patch..][..g.group_out * g.patch];
                gemm_into(dst, g.patch, (g.group_out, g.patch, rows), grad, cols, true, g.gemm_par);
            }
        }
        Ok(acc)
    };
    let partials: Vec<Result<Vec<T>>> = (0..workers).into_par_iter().map(partial).collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().expect("at least one worker")?;
    for p in partials {
        add_assign(&mut total, &p?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::flip_kernel;
    use crate::backend::Conv2dSpec;

    /// The blocked parallel flip against its definition, with channel counts that leave a
    /// partial block and a non-square kernel.
    #[test]
    fn flip_kernel_swaps_channels_and_reverses_taps() {
        let (co, kh, kw, ci) = (5, 2, 3, 37);
        let s = Conv2dSpec {
            batch: 1,
            in_h: 4,
            in_w: 4,
            in_channels: ci,
            out_channels: co,
            groups: 1,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 0,
            pad_bottom: 0,
            pad_left: 0,
            pad_right: 0,
            out_h: 3,
            out_w: 2,
        };
        let kernel: Vec<f64> = (0..co * kh * kw * ci).map(|i| i as f64).collect();
        let flipped = flip_kernel(&kernel, &s).unwrap();
        for o in 0..co {
            for ky in 0..kh {
                for kx in 0..kw {
                    for c in 0..ci {
                        let want = kernel[((o * kh + ky) * kw + kx) * ci + c];
                        assert_eq!(flipped[((c * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)) * co + o], want);
                    }
                }
            }
        }
    }
}
