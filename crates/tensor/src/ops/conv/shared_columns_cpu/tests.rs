//! The shared-column route against the two generic kernels it replaces, and the bias of
//! the input gradient (a transposed convolution's) against a separate add, on random
//! geometries: kernels 1..4, strides 1..3, dilation 1..2, padding on any side, odd sizes,
//! channel counts that are not multiples of 8, batch 1..3; in f64 and f32.

use super::{applies, conv2d_and_filter_grad};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::{backward_filter_im2col, conv2d_backward_input, conv2d_backward_input_bias, conv2d_im2col};
use crate::utilities::alloc::ZeroBits;
use crate::{Element, FloatElement};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random<T: FloatElement>(len: usize, rng: &mut StdRng) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// Largest |a - b| over the largest |b| (0 for empty or all-zero `b`).
fn relative_error<T: FloatElement>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|&v| Element::to_f64(v).abs()).fold(0.0, f64::max).max(1e-300);
    a.iter().zip(b).map(|(&x, &y)| (Element::to_f64(x) - Element::to_f64(y)).abs()).fold(0.0, f64::max) / scale
}

/// A convolution geometry from its free parameters; `None` where the padded input is
/// smaller than the kernel's extent.
#[allow(clippy::too_many_arguments)]
fn spec(
    batch: usize,
    (in_h, in_w): (usize, usize),
    (ci, co): (usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    [top, bottom, left, right]: [usize; 4],
    groups: usize,
) -> Option<Conv2dSpec> {
    let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
    let out_h = (in_h + top + bottom).checked_sub(eh)? / sh + 1;
    let out_w = (in_w + left + right).checked_sub(ew)? / sw + 1;
    Some(Conv2dSpec {
        batch,
        in_h,
        in_w,
        in_channels: ci,
        out_channels: co,
        groups,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        dilation_h: dh,
        dilation_w: dw,
        pad_top: top,
        pad_bottom: bottom,
        pad_left: left,
        pad_right: right,
        out_h,
        out_w,
    })
}

/// The U-Net's stride-2 transposed convolutions (as the convolutions they transpose:
/// 3x3 'same' and 2x2 'valid'), scaled down in batch, then random geometries.
fn specs(count: usize, seed: u64, groups: usize) -> Vec<Conv2dSpec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Conv2dSpec> = [
        spec(2, (16, 16), (16, 32), (3, 3), (2, 2), (1, 1), [0, 1, 0, 1], 1),
        spec(2, (16, 16), (16, 32), (2, 2), (2, 2), (1, 1), [0; 4], 1),
        spec(1, (7, 9), (3, 5), (2, 2), (2, 2), (1, 1), [0; 4], 1),
        spec(1, (9, 7), (5, 3), (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 1),
        spec(2, (6, 6), (12, 6), (4, 4), (2, 2), (1, 1), [1, 2, 1, 2], 1),
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.groups == groups)
    .collect();
    while out.len() < count {
        let k = (rng.random_range(1..=4), rng.random_range(1..=4));
        let st = (rng.random_range(1..=3), rng.random_range(1..=3));
        let d = (rng.random_range(1..=2), rng.random_range(1..=2));
        let pads = [0; 4].map(|_| rng.random_range(0..=2));
        let size = (rng.random_range(1..=11), rng.random_range(1..=11));
        let ch = (groups * rng.random_range(1..=6), groups * rng.random_range(1..=6));
        out.extend(spec(rng.random_range(1..=3), size, ch, k, st, d, pads, groups));
    }
    out
}

/// The shared route against `conv2d_im2col` and `backward_filter_im2col`.
fn check_shared<T: FloatElement + ZeroBits>() {
    let mut ran = 0;
    for (i, s) in specs(60, 7, 1).iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let x = random::<T>(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
        let k = random::<T>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels, &mut rng);
        let dy = random::<T>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
        let Some((y, dk)) = conv2d_and_filter_grad(&x, &k, &dy, s).unwrap() else {
            assert!(!applies::<T>(s), "{s:?}");
            continue;
        };
        ran += 1;
        let (y_ref, dk_ref) = (conv2d_im2col(&x, &k, None, s).unwrap(), backward_filter_im2col(&x, &dy, s).unwrap());
        // The same GEMMs as the kernels run alone: the same bits.
        assert!(y == y_ref, "convolution of {s:?}");
        assert!(dk == dk_ref, "kernel gradient of {s:?}");
    }
    assert!(ran >= 20, "only {ran} geometries took the shared route");
}

#[test]
fn shared_columns_match_the_separate_kernels_f64() {
    check_shared::<f64>();
}

#[test]
fn shared_columns_match_the_separate_kernels_f32() {
    check_shared::<f32>();
}

#[test]
fn grouped_pointwise_and_tiling_shapes_are_left_to_their_kernels() {
    let winograd = spec(1, (16, 16), (16, 16), (3, 3), (1, 1), (1, 1), [1; 4], 1).unwrap();
    let grouped = spec(1, (8, 8), (4, 4), (3, 3), (2, 2), (1, 1), [1; 4], 2).unwrap();
    let pointwise = spec(1, (8, 8), (4, 4), (1, 1), (1, 1), (1, 1), [0; 4], 1).unwrap();
    let tiles = spec(1, (8, 8), (4, 4), (2, 2), (2, 2), (1, 1), [0; 4], 1).unwrap();
    assert!(applies::<f64>(&winograd), "f64 has no Winograd path");
    for s in [grouped, pointwise, tiles] {
        assert!(!applies::<f64>(&s) && !applies::<f32>(&s), "{s:?}");
    }
}

/// The bias started in the input gradient's own pass against a separate add afterwards.
fn check_bias<T: FloatElement + ZeroBits>(groups: usize, tolerance: f64) {
    for (i, s) in specs(60, 11 + groups as u64, groups).iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(100 + i as u64);
        let k = random::<T>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels / groups, &mut rng);
        let dy = random::<T>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
        let bias = random::<T>(s.in_channels, &mut rng);
        let fused = conv2d_backward_input_bias(&dy, &k, Some(&bias), s).unwrap();
        let mut reference = conv2d_backward_input(&dy, &k, s).unwrap();
        for px in reference.chunks_exact_mut(s.in_channels) {
            for (v, &b) in px.iter_mut().zip(&bias) {
                *v = *v + b;
            }
        }
        assert!(relative_error(&fused, &reference) <= tolerance, "input gradient + bias of {s:?}");
    }
}

#[test]
fn bias_in_the_input_gradient_matches_a_separate_add_f64() {
    check_bias::<f64>(1, 1e-12);
    check_bias::<f64>(2, 1e-12);
}

#[test]
fn bias_in_the_input_gradient_matches_a_separate_add_f32() {
    check_bias::<f32>(1, 1e-5);
    check_bias::<f32>(2, 1e-5);
}
