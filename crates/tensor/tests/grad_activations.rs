//! Gradient checks of the activation ops (and erf, log1p, expm1) against central finite
//! differences in f64, on random shapes.
//!
//! Tolerance: `GradCheck::default()` (step 1e-6). Inputs lie in [-6, 8] and keep a margin
//! of 0.05 from every kink (0 for relu6, leaky_relu and elu; 6 for relu6; ±3 for
//! hard_sigmoid and hard_swish); log1p takes `|x|`.

mod common;

use common::*;
use proptest::prelude::*;

/// Inputs of rank 0 to 3 in [-6, 8], at least 0.05 from 0, ±3 and 6.
fn inputs() -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    data(0, 3, (-6.0..8.0f64).prop_map(|v| away_from(v, &[-3.0, 0.0, 3.0, 6.0], 0.05)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn erf((s, v) in inputs()) {
        gradcheck1(|x| x.erf(), &t64(v, &s))?;
    }

    #[test]
    fn log1p((s, v) in inputs()) {
        gradcheck1(|x| x.abs()?.log1p(), &t64(v, &s))?;
    }

    #[test]
    fn expm1((s, v) in inputs()) {
        gradcheck1(|x| x.expm1(), &t64(v, &s))?;
    }

    #[test]
    fn relu6_and_relu_max((s, v) in inputs()) {
        gradcheck1(|x| x.relu6(), &t64(v.clone(), &s))?;
        let v: Vec<f64> = v.into_iter().map(|x| away_from(x, &[2.5], 0.05)).collect();
        gradcheck1(|x| x.relu_max(2.5), &t64(v, &s))?;
    }

    #[test]
    fn leaky_relu_and_elu((s, v) in inputs(), slope in 0.0..1.0f64, alpha in 0.1..2.0f64) {
        gradcheck1(|x| x.leaky_relu(slope), &t64(v.clone(), &s))?;
        gradcheck1(|x| x.elu(alpha), &t64(v, &s))?;
    }

    #[test]
    fn gelu_exact_and_tanh((s, v) in inputs()) {
        gradcheck1(|x| x.gelu(false), &t64(v.clone(), &s))?;
        gradcheck1(|x| x.gelu(true), &t64(v, &s))?;
    }

    #[test]
    fn silu_and_mish((s, v) in inputs()) {
        gradcheck1(|x| x.silu(), &t64(v.clone(), &s))?;
        gradcheck1(|x| x.mish(), &t64(v, &s))?;
    }

    #[test]
    fn softplus_and_softsign((s, v) in inputs()) {
        gradcheck1(|x| x.softplus(), &t64(v.clone(), &s))?;
        gradcheck1(|x| x.softsign(), &t64(v, &s))?;
    }

    #[test]
    fn hard_sigmoid_and_hard_swish((s, v) in inputs()) {
        gradcheck1(|x| x.hard_sigmoid(), &t64(v.clone(), &s))?;
        gradcheck1(|x| x.hard_swish(), &t64(v, &s))?;
    }

    #[test]
    fn second_order_of_smooth_activations((s, v) in inputs()) {
        // The gradient rules are tensor ops, so their own gradients check too.
        let x = t64(v, &s);
        for f in [
            |x: &tapegrad_tensor::Tensor| x.gelu(false),
            |x: &tapegrad_tensor::Tensor| x.gelu(true),
            |x: &tapegrad_tensor::Tensor| x.silu(),
            |x: &tapegrad_tensor::Tensor| x.mish(),
            |x: &tapegrad_tensor::Tensor| x.softplus(),
            |x: &tapegrad_tensor::Tensor| x.erf(),
        ] {
            gradcheck1(
                |x| {
                    let tape = tapegrad_tensor::GradientTape::new();
                    tape.watch(x);
                    let y = tape.record(|| f(x)?.sum_all())?;
                    Ok(tape.gradient(&y, &[x])?.remove(0).expect("watched"))
                },
                &x,
            )?;
        }
    }
}

#[test]
fn bad_parameters_are_errors_naming_them() {
    let x = t64(vec![1.0, -1.0], &[2]);
    assert_err("relu_max", x.relu_max(-1.0), &["relu_max", "max_value", "-1"]);
    assert_err("relu_max", x.relu_max(f64::NAN), &["max_value", "NaN"]);
    assert_err("leaky_relu", x.leaky_relu(f64::INFINITY), &["leaky_relu", "negative_slope", "inf"]);
    assert_err("elu", x.elu(f64::NAN), &["elu", "alpha", "NaN"]);
    assert_err("erf of i64", ti64(vec![1], &[1]).erf(), &["erf", "i64"]);
}

#[test]
fn extreme_inputs_stay_finite() {
    let x = t64(vec![-1e4, -800.0, 800.0, 1e4], &[4]);
    for (name, y) in [
        ("softplus", x.softplus()),
        ("silu", x.silu()),
        ("mish", x.mish()),
        ("gelu", x.gelu(false)),
        ("gelu_tanh", x.gelu(true)),
        ("elu", x.elu(1.0)),
    ] {
        let y = vals(&y.unwrap());
        assert!(y.iter().all(|v| v.is_finite()), "{name}: {y:?}");
    }
    // softplus(x) = x for large x, and e^x for very negative x (not 0 from cancellation).
    let y = vals(&t64(vec![-50.0, 50.0], &[2]).softplus().unwrap());
    assert_close(&y, &[(-50.0f64).exp(), 50.0], 1e-15);
}
