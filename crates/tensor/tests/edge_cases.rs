//! Edge cases of shapes and values: empty tensors, rank-0 tensors, size-1 dimensions
//! (which the kernels drop and coalesce), and NaN. Broadcasting, reductions and
//! permutations of random shapes rich in 1s are compared with naive references.

mod common;

use common::reference::{self, Reduction};
use common::*;
use proptest::prelude::*;
use tapegrad_tensor::{DType, Device, GradientTape, Tensor};

/// Shapes of rank 0 to 5 whose dimensions are often 1.
fn shape_with_ones() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![Just(1usize), 1usize..=4], 0..=5)
}

/// Two shapes that broadcast, rich in 1s: each a suffix of a common shape with some dims
/// replaced by 1.
fn broadcast_pair_with_ones() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape_with_ones().prop_flat_map(|out| {
        let r = out.len();
        let operand = move |out: Vec<usize>| {
            (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(keep, ones)| {
                (r - keep..r).map(|i| if ones[i] { 1 } else { out[i] }).collect::<Vec<_>>()
            })
        };
        (operand(out.clone()), operand(out))
    })
}

/// Integer-valued f64s: sums are exact in any order.
fn int_values(shape: &[usize]) -> Vec<f64> {
    (0..count(shape)).map(|i| ((i * 37 + 11) % 23) as f64 - 11.0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn broadcasting_matches_a_naive_reference((ls, rs) in broadcast_pair_with_ones()) {
        let (a, b) = (int_values(&ls), int_values(&rs).iter().map(|v| v + 0.5).collect::<Vec<_>>());
        let (ta, tb) = (t64(a.clone(), &ls), t64(b.clone(), &rs));
        let (out, expect) = reference::broadcast_binary(&a, &ls, &b, &rs, |x, y| x * 2.0 - y);
        let got = ta.mul_scalar(2.0).unwrap().sub(&tb).unwrap();
        prop_assert_eq!(got.dims(), &out[..]);
        prop_assert_eq!(vals(&got), expect);
        let (_, expect) = reference::broadcast_binary(&a, &ls, &b, &rs, f64::max);
        prop_assert_eq!(vals(&ta.maximum(&tb).unwrap()), expect);
    }

    #[test]
    fn reductions_match_a_naive_reference(
        (s, axes) in shape_with_ones().prop_flat_map(|s| { let r = s.len(); (Just(s), axes_subset(r)) })
    ) {
        let x = int_values(&s);
        let t = t64(x.clone(), &s);
        let resolved: Vec<usize> = axes.iter().map(|&a| if a < 0 { (a + s.len() as isize) as usize } else { a as usize }).collect();
        prop_assert_eq!(vals(&t.sum(&axes, true).unwrap()), reference::reduce(&x, &s, &resolved, Reduction::Sum));
        prop_assert_eq!(vals(&t.max(&axes, false).unwrap()), reference::reduce(&x, &s, &resolved, Reduction::Max));
        prop_assert_eq!(vals(&t.min(&axes, true).unwrap()), reference::reduce(&x, &s, &resolved, Reduction::Min));
    }

    #[test]
    fn permutations_match_a_naive_reference(
        (s, perm) in shape_with_ones().prop_flat_map(|s| { let p = Just((0..s.len()).collect::<Vec<_>>()).prop_shuffle(); (Just(s), p) })
    ) {
        let x = int_values(&s);
        prop_assert_eq!(vals(&t64(x.clone(), &s).permute(&perm).unwrap()), reference::permute(&x, &s, &perm));
    }
}

#[test]
fn empty_tensors_broadcast_reduce_and_move() {
    let e20 = t64(vec![], &[2, 0]);
    let e0 = t64(vec![], &[0]);
    // Broadcasting with an empty result used to split the output into rows of length 0.
    for (a, b, out) in [
        (&e20, &e0, vec![2, 0]),
        (&e20, &t64(vec![], &[1, 0]), vec![2, 0]),
        (&t64(vec![], &[0, 3]), &t64(vec![1.0, 2.0, 3.0], &[3]), vec![0, 3]),
        (&t64(vec![], &[3, 0, 2]), &t64(vec![1.0, 2.0], &[2]), vec![3, 0, 2]),
        (&e0, &Tensor::scalar(1.0f64, &Device::Cpu).unwrap(), vec![0]),
    ] {
        let r = a.add(b).unwrap();
        assert_eq!((r.dims(), r.elem_count()), (&out[..], 0), "{a:?} + {b:?}");
        assert_eq!(b.mul(a).unwrap().dims(), &out[..]);
        assert_eq!(a.maximum(b).unwrap().dims(), &out[..]);
    }
    assert_eq!(e20.exp().unwrap().dims(), [2, 0]);
    assert_eq!(vals(&e20.sum(&[1], false).unwrap()), [0.0, 0.0]);
    assert_eq!(vals(&e20.sum_all().unwrap()), [0.0]);
    assert_eq!(e20.sum(&[0], true).unwrap().dims(), [1, 0]);
    assert_eq!(e20.max(&[0], false).unwrap().dims(), [0]);
    assert_eq!(e20.transpose(0, 1).unwrap().dims(), [0, 2]);
    assert_eq!(e20.broadcast_to([3, 2, 0]).unwrap().dims(), [3, 2, 0]);
    assert_eq!(e0.broadcast_to([4, 0]).unwrap().elem_count(), 0);
    assert_eq!(e20.reshape([0, 5]).unwrap().dims(), [0, 5]);
    let x = t64(vec![1.0, 2.0], &[2, 1]);
    let cat = Tensor::concat(&[&x, &e20, &x], 1).unwrap();
    assert_eq!((cat.dims(), vals(&cat)), (&[2usize, 2][..], vec![1.0, 1.0, 2.0, 2.0]));
    assert_eq!(t64(vec![], &[0, 3]).log_softmax(-1).unwrap().dims(), [0, 3]);
    assert_eq!(t64(vec![], &[0, 3]).argmax(1).unwrap().dims(), [0]);
    assert_eq!(Tensor::one_hot(&ti64(vec![], &[0]), 4, DType::F32).unwrap().dims(), [0, 4]);
    // Matrix products with an empty inner dimension are zeros; with an empty outer one, empty.
    let z = t64(vec![], &[2, 0]).matmul(&t64(vec![], &[0, 3])).unwrap();
    assert_eq!((z.dims(), vals(&z)), (&[2usize, 3][..], vec![0.0; 6]));
    assert_eq!(t64(vec![], &[0, 4]).matmul(&t64(vec![0.0; 12], &[4, 3])).unwrap().dims(), [0, 3]);
    assert_eq!(t64(vec![], &[0, 2, 4]).matmul(&t64(vec![0.0; 12], &[4, 3])).unwrap().dims(), [0, 2, 3]);
}

#[test]
fn gradients_through_empty_tensors() {
    let (a, b) = (t64(vec![], &[2, 0]), t64(vec![], &[0]));
    let c = t64(vec![1.0, 2.0], &[2, 1]);
    let tape = GradientTape::new();
    for t in [&a, &b, &c] {
        tape.watch(t);
    }
    let y = tape
        .record(|| {
            let s = a.mul(&b)?.add(&c)?.sum_all()?; // [2, 0]: sums to 0, c is broadcast away
            s.add(&c.sum_all()?)
        })
        .unwrap();
    let g = tape.gradient(&y, &[&a, &b, &c]).unwrap();
    assert_eq!(g[0].as_ref().unwrap().dims(), [2, 0]);
    assert_eq!(g[1].as_ref().unwrap().dims(), [0]);
    assert_eq!(vals(g[2].as_ref().unwrap()), [1.0, 1.0]);
}

#[test]
fn rank_zero_tensors() {
    let s = Tensor::scalar(2.0f64, &Device::Cpu).unwrap();
    assert_eq!((s.rank(), s.elem_count(), s.dims().len()), (0, 1, 0));
    assert_eq!(vals(&s.square().unwrap()), [4.0]);
    assert_eq!(s.add(&s).unwrap().rank(), 0);
    assert_eq!(s.sum(&[], false).unwrap().rank(), 0);
    assert_eq!(s.max(&[], true).unwrap().rank(), 0);
    assert_eq!(s.permute(&[]).unwrap().rank(), 0);
    assert_eq!(s.reshape([1, 1]).unwrap().reshape(()).unwrap().rank(), 0);
    assert_eq!(s.unsqueeze(0).unwrap().dims(), [1]);
    assert_eq!(s.unsqueeze(-1).unwrap().dims(), [1]);
    assert_eq!(vals(&s.broadcast_to([2, 2]).unwrap()), [2.0; 4]);
    let st = Tensor::stack(&[&s, &s.neg().unwrap()], 0).unwrap();
    assert_eq!((st.dims(), vals(&st)), (&[2usize][..], vec![2.0, -2.0]));
    assert_eq!(s.to_scalar::<f64>().unwrap(), 2.0);
    // Gradients of and through scalars.
    let tape = GradientTape::new();
    tape.watch(&s);
    let y = tape.record(|| s.mul(&t64(vec![1.0, 2.0, 3.0], &[3]))?.sum_all()).unwrap();
    let g = tape.gradient(&y, &[&s]).unwrap()[0].clone().unwrap();
    assert_eq!((g.rank(), vals(&g)), (0, vec![6.0]));
}

#[test]
fn size_one_dimensions_everywhere() {
    let x = t64((0..6).map(f64::from).collect(), &[1, 2, 1, 3, 1]);
    assert_eq!(vals(&x.sum(&[0, 2, 4], false).unwrap()), vals(&x));
    assert_eq!(x.sum(&[0, 2, 4], false).unwrap().dims(), [2, 3]);
    assert_eq!(vals(&x.sum(&[1], true).unwrap()), [3.0, 5.0, 7.0]);
    assert_eq!(vals(&x.max(&[3, 4], false).unwrap()), [2.0, 5.0]);
    assert_eq!(vals(&x.argmax(3).unwrap()), [2.0, 2.0]);
    assert_eq!(vals(&x.argmax(0).unwrap()), [0.0; 6]);
    assert_eq!(vals(&x.permute(&[4, 3, 2, 1, 0]).unwrap()), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(vals(&x.narrow(3, 1, 1).unwrap()), [1.0, 4.0]);
    assert_eq!(vals(&x.log_softmax(0).unwrap()), [0.0; 6]);
    let col = t64(vec![10.0, 20.0], &[2, 1, 1, 1]);
    assert_eq!(vals(&x.add(&col).unwrap()), [10.0, 11.0, 12.0, 23.0, 24.0, 25.0]);
}

#[test]
fn nan_propagates_through_extremes_and_activations() {
    let x = t64(vec![1.0, f64::NAN, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let row_max = vals(&x.max(&[1], false).unwrap());
    assert!(row_max[0].is_nan() && row_max[1] == 6.0, "{row_max:?}");
    let col_min = vals(&x.min(&[0], false).unwrap());
    assert!(col_min[1].is_nan() && col_min[0] == 1.0 && col_min[2] == 3.0, "{col_min:?}");
    assert!(vals(&x.max(&[0, 1], false).unwrap())[0].is_nan());
    // A NaN is the argmax/argmin (the first one), as in NumPy.
    assert_eq!(x.argmax(1).unwrap().to_vec::<i64>().unwrap(), [1, 2]);
    assert_eq!(x.argmin(1).unwrap().to_vec::<i64>().unwrap(), [1, 0]);
    let nan_first = t64(vec![f64::NAN, 9.0, f64::NAN], &[3]);
    assert_eq!(nan_first.argmax(0).unwrap().to_vec::<i64>().unwrap(), [0]);
    // Activations pass NaN through rather than hiding it.
    let n = t64(vec![f64::NAN], &[1]);
    for (name, y) in [
        ("relu", n.relu()),
        ("abs", n.abs()),
        ("clamp", n.clamp(0.0, 1.0)),
        ("sigmoid", n.sigmoid()),
        ("tanh", n.tanh()),
        ("exp", n.exp()),
    ] {
        assert!(vals(&y.unwrap())[0].is_nan(), "{name}(NaN)");
    }
    let ls = vals(&x.log_softmax(-1).unwrap());
    assert!(ls[..3].iter().all(|v| v.is_nan()) && ls[3..].iter().all(|v| v.is_finite()), "{ls:?}");
    // Sums and means of rows without NaN are unaffected.
    let s = vals(&x.sum(&[1], false).unwrap());
    assert!(s[0].is_nan() && s[1] == 15.0);
}

#[test]
fn infinities_in_softmax() {
    // A -inf logit gets probability 0; a row of -inf has no distribution (NaN).
    let x = t64(vec![f64::NEG_INFINITY, 0.0, 0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY], &[2, 3]);
    let p = vals(&x.softmax(-1).unwrap());
    assert_eq!(&p[..3], &[0.0, 0.5, 0.5]);
    assert!(p[3..].iter().all(|v| v.is_nan()), "{p:?}");
}
