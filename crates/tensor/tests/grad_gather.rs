//! gather and scatter_add: gradients against central finite differences in f64 (proptest
//! over random tables, index shapes and repeated indices), second order, agreement with
//! PyTorch (`fixtures/torch_gather.txt`, written by `fixtures/make_gather_fixtures.py`),
//! determinism and bad indices.
//!
//! Tolerance: `GradCheck::default()` (step 1e-6, `|analytic - numeric| <= 1e-6 + 1e-5 *
//! |numeric|`); both ops are linear in their float operand, so the finite difference is
//! exact up to rounding.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::HashMap;
use tapegrad_tensor::{Device, GradientTape, Tensor};

/// A table `[rows, row...]` (values in [-2, 2]) and indices of rank 1 or 2 into it, which
/// repeat often (few rows, many indices).
fn gather_case() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, Vec<usize>, Vec<i64>)> {
    (1usize..=4, shape(0, 2), shape(1, 2)).prop_flat_map(|(rows, row_shape, index_shape)| {
        let mut table_shape = vec![rows];
        table_shape.extend(&row_shape);
        let n = count(&index_shape);
        (
            Just(table_shape.clone()),
            values_for(&table_shape, -2.0..2.0f64),
            Just(index_shape),
            prop::collection::vec(0..rows as i64, n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gather_gradient_matches_finite_differences((ts, tv, is, iv) in gather_case()) {
        let ids = ti64(iv, &is);
        gradcheck1(|t| t.gather(&ids), &t64(tv, &ts))?;
    }

    #[test]
    fn scatter_add_gradient_matches_finite_differences((ts, _tv, is, iv) in gather_case()) {
        let ids = ti64(iv, &is);
        let mut values_shape = is.clone();
        values_shape.extend(&ts[1..]);
        let values: Vec<f64> = (0..count(&values_shape)).map(|i| (i as f64 * 0.7).sin()).collect();
        gradcheck1(|v| Tensor::scatter_add(v, &ids, ts[0]), &t64(values, &values_shape))?;
    }

    #[test]
    fn gather_second_order_matches_finite_differences((ts, tv, is, iv) in gather_case()) {
        // The gradient of sum(gather(t)^2) is scatter_add(2 * gather(t)): differentiating it
        // again goes through scatter_add's own gradient rule.
        let ids = ti64(iv, &is);
        gradcheck1(
            |t| {
                let tape = GradientTape::new();
                tape.watch(t);
                let loss = tape.record(|| t.gather(&ids)?.square()?.sum_all())?;
                let g = tape.gradient(&loss, &[t])?;
                g[0].clone().expect("the table takes part").square()?.sum_all()
            },
            &t64(tv, &ts),
        )?;
    }
}

#[test]
fn gather_picks_rows_and_checks_indices() {
    let table = t64((0..12).map(f64::from).collect(), &[4, 3]);
    let ids = ti64(vec![3, 0, 3, 1], &[2, 2]);
    let y = table.gather(&ids).unwrap();
    assert_eq!(y.dims(), &[2, 2, 3]);
    assert_eq!(vals(&y), vec![9., 10., 11., 0., 1., 2., 9., 10., 11., 3., 4., 5.]);
    assert_err(
        "index past the table",
        table.gather(&ti64(vec![0, 4], &[2])),
        &["gather", "index 4", "position 1", "0..4"],
    );
    assert_err("negative index", table.gather(&ti64(vec![-1], &[1])), &["index -1"]);
    assert_err("float indices", table.gather(&t64(vec![0.0], &[1])), &["gather", "i64"]);
    assert_err("integer table", ti64(vec![1, 2], &[2]).gather(&ti64(vec![0], &[1])), &["gather"]);
    assert_err("scalar table", t64(vec![1.0], &[]).gather(&ti64(vec![0], &[1])), &["gather", "scalar"]);
    assert_err(
        "scatter shape",
        Tensor::scatter_add(&t64(vec![1.0; 6], &[3, 2]), &ti64(vec![0, 1], &[2]), 2),
        &["scatter_add", "[3, 2]", "[2]"],
    );
    assert_err(
        "scatter index",
        Tensor::scatter_add(&t64(vec![1.0; 2], &[2]), &ti64(vec![0, 2], &[2]), 2),
        &["index 2"],
    );
}

#[test]
fn scatter_add_is_deterministic_and_exact_in_position_order() {
    // Values whose float sum depends on the order: ascending position order is the one
    // every backend uses, so the result is this exact left fold, at every run.
    let values = vec![1e8f32, 1.0, -1e8, 1.0, 0.5, 3.0];
    let ids = vec![0i64, 0, 0, 0, 1, 1];
    let expected0 = ((1e8f32 + 1.0) + -1e8) + 1.0;
    let t = Tensor::from_vec(values.clone(), [6, 1], &Device::Cpu).unwrap();
    let idx = Tensor::from_vec(ids, [6], &Device::Cpu).unwrap();
    let first = Tensor::scatter_add(&t, &idx, 3).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(first, vec![expected0, 3.5, 0.0]);
    // Large enough for the parallel path.
    let n = 100_000;
    let big: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 1e3).collect();
    let big_ids: Vec<i64> = (0..n).map(|i| (i * 7919 % 13) as i64).collect();
    let bt = Tensor::from_vec(big, [n / 4, 4], &Device::Cpu).unwrap();
    let bi = Tensor::from_vec(big_ids[..n / 4].to_vec(), [n / 4], &Device::Cpu).unwrap();
    let a = Tensor::scatter_add(&bt, &bi, 13).unwrap().to_vec::<f32>().unwrap();
    for _ in 0..3 {
        assert_eq!(Tensor::scatter_add(&bt, &bi, 13).unwrap().to_vec::<f32>().unwrap(), a);
    }
}

const FIXTURES: &str = include_str!("fixtures/torch_gather.txt");

fn fixtures() -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let mut lines = FIXTURES.lines().filter(|l| !l.starts_with('#'));
    while let Some(header) = lines.next() {
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(words[0], "tensor", "{header}");
        let dims: Vec<usize> = words[3..].iter().map(|d| d.parse().unwrap()).collect();
        let values = lines.next().expect("values");
        let t = if words[1].ends_with(".ids") {
            let v: Vec<i64> = values.split_whitespace().map(|v| v.parse().unwrap()).collect();
            Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
        } else {
            let v: Vec<f32> = values.split_whitespace().map(|v| v.parse().unwrap()).collect();
            Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
        };
        out.insert(words[1].to_string(), t);
    }
    out
}

/// `|ours - torch| <= 1e-6 * (1 + |torch|)`: gather copies exactly, and scatter sums a few
/// float32 terms.
fn assert_agrees(what: &str, ours: &Tensor, torch: &Tensor) {
    assert_eq!(ours.dims(), torch.dims(), "{what}: shape");
    let (a, b) = (ours.to_vec::<f32>().unwrap(), torch.to_vec::<f32>().unwrap());
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{what}[{i}]: ours {x} vs torch {y}");
    }
}

#[test]
fn gather_and_scatter_agree_with_pytorch() {
    let fx = fixtures();
    let get = |case: &str, name: &str| fx[&format!("{case}.{name}")].clone();
    for case in ["embedding_2x5", "embedding_many_repeats", "embedding_vector_ids"] {
        let (table, ids, dy) = (get(case, "table"), get(case, "ids"), get(case, "dy"));
        let tape = GradientTape::new();
        tape.watch(&table);
        let (y, loss) = tape
            .record(|| {
                let y = table.gather(&ids)?;
                let loss = y.mul(&dy)?.sum_all()?;
                Ok((y, loss))
            })
            .unwrap();
        let g = tape.gradient(&loss, &[&table]).unwrap();
        assert_agrees(&format!("{case}.y"), &y, &get(case, "y"));
        assert_agrees(&format!("{case}.d_table"), g[0].as_ref().unwrap(), &get(case, "d_table"));
    }
    let case = "scatter_rows";
    let (values, ids, dy) = (get(case, "values"), get(case, "ids"), get(case, "dy"));
    let rows = get(case, "y").dims()[0];
    let tape = GradientTape::new();
    tape.watch(&values);
    let (y, loss) = tape
        .record(|| {
            let y = Tensor::scatter_add(&values, &ids, rows)?;
            let loss = y.mul(&dy)?.sum_all()?;
            Ok((y, loss))
        })
        .unwrap();
    let g = tape.gradient(&loss, &[&values]).unwrap();
    assert_agrees("scatter_rows.y", &y, &get(case, "y"));
    assert_agrees("scatter_rows.d_values", g[0].as_ref().unwrap(), &get(case, "d_values"));
}
