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
