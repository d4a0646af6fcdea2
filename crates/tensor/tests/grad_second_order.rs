//! Second-order gradients: gradient rules are ordinary recorded ops, so the gradient of a
//! gradient (an inner tape inside an outer one) must itself pass the gradient check.
//! Each property checks `x -> d/dx sum(v * f(x))` against central finite differences.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`; inputs keep away from kinks and
//! domain edges as in the first-order checks.

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::{GradientTape, Result, Tensor};

/// The gradients of `sum(v * f(xs))` with respect to every input, flattened and joined
/// into one rank-1 tensor (`v` fixed, so the inner target is not symmetric).
fn gradient_of(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor]) -> Result<Tensor> {
    let inner = GradientTape::new();
    for x in xs {
        inner.watch(x);
    }
    let y = inner.record(|| {
        let out = f(xs)?;
        let n = out.elem_count();
        let v = Tensor::from_vec((0..n).map(|i| 1.0 + 0.25 * (i % 5) as f64).collect(), out.shape(), &out.device())?;
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
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn smooth_unary_ops((s, v) in data(0, 3, 0.2..2.0f64), exponent in -1.5..2.5f64) {
        let x = [t64(v, &s)];
        second_order(|x| x[0].exp(), &x)?;
        second_order(|x| x[0].log(), &x)?;
        second_order(|x| x[0].sqrt(), &x)?;
        second_order(|x| x[0].powf(exponent), &x)?;
        second_order(|x| x[0].recip(), &x)?;
        second_order(|x| x[0].sigmoid()?.mul(&x[0].tanh()?), &x)?;
        second_order(|x| x[0].square()?.affine(-0.25, 2.0)?.abs(), &x)?;
    }

    #[test]
    fn broadcasting_binary_ops(
        (ls, lv, rs, rv) in broadcast_pair().prop_flat_map(|(ls, rs)| {
            let (lv, rv) = (values_for(&ls, -2.0..2.0f64), values_for(&rs, nonzero(0.5, 2.0)));
            (Just(ls), lv, Just(rs), rv)
        })
    ) {
        let x = [t64(lv, &ls), t64(rv, &rs)];
        second_order(|x| x[0].mul(&x[1])?.mul(&x[0]), &x)?;
        second_order(|x| x[0].div(&x[1]), &x)?;
        second_order(|x| x[0].sub(&x[1])?.square(), &x)?;
    }

    #[test]
    fn matmul_with_transposes(
        (m, k, n) in (1usize..=4, 1usize..=4, 1usize..=4),
        (lt, rt) in (any::<bool>(), any::<bool>()),
        batched in any::<bool>(),
    ) {
        let ls = match (batched, lt) { (true, false) => vec![2, m, k], (true, true) => vec![2, k, m], (false, false) => vec![m, k], (false, true) => vec![k, m] };
        let rs = if rt { vec![n, k] } else { vec![k, n] };
        let a = t64((0..count(&ls)).map(|i| (i as f64 * 0.7).sin()).collect(), &ls);
        let b = t64((0..count(&rs)).map(|i| (i as f64 * 1.3).cos()).collect(), &rs);
        // The product squared, so that the second derivative is not zero.
        second_order(|x| x[0].matmul_transposed(&x[1], lt, rt)?.square(), &[a, b])?;
    }

    #[test]
    fn reductions_and_softmax(
        (s, v, a) in data(1, 3, -2.0..2.0f64).prop_flat_map(|(s, v)| { let r = s.len(); (Just(s), Just(v), axis(r)) })
    ) {
        let x = [t64(v, &s)];
        second_order(|x| x[0].log_softmax(a), &x)?;
        second_order(|x| x[0].softmax(a), &x)?;
        second_order(|x| x[0].mean(&[a], true)?.square()?.mul(&x[0]), &x)?;
        second_order(|x| x[0].sum(&[a], false)?.exp(), &x)?;
    }

    #[test]
    fn cross_entropy_wrt_logits(
        (s, logits, labels) in data(1, 3, -3.0..3.0f64).prop_flat_map(|(s, v)| {
            let labels = values_for(&s, 0.0..1.0f64);
            (Just(s), Just(v), labels)
        })
    ) {
        let labels = t64(labels, &s);
        second_order(|x| Tensor::softmax_cross_entropy(&x[0], &labels), &[t64(logits, &s)])?;
    }

    #[test]
    fn layout_rules_are_differentiable((s, v) in data(2, 3, -2.0..2.0f64)) {
        // Squares make the outer gradient run through each layout op's gradient rule.
        let x = [t64(v, &s)];
        second_order(|x| x[0].transpose(0, -1)?.square(), &x)?;
        second_order(|x| x[0].narrow(0, 0, 1)?.square(), &x)?;
        second_order(|x| Tensor::concat(&[&x[0], &x[0].square()?], -1), &x)?;
        second_order(|x| x[0].unsqueeze(0)?.broadcast_to([3].iter().chain(x[0].dims()).copied().collect::<Vec<_>>())?.square(), &x)?;
        second_order(|x| x[0].reshape([x[0].elem_count()])?.square()?.reshape(x[0].shape()), &x)?;
    }
}
