//! The phase kernel against the generic GEMM-then-col2im kernel of cpu.rs, on the
//! transposed convolutions it serves ('valid' and 'same', with odd output paddings that
//! leave rows no tap reaches or an odd row at the bottom, strides 2 and 3, kernels 1 to 5,
//! dilation, channels off the SIMD width), in f64 and f32, and its independence of the
//! thread count.

use super::{applies, axis_phases, conv2d_backward_input};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::backward_input_col2im;
use crate::utilities::alloc::ZeroBits;
use crate::{Element, FloatElement};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The convolution behind a transposed convolution with output `(h, w)` (the input of
/// the convolution), kernel `k`, stride `stride`, dilation `d`, and padding `(before,
/// after)` on both axes, `ci` filters and `co` input channels of the transposed one.
fn spec(
    batch: usize,
    (h, w): (usize, usize),
    (k, stride, d): (usize, usize, usize),
    (before, after): (usize, usize),
    (ci, co): (usize, usize),
) -> Conv2dSpec {
    let extent = (k - 1) * d + 1;
    let out = |n: usize| (n + before + after - extent) / stride + 1;
    Conv2dSpec {
        batch,
        in_h: h,
        in_w: w,
        in_channels: ci,
        out_channels: co,
        groups: 1,
        kernel_h: k,
        kernel_w: k,
        stride_h: stride,
        stride_w: stride,
        dilation_h: d,
        dilation_w: d,
        pad_top: before,
        pad_bottom: after,
        pad_left: before,
        pad_right: after,
        out_h: out(h),
        out_w: out(w),
    }
}

fn random<T: FloatElement>(len: usize, rng: &mut StdRng) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// Largest |a - b| over the largest |b| (0 for empty or all-zero `b`).
fn relative_error<T: FloatElement>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|&v| Element::to_f64(v).abs()).fold(0.0, f64::max).max(1e-300);
    a.iter().zip(b).map(|(&x, &y)| (Element::to_f64(x) - Element::to_f64(y)).abs()).fold(0.0, f64::max) / scale
}

fn check<T: FloatElement + ZeroBits>(s: &Conv2dSpec, seed: u64, tolerance: f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let k = random::<T>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels, &mut rng);
    let dy = random::<T>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
    let fast = conv2d_backward_input(&dy, &k, s).unwrap();
    let generic = backward_input_col2im(&dy, &k, s).unwrap();
    assert!(relative_error(&fast, &generic) <= tolerance, "input gradient of {s:?}");
}

/// Named geometries: Keras' 'same' 3x3 stride 2 (pad 0 before, 1 after) at the U-Net's
/// sizes and with an odd output (output_padding 0), 'valid' with rows no tap reaches, the
/// stride above the kernel, stride 3, kernel 5, dilation 2, channels off 8.
fn named_specs() -> Vec<Conv2dSpec> {
    vec![
        spec(2, (16, 16), (3, 2, 1), (0, 1), (16, 24)),
        spec(3, (15, 15), (3, 2, 1), (1, 1), (9, 5)),
        spec(1, (17, 13), (3, 2, 1), (0, 0), (8, 3)),
        spec(2, (9, 11), (2, 3, 1), (0, 0), (10, 7)),
        spec(2, (12, 12), (3, 3, 1), (0, 0), (11, 6)),
        spec(2, (13, 14), (5, 3, 1), (2, 2), (12, 9)),
        spec(1, (14, 14), (5, 2, 1), (1, 2), (8, 33)),
        spec(2, (11, 12), (3, 2, 2), (2, 2), (13, 4)),
        spec(2, (8, 8), (1, 2, 1), (0, 0), (8, 8)),
        spec(1, (2, 3), (3, 2, 1), (1, 1), (8, 1)),
    ]
}

/// Random strided geometries: kernel 1..=5, stride 2..=3, dilation 1..=2, padding up to
/// the kernel's reach, batch 1..=3, channels 8..=20 in and 1..=12 out.
fn random_specs(count: usize, seed: u64) -> Vec<Conv2dSpec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut specs = named_specs();
    while specs.len() < count {
        let (k, stride, d) = (rng.random_range(1..=5), rng.random_range(2..=3), rng.random_range(1..=2));
        let reach = (k - 1) * d;
        let (before, after) = (rng.random_range(0..=reach), rng.random_range(0..=reach));
        let (h, w) = (rng.random_range(1..=14), rng.random_range(1..=14));
        if h + before + after < reach + 1 || w + before + after < reach + 1 {
            continue;
        }
        let (b, ci, co) = (rng.random_range(1..=3), rng.random_range(8..=20), rng.random_range(1..=12));
        specs.push(spec(b, (h, w), (k, stride, d), (before, after), (ci, co)));
    }
    specs
}

#[test]
fn phases_equal_col2im_f64() {
    for (i, s) in random_specs(60, 1).iter().enumerate() {
        assert!(applies(s), "{s:?}");
        check::<f64>(s, i as u64, 1e-12);
    }
}

#[test]
fn phases_equal_col2im_f32() {
    for (i, s) in random_specs(30, 2).iter().enumerate() {
        check::<f32>(s, i as u64, 1e-5);
    }
}

#[test]
fn three_by_three_stride_two_splits_into_four_sub_kernels() {
    // Keras' 'same': pad 0 before. Even positions take taps 0 (from q) and 2 (from q - 1),
    // odd ones tap 1 (from q).
    let phases = axis_phases(2, 0, 1, 3, 16);
    let taps: Vec<_> = phases.iter().map(|p| (p.count, p.taps.clone())).collect();
    assert_eq!(taps, vec![(8, vec![(0, 0), (2, -1)]), (8, vec![(1, 0)])]);
}

#[test]
fn input_gradient_does_not_depend_on_the_thread_count() {
    // 37 bands: runs that do not divide evenly, and phases of different row counts.
    let s = spec(3, (25, 22), (3, 2, 1), (1, 1), (24, 40));
    let mut rng = StdRng::seed_from_u64(3);
    let k = random::<f32>(s.out_channels * 9 * s.in_channels, &mut rng);
    let dy = random::<f32>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| conv2d_backward_input(&dy, &k, &s).unwrap())
    };
    let one = with(1);
    assert_eq!(one, with(3));
    assert_eq!(one, with(2));
}

#[test]
fn applies_only_to_dense_strided_convolutions_with_channels() {
    assert!(applies(&spec(1, (8, 8), (3, 2, 1), (0, 1), (8, 4))));
    assert!(!applies(&spec(1, (8, 8), (3, 1, 1), (1, 1), (8, 4))), "stride 1 runs as a flipped convolution");
    assert!(!applies(&spec(1, (8, 8), (3, 2, 1), (0, 1), (3, 4))), "few input channels: col2im");
    let grouped = Conv2dSpec { groups: 2, ..spec(1, (8, 8), (3, 2, 1), (0, 1), (8, 4)) };
    assert!(!applies(&grouped));
}
