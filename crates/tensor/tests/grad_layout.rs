//! Gradient checks of the layout ops (reshape, permute, transpose, broadcast_to, narrow,
//! concat, stack, squeeze, unsqueeze, flatten) against central finite differences in f64.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`. These ops are linear, so the finite
//! difference is exact up to rounding; the checker's weighted output makes every output
//! element's gradient distinct.

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::Tensor;

/// A shape and its values in [-2, 2].
fn input(min_rank: usize, max_rank: usize) -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    data(min_rank, max_rank, -2.0..2.0f64)
}

/// A shape (rank 1 to 4) and an axis of it with a valid `(start, len)` range.
fn narrow_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, isize, usize, usize)> {
    input(1, 4).prop_flat_map(|(s, v)| {
        let r = s.len();
        (Just(s.clone()), Just(v), axis(r)).prop_flat_map(move |(s, v, a)| {
            let size = s[if a < 0 { (a + r as isize) as usize } else { a as usize }];
            (Just(s), Just(v), Just(a), 0..size)
                .prop_flat_map(move |(s, v, a, start)| (Just(s), Just(v), Just(a), Just(start), 1..=size - start))
        })
    })
}

/// Two or three shapes that differ only along one axis.
fn concat_case() -> impl Strategy<Value = (Vec<Vec<usize>>, isize)> {
    shape(1, 4).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), axis(r), prop::collection::vec(1usize..=4, 2..=3)).prop_map(move |(s, a, sizes)| {
            let ax = if a < 0 { (a + r as isize) as usize } else { a as usize };
            let shapes = sizes
                .iter()
                .map(|&n| {
                    let mut d = s.clone();
                    d[ax] = n;
                    d
                })
                .collect();
            (shapes, a)
        })
    })
}

/// Deterministic distinct values for a list of shapes.
fn tensors_for(shapes: &[Vec<usize>]) -> Vec<Tensor> {
    let mut next = 0.0f64;
    shapes
        .iter()
        .map(|s| {
            let v = (0..count(s))
                .map(|_| {
                    next += 0.37;
                    f64::sin(next)
                })
                .collect();
            t64(v, s)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn reshape_to_a_shuffled_shape_with_extra_ones(
        ((s, v), target) in input(0, 4).prop_flat_map(|(s, v)| {
            let t = (Just(s.clone()).prop_shuffle(), 0..=2usize, any::<prop::sample::Index>());
            (Just((s, v)), t.prop_map(|(mut t, ones, at)| {
                for _ in 0..ones { let i = at.index(t.len() + 1); t.insert(i, 1); }
                t
            }))
        })
    ) {
        gradcheck(|x| x[0].reshape(target.clone()), &[t64(v, &s)])?;
    }

    #[test]
    fn permute_by_any_permutation(
        ((s, v), perm) in input(0, 4).prop_flat_map(|(s, v)| {
            let p = Just((0..s.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just((s, v)), p)
        })
    ) {
        gradcheck(|x| x[0].permute(&perm), &[t64(v, &s)])?;
    }

    #[test]
    fn transpose_any_two_axes(
        ((s, v), a, b) in input(1, 4).prop_flat_map(|(s, v)| { let r = s.len(); (Just((s, v)), axis(r), axis(r)) })
    ) {
        gradcheck(|x| x[0].transpose(a, b), &[t64(v, &s)])?;
    }

    #[test]
    fn broadcast_to_a_larger_shape(
        (target, source) in shape(0, 4).prop_flat_map(|out| {
            let r = out.len();
            (Just(out.clone()), (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(keep, ones)| {
                (r - keep..r).map(|i| if ones[i] { 1 } else { out[i] }).collect::<Vec<_>>()
            }))
        }),
        seed in 0..1000u32,
    ) {
        let v = (0..count(&source)).map(|i| ((i as f64 + seed as f64) * 0.71).cos()).collect();
        gradcheck(|x| x[0].broadcast_to(target.clone()), &[t64(v, &source)])?;
    }

    #[test]
    fn narrow_any_range((s, v, a, start, len) in narrow_case()) {
        gradcheck(|x| x[0].narrow(a, start, len), &[t64(v, &s)])?;
    }

    #[test]
    fn concat_along_any_axis((shapes, a) in concat_case()) {
        let inputs = tensors_for(&shapes);
        gradcheck(|x| Tensor::concat(&x.iter().collect::<Vec<_>>(), a), &inputs)?;
    }

    #[test]
    fn stack_along_any_new_axis(s in shape(0, 3), n in 1usize..=3, pick in any::<prop::sample::Index>()) {
        let r = s.len() as isize;
        let a = pick.index(2 * (s.len() + 1)) as isize - (r + 1);
        let inputs = tensors_for(&vec![s; n]);
        gradcheck(|x| Tensor::stack(&x.iter().collect::<Vec<_>>(), a), &inputs)?;
    }

    #[test]
    fn unsqueeze_then_squeeze((s, v) in input(0, 4), pick in any::<prop::sample::Index>()) {
        let r = s.len() as isize;
        let a = pick.index(2 * (s.len() + 1)) as isize - (r + 1);
        let x = t64(v, &s);
        gradcheck1(|x| x.unsqueeze(a), &x)?;
        gradcheck1(|x| x.unsqueeze(a)?.mul(&x.unsqueeze(a)?)?.squeeze(a), &x)?;
    }

    #[test]
    fn flatten_from_1((s, v) in input(1, 4)) {
        gradcheck(|x| x[0].flatten_from_1(), &[t64(v, &s)])?;
    }

    #[test]
    fn a_chain_of_layout_ops((s, v) in input(2, 4)) {
        gradcheck(
            |x| {
                let t = x[0].transpose(0, -1)?;
                let n = t.narrow(0, 0, 1)?;
                Tensor::concat(&[&t, &n.mul(&n)?], 0)?.flatten_from_1()
            },
            &[t64(v, &s)],
        )?;
    }
}
