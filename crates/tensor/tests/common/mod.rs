//! Helpers shared by the integration tests of the tensor crate: tensor builders, error
//! assertions and proptest strategies.
//!
//! Strategies produce plain shapes and `Vec<f64>` (not tensors) so that a failing case
//! prints its inputs.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod bits;
pub mod reference;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tapegrad_tensor::testing::{check_gradients, GradCheck};
use tapegrad_tensor::{Device, Result, Tensor};

/// An f64 CPU tensor.
pub fn t64(values: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &Device::Cpu).expect("valid test tensor")
}

/// An f32 CPU tensor.
pub fn t32(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &Device::Cpu).expect("valid test tensor")
}

/// An i64 CPU tensor.
pub fn ti64(values: Vec<i64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &Device::Cpu).expect("valid test tensor")
}

/// The elements of any tensor as f64.
pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().expect("readable tensor")
}

/// Asserts that two sequences agree elementwise within `tol` (absolute, plus relative to
/// the expected value); NaN matches NaN.
#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ: {actual:?} vs {expected:?}");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= tol * (1.0 + e.abs());
        assert!(ok, "element {i}: {a} vs expected {e} (tol {tol})\nactual   {actual:?}\nexpected {expected:?}");
    }
}

/// The message of an expected error; fails the test (naming `what`) if the call succeeded.
#[track_caller]
pub fn err_msg<T>(what: &str, r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `r` is an error whose message contains every one of `parts`.
#[track_caller]
pub fn assert_err<T>(what: &str, r: Result<T>, parts: &[&str]) {
    let msg = err_msg(what, r);
    for p in parts {
        assert!(msg.contains(p), "{what}: error message {msg:?} does not mention {p:?}");
    }
}

/// Runs the default gradient check and turns a mismatch into a proptest failure.
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> std::result::Result<(), TestCaseError> {
    check_gradients(f, inputs).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// [`gradcheck`] of a function of one tensor.
pub fn gradcheck1(f: impl Fn(&Tensor) -> Result<Tensor>, input: &Tensor) -> std::result::Result<(), TestCaseError> {
    gradcheck(|x| f(&x[0]), std::slice::from_ref(input))
}

/// Runs a gradient check with custom settings and turns a mismatch into a proptest failure.
pub fn gradcheck_with(
    settings: GradCheck,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
) -> std::result::Result<(), TestCaseError> {
    settings.check(f, inputs).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Number of elements of a shape.
pub fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Shapes of rank `min_rank..=max_rank` with dimensions 1 to 5.
pub fn shape(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Vec<usize>> + Clone {
    prop::collection::vec(1usize..=5, min_rank..=max_rank)
}

/// A shape of rank `min_rank..=max_rank` and its values, each drawn from `elem`.
pub fn data(
    min_rank: usize,
    max_rank: usize,
    elem: impl Strategy<Value = f64> + Clone + 'static,
) -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    shape(min_rank, max_rank).prop_flat_map(move |s| {
        let n = count(&s);
        (Just(s), prop::collection::vec(elem.clone(), n))
    })
}

/// Values for a given shape, each drawn from `elem`.
pub fn values_for(shape: &[usize], elem: impl Strategy<Value = f64>) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(elem, count(shape))
}

/// Values whose magnitude lies in `[lo, hi]`, with a random sign: away from 0 (the kink
/// of relu and abs, the pole of div and recip).
pub fn nonzero(lo: f64, hi: f64) -> impl Strategy<Value = f64> + Clone {
    (lo..=hi, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m })
}

/// `n` distinct values, any two at least 0.05 apart (max/min never tie), in random order.
pub fn distinct(n: usize) -> impl Strategy<Value = Vec<f64>> {
    (Just((0..n).collect::<Vec<_>>()).prop_shuffle(), prop::collection::vec(0.0..0.05f64, n)).prop_map(
        move |(perm, jitter)| perm.iter().zip(jitter).map(|(&p, j)| 0.1 * p as f64 - 0.05 * n as f64 + j).collect(),
    )
}

/// Moves `v` at least `margin` away from every kink in `kinks` (assumed far apart).
pub fn away_from(v: f64, kinks: &[f64], margin: f64) -> f64 {
    let mut v = v;
    for &k in kinks {
        if (v - k).abs() < margin {
            v = if v >= k { k + margin } else { k - margin };
        }
    }
    v
}

/// Two shapes that broadcast together by NumPy's rule: each is a suffix of a common
/// shape (rank up to 4) with some dimensions replaced by 1.
pub fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(0, 4).prop_flat_map(|out| {
        let r = out.len();
        let operand = move |out: Vec<usize>| {
            (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(keep, ones)| {
                (r - keep..r).map(|i| if ones[i] { 1 } else { out[i] }).collect::<Vec<_>>()
            })
        };
        (operand(out.clone()), operand(out))
    })
}

/// A random subset of the axes of a rank-`rank` shape, each written as a non-negative or
/// negative index at random, in random order.
pub fn axes_subset(rank: usize) -> impl Strategy<Value = Vec<isize>> {
    (prop::collection::vec(any::<bool>(), rank), prop::collection::vec(any::<bool>(), rank)).prop_flat_map(
        move |(pick, neg)| {
            let axes: Vec<isize> = (0..rank)
                .filter(|&a| pick[a])
                .map(|a| if neg[a] { a as isize - rank as isize } else { a as isize })
                .collect();
            Just(axes).prop_shuffle()
        },
    )
}

/// An axis of a rank-`rank` shape (`rank >= 1`), as a non-negative or negative index.
pub fn axis(rank: usize) -> impl Strategy<Value = isize> {
    (0..rank, any::<bool>()).prop_map(move |(a, neg)| if neg { a as isize - rank as isize } else { a as isize })
}
