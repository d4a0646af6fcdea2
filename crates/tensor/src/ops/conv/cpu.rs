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
//! and each thread reuses one column buffer for all its chunks. When the whole batch has
//! few output pixels (the deep layers), it is one chunk and the GEMM is split instead. A
//! 1x1 convolution with stride 1 and no padding needs no im2col: the input already is the
//! column matrix. At stride 1 the input gradient runs as a convolution with the flipped
//! kernel (see `backward_input_as_conv`).

use crate::backend::Conv2dSpec;
use crate::FloatElement;
use gemm::Parallelism;
use rayon::prelude::*;

/// Largest column buffer of one chunk, in elements (4 MiB of f32): big enough that each
/// GEMM is efficient, small enough to stay in cache and keep memory flat.
const COL_BUDGET: usize = 1 << 20;

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

    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst [m, n] (row-major) = lhs [m, k] @ rhs [k, n]`, or `+=` when `accumulate`.
pub(crate) fn gemm_into<T: FloatElement>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.covers(m, k) && rhs.covers(k, n), "gemm_into: operands out of bounds");
    if m * n == 0 {
        return;
    }
    // SAFETY: the assertion above keeps every element the strides address inside the
    // slices; `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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
struct Geometry {
    /// Elements of one input image.
    in_image: usize,
    /// Output pixels of one image (rows of its column matrix).
    out_pixels: usize,
    /// Length of one patch row, `kh * kw * c_in`.
    patch: usize,
    /// Images per chunk.
    chunk_images: usize,
    /// Whether the input is its own column matrix (1x1, stride 1, no padding).
    pointwise: bool,
    /// Parallelism of each GEMM: all threads when there is a single chunk.
    gemm_par: Parallelism,
}

impl Geometry {
    fn new(s: &Conv2dSpec) -> Self {
        let out_pixels = s.out_h * s.out_w;
        let patch = s.kernel_h * s.kernel_w * s.in_channels;
        let threads = rayon::current_num_threads().max(1);
        let per_image = (out_pixels * patch).max(1);
        let chunk_images = if s.batch * per_image <= 2 * COL_BUDGET {
            // Few rows (the deep layers): one chunk, and the GEMM itself is split across
            // threads; chunks of a few rows each would repeat the packing of a large kernel.
            s.batch.max(1)
        } else {
            // At least one chunk per thread, so that every thread has work.
            (COL_BUDGET / per_image).max(1).min(s.batch.div_ceil(threads).max(1))
        };
        let chunks = s.batch.div_ceil(chunk_images);
        let pointwise = s.kernel_h == 1
            && s.kernel_w == 1
            && s.stride_h == 1
            && s.stride_w == 1
            && s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0;
        let gemm_par = if chunks <= 1 && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        Geometry { in_image: s.in_h * s.in_w * s.in_channels, out_pixels, patch, chunk_images, pointwise, gemm_par }
    }
}

/// The valid kernel taps `lo..hi` along one axis for output position `o`, and the input
/// coordinate of tap `lo`: taps reading padding are skipped.
#[inline]
fn taps(o: usize, stride: usize, pad: usize, dilation: usize, taps: usize, input: usize) -> (usize, usize, usize) {
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
/// (`[images * out_pixels, patch]`), zeros where the kernel reads padding.
fn im2col<T: FloatElement>(x: &[T], s: &Conv2dSpec, g: &Geometry, first: usize, images: usize, col: &mut [T]) {
    let c = s.in_channels;
    let mut rows = col.chunks_exact_mut(g.patch);
    for b in first..first + images {
        let img = &x[b * g.in_image..(b + 1) * g.in_image];
        for oy in 0..s.out_h {
            let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
            for ox in 0..s.out_w {
                let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
                let row = rows.next().expect("col holds images * out_pixels rows");
                let kernel_row = s.kernel_w * c;
                for ky in 0..s.kernel_h {
                    let dst = &mut row[ky * kernel_row..(ky + 1) * kernel_row];
                    if ky < ky0 || ky >= ky1 {
                        dst.fill(T::zero());
                        continue;
                    }
                    let iy = iy0 + (ky - ky0) * s.dilation_h;
                    dst[..kx0 * c].fill(T::zero());
                    dst[kx1 * c..].fill(T::zero());
                    let src_row = &img[iy * s.in_w * c..(iy + 1) * s.in_w * c];
                    if s.dilation_w == 1 {
                        // Adjacent taps read adjacent pixels: one copy.
                        let len = (kx1 - kx0) * c;
                        dst[kx0 * c..kx1 * c].copy_from_slice(&src_row[ix0 * c..ix0 * c + len]);
                    } else {
                        for kx in kx0..kx1 {
                            let ix = ix0 + (kx - kx0) * s.dilation_w;
                            dst[kx * c..(kx + 1) * c].copy_from_slice(&src_row[ix * c..(ix + 1) * c]);
                        }
                    }
                }
            }
        }
    }
}

/// Adds each patch row of `col` back into the input positions it was read from: the
/// adjoint of [`im2col`]. `dx` holds the `images` images of the chunk.
fn col2im_add<T: FloatElement>(col: &[T], s: &Conv2dSpec, g: &Geometry, images: usize, dx: &mut [T]) {
    let c = s.in_channels;
    let mut rows = col.chunks_exact(g.patch);
    for b in 0..images {
        let img = &mut dx[b * g.in_image..(b + 1) * g.in_image];
        for oy in 0..s.out_h {
            let (ky0, ky1, iy0) = taps(oy, s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
            for ox in 0..s.out_w {
                let (kx0, kx1, ix0) = taps(ox, s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
                let row = rows.next().expect("col holds images * out_pixels rows");
                let kernel_row = s.kernel_w * c;
                for ky in ky0..ky1 {
                    let src = &row[ky * kernel_row..(ky + 1) * kernel_row];
                    let iy = iy0 + (ky - ky0) * s.dilation_h;
                    let dst_row = &mut img[iy * s.in_w * c..(iy + 1) * s.in_w * c];
                    if s.dilation_w == 1 {
                        let len = (kx1 - kx0) * c;
                        add_assign(&mut dst_row[ix0 * c..ix0 * c + len], &src[kx0 * c..kx1 * c]);
                    } else {
                        for kx in kx0..kx1 {
                            let ix = ix0 + (kx - kx0) * s.dilation_w;
                            add_assign(&mut dst_row[ix * c..(ix + 1) * c], &src[kx * c..(kx + 1) * c]);
                        }
                    }
                }
            }
        }
    }
}

#[inline]
fn add_assign<T: FloatElement>(dst: &mut [T], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = *d + v;
    }
}

/// The forward convolution: `[batch, out_h, out_w, c_out]`.
pub(crate) fn conv2d<T: FloatElement>(x: &[T], kernel: &[T], bias: Option<&[T]>, s: &Conv2dSpec) -> Vec<T> {
    let g = Geometry::new(s);
    let co = s.out_channels;
    let mut out = vec![T::zero(); s.batch * g.out_pixels * co];
    if out.is_empty() {
        return out;
    }
    let rhs = MatRef::transposed(kernel, g.patch);
    out.par_chunks_mut(g.chunk_images * g.out_pixels * co).enumerate().for_each_init(Vec::new, |col, (chunk, dst)| {
        let first = chunk * g.chunk_images;
        let images = dst.len() / (g.out_pixels * co);
        let rows = images * g.out_pixels;
        if let Some(b) = bias {
            for row in dst.chunks_exact_mut(co) {
                row.copy_from_slice(b);
            }
        }
        let lhs = if g.pointwise {
            &x[first * g.in_image..(first + images) * g.in_image]
        } else {
            col.resize(rows * g.patch, T::zero());
            im2col(x, s, &g, first, images, col);
            &col[..rows * g.patch]
        };
        gemm_into(dst, (rows, co, g.patch), MatRef::row_major(lhs, g.patch), rhs, bias.is_some(), g.gemm_par);
    });
    out
}

/// At stride 1 the input gradient is itself a convolution: of `dy`, padded by
/// `extent - 1 - pad` on each side, with the kernel flipped in space and its channel axes
/// swapped. Its im2col GEMM has the forward pass's shape (inner dimension `kh*kw*c_out`),
/// which runs much faster than the GEMM-then-col2im route, whose inner dimension is only
/// `c_out` and whose output is `kh*kw` times larger. `None` where the padding exceeds the
/// kernel's extent (the flipped convolution would need negative padding), where `c_in`
/// is too small for the flipped GEMM to be efficient, or where the kernel is large
/// against the column matrix.
fn backward_input_as_conv(s: &Conv2dSpec) -> Option<Conv2dSpec> {
    let (reach_h, reach_w) = ((s.kernel_h - 1) * s.dilation_h, (s.kernel_w - 1) * s.dilation_w);
    let fits = s.pad_top.max(s.pad_bottom) <= reach_h && s.pad_left.max(s.pad_right) <= reach_w;
    // Its GEMM has c_in output columns: below a SIMD width (the 3-channel stem) it is slower.
    let wide = s.in_channels >= 16;
    // Flipping costs a pass over the kernel; col2im one over the column matrix. Deep layers
    // (large kernels, few pixels: 512 channels at 2x2) are cheaper the col2im way.
    let kernel_len = s.out_channels * s.kernel_h * s.kernel_w * s.in_channels;
    let columns_len = s.batch * s.out_h * s.out_w * s.kernel_h * s.kernel_w * s.in_channels;
    let small_kernel = 4 * kernel_len < columns_len;
    // `then`, not `then_some`: the paddings below underflow where it does not fit.
    (s.stride_h == 1 && s.stride_w == 1 && fits && wide && small_kernel).then(|| Conv2dSpec {
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

/// `[c_out, kh, kw, c_in]` -> `[c_in, kh, kw, c_out]`, flipped along kh and kw.
fn flip_kernel<T: FloatElement>(kernel: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (kh, kw, ci, co) = (s.kernel_h, s.kernel_w, s.in_channels, s.out_channels);
    let mut out = vec![T::zero(); kernel.len()];
    for o in 0..co {
        for ky in 0..kh {
            for kx in 0..kw {
                let src = &kernel[((o * kh + ky) * kw + kx) * ci..][..ci];
                for (c, &v) in src.iter().enumerate() {
                    out[((c * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)) * co + o] = v;
                }
            }
        }
    }
    out
}

/// The input gradient: `[batch, in_h, in_w, c_in]`.
pub(crate) fn conv2d_backward_input<T: FloatElement>(dy: &[T], kernel: &[T], s: &Conv2dSpec) -> Vec<T> {
    if let Some(transposed) = backward_input_as_conv(s) {
        return conv2d(dy, &flip_kernel(kernel, s), None, &transposed);
    }
    let g = Geometry::new(s);
    let co = s.out_channels;
    let mut dx = vec![T::zero(); s.batch * g.in_image];
    if dx.is_empty() {
        return dx;
    }
    let rhs = MatRef::row_major(kernel, g.patch);
    dx.par_chunks_mut(g.chunk_images * g.in_image).enumerate().for_each_init(Vec::new, |col, (chunk, dst)| {
        let first = chunk * g.chunk_images;
        let images = dst.len() / g.in_image;
        let rows = images * g.out_pixels;
        let lhs = MatRef::row_major(&dy[first * g.out_pixels * co..(first + images) * g.out_pixels * co], co);
        if g.pointwise {
            gemm_into(dst, (rows, g.patch, co), lhs, rhs, false, g.gemm_par);
        } else {
            col.resize(rows * g.patch, T::zero());
            gemm_into(col, (rows, g.patch, co), lhs, rhs, false, g.gemm_par);
            col2im_add(&col[..rows * g.patch], s, &g, images, dst);
        }
    });
    dx
}

/// The kernel gradient: `[c_out, kh, kw, c_in]`. Each thread sums the products of its
/// own run of chunks into its own buffer; the few buffers are added at the end.
pub(crate) fn conv2d_backward_filter<T: FloatElement>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Vec<T> {
    let g = Geometry::new(s);
    let co = s.out_channels;
    let chunks = s.batch.div_ceil(g.chunk_images);
    let workers = rayon::current_num_threads().min(chunks).max(1);
    let partial = |w: usize| -> Vec<T> {
        let mut acc = vec![T::zero(); co * g.patch];
        let mut col = Vec::new();
        for chunk in chunks * w / workers..chunks * (w + 1) / workers {
            let first = chunk * g.chunk_images;
            let images = g.chunk_images.min(s.batch - first);
            let rows = images * g.out_pixels;
            let cols = if g.pointwise {
                &x[first * g.in_image..(first + images) * g.in_image]
            } else {
                col.resize(rows * g.patch, T::zero());
                im2col(x, s, &g, first, images, &mut col);
                &col[..rows * g.patch]
            };
            let dyc = &dy[first * g.out_pixels * co..(first + images) * g.out_pixels * co];
            gemm_into(
                &mut acc,
                (co, g.patch, rows),
                MatRef::transposed(dyc, co),
                MatRef::row_major(cols, g.patch),
                true,
                g.gemm_par,
            );
        }
        acc
    };
    let mut partials: Vec<Vec<T>> = (0..workers).into_par_iter().map(partial).collect();
    let mut total = partials.swap_remove(0);
    for p in &partials {
        add_assign(&mut total, p);
    }
    total
}
