//! Gradient checks of the reductions (sum, mean, max, min over any subset of axes, with
//! and without keepdims) against central finite differences in f64.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`. Inputs of max/min are distinct, any
//! two at least 0.05 apart, so no tie lies within `h` of a sample point.

mod common;

use common::*;
use proptest::prelude::*;

/// A shape (rank 0 to 4), a subset of its axes and a keepdims flag.
fn reduction() -> impl Strategy<Value = (Vec<usize>, Vec<isize>, bool)> {
    shape(0, 4).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), axes_subset(r), any::<bool>())
    })
}

/// Like [`reduction`], with distinct values for max/min.
fn distinct_reduction() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, Vec<isize>, bool)> {
    reduction().prop_flat_map(|(s, axes, keep)| {
        let n = count(&s);
        (Just(s), distinct(n), Just(axes), Just(keep))
    })
}

/// Like [`reduction`], with values in [-2, 2].
fn plain_reduction() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, Vec<isize>, bool)> {
    reduction().prop_flat_map(|(s, axes, keep)| {
        let v = values_for(&s, -2.0..2.0f64);
        (Just(s), v, Just(axes), Just(keep))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sum_over_axes((s, v, axes, keep) in plain_reduction()) {
        gradcheck(|x| x[0].sum(&axes, keep), &[t64(v, &s)])?;
    }

    #[test]
    fn mean_over_axes((s, v, axes, keep) in plain_reduction()) {
        gradcheck(|x| x[0].mean(&axes, keep), &[t64(v, &s)])?;
    }

    #[test]
    fn max_over_axes((s, v, axes, keep) in distinct_reduction()) {
        gradcheck(|x| x[0].max(&axes, keep), &[t64(v, &s)])?;
    }

    #[test]
    fn min_over_axes((s, v, axes, keep) in distinct_reduction()) {
        gradcheck(|x| x[0].min(&axes, keep), &[t64(v, &s)])?;
    }

    #[test]
    fn sum_all_and_mean_all((s, v) in data(0, 4, -2.0..2.0f64)) {
        let x = t64(v, &s);
        gradcheck1(|x| x.sum_all(), &x)?;
        gradcheck1(|x| x.mean_all(), &x)?;
    }

    #[test]
    fn reductions_inside_a_computation((s, v, axes, keep) in distinct_reduction()) {
        // The reduced result is broadcast back against the input (as in a normalisation),
        // so the gradient flows through two paths.
        gradcheck(
            |x| {
                let m = x[0].max(&axes, true)?;
                let c = x[0].sub(&m)?.exp()?;
                let s = c.sum(&axes, true)?.add(&x[0].mean(&axes, true)?.square()?)?;
                c.div(&s)?.sum(&axes, keep)
            },
            &[t64(v, &s)],
        )?;
    }
}

/// Tied extremes share the gradient equally (as TF): the checker cannot see this (the
/// function has a kink there), so the values are checked directly.
#[test]
fn tied_maxima_and_minima_share_the_gradient() {
    use tapegrad_tensor::GradientTape;
    let x = t64(vec![1.0, 3.0, 3.0, 0.0, 0.0, 0.0], &[2, 3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let (mx, mn) = tape.record(|| Ok((x.max(&[1], false)?.sum_all()?, x.min(&[-1], false)?.sum_all()?))).unwrap();
    let g = tape.gradient(&mx, &[&x]).unwrap()[0].clone().unwrap();
    assert_close(&vals(&g), &[0.0, 0.5, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 1e-15);
    let g = tape.gradient(&mn, &[&x]).unwrap()[0].clone().unwrap();
    assert_close(&vals(&g), &[1.0, 0.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 1e-15);
}
