//! The non-overlapping kernels against the generic im2col/col2im kernels of cpu.rs, on
//! random shapes (batch 1, one channel, odd sizes, leftover rows and columns that 'valid'
//! drops), in f64 and f32, and the kernel gradient's independence of the thread count.

use super::{applies, conv2d, conv2d_backward_filter, conv2d_backward_input};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::{backward_filter_im2col, backward_input_col2im, conv2d_im2col};
use crate::utilities::alloc::ZeroBits;
use crate::{Element, FloatElement};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A 'valid' convolution with kernel == stride of `[batch, h, w, ci]` to `co` channels.
fn spec(batch: usize, (h, w): (usize, usize), (kh, kw): (usize, usize), (ci, co): (usize, usize)) -> Conv2dSpec {
    Conv2dSpec {
        batch,
        in_h: h,
        in_w: w,
        in_channels: ci,
        out_channels: co,
        groups: 1,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: kh,
        stride_w: kw,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: 0,
        pad_bottom: 0,
        pad_left: 0,
        pad_right: 0,
        out_h: h / kh,
        out_w: w / kw,
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

/// All three kernels, with and without bias, against the generic ones.
fn check<T: FloatElement + ZeroBits>(s: &Conv2dSpec, seed: u64, tolerance: f64) {
    assert!(applies(s), "{s:?}");
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random::<T>(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
    let k = random::<T>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels, &mut rng);
    let dy = random::<T>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
    let bias = random::<T>(s.out_channels, &mut rng);
    for b in [None, Some(&bias[..])] {
        let fast = conv2d(&x, &k, b, s).unwrap();
        let generic = conv2d_im2col(&x, &k, b, s).unwrap();
        assert!(relative_error(&fast, &generic) <= tolerance, "forward (bias {}) of {s:?}", b.is_some());
    }
    let fast = conv2d_backward_input(&dy, &k, None, s).unwrap();
    let generic = backward_input_col2im(&dy, &k, None, s).unwrap();
    assert!(relative_error(&fast, &generic) <= tolerance, "input gradient of {s:?}");
    let fast = conv2d_backward_filter(&x, &dy, s).unwrap();
    let generic = backward_filter_im2col(&x, &dy, s).unwrap();
    assert!(relative_error(&fast, &generic) <= tolerance, "kernel gradient of {s:?}");
}

/// Random geometries: kernel 1..=3 on each axis (not both 1), input sizes that leave
/// leftovers, batch and channels down to 1.
fn random_specs(count: usize, seed: u64) -> Vec<Conv2dSpec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut specs = vec![
        spec(1, (2, 2), (2, 2), (1, 1)),
        spec(1, (5, 7), (2, 2), (1, 3)),
        spec(3, (9, 4), (3, 2), (5, 1)),
        spec(16, (32, 32), (2, 2), (16, 32)),
    ];
    while specs.len() < count {
        let (kh, kw) = (rng.random_range(1..=3), rng.random_range(1..=3));
        if kh * kw == 1 {
            continue;
        }
        let h = rng.random_range(kh..=kh * 6 + 2);
        let w = rng.random_range(kw..=kw * 6 + 2);
        let (b, ci, co) = (rng.random_range(1..=3), rng.random_range(1..=9), rng.random_range(1..=9));
        specs.push(spec(b, (h, w), (kh, kw), (ci, co)));
    }
    specs
}

#[test]
fn fast_path_equals_generic_path_f64() {
    for (i, s) in random_specs(40, 1).iter().enumerate() {
        check::<f64>(s, i as u64, 1e-12);
    }
}

#[test]
fn fast_path_equals_generic_path_f32() {
    for (i, s) in random_specs(20, 2).iter().enumerate() {
        check::<f32>(s, i as u64, 1e-5);
    }
}

#[test]
fn kernel_gradient_does_not_depend_on_the_thread_count() {
    let s = spec(4, (33, 30), (2, 3), (7, 12));
    let mut rng = StdRng::seed_from_u64(3);
    let x = random::<f32>(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
    let dy = random::<f32>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| conv2d_backward_filter(&x, &dy, &s).unwrap())
    };
    let one = with(1);
    assert_eq!(one, with(3));
    assert_eq!(one, with(2));
}

#[test]
fn applies_only_to_tiling_windows() {
    assert!(applies(&spec(1, (4, 4), (2, 2), (1, 1))));
    assert!(!applies(&spec(1, (4, 4), (1, 1), (1, 1))), "pointwise runs in place");
    let overlapping = Conv2dSpec { kernel_h: 3, kernel_w: 3, out_h: 1, out_w: 1, ..spec(1, (4, 4), (2, 2), (1, 1)) };
    assert!(!applies(&overlapping));
    let padded = Conv2dSpec { pad_bottom: 1, out_h: 3, ..spec(1, (5, 4), (2, 2), (1, 1)) };
    assert!(!applies(&padded));
    let grouped = Conv2dSpec { groups: 2, ..spec(1, (4, 4), (2, 2), (2, 2)) };
    assert!(!applies(&grouped));
    let dilated = Conv2dSpec { dilation_w: 2, ..spec(1, (4, 4), (2, 2), (1, 1)) };
    assert!(!applies(&dilated));
}
