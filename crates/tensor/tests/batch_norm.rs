//! batch_norm_train / batch_norm_infer: statistics against direct sums, gradients against
//! finite differences, and errors.

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{DType, Device, Error, Tensor};

fn random(shape: &[usize], seed: u64, low: f64, high: f64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(shape, low, high, DType::F64, &Device::Cpu, &mut rng).unwrap()
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (2usize..9, 1usize..5).prop_map(|(n, c)| vec![n, c]),
        (1usize..3, 1usize..4, 1usize..4, 1usize..4).prop_map(|(n, h, w, c)| vec![n, h, w, c]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_normalises_with_biased_batch_statistics(shape in shape_strategy(), seed: u64) {
        let x = random(&shape, seed, -3.0, 5.0);
        let c = *shape.last().unwrap();
        let (gamma, beta) = (random(&[c], seed ^ 1, 0.5, 2.0), random(&[c], seed ^ 2, -1.0, 1.0));
        let (y, mean, var) = x.batch_norm_train(Some(&gamma), Some(&beta), 1e-3).unwrap();
        let (xv, g, b) = (x.to_vec::<f64>().unwrap(), gamma.to_vec::<f64>().unwrap(), beta.to_vec::<f64>().unwrap());
        let rows = xv.len() / c;
        let (yv, mv, vv) = (y.to_vec::<f64>().unwrap(), mean.to_vec::<f64>().unwrap(), var.to_vec::<f64>().unwrap());
        for ch in 0..c {
            let col: Vec<f64> = (0..rows).map(|r| xv[r * c + ch]).collect();
            let m = col.iter().sum::<f64>() / rows as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / rows as f64;
            prop_assert!((mv[ch] - m).abs() < 1e-12 && (vv[ch] - v).abs() < 1e-12);
            for r in 0..rows {
                let expected = (col[r] - m) / (v + 1e-3).sqrt() * g[ch] + b[ch];
                prop_assert!((yv[r * c + ch] - expected).abs() < 1e-10);
            }
        }
        // Inference from the same statistics gives the same output.
        let inferred = x.batch_norm_infer(Some(&gamma), Some(&beta), &mean, &var, 1e-3).unwrap();
        for (a, b) in inferred.to_vec::<f64>().unwrap().iter().zip(&yv) {
            prop_assert!((a - b).abs() < 1e-10);
        }
    }

    #[test]
    fn training_gradients_match_finite_differences(shape in shape_strategy(), affine: bool, seed: u64) {
        let x = random(&shape, seed, -2.0, 2.0);
        let c = *shape.last().unwrap();
        let (gamma, beta) = (random(&[c], seed ^ 1, 0.5, 2.0), random(&[c], seed ^ 2, -1.0, 1.0));
        if affine {
            check_gradients(|t| Ok(t[0].batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-3)?.0), &[x, gamma, beta]).unwrap();
        } else {
            check_gradients(|t| Ok(t[0].batch_norm_train(None, None, 1e-3)?.0), &[x]).unwrap();
        }
    }

    #[test]
    fn inference_gradients_match_finite_differences(shape in shape_strategy(), seed: u64) {
        let c = *shape.last().unwrap();
        let inputs = [
            random(&shape, seed, -2.0, 2.0),
            random(&[c], seed ^ 1, 0.5, 2.0),
            random(&[c], seed ^ 2, -1.0, 1.0),
            random(&[c], seed ^ 3, -1.0, 1.0),
            random(&[c], seed ^ 4, 0.5, 2.0),
        ];
        check_gradients(|t| t[0].batch_norm_infer(Some(&t[1]), Some(&t[2]), &t[3], &t[4], 1e-3), &inputs).unwrap();
    }
}

#[test]
fn f32_statistics_stay_accurate_over_many_rows() {
    // 64 * 30 * 30 rows with a large mean: blocked sums keep f32 close to f64.
    let x = random(&[64, 30, 30, 2], 7, 99.0, 101.0);
    let (_, m64, v64) = x.batch_norm_train(None, None, 1e-3).unwrap();
    let (_, m32, v32) = x.cast(DType::F32).unwrap().batch_norm_train(None, None, 1e-3).unwrap();
    for (a, b) in m32.to_vec_f64().unwrap().iter().zip(m64.to_vec::<f64>().unwrap()) {
        assert!((a - b).abs() / b < 1e-6, "{a} vs {b}");
    }
    for (a, b) in v32.to_vec_f64().unwrap().iter().zip(v64.to_vec::<f64>().unwrap()) {
        assert!((a - b).abs() / b < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn bad_operands_are_reported_with_their_shapes() {
    let x = random(&[2, 4, 4, 3], 0, -1.0, 1.0);
    let msg = |e: Error| e.to_string();
    let m = msg(x.batch_norm_train(Some(&random(&[4], 1, 0.0, 1.0)), None, 1e-3).unwrap_err());
    assert!(m.contains("gamma") && m.contains("[4]") && m.contains("[2, 4, 4, 3]") && m.contains("3 channels"), "{m}");
    let m = msg(x.batch_norm_train(None, Some(&random(&[3, 1], 1, 0.0, 1.0)), 1e-3).unwrap_err());
    assert!(m.contains("beta") && m.contains("[3, 1]"), "{m}");
    let m = msg(random(&[2, 3, 4], 0, 0.0, 1.0).batch_norm_train(None, None, 1e-3).unwrap_err());
    assert!(m.contains("[2, 3, 4]") && m.contains("rank 3"), "{m}");
    let (mean, var) = (random(&[3], 1, 0.0, 1.0), random(&[2], 2, 0.5, 1.0));
    let m = msg(x.batch_norm_infer(None, None, &mean, &var, 1e-3).unwrap_err());
    assert!(m.contains("var") && m.contains("[2]"), "{m}");
    let m = msg(x.batch_norm_train(None, None, -1.0).unwrap_err());
    assert!(m.contains("epsilon"), "{m}");
}

/// The fused ops' output and their gradients with respect to every input, beside those of
/// the unfused composition (`batch_norm_train`, `add`, `relu`), at output gradient `w`.
type Run = (Vec<f64>, Vec<Vec<f64>>);

fn fused_and_unfused(x: &Tensor, gamma: &Tensor, beta: &Tensor, residual: Option<&Tensor>, w: &Tensor) -> (Run, Run) {
    use tapegrad_tensor::GradientTape;
    let run = |fused: bool| -> Run {
        let tape = GradientTape::new();
        let mut inputs = vec![x, gamma, beta];
        inputs.extend(residual);
        for t in &inputs {
            tape.watch(t);
        }
        let y = tape
            .record(|| match (fused, residual) {
                (true, None) => Ok(x.batch_norm_relu_train(Some(gamma), Some(beta), 1e-3)?.0),
                (true, Some(r)) => Ok(x.batch_norm_add_relu_train(Some(gamma), Some(beta), r, 1e-3)?.0),
                (false, None) => x.batch_norm_train(Some(gamma), Some(beta), 1e-3)?.0.relu(),
                (false, Some(r)) => r.add(&x.batch_norm_train(Some(gamma), Some(beta), 1e-3)?.0)?.relu(),
            })
            .unwrap();
        let grads = tape.gradient_with_output_gradient(&y, &inputs, w).unwrap();
        (y.to_vec_f64().unwrap(), grads.into_iter().map(|g| g.unwrap().to_vec_f64().unwrap()).collect())
    };
    (run(true), run(false))
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fused_relu_gradients_match_finite_differences(shape in shape_strategy(), affine: bool, seed: u64) {
        let x = random(&shape, seed, -2.0, 2.0);
        let c = *shape.last().unwrap();
        let (gamma, beta) = (random(&[c], seed ^ 1, 0.5, 2.0), random(&[c], seed ^ 2, -1.0, 1.0));
        if affine {
            check_gradients(|t| Ok(t[0].batch_norm_relu_train(Some(&t[1]), Some(&t[2]), 1e-3)?.0), &[x, gamma, beta])
                .unwrap();
        } else {
            check_gradients(|t| Ok(t[0].batch_norm_relu_train(None, None, 1e-3)?.0), &[x]).unwrap();
        }
    }

    #[test]
    fn fused_add_relu_gradients_match_finite_differences(shape in shape_strategy(), affine: bool, seed: u64) {
        let x = random(&shape, seed, -2.0, 2.0);
        let residual = random(&shape, seed ^ 3, -1.5, 1.5);
        let c = *shape.last().unwrap();
        let (gamma, beta) = (random(&[c], seed ^ 1, 0.5, 2.0), random(&[c], seed ^ 2, -1.0, 1.0));
        if affine {
            check_gradients(
                |t| Ok(t[0].batch_norm_add_relu_train(Some(&t[1]), Some(&t[2]), &t[3], 1e-3)?.0),
                &[x, gamma, beta, residual],
            )
            .unwrap();
        } else {
            check_gradients(|t| Ok(t[0].batch_norm_add_relu_train(None, None, &t[1], 1e-3)?.0), &[x, residual])
                .unwrap();
        }
    }

    #[test]
    fn fused_forward_is_relu_of_residual_plus_normalised(shape in shape_strategy(), seed: u64) {
        // Against the formula written out in f64, not against the unfused ops.
        let x = random(&shape, seed, -3.0, 5.0);
        let residual = random(&shape, seed ^ 3, -1.0, 1.0);
        let c = *shape.last().unwrap();
        let (gamma, beta) = (random(&[c], seed ^ 1, 0.5, 2.0), random(&[c], seed ^ 2, -1.0, 1.0));
        let (y, _, _) = x.batch_norm_add_relu_train(Some(&gamma), Some(&beta), &residual, 1e-3).unwrap();
        let (yr, _, _) = x.batch_norm_relu_train(Some(&gamma), Some(&beta), 1e-3).unwrap();
        let (xv, rv) = (x.to_vec::<f64>().unwrap(), residual.to_vec::<f64>().unwrap());
        let (g, b) = (gamma.to_vec::<f64>().unwrap(), beta.to_vec::<f64>().unwrap());
        let (yv, yrv) = (y.to_vec::<f64>().unwrap(), yr.to_vec::<f64>().unwrap());
        let rows = xv.len() / c;
        for ch in 0..c {
            let col: Vec<f64> = (0..rows).map(|r| xv[r * c + ch]).collect();
            let m = col.iter().sum::<f64>() / rows as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / rows as f64;
            for r in 0..rows {
                let bn = (col[r] - m) / (v + 1e-3).sqrt() * g[ch] + b[ch];
                prop_assert!((yv[r * c + ch] - (bn + rv[r * c + ch]).max(0.0)).abs() < 1e-10);
                prop_assert!((yrv[r * c + ch] - bn.max(0.0)).abs() < 1e-10);
            }
        }
    }
}

#[test]
fn fused_ops_equal_the_unfused_composition_bit_for_bit() {
    // 64 * 8 * 8 rows: several blocks and tasks of the column reductions; f32 and f64.
    for dtype in [DType::F32, DType::F64] {
        let cast = |t: Tensor| t.cast(dtype).unwrap();
        let shape = [64, 8, 8, 5];
        let x = cast(random(&shape, 1, -2.0, 3.0));
        let residual = cast(random(&shape, 2, -1.0, 1.0));
        let (gamma, beta) = (cast(random(&[5], 3, 0.5, 2.0)), cast(random(&[5], 4, -1.0, 1.0)));
        let w = cast(random(&shape, 5, -1.0, 1.0));
        for residual in [None, Some(&residual)] {
            let ((y_f, g_f), (y_u, g_u)) = fused_and_unfused(&x, &gamma, &beta, residual, &w);
            assert!(y_f.contains(&0.0) && y_f.iter().any(|&v| v > 0.0), "the ReLU must cut somewhere");
            assert_eq!(bits(&y_f), bits(&y_u), "{dtype} forward, residual {}", residual.is_some());
            for (i, (a, b)) in g_f.iter().zip(&g_u).enumerate() {
                assert_eq!(bits(a), bits(b), "{dtype} gradient {i}, residual {}", residual.is_some());
            }
        }
    }
}

#[test]
fn fused_relu_passes_nan_through_and_masks_its_gradient() {
    use tapegrad_tensor::GradientTape;
    let x = random(&[4, 3], 0, -1.0, 1.0);
    let mut r = random(&[4, 3], 1, -1.0, 1.0).to_vec::<f64>().unwrap();
    r[4] = f64::NAN;
    r[7] = f64::NEG_INFINITY;
    let residual = Tensor::from_vec(r, [4, 3], &Device::Cpu).unwrap();
    let tape = GradientTape::new();
    tape.watch(&residual);
    let y = tape.record(|| Ok(x.batch_norm_add_relu_train(None, None, &residual, 1e-3)?.0)).unwrap();
    let yv = y.to_vec::<f64>().unwrap();
    assert!(yv[4].is_nan(), "NaN must pass the ReLU, got {}", yv[4]);
    assert_eq!(yv[7], 0.0);
    let ones = Tensor::ones([4, 3], DType::F64, &Device::Cpu).unwrap();
    let dr = tape.gradient_with_output_gradient(&y, &[&residual], &ones).unwrap().remove(0).unwrap();
    let dr = dr.to_vec::<f64>().unwrap();
    assert_eq!((dr[4], dr[7]), (0.0, 0.0), "no gradient through NaN or a cut value");
}

#[test]
fn fused_ops_report_bad_operands_and_second_order_requests() {
    use tapegrad_tensor::GradientTape;
    let x = random(&[2, 4, 4, 3], 0, -1.0, 1.0);
    let msg = |e: Error| e.to_string();
    let m = msg(x.batch_norm_add_relu_train(None, None, &random(&[2, 4, 4, 1], 1, 0.0, 1.0), 1e-3).unwrap_err());
    assert!(m.contains("batch_norm_add_relu_train") && m.contains("[2, 4, 4, 1]") && m.contains("[2, 4, 4, 3]"), "{m}");
    let f32_residual = random(&[2, 4, 4, 3], 1, 0.0, 1.0).cast(DType::F32).unwrap();
    let m = msg(x.batch_norm_add_relu_train(None, None, &f32_residual, 1e-3).unwrap_err());
    assert!(m.contains("f32") && m.contains("f64"), "{m}");
    let m = msg(x.batch_norm_relu_train(Some(&random(&[4], 1, 0.0, 1.0)), None, 1e-3).unwrap_err());
    assert!(m.contains("batch_norm_relu_train") && m.contains("gamma") && m.contains("[4]"), "{m}");
    let m = msg(x.batch_norm_relu_train(None, None, f64::NAN).unwrap_err());
    assert!(m.contains("epsilon"), "{m}");
    // First order only, as batch_norm_train: an outer tape asking through it gets an error.
    let outer = GradientTape::new();
    outer.watch(&x);
    let result = outer.record(|| {
        let inner = GradientTape::new();
        inner.watch(&x);
        let loss = inner.record(|| x.batch_norm_relu_train(None, None, 1e-3)?.0.square()?.sum_all())?;
        inner.gradient(&loss, &[&x])?.remove(0).expect("a gradient").sum_all()
    });
    let m = msg(result.and_then(|l| outer.gradient(&l, &[&x])).unwrap_err());
    assert!(m.contains("not differentiable"), "{m}");
}
