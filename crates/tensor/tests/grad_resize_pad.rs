//! Gradient checks of `pad` (constant and reflect), `resize` (nearest and bilinear) and
//! `conv2d_transpose` against central finite differences in f64, first order and (through
//! a square, or the kernel-input product) second order.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`. The ops are linear (bilinear in
//! input and kernel for the convolution), so finite differences are exact up to rounding.

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::{Conv2dTransposeParams, GradientTape, Interpolation, PadMode, Padding, Result, Tensor};

/// Distinct smooth values for a shape.
fn values(shape: &[usize], seed: f64) -> Vec<f64> {
    (0..shape.iter().product::<usize>()).map(|i| f64::sin(seed + 0.37 * i as f64)).collect()
}

/// A shape of rank 1 to 4 and per-axis pads; reflect pads stay below each axis' size.
fn pad_case() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>, bool)> {
    (prop::collection::vec(1usize..=4, 1..=4), any::<bool>()).prop_flat_map(|(s, reflect)| {
        let pads: Vec<_> = s
            .iter()
            .map(|&n| {
                let max = if reflect { n - 1 } else { 3 };
                (0..=max, 0..=max)
            })
            .collect();
        (Just(s), pads, Just(reflect))
    })
}

/// The gradients of `sum(v * f(xs))` with respect to every input, joined into one vector.
fn gradient_of(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor]) -> Result<Tensor> {
    let inner = GradientTape::new();
    for x in xs {
        inner.watch(x);
    }
    let y = inner.record(|| {
        let out = f(xs)?;
        let v = Tensor::from_vec(values(out.dims(), 0.5), out.shape(), &out.device())?;
        out.mul(&v)?.sum_all()
    })?;
    let grads = inner.gradient(&y, &xs.iter().collect::<Vec<_>>())?;
    let flat = grads
        .into_iter()
        .zip(xs)
        .map(|(g, x)| g.map_or_else(|| x.zeros_like(), Ok)?.reshape([x.elem_count()]))
        .collect::<Result<Vec<_>>>()?;
    Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)
}

fn second_order(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> std::result::Result<(), TestCaseError> {
    gradcheck(|xs| gradient_of(&f, xs), inputs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pad_any_rank((s, pads, reflect) in pad_case(), value in -2.0..2.0f64) {
        let mode = if reflect { PadMode::Reflect } else { PadMode::Constant(value) };
        let x = t64(values(&s, 0.1), &s);
        gradcheck(|x| x[0].pad(&pads, mode), std::slice::from_ref(&x))?;
        second_order(|x| x[0].pad(&pads, mode)?.square(), &[x])?;
    }

    #[test]
    fn resize_nearest_and_bilinear(
        (n, h, w, c) in (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=3),
        factors in (1usize..=3, 1usize..=3),
        bilinear in any::<bool>(),
    ) {
        let interp = if bilinear { Interpolation::Bilinear } else { Interpolation::Nearest };
        let x = t64(values(&[n, h, w, c], 0.3), &[n, h, w, c]);
        gradcheck(|x| x[0].resize(factors, interp), std::slice::from_ref(&x))?;
        second_order(|x| x[0].resize(factors, interp)?.square(), &[x])?;
    }

    #[test]
    fn conv2d_transpose_any_geometry(
        (n, h, w, c, f) in (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (kh, kw) in (1usize..=3, 1usize..=3),
        (sh, sw) in (1usize..=3, 1usize..=3),
        padding in prop_oneof![Just(Padding::Valid), Just(Padding::Same)],
        with_output_padding in any::<bool>(),
        dilation in 1usize..=2,
        with_bias in any::<bool>(),
    ) {
        let output_padding = with_output_padding.then_some((sh - 1, sw - 1));
        let params = Conv2dTransposeParams { strides: (sh, sw), padding, output_padding, dilation: (dilation, dilation) };
        let x = t64(values(&[n, h, w, c], 0.2), &[n, h, w, c]);
        let k = t64(values(&[c, kh, kw, f], 1.1), &[c, kh, kw, f]);
        let b = t64(values(&[f], 2.3), &[f]);
        // Some geometries do not map back (Keras' 'same' with output_padding and an even
        // kernel); those are errors, checked in resize_pad_errors.rs.
        prop_assume!(x.conv2d_transpose(&k, None, &params).is_ok());
        if with_bias {
            gradcheck(|x| x[0].conv2d_transpose(&x[1], Some(&x[2]), &params), &[x.clone(), k.clone(), b])?;
        } else {
            gradcheck(|x| x[0].conv2d_transpose(&x[1], None, &params), &[x.clone(), k.clone()])?;
        }
        second_order(|x| x[0].conv2d_transpose(&x[1], None, &params), &[x, k])?;
    }

    /// Kernel size == stride: the windows tile the output, so the kernels of
    /// ops/conv/patch_cpu/ run (leftover rows and columns with output_padding). Also checks
    /// the needs-gradient masks: each input's gradient alone equals the one computed with
    /// all three.
    #[test]
    fn conv2d_transpose_tiling_windows(
        (n, h, w, c, f) in (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (kh, kw) in (1usize..=3, 1usize..=3),
        padding in prop_oneof![Just(Padding::Valid), Just(Padding::Same)],
        with_output_padding in any::<bool>(),
    ) {
        prop_assume!(kh * kw > 1);
        let output_padding = with_output_padding.then_some((kh - 1, kw - 1));
        let params = Conv2dTransposeParams { strides: (kh, kw), padding, output_padding, ..Default::default() };
        let x = t64(values(&[n, h, w, c], 0.2), &[n, h, w, c]);
        let k = t64(values(&[c, kh, kw, f], 1.1), &[c, kh, kw, f]);
        let b = t64(values(&[f], 2.3), &[f]);
        prop_assume!(x.conv2d_transpose(&k, None, &params).is_ok());
        let f_all = |x: &[Tensor]| x[0].conv2d_transpose(&x[1], Some(&x[2]), &params);
        let inputs = [x.clone(), k.clone(), b];
        gradcheck(f_all, &inputs)?;
        second_order(|x| x[0].conv2d_transpose(&x[1], None, &params), &[x, k])?;
        let grads = |sources: &[&Tensor]| -> Vec<Vec<f64>> {
            let tape = GradientTape::new();
            for t in &inputs {
                tape.watch(t);
            }
            let y = tape.record(|| f_all(&inputs)?.mul(&f_all(&inputs)?)?.sum_all()).unwrap();
            let g = tape.gradient(&y, sources).unwrap();
            g.into_iter().map(|g| g.unwrap().to_vec::<f64>().unwrap()).collect()
        };
        let all = grads(&[&inputs[0], &inputs[1], &inputs[2]]);
        for (i, t) in inputs.iter().enumerate() {
            prop_assert_eq!(&grads(&[t])[0], &all[i], "gradient {} alone", i);
        }
    }
}
