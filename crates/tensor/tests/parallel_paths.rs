//! Tensors large enough (more than 32768 elements) for the CPU kernels to take their
//! rayon-parallel paths, compared with naive serial computations. The reduction cases
//! cover each of the kernel's layouts: many short rows, few long rows (split across
//! threads), column sums over few outer blocks, and several axes at once.

mod common;

use common::reference::{self, Reduction};
use common::*;
use tapegrad_tensor::{DType, Tensor};

/// Integer-valued f64s (exact sums in any order), 1009 distinct values.
fn int_values(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7919 + 13) % 1009) as f64 - 504.0).collect()
}

/// Values in (-1, 1).
fn smooth_values(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i as f64) * 0.618).sin()).collect()
}

fn check_reductions(shape: &[usize], axes: &[usize]) {
    let x = int_values(count(shape));
    let t = t64(x.clone(), shape);
    let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
    for (name, got, op) in [
        ("sum", t.sum(&ax, true), Reduction::Sum),
        ("max", t.max(&ax, true), Reduction::Max),
        ("min", t.min(&ax, true), Reduction::Min),
    ] {
        let expect = reference::reduce(&x, shape, axes, op);
        assert_eq!(vals(&got.unwrap()), expect, "{name} over {axes:?} of {shape:?}");
    }
    // f32 sums agree with the f64 reference to f32 rounding.
    let t32 = t.cast(DType::F32).unwrap();
    let expect = reference::reduce(&x, shape, axes, Reduction::Sum);
    assert_close(&vals(&t32.sum(&ax, true).unwrap()), &expect, 1e-6);
}

#[test]
fn reductions_of_large_tensors() {
    check_reductions(&[70_000], &[0]); // one long row, split across threads
    check_reductions(&[3, 20_000], &[1]); // few long rows
    check_reductions(&[4_000, 10], &[1]); // many short rows
    check_reductions(&[2_000, 40], &[0]); // column sums: one outer block of many rows
    check_reductions(&[2, 10_000, 3], &[1]); // few outer blocks, inner > 1
    check_reductions(&[64, 600, 2], &[1]); // many outer blocks, inner > 1
    check_reductions(&[40, 30, 50], &[0, 2]); // two axes, one pass each
    check_reductions(&[40, 30, 50], &[0, 1, 2]); // everything
    check_reductions(&[5, 1, 8_000, 1], &[2, 3]); // size-1 axes around the reduced one
}

#[test]
fn nan_survives_parallel_reductions() {
    let mut x = smooth_values(100_000);
    x[77_777] = f64::NAN;
    let t = t64(x, &[100_000]);
    assert!(vals(&t.max(&[0], false).unwrap())[0].is_nan());
    assert!(vals(&t.min(&[0], false).unwrap())[0].is_nan());
    assert_eq!(t.argmax(0).unwrap().to_vec::<i64>().unwrap(), [77_777]);
    let cols = t.reshape([1_000, 100]).unwrap().max(&[0], false).unwrap();
    let v = vals(&cols);
    assert!(v[77].is_nan() && v.iter().filter(|x| x.is_nan()).count() == 1, "column 77 holds the NaN");
}

#[test]
fn argmax_of_large_tensors_takes_the_first_tie() {
    let (rows, cols) = (500, 100);
    // Values clipped to [5, 90]: every row and column has several maxima and minima.
    let x: Vec<f64> = (0..rows * cols).map(|i| ((i * 7919 + 13) % 97).clamp(5, 90) as f64).collect();
    let t = t64(x.clone(), &[rows, cols]);
    let expect: Vec<i64> = x
        .chunks(cols)
        .map(|r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            r.iter().position(|&v| v == m).unwrap() as i64
        })
        .collect();
    assert!(x.chunks(cols).all(|r| r.iter().filter(|&&v| v == 90.0).count() > 1), "ties at the maxima");
    assert_eq!(t.argmax(1).unwrap().to_vec::<i64>().unwrap(), expect);
    let expect0: Vec<i64> = (0..cols)
        .map(|c| {
            let col: Vec<f64> = (0..rows).map(|r| x[r * cols + c]).collect();
            let m = col.iter().cloned().fold(f64::INFINITY, f64::min);
            col.iter().position(|&v| v == m).unwrap() as i64
        })
        .collect();
    assert_eq!(t.argmin(0).unwrap().to_vec::<i64>().unwrap(), expect0);
}

#[test]
fn elementwise_ops_on_large_tensors() {
    let n = 50_000;
    let (a, b) = (smooth_values(n), smooth_values(n + 7)[7..].to_vec());
    let (ta, tb) = (t64(a.clone(), &[n]), t64(b.clone(), &[n]));
    let exp: Vec<f64> = a.iter().map(|v| v.exp()).collect();
    assert_eq!(vals(&ta.exp().unwrap()), exp);
    let prod: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_eq!(vals(&ta.mul(&tb).unwrap()), prod);
    let relu: Vec<f64> = a.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(vals(&ta.relu().unwrap()), relu);
    let scalar = t64(vec![0.5], &[1]);
    let shifted: Vec<f64> = a.iter().map(|v| v - 0.5).collect();
    assert_eq!(vals(&ta.sub(&scalar).unwrap()), shifted);
    let as_f32 = ta.cast(DType::F32).unwrap().to_vec::<f32>().unwrap();
    assert!(as_f32.iter().zip(&a).all(|(&x, &y)| x == y as f32));
}

#[test]
fn broadcasting_large_tensors() {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[300, 200], &[200]),         // a bias row
        (&[300, 200], &[300, 1]),      // a column
        (&[40, 30, 50], &[40, 1, 50]), // a middle axis
        (&[300, 1], &[1, 200]),        // both stretch: an outer product
        (&[2, 1, 100, 200], &[3, 1, 1]),
        (&[1], &[250, 200]),
    ];
    for (ls, rs) in cases {
        let (a, b) = (smooth_values(count(ls)), int_values(count(rs)));
        let got = t64(a.clone(), ls).add(&t64(b.clone(), rs)).unwrap();
        let (shape, expect) = reference::broadcast_binary(&a, ls, &b, rs, |x, y| x + y);
        assert_eq!(got.dims(), &shape[..]);
        assert_eq!(vals(&got), expect, "{ls:?} + {rs:?}");
    }
}

#[test]
fn layout_ops_on_large_tensors() {
    let shape = [60, 70, 10];
    let x = int_values(count(&shape));
    let t = t64(x.clone(), &shape);
    for perm in [[2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]] {
        assert_eq!(vals(&t.permute(&perm).unwrap()), reference::permute(&x, &shape, &perm), "{perm:?}");
    }
    let b = t64(int_values(700), &[70, 10]).broadcast_to(shape).unwrap();
    let expect: Vec<f64> = (0..60).flat_map(|_| int_values(700)).collect();
    assert_eq!(vals(&b), expect);
    let n = t.narrow(1, 5, 60).unwrap();
    let expect: Vec<f64> = (0..60)
        .flat_map(|i| (5..65).flat_map(move |j| (0..10).map(move |k| (i, j, k))))
        .map(|(i, j, k)| x[(i * 70 + j) * 10 + k])
        .collect();
    assert_eq!(vals(&n), expect);
    let parts = [t.narrow(1, 0, 30).unwrap(), t.narrow(1, 30, 40).unwrap()];
    assert_eq!(vals(&Tensor::concat(&[&parts[0], &parts[1]], 1).unwrap()), x);
}

#[test]
fn log_softmax_of_large_tensors() {
    let (rows, cols) = (500, 100);
    let x: Vec<f64> = smooth_values(rows * cols).iter().map(|v| v * 30.0).collect();
    let got = vals(&t64(x.clone(), &[rows, cols]).log_softmax(-1).unwrap());
    assert_close(&got, &reference::log_softmax_rows(&x, cols), 1e-12);
    // Over the first axis: transposed, reduced, transposed back.
    let got0 = vals(&t64(x.clone(), &[rows, cols]).log_softmax(0).unwrap());
    let xt = reference::permute(&x, &[rows, cols], &[1, 0]);
    let expect0 = reference::permute(&reference::log_softmax_rows(&xt, rows), &[cols, rows], &[1, 0]);
    assert_close(&got0, &expect0, 1e-12);
}

#[test]
fn matmul_of_large_operands() {
    // 64^3 multiply-adds per product: each product runs multi-threaded; and a batch of
    // small products runs one per thread.
    for (batch, m, k, n, shared) in [(8, 64, 64, 64, true), (3, 64, 64, 64, false), (40, 16, 16, 16, false)] {
        let a = smooth_values(batch * m * k);
        let b = int_values(if shared { k * n } else { batch * k * n }).iter().map(|v| v / 500.0).collect::<Vec<_>>();
        let bt = if shared { t64(b.clone(), &[k, n]) } else { t64(b.clone(), &[batch, k, n]) };
        let got = t64(a.clone(), &[batch, m, k]).matmul(&bt).unwrap();
        assert_close(&vals(&got), &reference::matmul(&a, &b, batch, m, k, n, shared), 1e-12);
    }
}

#[test]
fn gradients_of_large_tensors() {
    // Column sums (a bias gradient) and broadcasting back, through the parallel kernels.
    let (rows, cols) = (2_000, 40);
    let x = t64(smooth_values(rows * cols), &[rows, cols]);
    let bias = t64(smooth_values(cols), &[cols]);
    let tape = tapegrad_tensor::GradientTape::new();
    tape.watch(&x);
    tape.watch(&bias);
    let y = tape.record(|| x.add(&bias)?.square()?.sum_all()).unwrap();
    let g = tape.gradient(&y, &[&x, &bias]).unwrap();
    let (xv, bv) = (vals(&x), vals(&bias));
    let gx: Vec<f64> = xv.iter().enumerate().map(|(i, v)| 2.0 * (v + bv[i % cols])).collect();
    assert_close(&vals(g[0].as_ref().unwrap()), &gx, 1e-12);
    let gb: Vec<f64> = (0..cols).map(|c| (0..rows).map(|r| gx[r * cols + c]).sum()).collect();
    assert_close(&vals(g[1].as_ref().unwrap()), &gb, 1e-10);
}
