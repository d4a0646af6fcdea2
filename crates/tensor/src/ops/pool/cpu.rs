//! CPU kernels of max and average pooling over NHWC.
//!
//! Channels are the contiguous axis, so every step works on whole pixel vectors of
//! `channels` elements (vectorised loops). Forward passes run over output rows in
//! parallel; backward passes run over images (whose gradients are disjoint) in parallel.
//! Max pooling's loops (max_rows.rs) are compiled for the widest instruction set the CPU
//! has, write their outputs once (never zeroed first), and its backward pass gathers from
//! the recorded position of each window's maximum.

use super::max_rows::{ArgmaxRow, GatherRow, MaxRow};
use crate::backend::Pool2dSpec;
use crate::utilities::alloc::{host_oom, try_par_fill, try_vec, try_zeros, ZeroBits};
use crate::utilities::isa::Isa;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements of work below which a parallel task is not worth its overhead.
const MIN_TASK: usize = 1 << 14;

/// The input range `lo..hi` that window `o` covers along one axis, padding excluded.
#[inline(always)]
pub(super) fn window(o: usize, stride: usize, pad: usize, size: usize, input: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + size as isize).max(0) as usize).min(input);
    (lo, hi.max(lo))
}

/// The outputs `lo..hi` along one axis whose windows contain input index `i`.
fn windows_containing(i: usize, stride: usize, pad: usize, size: usize, out: usize) -> (usize, usize) {
    // Window o covers o * stride - pad ..= o * stride - pad + size - 1.
    let lo = (i + pad + 1).saturating_sub(size).div_ceil(stride);
    let hi = ((i + pad) / stride + 1).min(out);
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
    max_pool2d_with(Isa::detect(), x, s)
}

/// [`max_pool2d`] with the given instruction set (the tests compare them).
fn max_pool2d_with<T: FloatElement>(isa: Isa, x: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
    let in_image = s.in_h * s.in_w * s.channels;
    let fill = |_: &mut (), row: usize, dst: &mut [MaybeUninit<T>]| {
        let (b, oy) = (row / s.out_h, row % s.out_h);
        isa.run(MaxRow { img: &x[b * in_image..(b + 1) * in_image], s, oy, dst });
        Ok(())
    };
    let len = s.batch * s.out_h * s.out_w * s.channels;
    // SAFETY: `MaxRow` writes every element of its output row.
    unsafe { try_par_fill("max_pool2d", len, s.out_w * s.channels, rows_per_task(s), || (), fill) }
}

/// Whether every ordinal of a window (`0..window_h * window_w`) is exact in `T`, as the
/// gathering backward pass needs (below 2^24 elements in f32).
fn ordinals_are_exact<T: FloatElement>(s: &Pool2dSpec) -> bool {
    let largest = s.window_h.saturating_mul(s.window_w);
    <T as num_traits::NumCast>::from(largest).is_some_and(|v| v <= T::one() / T::epsilon())
}

/// The max-pooling gradient: each output gradient goes to the first position (in
/// row-major window order) that holds the window's maximum, i.e. the forward output `y`
/// (none where that is NaN). Per image, the position of each window's maximum is found
/// again from `x` as the forward pass found it (`ArgmaxRow`), then each input element sums
/// the gradients of the windows that picked it (`GatherRow`), in window order.
pub(crate) fn max_pool2d_backward<T: FloatElement + ZeroBits>(
    x: &[T],
    y: &[T],
    dy: &[T],
    s: &Pool2dSpec,
) -> Result<Vec<T>> {
    if !ordinals_are_exact::<T>(s) {
        return max_pool2d_backward_rescan(x, y, dy, s);
    }
    max_pool2d_backward_gather(Isa::detect(), x, dy, s)
}

/// [`max_pool2d_backward`] by recorded positions, with the given instruction set.
fn max_pool2d_backward_gather<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    dy: &[T],
    s: &Pool2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "max_pool2d_backward";
    let c = s.channels;
    let (in_image, out_image) = (s.in_h * s.in_w * c, s.out_h * s.out_w * c);
    let mut out_cols = try_vec(OP, s.in_w, (0, 0))?;
    for (ix, cols) in out_cols.iter_mut().enumerate() {
        *cols = windows_containing(ix, s.stride_w, s.pad_left, s.window_w, s.out_w);
    }
    let per_image = (out_image * s.window_h * s.window_w).max(1);
    // Per task: the recorded ordinals of one image.
    let scratch = || try_zeros::<T>(OP, out_image).ok();
    let fill = |scratch: &mut Option<Vec<T>>, b: usize, dst: &mut [MaybeUninit<T>]| {
        let arg = scratch.as_mut().ok_or_else(|| host_oom::<T>(OP, out_image))?;
        let img = &x[b * in_image..(b + 1) * in_image];
        for (oy, arg) in arg.chunks_exact_mut(s.out_w * c).enumerate() {
            isa.run(ArgmaxRow { img, s, oy, arg });
        }
        let dyi = &dy[b * out_image..(b + 1) * out_image];
        for (iy, dst) in dst.chunks_exact_mut(s.in_w * c).enumerate() {
            let out_rows = windows_containing(iy, s.stride_h, s.pad_top, s.window_h, s.out_h);
            isa.run(GatherRow { arg, dy: dyi, s, iy, out_rows, out_cols: &out_cols, dst });
        }
        Ok(())
    };
    // SAFETY: `GatherRow` writes every element of its input row, and the rows of an image
    // cover it.
    unsafe { try_par_fill(OP, s.batch * in_image, in_image, MIN_TASK.div_ceil(per_image), scratch, fill) }
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

/// [`max_pool2d_backward`] for windows too large for exact ordinals in `T`: each window is
/// walked in order with a per-channel "not yet given" flag, adding its gradient to the
/// first element equal to `y` (a zeroed buffer added into once per window element).
fn max_pool2d_backward_rescan<T: FloatElement>(x: &[T], y: &[T], dy: &[T], s: &Pool2dSpec) -> Result<Vec<T>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooling geometry resolved as TF's 'same' (or 'valid' when `same` is false) does.
    fn spec(
        batch: usize,
        (in_h, in_w): (usize, usize),
        c: usize,
        k: (usize, usize),
        st: (usize, usize),
        same: bool,
    ) -> Pool2dSpec {
        let axis = |input: usize, k: usize, st: usize| {
            if same {
                let out = input.div_ceil(st);
                let pad = ((out - 1) * st + k).saturating_sub(input);
                (out, pad / 2, pad - pad / 2)
            } else {
                ((input - k) / st + 1, 0, 0)
            }
        };
        let (out_h, pad_top, pad_bottom) = axis(in_h, k.0, st.0);
        let (out_w, pad_left, pad_right) = axis(in_w, k.1, st.1);
        Pool2dSpec {
            batch,
            in_h,
            in_w,
            channels: c,
            window_h: k.0,
            window_w: k.1,
            stride_h: st.0,
            stride_w: st.1,
            pad_top,
            pad_bottom,
            pad_left,
            pad_right,
            out_h,
            out_w,
        }
    }

    /// Few distinct values (so windows hold tied maxima), NaNs (first in some windows, later
    /// in others), zeros of both signs, and channel counts with tails past every vector width.
    fn cases() -> Vec<(Pool2dSpec, Vec<f32>, Vec<f32>)> {
        let mut out = Vec::new();
        let geometries = [
            ((5, 7), 3, (2, 2), (1, 1), true),
            ((6, 6), 17, (3, 3), (2, 2), true),
            ((7, 5), 33, (2, 3), (1, 2), false),
            ((4, 9), 1, (3, 2), (3, 1), true),
            ((3, 3), 70, (1, 1), (2, 2), false),
            ((8, 8), 16, (2, 2), (2, 2), false),
        ];
        for (i, &(size, c, k, st, same)) in geometries.iter().enumerate() {
            let s = spec(2, size, c, k, st, same);
            let n = s.batch * s.in_h * s.in_w * c;
            let mut x: Vec<f32> = (0..n).map(|j| ((j * 7 + i) % 5) as f32 - 2.0).collect();
            for j in (0..n).step_by(13) {
                x[j] = f32::NAN;
            }
            for j in (5..n).step_by(11) {
                x[j] = -0.0;
            }
            let dy: Vec<f32> =
                (0..s.batch * s.out_h * s.out_w * c).map(|j| ((j * 31) % 17) as f32 * 0.25 - 2.0).collect();
            out.push((s, x, dy));
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn every_instruction_set_gives_the_same_forward_bits() {
        for (s, x, _) in cases() {
            let portable = bits(&max_pool2d_with(Isa::Portable, &x, &s).unwrap());
            for isa in Isa::available() {
                assert_eq!(bits(&max_pool2d_with(isa, &x, &s).unwrap()), portable, "{isa:?} {s:?}");
            }
        }
    }

    /// The forward pass against the definition: per channel, the window's elements in
    /// row-major order, each taken when strictly greater than the maximum so far.
    #[test]
    fn forward_is_each_windows_first_maximum_on_every_instruction_set() {
        for (s, x, _) in cases() {
            let c = s.channels;
            let mut expected = Vec::new();
            for b in 0..s.batch {
                for oy in 0..s.out_h {
                    let (y0, y1) = window(oy, s.stride_h, s.pad_top, s.window_h, s.in_h);
                    for ox in 0..s.out_w {
                        let (x0, x1) = window(ox, s.stride_w, s.pad_left, s.window_w, s.in_w);
                        for ch in 0..c {
                            let at = |iy: usize, ix: usize| x[((b * s.in_h + iy) * s.in_w + ix) * c + ch];
                            let mut m = at(y0, x0);
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    m = if at(iy, ix) > m { at(iy, ix) } else { m };
                                }
                            }
                            expected.push(m);
                        }
                    }
                }
            }
            for isa in Isa::available() {
                assert_eq!(bits(&max_pool2d_with(isa, &x, &s).unwrap()), bits(&expected), "{isa:?} {s:?}");
            }
        }
    }

    /// The gather from recorded positions against the rescan of each window for the first
    /// element equal to `y` (the rule both implement): ties, NaN maxima, -0 and +0.
    #[test]
    fn gathered_gradient_equals_the_rescan_on_every_instruction_set() {
        for (s, x, dy) in cases() {
            let y = max_pool2d(&x, &s).unwrap();
            let rescan = bits(&max_pool2d_backward_rescan(&x, &y, &dy, &s).unwrap());
            for isa in Isa::available() {
                assert_eq!(bits(&max_pool2d_backward_gather(isa, &x, &dy, &s).unwrap()), rescan, "{isa:?} {s:?}");
            }
            assert_eq!(bits(&max_pool2d_backward(&x, &y, &dy, &s).unwrap()), rescan);
        }
    }

    #[test]
    fn windows_too_large_for_exact_ordinals_are_rescanned() {
        let small = spec(1, (4, 4), 2, (2, 2), (1, 1), true);
        assert!(ordinals_are_exact::<f32>(&small));
        let huge = Pool2dSpec { window_h: 1 << 12, window_w: 1 << 12, ..small };
        assert!(ordinals_are_exact::<f32>(&Pool2dSpec { window_w: 1 << 11, ..huge }));
        assert!(!ordinals_are_exact::<f32>(&Pool2dSpec { window_w: (1 << 11) + 1, ..huge }));
        assert!(ordinals_are_exact::<f64>(&huge));
    }

    #[test]
    fn windows_containing_an_input_are_those_that_cover_it() {
        for (input, size, stride, pad) in [(7, 2, 1, 0), (7, 3, 2, 1), (9, 2, 3, 1), (5, 1, 2, 0), (6, 4, 1, 2)] {
            let out = (input + 2 * pad - size) / stride + 1;
            for i in 0..input {
                let (lo, hi) = windows_containing(i, stride, pad, size, out);
                for o in 0..out {
                    let (a, b) = window(o, stride, pad, size, input);
                    assert_eq!((lo..hi).contains(&o), (a..b).contains(&i), "input {i} window {o}");
                }
            }
        }
    }
}
