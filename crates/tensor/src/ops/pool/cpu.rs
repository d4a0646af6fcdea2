//! CPU kernels of max and average pooling over NHWC.
//!
//! Channels are the contiguous axis, so every step works on whole pixel vectors of
//! `channels` elements (vectorised loops). Forward passes run over output rows in
//! parallel; backward passes scatter into the input gradient, so they run over images
//! (whose gradients are disjoint) in parallel.

use crate::backend::Pool2dSpec;
use crate::utilities::alloc::{host_oom, try_vec};
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Elements of work below which a parallel task is not worth its overhead.
const MIN_TASK: usize = 1 << 14;

/// The input range `lo..hi` that window `o` covers along one axis, padding excluded.
#[inline]
fn window(o: usize, stride: usize, pad: usize, size: usize, input: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + size as isize).max(0) as usize).min(input);
    (lo, hi.max(lo))
}

/// Output rows (of `out_w * channels` elements) per parallel task.
fn rows_per_task(s: &Pool2dSpec) -> usize {
    let work_per_row = (s.out_w * s.channels * s.window_h * s.window_w).max(1);
    MIN_TASK.div_ceil(work_per_row)
}

/// Runs `f(b, oy, ox, out_pixel)` for every output pixel, rows in parallel.
fn for_each_output<T: FloatElement>(
    op: &'static str,
    s: &Pool2dSpec,
    f: impl Fn(usize, usize, usize, &mut [T]) + Sync,
) -> Result<Vec<T>> {
    let c = s.channels;
    let mut out = try_vec(op, s.batch * s.out_h * s.out_w * c, T::zero())?;
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(s.out_w * c).with_min_len(rows_per_task(s)).enumerate().for_each(|(row, dst)| {
        let (b, oy) = (row / s.out_h, row % s.out_h);
        for (ox, pixel) in dst.chunks_exact_mut(c).enumerate() {
            f(b, oy, ox, pixel);
        }
    });
    Ok(out)
}

/// Max pooling: `[batch, out_h, out_w, channels]`.
pub(crate) fn max_pool2d<T: FloatElement>(x: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let in_image = s.in_h * s.in_w * c;
    for_each_output("max_pool2d", s, |b, oy, ox, best| {
        let img = &x[b * in_image..(b + 1) * in_image];
        let (y0, y1) = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
        let (x0, x1) = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
        best.copy_from_slice(&img[(y0 * s.in_w + x0) * c..][..c]);
        for iy in y0..y1 {
            for ix in x0..x1 {
                let px = &img[(iy * s.in_w + ix) * c..][..c];
                for (m, &v) in best.iter_mut().zip(px) {
                    // Strictly greater: the first maximum wins ties (the backward pass
                    // agrees). A select, not a branch, so that the loop vectorises.
                    *m = if v > *m { v } else { *m };
                }
            }
        }
    })
}

/// Average pooling: each window's sum over its real elements divided by their number.
pub(crate) fn avg_pool2d<T: FloatElement>(x: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let in_image = s.in_h * s.in_w * c;
    for_each_output("avg_pool2d", s, |b, oy, ox, sum| {
        let img = &x[b * in_image..(b + 1) * in_image];
        let (y0, y1) = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
        let (x0, x1) = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
        for iy in y0..y1 {
            for ix in x0..x1 {
                for (a, &v) in sum.iter_mut().zip(&img[(iy * s.in_w + ix) * c..][..c]) {
                    *a = *a + v;
                }
            }
        }
        let inv = T::one() / <T as num_traits::NumCast>::from((y1 - y0) * (x1 - x0)).expect("window size fits a float");
        for a in sum.iter_mut() {
            *a = *a * inv;
        }
    })
}

/// Runs `f(image, dx_image, scratch)` for every image in parallel, with one scratch of
/// `channels` flags per thread reused across images.
fn for_each_image_grad<T: FloatElement>(
    op: &'static str,
    s: &Pool2dSpec,
    f: impl Fn(usize, &mut [T], &mut [bool]) + Sync,
) -> Result<Vec<T>> {
    let in_image = s.in_h * s.in_w * s.channels;
    let mut dx = try_vec(op, s.batch * in_image, T::zero())?;
    if dx.is_empty() {
        return Ok(dx);
    }
    let per_image = (s.out_h * s.out_w * s.channels * s.window_h * s.window_w).max(1);
    let images_per_task = MIN_TASK.div_ceil(per_image);
    dx.par_chunks_mut(in_image).with_min_len(images_per_task).enumerate().try_for_each_init(
        || try_vec(op, s.channels, false).ok(),
        |scratch, (b, dst)| {
            let scratch = scratch.as_mut().ok_or_else(|| host_oom::<bool>(op, s.channels))?;
            f(b, dst, scratch);
            Ok(())
        },
    )?;
    Ok(dx)
}

/// The max-pooling gradient: each output gradient goes to the first position (in
/// row-major window order) that holds the window's maximum, i.e. the forward output `y`.
/// Walking the window in order with a per-channel "not yet given" flag keeps every step a
/// branch-free pass over contiguous channel vectors (no per-channel argmax, no scatter).
pub(crate) fn max_pool2d_backward<T: FloatElement>(x: &[T], y: &[T], dy: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let in_image = s.in_h * s.in_w * c;
    let out_image = s.out_h * s.out_w * c;
    for_each_image_grad("max_pool2d_backward", s, |b, dx, pending| {
        let img = &x[b * in_image..(b + 1) * in_image];
        let (yi, dyi) = (&y[b * out_image..(b + 1) * out_image], &dy[b * out_image..(b + 1) * out_image]);
        for oy in 0..s.out_h {
            let (y0, y1) = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
            for ox in 0..s.out_w {
                let (x0, x1) = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
                let o = (oy * s.out_w + ox) * c;
                let (maxima, grads) = (&yi[o..o + c], &dyi[o..o + c]);
                pending.fill(true);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let p = (iy * s.in_w + ix) * c;
                        let lanes =
                            dx[p..p + c].iter_mut().zip(&img[p..p + c]).zip(maxima).zip(grads).zip(pending.iter_mut());
                        for ((((d, &v), &m), &g), wait) in lanes {
                            let hit = *wait & (v == m);
                            *d = *d + if hit { g } else { T::zero() };
                            *wait &= !hit;
                        }
                    }
                }
            }
        }
    })
}

/// The average-pooling gradient: each output gradient, divided by its window's count of
/// real elements, is added to every real element of the window.
pub(crate) fn avg_pool2d_backward<T: FloatElement>(dy: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
    let c = s.channels;
    let out_image = s.out_h * s.out_w * c;
    for_each_image_grad("avg_pool2d_backward", s, |b, dx, _| {
        let dyi = &dy[b * out_image..(b + 1) * out_image];
        for oy in 0..s.out_h {
            let (y0, y1) = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
            for ox in 0..s.out_w {
                let (x0, x1) = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
                let inv = T::one()
                    / <T as num_traits::NumCast>::from((y1 - y0) * (x1 - x0)).expect("window size fits a float");
                let g = &dyi[(oy * s.out_w + ox) * c..][..c];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        for (d, &gv) in dx[(iy * s.in_w + ix) * c..][..c].iter_mut().zip(g) {
                            *d = *d + gv * inv;
                        }
                    }
                }
            }
        }
    })
}
