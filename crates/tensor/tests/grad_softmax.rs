//! Gradient checks of softmax, log_softmax (over any axis), softmax cross-entropy (soft
//! labels: gradients with respect to logits and labels), sparse softmax cross-entropy,
//! and casts between f32 and f64, against central finite differences in f64.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`, except for the f32 cast chain: its
//! values carry f32 rounding (relative 6e-8), which a step of 1e-6 would amplify to ~0.1,
//! so it uses `step = 1e-2`, `atol = rtol = 1e-3` on a cubic (whose central-difference
//! truncation error is `h^2 |f'''| / 6`, about 1e-4 here).

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::testing::GradCheck;
use tapegrad_tensor::{DType, GradientTape, Tensor};

/// A shape of rank 1 to 4, its values (logits in [-3, 3]) and one of its axes.
fn logits_and_axis() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, isize)> {
    data(1, 4, -3.0..3.0f64).prop_flat_map(|(s, v)| {
        let r = s.len();
        (Just(s), Just(v), axis(r))
    })
}

/// Logits of rank 1 to 3 and soft labels of the same shape (each row a distribution).
fn logits_and_soft_labels() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, Vec<f64>)> {
    data(1, 3, -3.0..3.0f64).prop_flat_map(|(s, v)| {
        let labels = values_for(&s, 0.05..1.0f64);
        let classes = *s.last().unwrap();
        (Just(s), Just(v), labels.prop_map(move |l| normalise_rows(l, classes)))
    })
}

fn normalise_rows(mut v: Vec<f64>, classes: usize) -> Vec<f64> {
    for row in v.chunks_mut(classes) {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= total);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn log_softmax_over_any_axis((s, v, a) in logits_and_axis()) {
        gradcheck(|x| x[0].log_softmax(a), &[t64(v, &s)])?;
    }

    #[test]
    fn softmax_over_any_axis((s, v, a) in logits_and_axis()) {
        gradcheck(|x| x[0].softmax(a), &[t64(v, &s)])?;
    }

    #[test]
    fn softmax_cross_entropy_wrt_logits_and_labels((s, logits, labels) in logits_and_soft_labels()) {
        gradcheck(|x| Tensor::softmax_cross_entropy(&x[0], &x[1]), &[t64(logits, &s), t64(labels, &s)])?;
    }

    #[test]
    fn sparse_softmax_cross_entropy_wrt_logits(
        (s, logits, labels) in data(1, 3, -3.0..3.0f64).prop_flat_map(|(s, v)| {
            let (rows, classes) = (count(&s[..s.len() - 1]), *s.last().unwrap());
            (Just(s), Just(v), prop::collection::vec(0..classes as i64, rows))
        })
    ) {
        let labels = ti64(labels, &s[..s.len() - 1]);
        gradcheck(|x| Tensor::sparse_softmax_cross_entropy(&x[0], &labels), &[t64(logits, &s)])?;
    }

    #[test]
    fn cast_to_f32_and_back((s, v) in data(0, 3, -2.0..2.0f64)) {
        let loose = GradCheck { step: 1e-2, atol: 1e-3, rtol: 1e-3 };
        gradcheck_with(
            loose,
            |x| x[0].cast(DType::F32)?.square()?.mul_scalar(0.5)?.cast(DType::F64)?.mul(&x[0]),
            &[t64(v, &s)],
        )?;
    }
}

/// The cast's gradient is the output gradient converted back to the source dtype, in
/// both directions.
#[test]
fn cast_gradients_come_back_in_the_source_dtype() {
    let x64 = t64(vec![1.5, -2.0], &[2]);
    let x32 = t32(vec![0.25, 4.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x64);
    tape.watch(&x32);
    let y = tape
        .record(|| {
            let a = x64.cast(DType::F32)?.mul(&x32)?; // f32
            a.cast(DType::F64)?.sum_all()
        })
        .unwrap();
    let g = tape.gradient(&y, &[&x64, &x32]).unwrap();
    let (g64, g32) = (g[0].clone().unwrap(), g[1].clone().unwrap());
    assert_eq!(g64.dtype(), DType::F64);
    assert_eq!(g32.dtype(), DType::F32);
    assert_eq!(g64.to_vec::<f64>().unwrap(), vec![0.25, 4.0]);
    assert_eq!(g32.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
}

/// Casts to and from i64 stop gradients (integers are not differentiable).
#[test]
fn casts_through_i64_give_no_gradient() {
    let x = t64(vec![1.5, -2.5], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.cast(DType::I64)?.cast(DType::F64)?.sum_all()).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none());
}
