//! Layer and group normalization: gradients (x, gamma, beta) against central finite
//! differences in f64 on random shapes, forward values against a naive f64 reference
//! (small shapes and shapes large enough for the parallel CPU paths), bit-identical
//! results for any thread count, and the errors for bad input and second-order requests.
//!
//! Tolerance of the gradient checks: `GradCheck::default()` (see `src/testing.rs`). The
//! values are drawn in [-2, 2] and epsilon is Keras' 1e-3, so the normalization's
//! curvature stays moderate even for groups of two nearly equal values.

mod common;

use common::*;
use proptest::prelude::*;
use tapegrad_tensor::{DType, GradientTape};

/// Naive two-pass reference of group normalization over `[outer, spatial, groups, cpg]`
/// with per-channel `gamma` and `beta` (indexed by the position inside `outer`'s slice
/// modulo `params.len()`, which covers both the per-channel and the layer-norm layout).
fn reference(
    x: &[f64],
    outer: usize,
    groups: usize,
    cpg: usize,
    params: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Vec<f64> {
    let slice = x.len() / outer.max(1);
    let c = groups * cpg;
    let spatial = slice / c.max(1);
    let mut y = vec![0.0; x.len()];
    for n in 0..outer {
        for g in 0..groups {
            let idx: Vec<usize> =
                (0..spatial).flat_map(|p| (0..cpg).map(move |j| n * slice + p * c + g * cpg + j)).collect();
            let m = idx.len() as f64;
            let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
            let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
            for &i in &idx {
                let xhat = (x[i] - mean) / (var + eps).sqrt();
                y[i] = match params {
                    Some((gamma, beta)) => {
                        xhat * gamma[(i - n * slice) % gamma.len()] + beta[(i - n * slice) % beta.len()]
                    }
                    None => xhat,
                };
            }
        }
    }
    y
}

/// A shape of rank 1 to 4, its values, and the first normalised axis.
fn layer_norm_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, usize)> {
    data(1, 4, -2.0..2.0f64).prop_flat_map(|(s, v)| {
        let r = s.len();
        (Just(s), Just(v), 0..r)
    })
}

/// A channels-last shape of rank 2 to 4 whose channels are `groups * cpg`, its values and
/// the group count.
fn group_norm_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, usize)> {
    (shape(1, 3), 1usize..=3, 1usize..=3).prop_flat_map(|(mut s, groups, cpg)| {
        s.push(groups * cpg);
        let values = values_for(&s, -2.0..2.0f64);
        (Just(s), values, Just(groups))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn layer_norm_gradients_wrt_x_gamma_beta(
        (s, v, first) in layer_norm_case(),
        params in prop::collection::vec(-1.5..1.5f64, 1..=625),
    ) {
        let ps = s[first..].to_vec();
        let k = count(&ps);
        let gamma = t64((0..k).map(|i| params[i % params.len()] + 0.5).collect(), &ps);
        let beta = t64((0..k).map(|i| params[(i + 1) % params.len()]).collect(), &ps);
        gradcheck(|x| x[0].layer_norm(first, Some(&x[1]), Some(&x[2]), 1e-3), &[t64(v.clone(), &s), gamma, beta])?;
        gradcheck1(|x| x.layer_norm(first, None, None, 1e-3), &t64(v, &s))?;
    }

    #[test]
    fn group_norm_gradients_wrt_x_gamma_beta(
        (s, v, groups) in group_norm_case(),
        params in prop::collection::vec(-1.5..1.5f64, 9),
    ) {
        let c = *s.last().unwrap();
        let gamma = t64((0..c).map(|i| params[i] + 0.5).collect(), &[c]);
        let beta = t64((0..c).map(|i| params[(i + 4) % 9]).collect(), &[c]);
        gradcheck(|x| x[0].group_norm(groups, Some(&x[1]), Some(&x[2]), 1e-3), &[t64(v.clone(), &s), gamma.clone(), beta])?;
        gradcheck(|x| x[0].group_norm(groups, Some(&x[1]), None, 1e-3), &[t64(v.clone(), &s), gamma])?;
        gradcheck1(|x| x.group_norm(groups, None, None, 1e-3), &t64(v, &s))?;
    }

    #[test]
    fn forward_matches_the_naive_reference((s, v, groups) in group_norm_case()) {
        let c = *s.last().unwrap();
        let gamma: Vec<f64> = (0..c).map(|i| 0.3 + i as f64 * 0.25).collect();
        let beta: Vec<f64> = (0..c).map(|i| i as f64 * -0.1).collect();
        let y = t64(v.clone(), &s)
            .group_norm(groups, Some(&t64(gamma.clone(), &[c])), Some(&t64(beta.clone(), &[c])), 1e-3)
            .unwrap();
        assert_close(&vals(&y), &reference(&v, s[0], groups, c / groups, Some((&gamma, &beta)), 1e-3), 1e-12);
        // Layer norm over the last axis is group norm with one group and no spatial axes.
        let flat = [count(&s) / c, c];
        let y = t64(v.clone(), &flat).layer_norm(1, None, None, 1e-3).unwrap();
        assert_close(&vals(&y), &reference(&v, flat[0], 1, c, None, 1e-3), 1e-12);
    }
}

/// Values in (-1, 1) with an offset, for the large cases.
fn smooth(n: usize, offset: f64) -> Vec<f64> {
    (0..n).map(|i| ((i as f64) * 0.618).sin() + offset).collect()
}

#[test]
fn large_inputs_take_the_parallel_paths_and_match_the_reference() {
    // Group norm of NHWC images: long groups; layer norm: many short rows and few long ones.
    let (n, h, w, c, groups) = (3, 40, 40, 16, 4);
    let x = smooth(n * h * w * c, 0.0);
    let gamma: Vec<f64> = (0..c).map(|i| 1.0 + i as f64 * 0.01).collect();
    let beta: Vec<f64> = (0..c).map(|i| i as f64 * 0.1).collect();
    let y = t64(x.clone(), &[n, h, w, c])
        .group_norm(groups, Some(&t64(gamma.clone(), &[c])), Some(&t64(beta.clone(), &[c])), 1e-3)
        .unwrap();
    assert_close(&vals(&y), &reference(&x, n, groups, c / groups, Some((&gamma, &beta)), 1e-3), 1e-12);
    for (rows, cols) in [(5000, 13), (2, 40000)] {
        let x = smooth(rows * cols, 0.0);
        let y = t64(x.clone(), &[rows, cols]).layer_norm(1, None, None, 1e-5).unwrap();
        assert_close(&vals(&y), &reference(&x, rows, 1, cols, None, 1e-5), 1e-12);
    }
}

#[test]
fn f32_statistics_survive_a_large_mean() {
    // Values 1000 + sin(i) in f32: a one-pass E[x^2] - E[x]^2 in f32 would get the variance
    // (0.5) wrong by about 0.06 (10%). What remains is the mean rounded to f32 (half an ulp
    // of x, 3e-5), below one input ulp in normalised units (6e-5 / 0.7).
    let (rows, cols) = (4, 5000);
    let x = smooth(rows * cols, 1000.0);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let rounded: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    let y = t32(x32, &[rows, cols]).layer_norm(1, None, None, 1e-3).unwrap();
    assert_close(&vals(&y), &reference(&rounded, rows, 1, cols, None, 1e-3), 1e-4);
}

/// Forward and all three gradients of a large f32 group norm, as bits.
fn group_norm_bits() -> Vec<Vec<u32>> {
    let (n, h, w, c) = (2, 48, 48, 32);
    let len = n * h * w * c;
    let x = t32(smooth(len, 0.5).iter().map(|&v| v as f32).collect(), &[n, h, w, c]);
    let gamma = t32((0..c).map(|i| 1.0 + i as f32 * 0.03).collect(), &[c]);
    let beta = t32(vec![0.25; c], &[c]);
    let dy = t32((0..len).map(|i| ((i as f32) * 0.377).cos()).collect(), &[n, h, w, c]);
    let tape = GradientTape::new();
    for t in [&x, &gamma, &beta] {
        tape.watch(t);
    }
    let y = tape.record(|| x.group_norm(8, Some(&gamma), Some(&beta), 1e-3)).unwrap();
    let grads = tape.gradient_with_output_gradient(&y, &[&x, &gamma, &beta], &dy).unwrap();
    std::iter::once(y)
        .chain(grads.into_iter().map(Option::unwrap))
        .map(|t| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Forward and all three gradients of f32 layer norms of `[rows, cols]` (many 256-row
/// blocks and a partial one, rows past the 16-row sub-blocks of the parameter sums, row
/// lengths with and without a tail past 16 lanes), as bits.
fn layer_norm_bits() -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for (rows, cols) in [(1000, 96), (517, 37), (40, 520)] {
        let len = rows * cols;
        let x = t32(smooth(len, 0.5).iter().map(|&v| v as f32).collect(), &[rows, cols]);
        let gamma = t32((0..cols).map(|i| 1.0 + i as f32 * 0.03).collect(), &[cols]);
        let beta = t32(vec![0.25; cols], &[cols]);
        let dy = t32((0..len).map(|i| ((i as f32) * 0.377).cos()).collect(), &[rows, cols]);
        let tape = GradientTape::new();
        for t in [&x, &gamma, &beta] {
            tape.watch(t);
        }
        let y = tape.record(|| x.layer_norm(1, Some(&gamma), Some(&beta), 1e-3)).unwrap();
        let grads = tape.gradient_with_output_gradient(&y, &[&x, &gamma, &beta], &dy).unwrap();
        out.extend(
            std::iter::once(y)
                .chain(grads.into_iter().map(Option::unwrap))
                .map(|t| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>()),
        );
    }
    out
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let on = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| (group_norm_bits(), layer_norm_bits()))
    };
    let one = on(1);
    assert!(one == on(2), "2 threads differ from 1");
    assert!(one == on(3), "3 threads differ from 1");
    assert!(one == on(8), "8 threads differ from 1");
}

#[test]
fn second_order_gradients_are_an_error() {
    let x = t64(smooth(12, 0.0), &[2, 6]);
    let outer = GradientTape::new();
    outer.watch(&x);
    let result = outer.record(|| {
        let inner = GradientTape::new();
        inner.watch(&x);
        let loss = inner.record(|| x.layer_norm(1, None, None, 1e-3)?.square()?.sum_all())?;
        let g = inner.gradient(&loss, &[&x])?;
        g[0].clone().expect("a gradient").sum_all()
    });
    let err = result.and_then(|l| outer.gradient(&l, &[&x]).map(|_| ()));
    assert_err("second order through layer_norm", err, &["not differentiable", "layer_norm"]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let x = t64(smooth(24, 0.0), &[2, 3, 4]);
    assert_err("groups not dividing", x.group_norm(3, None, None, 1e-3), &["groups = 3", "4 channels", "[2, 3, 4]"]);
    assert_err("zero groups", x.group_norm(0, None, None, 1e-3), &["groups = 0"]);
    assert_err("rank 1", t64(vec![1.0; 4], &[4]).group_norm(1, None, None, 1e-3), &["rank 2 or more", "[4]"]);
    assert_err("axis", x.layer_norm(3, None, None, 1e-3), &["first_axis 3", "rank 3"]);
    let gamma = t64(vec![1.0; 4], &[4]);
    assert_err("gamma shape", x.layer_norm(1, Some(&gamma), None, 1e-3), &["gamma", "[4]", "[3, 4]"]);
    let beta = t64(vec![0.0; 3], &[3]);
    assert_err("beta shape", x.group_norm(2, None, Some(&beta), 1e-3), &["beta", "[3]", "[4]"]);
    assert_err("epsilon", x.layer_norm(2, None, None, -1.0), &["epsilon", "-1"]);
    let f32_gamma = gamma.cast(DType::F32).unwrap();
    assert!(x.group_norm(2, Some(&f32_gamma), None, 1e-3).is_err());
    let labels = ti64(vec![1; 8], &[2, 4]);
    assert_err("i64", labels.layer_norm(1, None, None, 1e-3), &["layer_norm", "i64"]);
}

#[test]
fn empty_batches_give_empty_results() {
    let x = t64(vec![], &[0, 3, 4]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.group_norm(2, None, None, 1e-3)).unwrap();
    assert_eq!(y.dims(), &[0, 3, 4]);
    let loss = tape.record(|| y.sum_all()).unwrap();
    let g = tape.gradient(&loss, &[&x]).unwrap();
    assert_eq!(g[0].as_ref().unwrap().dims(), &[0, 3, 4]);
}
