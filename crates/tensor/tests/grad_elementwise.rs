//! Gradient checks of the elementwise ops against central finite differences in f64.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`. Inputs keep a margin of at least 0.05
//! (far more than `h`) from kinks (relu/abs at 0, clamp at its bounds, maximum/minimum
//! ties) and stay inside each function's domain (log/sqrt/powf of positive values, div
//! and recip away from 0).

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::Tensor;

/// Inputs for a binary op: broadcastable shapes, lhs values in [-2, 2], rhs values with
/// magnitude in [0.5, 2] (safe as a divisor).
fn binary_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, Vec<usize>, Vec<f64>)> {
    broadcast_pair().prop_flat_map(|(ls, rs)| {
        let (lv, rv) = (values_for(&ls, -2.0..2.0f64), values_for(&rs, nonzero(0.5, 2.0)));
        (Just(ls), lv, Just(rs), rv)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn add_broadcasting((ls, lv, rs, rv) in binary_case()) {
        gradcheck(|x| x[0].add(&x[1]), &[t64(lv, &ls), t64(rv, &rs)])?;
    }

    #[test]
    fn sub_broadcasting((ls, lv, rs, rv) in binary_case()) {
        gradcheck(|x| x[0].sub(&x[1]), &[t64(lv, &ls), t64(rv, &rs)])?;
    }

    #[test]
    fn mul_broadcasting((ls, lv, rs, rv) in binary_case()) {
        gradcheck(|x| x[0].mul(&x[1]), &[t64(lv, &ls), t64(rv, &rs)])?;
    }

    #[test]
    fn div_broadcasting((ls, lv, rs, rv) in binary_case()) {
        gradcheck(|x| x[0].div(&x[1]), &[t64(lv, &ls), t64(rv, &rs)])?;
    }

    #[test]
    fn an_operand_used_on_both_sides((s, v) in data(0, 4, nonzero(0.5, 2.0))) {
        // x * x and x / x exercise accumulation of two gradients into one input.
        gradcheck(|x| x[0].mul(&x[0])?.add(&x[0].div(&x[0].exp()?)?), &[t64(v, &s)])?;
    }

    #[test]
    fn maximum_and_minimum(
        (s, a, gap) in data(0, 4, -2.0..2.0f64)
            .prop_flat_map(|(s, a)| { let g = values_for(&s, nonzero(0.05, 1.0)); (Just(s), Just(a), g) })
    ) {
        let b: Vec<f64> = a.iter().zip(&gap).map(|(x, g)| x + g).collect();
        let (a, b) = (t64(a, &s), t64(b, &s));
        gradcheck(|x| x[0].maximum(&x[1]), &[a.clone(), b.clone()])?;
        gradcheck(|x| x[0].minimum(&x[1]), &[a, b])?;
    }

    #[test]
    fn neg_exp_square_sigmoid_tanh((s, v) in data(0, 4, -1.5..1.5f64)) {
        let x = t64(v, &s);
        gradcheck1(|x| x.neg(), &x)?;
        gradcheck1(|x| x.exp(), &x)?;
        gradcheck1(|x| x.square(), &x)?;
        gradcheck1(|x| x.sigmoid(), &x)?;
        gradcheck1(|x| x.tanh(), &x)?;
    }

    #[test]
    fn log_and_sqrt_of_positive_values((s, v) in data(0, 4, 0.1..3.0f64)) {
        let x = t64(v, &s);
        gradcheck1(|x| x.log(), &x)?;
        gradcheck1(|x| x.sqrt(), &x)?;
    }

    #[test]
    fn powf_of_positive_values((s, v) in data(0, 4, 0.2..2.0f64), exponent in -2.5..2.5f64) {
        gradcheck(|x| x[0].powf(exponent), &[t64(v, &s)])?;
    }

    #[test]
    fn relu_abs_recip_away_from_zero((s, v) in data(0, 4, nonzero(0.05, 2.0))) {
        let x = t64(v, &s);
        gradcheck1(|x| x.relu(), &x)?;
        gradcheck1(|x| x.abs(), &x)?;
        gradcheck1(|x| x.recip(), &x)?;
    }

    #[test]
    fn clamp_away_from_bounds(
        (s, v) in data(0, 4, -2.0..2.0f64),
        lo in -1.0..0.0f64,
        width in 0.2..1.5f64,
    ) {
        let hi = lo + width;
        let v: Vec<f64> = v.into_iter().map(|x| away_from(x, &[lo, hi], 0.05)).collect();
        gradcheck(|x| x[0].clamp(lo, hi), &[t64(v, &s)])?;
    }

    #[test]
    fn affine_and_scalar_shorthands((s, v) in data(0, 4, -2.0..2.0f64), mul in -3.0..3.0f64, add in -3.0..3.0f64) {
        let x = t64(v, &s);
        gradcheck1(|x| x.affine(mul, add), &x)?;
        gradcheck1(|x| x.add_scalar(add), &x)?;
        gradcheck1(|x| x.mul_scalar(mul), &x)?;
    }

    #[test]
    fn a_chain_of_unary_ops((s, v) in data(0, 4, -1.0..1.0f64)) {
        gradcheck(|x| x[0].tanh()?.exp()?.sqrt()?.log()?.sigmoid()?.square(), &[t64(v, &s)])?;
    }
}

/// The checker must be able to fail: `x * stop_gradient(x)` has derivative `x` on the
/// tape but `2x` numerically, and a function that ignores the tape for one input gets no
/// gradient for it while the finite difference sees a dependence.
#[test]
fn the_gradient_checker_catches_a_wrong_gradient() {
    let x = t64(vec![0.5, -1.0, 2.0], &[3]);
    let err = tapegrad_tensor::testing::check_gradients(|x| x[0].mul(&x[0].detach()), std::slice::from_ref(&x))
        .expect_err("a detached factor makes the tape gradient half the true one");
    let msg = err.to_string();
    assert!(msg.contains("analytic gradient") && msg.contains("finite difference"), "{msg}");
    assert!(msg.contains("input 0") && msg.contains("[3]"), "{msg}");

    let y = t64(vec![1.5, 0.25, -0.75], &[3]);
    let err = tapegrad_tensor::testing::check_gradients(|x| x[0].add(&x[1].detach()), &[x.clone(), y.clone()])
        .expect_err("a detached input gets no gradient but the function depends on it");
    assert!(err.to_string().contains("input 1"), "{err}");

    // The same functions without detach pass.
    tapegrad_tensor::testing::check_gradients(|x| x[0].mul(&x[0]), std::slice::from_ref(&x)).unwrap();
    tapegrad_tensor::testing::check_gradients(|x| x[0].add(&x[1]), &[x, y]).unwrap();
}

/// The checker refuses inputs that are not f64 rather than checking them imprecisely.
#[test]
fn the_gradient_checker_requires_f64_inputs() {
    let x = t32(vec![1.0, 2.0], &[2]);
    let msg = err_msg("f32 input", tapegrad_tensor::testing::check_gradients(|x: &[Tensor]| x[0].exp(), &[x]));
    assert!(msg.contains("f32") && msg.contains("f64"), "{msg}");
}
