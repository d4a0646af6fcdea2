//! The tap-GEMM kernels against the generic im2col routes on random small-map geometries
//! (kernels 2x2 to 5x5, strides 1..3, dilation 1..2, padding on any side, channel counts
//! that are not multiples of 16, with and without a bias): in f64, to the rounding of a
//! different summation order; and the same bits at 1, 2 and 5 threads.

use super::{applies, backward_filter, backward_input, conv2d, tap_runs, TapRun};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::{backward_filter_im2col, backward_input_col2im, conv2d_im2col};
use crate::FloatElement;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random<T: FloatElement>(len: usize, rng: &mut StdRng) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// A random geometry these kernels apply to: output maps of 1 to 4 pixels.
fn random_spec(rng: &mut StdRng) -> Conv2dSpec {
    loop {
        let (kh, kw) = (rng.random_range(1..6usize), rng.random_range(1..6usize));
        let (sh, sw) = (rng.random_range(1..4usize), rng.random_range(1..4usize));
        let (dh, dw) = (rng.random_range(1..3usize), rng.random_range(1..3usize));
        let pad: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..3));
        let (in_h, in_w) = (rng.random_range(1..7usize), rng.random_range(1..7usize));
        let (reach_h, reach_w) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        let (span_h, span_w) = (in_h + pad[0] + pad[1], in_w + pad[2] + pad[3]);
        if span_h < reach_h || span_w < reach_w {
            continue;
        }
        let s = Conv2dSpec {
            batch: rng.random_range(16..21),
            in_h,
            in_w,
            in_channels: rng.random_range(16..40),
            out_channels: rng.random_range(16..150),
            groups: 1,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            dilation_h: dh,
            dilation_w: dw,
            pad_top: pad[0],
            pad_bottom: pad[1],
            pad_left: pad[2],
            pad_right: pad[3],
            out_h: (span_h - reach_h) / sh + 1,
            out_w: (span_w - reach_w) / sw + 1,
        };
        if applies(&s) {
            return s;
        }
    }
}

/// The seed ResNet's 2x2 stage: 3x3, padding 1, stride 1 at 2x2 and stride 2 from 4x4
/// (fewer channels, the same geometry).
fn resnet_specs() -> Vec<Conv2dSpec> {
    let base = Conv2dSpec {
        batch: 16,
        in_h: 2,
        in_w: 2,
        in_channels: 48,
        out_channels: 80,
        groups: 1,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: 1,
        pad_bottom: 1,
        pad_left: 1,
        pad_right: 1,
        out_h: 2,
        out_w: 2,
    };
    let strided = Conv2dSpec { in_h: 4, in_w: 4, stride_h: 2, stride_w: 2, pad_bottom: 0, pad_right: 0, ..base };
    vec![base, strided]
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// All three kernels on `s` against im2col, in f64: the same sums in another order.
fn check_against_im2col(s: &Conv2dSpec, rng: &mut StdRng) {
    let x = random::<f64>(s.batch * s.in_h * s.in_w * s.in_channels, rng);
    let k = random::<f64>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels, rng);
    let dy = random::<f64>(s.batch * s.out_h * s.out_w * s.out_channels, rng);
    let (bias_out, bias_in) = (random::<f64>(s.out_channels, rng), random::<f64>(s.in_channels, rng));
    // Each sum has at most batch * kh * kw * channels terms of magnitude below 1.
    let tol = 1e-12 * (s.batch * s.kernel_h * s.kernel_w * s.in_channels.max(s.out_channels)) as f64;
    for bias in [None, Some(&bias_out[..])] {
        let d = max_abs_diff(&conv2d(&x, &k, bias, s).unwrap(), &conv2d_im2col(&x, &k, bias, s).unwrap());
        assert!(d < tol, "forward {s:?} (bias {}): differs by {d}", bias.is_some());
    }
    for bias in [None, Some(&bias_in[..])] {
        let ours = backward_input(&dy, &k, bias, s).unwrap();
        let d = max_abs_diff(&ours, &backward_input_col2im(&dy, &k, bias, s).unwrap());
        assert!(d < tol, "input gradient {s:?} (bias {}): differs by {d}", bias.is_some());
    }
    let d = max_abs_diff(&backward_filter(&x, &dy, s).unwrap(), &backward_filter_im2col(&x, &dy, s).unwrap());
    assert!(d < tol, "kernel gradient {s:?}: differs by {d}");
}

#[test]
fn equals_im2col_on_random_small_maps() {
    let mut rng = StdRng::seed_from_u64(31);
    for s in resnet_specs() {
        check_against_im2col(&s, &mut rng);
    }
    for _ in 0..40 {
        let s = random_spec(&mut rng);
        check_against_im2col(&s, &mut rng);
    }
}

#[test]
fn the_same_bits_at_any_thread_count() {
    let mut rng = StdRng::seed_from_u64(32);
    let mut specs = resnet_specs();
    specs.extend((0..6).map(|_| random_spec(&mut rng)));
    for s in &specs {
        let x = random::<f32>(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
        let k = random::<f32>(s.out_channels * s.kernel_h * s.kernel_w * s.in_channels, &mut rng);
        let dy = random::<f32>(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                (
                    bits(conv2d(&x, &k, None, s).unwrap()),
                    bits(backward_input(&dy, &k, None, s).unwrap()),
                    bits(backward_filter(&x, &dy, s).unwrap()),
                )
            })
        };
        let one = run(1);
        for threads in [2, 5] {
            assert!(run(threads) == one, "{s:?}: other bits at {threads} threads than at 1");
        }
    }
}

#[test]
fn only_taps_that_read_real_pixels_run() {
    let s = &resnet_specs()[0];
    // At 2x2 with padding 1, each output pixel reads the whole input through 2 rows of 2
    // adjacent taps: one GEMM of 2 pixels per kernel row.
    assert_eq!(
        tap_runs(s, 0, 0),
        vec![TapRun { ky: 1, kx0: 1, iy: 0, ix0: 0, len: 2 }, TapRun { ky: 2, kx0: 1, iy: 1, ix0: 0, len: 2 }]
    );
    assert_eq!(
        tap_runs(s, 1, 1),
        vec![TapRun { ky: 0, kx0: 0, iy: 0, ix0: 0, len: 2 }, TapRun { ky: 1, kx0: 0, iy: 1, ix0: 0, len: 2 }]
    );
    // Stride 2 across: every tap is a run of its own.
    let strided = &resnet_specs()[1];
    let runs = tap_runs(strided, 1, 1);
    assert_eq!(runs.len(), 9, "output pixel (1, 1) of a 4x4 input at stride 2 reads 3x3 real pixels");
    assert!(runs.iter().all(|r| r.len == 1));
}

#[test]
fn applies_to_small_maps_only() {
    let s = resnet_specs()[0];
    assert!(applies(&s));
    assert!(!applies(&Conv2dSpec { batch: 8, ..s }), "batch below 16");
    assert!(!applies(&Conv2dSpec { in_h: 3, in_w: 3, out_h: 3, out_w: 3, ..s }), "9 output pixels");
    assert!(!applies(&Conv2dSpec {
        kernel_h: 1,
        kernel_w: 1,
        pad_top: 0,
        pad_bottom: 0,
        pad_left: 0,
        pad_right: 0,
        ..s
    }));
    assert!(!applies(&Conv2dSpec { groups: 2, ..s }));
}
