//! CPU kernels of nearest-neighbour resizing by integer factors, which is pure
//! replication: output pixel `(oy, ox)` is input pixel `(oy / fy, ox / fx)`, and the
//! adjoint sums each `fy x fx` block of the output gradient into its input pixel.
//!
//! At the U-Net's small maps the work is a few hundred KiB and a fixed cost per call
//! dominates, so these kernels avoid what the generic ones (cpu.rs) pay per row: the
//! outputs are not zero-filled first (every element is written once), a task is a run of
//! whole images (not of rows), the forward builds each output row once (each input pixel
//! copied `fx` times) and copies it to the next `fy - 1` rows, and the adjoint sums each
//! block in one pass per input row.

use super::ResizeSpec;
use crate::utilities::alloc::try_with_capacity;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output elements of work per parallel task, at least: below this a task's hand-off
/// costs more than it saves.
const MIN_TASK: usize = 1 << 15;

/// `src` viewed as initialised `MaybeUninit`s, for copying into an uninitialised buffer.
fn as_uninit<T>(src: &[T]) -> &[MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and an initialised value is a valid
    // `MaybeUninit`; the view is read-only.
    unsafe { &*(src as *const [T] as *const [MaybeUninit<T>]) }
}

/// A vector of `len` elements, each written by `fill` over runs of whole images
/// (`image` elements each) in parallel: `fill(first_image, run)` must write all of `run`.
fn by_images<T: FloatElement>(
    op: &'static str,
    len: usize,
    image: usize,
    work_per_image: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Result<Vec<T>> {
    let mut out: Vec<T> = try_with_capacity(op, len)?;
    if len == 0 {
        return Ok(out);
    }
    let per_task = MIN_TASK.div_ceil(work_per_image.max(1)).max(1);
    let spare = &mut out.spare_capacity_mut()[..len];
    let runs = len / image;
    if runs <= per_task {
        // One task: no thread hand-off for a small batch.
        fill(0, spare);
    } else {
        spare.par_chunks_mut(per_task * image).enumerate().for_each(|(i, run)| fill(i * per_task, run));
    }
    // SAFETY: the capacity is at least `len`, and the runs cover `0..len`, each written
    // in full by `fill` (the kernels of this file, its only callers).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The forward resize: `[batch, in_h * fy, in_w * fx, channels]`.
pub(super) fn resize<T: FloatElement>(x: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let (in_row, out_row) = (s.in_w * c, s.out_w() * c);
    let (in_image, out_image) = (s.in_h * in_row, s.out_h() * out_row);
    if out_image == 0 {
        return Ok(Vec::new());
    }
    by_images("resize", s.batch * out_image, out_image, out_image, |first, run| {
        for (b, dst) in run.chunks_exact_mut(out_image).enumerate() {
            let img = &x[(first + b) * in_image..][..in_image];
            for (src, rows) in img.chunks_exact(in_row).zip(dst.chunks_exact_mut(s.factor_h * out_row)) {
                let (row, copies) = rows.split_at_mut(out_row);
                for (pixel, out) in src.chunks_exact(c).zip(row.chunks_exact_mut(s.factor_w * c)) {
                    for copy in out.chunks_exact_mut(c) {
                        copy.copy_from_slice(as_uninit(pixel));
                    }
                }
                let row: &[MaybeUninit<T>] = row;
                for copy in copies.chunks_exact_mut(out_row) {
                    copy.copy_from_slice(row);
                }
            }
        }
    })
}

/// The adjoint: `[batch, in_h, in_w, channels]`, each pixel the sum of its `fy x fx`
/// block of `dy`, in row-major order within the block (the generic kernel's order).
pub(super) fn resize_backward<T: FloatElement>(dy: &[T], s: &ResizeSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let (in_row, out_row) = (s.in_w * c, s.out_w() * c);
    let (in_image, out_image) = (s.in_h * in_row, s.out_h() * out_row);
    if in_image == 0 {
        return Ok(Vec::new());
    }
    let (fy, fx) = (s.factor_h, s.factor_w);
    by_images("resize_backward", s.batch * in_image, in_image, out_image, |first, run| {
        for (b, dst) in run.chunks_exact_mut(in_image).enumerate() {
            let g = &dy[(first + b) * out_image..][..out_image];
            for (rows, dst) in g.chunks_exact(fy * out_row).zip(dst.chunks_exact_mut(in_row)) {
                for (ix, pixel) in dst.chunks_exact_mut(c).enumerate() {
                    let at = |dy: usize, dx: usize| &rows[dy * out_row + (ix * fx + dx) * c..][..c];
                    pixel.copy_from_slice(as_uninit(at(0, 0)));
                    // SAFETY: written in full just above.
                    let pixel = unsafe { &mut *(pixel as *mut [MaybeUninit<T>] as *mut [T]) };
                    for (ry, rx) in (0..fy).flat_map(|ry| (0..fx).map(move |rx| (ry, rx))).skip(1) {
                        for (d, &v) in pixel.iter_mut().zip(at(ry, rx)) {
                            *d = *d + v;
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{resize, resize_backward};
    use crate::ops::resize::{Interpolation, ResizeSpec};

    /// Odd sizes and factors, one channel and several, batches of one image per task and
    /// of many (the parallel split).
    fn specs() -> Vec<ResizeSpec> {
        let spec = |batch, in_h, in_w, channels, factor_h, factor_w| ResizeSpec {
            batch,
            in_h,
            in_w,
            channels,
            factor_h,
            factor_w,
            interpolation: Interpolation::Nearest,
        };
        vec![spec(1, 1, 1, 1, 2, 2), spec(2, 3, 5, 3, 2, 3), spec(3, 4, 2, 5, 1, 2), spec(40, 8, 8, 16, 2, 2)]
    }

    fn values(len: usize) -> Vec<f64> {
        (0..len).map(|i| ((i * 37) % 101) as f64 - 50.0).collect()
    }

    #[test]
    fn forward_replicates_each_pixel() {
        for s in specs() {
            let c = s.channels;
            let x = values(s.batch * s.in_h * s.in_w * c);
            let y = resize(&x, &s).unwrap();
            assert_eq!(y.len(), s.batch * s.out_h() * s.out_w() * c);
            for (i, &v) in y.iter().enumerate() {
                let (ch, ox, oy, b) =
                    (i % c, i / c % s.out_w(), i / c / s.out_w() % s.out_h(), i / c / s.out_w() / s.out_h());
                let src = ((b * s.in_h + oy / s.factor_h) * s.in_w + ox / s.factor_w) * c + ch;
                assert_eq!(v, x[src], "{s:?} at {i}");
            }
        }
    }

    #[test]
    fn adjoint_sums_each_block() {
        for s in specs() {
            let c = s.channels;
            let dy = values(s.batch * s.out_h() * s.out_w() * c);
            let dx = resize_backward(&dy, &s).unwrap();
            let mut expected = vec![0.0; s.batch * s.in_h * s.in_w * c];
            for (i, &v) in dy.iter().enumerate() {
                let (ch, ox, oy, b) =
                    (i % c, i / c % s.out_w(), i / c / s.out_w() % s.out_h(), i / c / s.out_w() / s.out_h());
                expected[((b * s.in_h + oy / s.factor_h) * s.in_w + ox / s.factor_w) * c + ch] += v;
            }
            assert_eq!(dx, expected, "{s:?}");
        }
    }
}
