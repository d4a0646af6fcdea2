//! Forward values of every op on small inputs whose results can be checked by hand, and
//! of the constructors (zeros/ones/full, arange, seeded random tensors).

mod common;

use common::*;
use rand::SeedableRng;
use tapegrad_tensor::{DType, Device, Tensor, Variable};

const E: f64 = std::f64::consts::E;
const LN2: f64 = std::f64::consts::LN_2;

#[test]
fn binary_ops_broadcast_like_numpy() {
    let a = t64(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let row = t64(vec![10.0, 20.0], &[2]);
    assert_eq!(vals(&a.add(&row).unwrap()), [11.0, 22.0, 13.0, 24.0]);
    assert_eq!(vals(&a.sub(&row).unwrap()), [-9.0, -18.0, -7.0, -16.0]);
    assert_eq!(vals(&row.sub(&a).unwrap()), [9.0, 18.0, 7.0, 16.0]);
    // A column times a row is the outer product.
    let col = t64(vec![1.0, 2.0], &[2, 1]);
    let r3 = t64(vec![1.0, 2.0, 3.0], &[1, 3]);
    let outer = col.mul(&r3).unwrap();
    assert_eq!(outer.dims(), [2, 3]);
    assert_eq!(vals(&outer), [1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);
    assert_eq!(vals(&r3.div(&col).unwrap()), [1.0, 2.0, 3.0, 0.5, 1.0, 1.5]);
    // A rank-0 operand on either side.
    let two = Tensor::scalar(2.0f64, &Device::Cpu).unwrap();
    assert_eq!(vals(&a.mul(&two).unwrap()), [2.0, 4.0, 6.0, 8.0]);
    assert_eq!(vals(&two.div(&a).unwrap()), [2.0, 1.0, 2.0 / 3.0, 0.5]);
    assert_eq!(two.add(&two).unwrap().dims(), [] as [usize; 0]);
    // [2, 1, 3] with [4, 1]: the middle and last axes both stretch.
    let x = t64((0..6).map(f64::from).collect(), &[2, 1, 3]);
    let y = t64(vec![0.0, 10.0, 20.0, 30.0], &[4, 1]);
    let z = x.add(&y).unwrap();
    assert_eq!(z.dims(), [2, 4, 3]);
    let expect: Vec<f64> = (0..2)
        .flat_map(|i| (0..4).flat_map(move |j| (0..3).map(move |k| (i * 3 + k) as f64 + 10.0 * j as f64)))
        .collect();
    assert_eq!(vals(&z), expect);
}

#[test]
fn maximum_minimum_and_comparisons() {
    let a = t64(vec![1.0, 5.0, 3.0], &[3]);
    let b = t64(vec![3.0], &[1]);
    assert_eq!(vals(&a.maximum(&b).unwrap()), [3.0, 5.0, 3.0]);
    assert_eq!(vals(&a.minimum(&b).unwrap()), [1.0, 3.0, 3.0]);
    assert_eq!(vals(&a.equal(&b).unwrap()), [0.0, 0.0, 1.0]);
    assert_eq!(vals(&a.not_equal(&b).unwrap()), [1.0, 1.0, 0.0]);
    assert_eq!(vals(&a.lt(&b).unwrap()), [1.0, 0.0, 0.0]);
    assert_eq!(vals(&a.le(&b).unwrap()), [1.0, 0.0, 1.0]);
    assert_eq!(vals(&a.gt(&b).unwrap()), [0.0, 1.0, 0.0]);
    assert_eq!(vals(&a.ge(&b).unwrap()), [0.0, 1.0, 1.0]);
    assert_eq!(a.equal(&b).unwrap().dtype(), DType::F64);
    // Every comparison with a scalar, as with the one-element tensor.
    assert_eq!(vals(&a.lt_scalar(3.0).unwrap()), [1.0, 0.0, 0.0]);
    assert_eq!(vals(&a.le_scalar(3.0).unwrap()), [1.0, 0.0, 1.0]);
    assert_eq!(vals(&a.gt_scalar(3.0).unwrap()), [0.0, 1.0, 0.0]);
    assert_eq!(vals(&a.ge_scalar(3.0).unwrap()), [0.0, 1.0, 1.0]);
    assert_eq!(vals(&a.equal_scalar(3.0).unwrap()), [0.0, 0.0, 1.0]);
    // Integer labels compare as integers.
    let l = ti64(vec![2, 0, 2], &[3]);
    let e = l.equal(&ti64(vec![2], &[1])).unwrap();
    assert_eq!(e.to_vec::<i64>().unwrap(), [1, 0, 1]);
    // NaN propagates through maximum/minimum, from either side.
    let n = t64(vec![f64::NAN, 1.0], &[2]);
    let m = t64(vec![0.0, f64::NAN], &[2]);
    assert!(vals(&n.maximum(&m).unwrap()).iter().all(|v| v.is_nan()));
    assert!(vals(&n.minimum(&m).unwrap()).iter().all(|v| v.is_nan()));
}

#[test]
fn unary_ops() {
    let x = t64(vec![-2.0, 0.0, 0.5, 4.0], &[2, 2]);
    assert_eq!(vals(&x.neg().unwrap()), [2.0, -0.0, -0.5, -4.0]);
    assert_eq!(vals(&x.square().unwrap()), [4.0, 0.0, 0.25, 16.0]);
    assert_eq!(vals(&x.relu().unwrap()), [0.0, 0.0, 0.5, 4.0]);
    assert_eq!(vals(&x.abs().unwrap()), [2.0, 0.0, 0.5, 4.0]);
    assert_eq!(vals(&x.sign().unwrap()), [-1.0, 0.0, 1.0, 1.0]);
    assert_eq!(vals(&x.clamp(-1.0, 1.0).unwrap()), [-1.0, 0.0, 0.5, 1.0]);
    assert_eq!(vals(&x.affine(2.0, 1.0).unwrap()), [-3.0, 1.0, 2.0, 9.0]);
    assert_eq!(vals(&x.add_scalar(-0.5).unwrap()), [-2.5, -0.5, 0.0, 3.5]);
    assert_eq!(vals(&x.mul_scalar(3.0).unwrap()), [-6.0, 0.0, 1.5, 12.0]);
    assert_close(&vals(&x.exp().unwrap()), &[(-2.0f64).exp(), 1.0, 0.5f64.exp(), 4.0f64.exp()], 1e-15);
    assert_close(&vals(&x.tanh().unwrap()), &[(-2.0f64).tanh(), 0.0, 0.5f64.tanh(), 4.0f64.tanh()], 1e-15);

    let p = t64(vec![1.0, E, 4.0, 0.25], &[4]);
    assert_close(&vals(&p.log().unwrap()), &[0.0, 1.0, 4.0f64.ln(), 0.25f64.ln()], 1e-15);
    assert_eq!(vals(&p.sqrt().unwrap())[2..], [2.0, 0.5]);
    assert_eq!(vals(&p.recip().unwrap())[2..], [0.25, 4.0]);
    assert_close(&vals(&p.powf(3.0).unwrap())[2..], &[64.0, 1.0 / 64.0], 1e-15);
    assert_close(&vals(&p.powf(-0.5).unwrap())[2..], &[0.5, 2.0], 1e-15);
    // log(0) = -inf, sqrt of a negative value is NaN: IEEE results, not errors.
    let z = t64(vec![0.0, -1.0], &[2]);
    assert_eq!(vals(&z.log().unwrap())[0], f64::NEG_INFINITY);
    assert!(vals(&z.sqrt().unwrap())[1].is_nan());
}

#[test]
fn sigmoid_is_exact_at_zero_and_saturates_without_nan() {
    for dtype in [DType::F32, DType::F64] {
        let x = t64(vec![0.0, 1000.0, -1000.0, 2.0], &[4]).cast(dtype).unwrap();
        let y = vals(&x.sigmoid().unwrap());
        assert_eq!(&y[..3], &[0.5, 1.0, 0.0], "{dtype}");
        assert_close(&y[3..], &[1.0 / (1.0 + (-2.0f64).exp())], 1e-7);
    }
}

#[test]
fn integer_elementwise_ops() {
    let x = ti64(vec![-3, 0, 7], &[3]);
    assert_eq!(x.neg().unwrap().to_vec::<i64>().unwrap(), [3, 0, -7]);
    assert_eq!(x.abs().unwrap().to_vec::<i64>().unwrap(), [3, 0, 7]);
    assert_eq!(x.sign().unwrap().to_vec::<i64>().unwrap(), [-1, 0, 1]);
    assert_eq!(x.clamp(-1.5, 5.0).unwrap().to_vec::<i64>().unwrap(), [-1, 0, 5]);
    let y = ti64(vec![2, 5, 0], &[3]);
    assert_eq!(x.add(&y).unwrap().to_vec::<i64>().unwrap(), [-1, 5, 7]);
    assert_eq!(x.mul(&y).unwrap().to_vec::<i64>().unwrap(), [-6, 0, 0]);
    // Integer division truncates toward zero; division by zero gives 0, not a panic.
    assert_eq!(x.div(&y).unwrap().to_vec::<i64>().unwrap(), [-1, 0, 0]);
}

#[test]
fn reductions() {
    let x = t64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(vals(&x.sum(&[0], false).unwrap()), [5.0, 7.0, 9.0]);
    assert_eq!(vals(&x.sum(&[1], false).unwrap()), [6.0, 15.0]);
    assert_eq!(x.sum(&[-1], true).unwrap().dims(), [2, 1]);
    assert_eq!(x.sum(&[0], true).unwrap().dims(), [1, 3]);
    let all = x.sum(&[0, 1], false).unwrap();
    assert_eq!((all.dims().len(), vals(&all)), (0, vec![21.0]));
    assert_eq!(x.sum(&[1, 0], true).unwrap().dims(), [1, 1]);
    assert_eq!(vals(&x.sum(&[], false).unwrap()), vals(&x));
    assert_eq!(vals(&x.mean(&[0], false).unwrap()), [2.5, 3.5, 4.5]);
    assert_eq!(vals(&x.mean(&[-1], false).unwrap()), [2.0, 5.0]);
    assert_eq!(vals(&x.max(&[0], false).unwrap()), [4.0, 5.0, 6.0]);
    assert_eq!(vals(&x.min(&[1], false).unwrap()), [1.0, 4.0]);
    assert_eq!(vals(&x.sum_all().unwrap()), [21.0]);
    assert_eq!(vals(&x.mean_all().unwrap()), [3.5]);
    // Middle axis of a rank-3 tensor, and two non-adjacent axes.
    let y = t64((0..24).map(f64::from).collect(), &[2, 3, 4]);
    assert_eq!(vals(&y.sum(&[1], false).unwrap()), [12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
    assert_eq!(vals(&y.sum(&[0, 2], false).unwrap()), [60.0, 92.0, 124.0]);
    assert_eq!(vals(&y.max(&[0, 2], true).unwrap()), [15.0, 19.0, 23.0]);
    assert_eq!(vals(&y.min(&[2, 0], false).unwrap()), [0.0, 4.0, 8.0]);
    // Integers sum and compare as integers.
    let i = ti64(vec![3, -1, 4, 1], &[2, 2]);
    assert_eq!(i.sum(&[1], false).unwrap().to_vec::<i64>().unwrap(), [2, 5]);
    assert_eq!(i.max(&[0], false).unwrap().to_vec::<i64>().unwrap(), [4, 1]);
    // A rank-0 tensor reduces over no axes.
    let s = Tensor::scalar(2.5f64, &Device::Cpu).unwrap();
    assert_eq!(vals(&s.sum_all().unwrap()), [2.5]);
    assert_eq!(vals(&s.mean_all().unwrap()), [2.5]);
}

#[test]
fn argmax_and_argmin_take_the_first_tie() {
    let x = t64(vec![1.0, 3.0, 3.0, 7.0, 7.0, 0.0], &[2, 3]);
    let am = x.argmax(-1).unwrap();
    assert_eq!(am.dtype(), DType::I64);
    assert_eq!(am.to_vec::<i64>().unwrap(), [1, 0]);
    assert_eq!(x.argmin(1).unwrap().to_vec::<i64>().unwrap(), [0, 2]);
    assert_eq!(x.argmax(0).unwrap().to_vec::<i64>().unwrap(), [1, 1, 0]);
    let ties = t64(vec![2.0, 2.0, 2.0], &[3]);
    assert_eq!(ties.argmax(0).unwrap().to_vec::<i64>().unwrap(), [0]);
    assert_eq!(ties.argmin(0).unwrap().to_vec::<i64>().unwrap(), [0]);
    assert_eq!(ties.argmax(0).unwrap().dims(), [] as [usize; 0]);
}

#[test]
fn matmul_values() {
    let a = t64(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = t64(vec![5.0, 6.0, 7.0, 8.0], &[2, 2]);
    assert_eq!(vals(&a.matmul(&b).unwrap()), [19.0, 22.0, 43.0, 50.0]);
    // a^T = [[1,3],[2,4]], b^T = [[5,7],[6,8]].
    assert_eq!(vals(&a.matmul_transposed(&b, true, false).unwrap()), [26.0, 30.0, 38.0, 44.0]);
    assert_eq!(vals(&a.matmul_transposed(&b, false, true).unwrap()), [17.0, 23.0, 39.0, 53.0]);
    assert_eq!(vals(&a.matmul_transposed(&b, true, true).unwrap()), [23.0, 31.0, 34.0, 46.0]);
    // Non-square: [1, 3] @ [3, 2].
    let r = t64(vec![1.0, 2.0, 3.0], &[1, 3]);
    let m = t64(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    assert_eq!(vals(&r.matmul(&m).unwrap()), [4.0, 5.0]);
    // Batched, and each 2-D operand shared across the other's batch.
    let a2 = Tensor::stack(&[&a, &a.mul_scalar(2.0).unwrap()], 0).unwrap();
    let ab = a2.matmul(&b).unwrap();
    assert_eq!(ab.dims(), [2, 2, 2]);
    assert_eq!(vals(&ab), [19.0, 22.0, 43.0, 50.0, 38.0, 44.0, 86.0, 100.0]);
    let b2 = Tensor::stack(&[&b, &b], 0).unwrap();
    assert_eq!(vals(&a2.matmul(&b2).unwrap()), vals(&ab));
    assert_eq!(vals(&a.matmul(&b2).unwrap()), [19.0, 22.0, 43.0, 50.0, 19.0, 22.0, 43.0, 50.0]);
    // f32 gives the same small integers.
    let (a32, b32) = (a.cast(DType::F32).unwrap(), b.cast(DType::F32).unwrap());
    assert_eq!(a32.matmul(&b32).unwrap().to_vec::<f32>().unwrap(), [19.0, 22.0, 43.0, 50.0]);
}

#[test]
fn layout_ops() {
    let x = t64((1..=6).map(f64::from).collect(), &[2, 3]);
    let r = x.reshape([3, 2]).unwrap();
    assert_eq!((r.dims(), vals(&r)), (&[3usize, 2][..], vals(&x)));
    assert_eq!(vals(&x.transpose(0, 1).unwrap()), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(vals(&x.permute(&[1, 0]).unwrap()), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let y = t64((0..24).map(f64::from).collect(), &[2, 3, 4]);
    let p = y.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.dims(), [4, 2, 3]);
    // p[k, i, j] = y[i, j, k] = 12 i + 4 j + k.
    let expect: Vec<f64> =
        (0..4).flat_map(|k| (0..2).flat_map(move |i| (0..3).map(move |j| (12 * i + 4 * j + k) as f64))).collect();
    assert_eq!(vals(&p), expect);
    let b = t64(vec![1.0, 2.0, 3.0], &[3]).broadcast_to([2, 3]).unwrap();
    assert_eq!(vals(&b), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let c = t64(vec![1.0, 2.0], &[2, 1]).broadcast_to([2, 2, 3]).unwrap();
    assert_eq!(vals(&c), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    assert_eq!(vals(&x.narrow(1, 1, 2).unwrap()), [2.0, 3.0, 5.0, 6.0]);
    assert_eq!(vals(&x.narrow(0, 1, 1).unwrap()), [4.0, 5.0, 6.0]);
    assert_eq!(x.narrow(-1, 3, 0).unwrap().dims(), [2, 0]);
    let z = t64(vec![7.0, 8.0], &[2, 1]);
    assert_eq!(vals(&Tensor::concat(&[&x, &z], 1).unwrap()), [1.0, 2.0, 3.0, 7.0, 4.0, 5.0, 6.0, 8.0]);
    let w = t64(vec![0.0, 0.0, 0.0], &[1, 3]);
    let cat0 = Tensor::concat(&[&w, &x, &w], 0).unwrap();
    assert_eq!(cat0.dims(), [4, 3]);
    assert_eq!(vals(&cat0), [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0]);
    let (u, v) = (t64(vec![1.0, 2.0], &[2]), t64(vec![3.0, 4.0], &[2]));
    let s0 = Tensor::stack(&[&u, &v], 0).unwrap();
    assert_eq!((s0.dims(), vals(&s0)), (&[2usize, 2][..], vec![1.0, 2.0, 3.0, 4.0]));
    let s1 = Tensor::stack(&[&u, &v], -1).unwrap();
    assert_eq!((s1.dims(), vals(&s1)), (&[2usize, 2][..], vec![1.0, 3.0, 2.0, 4.0]));
    assert_eq!(x.unsqueeze(0).unwrap().dims(), [1, 2, 3]);
    assert_eq!(x.unsqueeze(-1).unwrap().dims(), [2, 3, 1]);
    assert_eq!(x.unsqueeze(1).unwrap().dims(), [2, 1, 3]);
    assert_eq!(x.unsqueeze(1).unwrap().squeeze(1).unwrap().dims(), [2, 3]);
    assert_eq!(y.flatten_from_1().unwrap().dims(), [2, 12]);
    // Reshape shares the buffer; permute copies.
    assert!(std::ptr::eq(x.storage(), r.storage()));
}

#[test]
fn softmax_and_log_softmax() {
    let x = t64(vec![0.0, LN2, 0.0, 0.0], &[2, 2]);
    assert_close(&vals(&x.softmax(-1).unwrap()), &[1.0 / 3.0, 2.0 / 3.0, 0.5, 0.5], 1e-15);
    assert_close(&vals(&x.log_softmax(1).unwrap()), &[-(3.0f64.ln()), (2.0f64 / 3.0).ln(), -LN2, -LN2], 1e-15);
    // Over the first axis: columns [0, 0] and [ln 2, 0].
    assert_close(&vals(&x.softmax(0).unwrap()), &[0.5, 2.0 / 3.0, 0.5, 1.0 / 3.0], 1e-15);
    // Large logits stay finite in both dtypes.
    for dtype in [DType::F32, DType::F64] {
        let big = t64(vec![1000.0, 1000.0, 1000.0, 1e4, 0.0, -1e4], &[2, 3]).cast(dtype).unwrap();
        let ls = vals(&big.log_softmax(-1).unwrap());
        assert_close(&ls, &[-(3.0f64.ln()), -(3.0f64.ln()), -(3.0f64.ln()), 0.0, -1e4, -2e4], 1e-6);
        let sm = vals(&big.softmax(-1).unwrap());
        assert_close(&sm, &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 1.0, 0.0, 0.0], 1e-6);
    }
}

#[test]
fn softmax_cross_entropy_is_finite_and_right_for_large_logits() {
    for dtype in [DType::F32, DType::F64] {
        let logits = t64(vec![1e4, -1e4, 1e4, -1e4, 0.0, 0.0], &[3, 2]).cast(dtype).unwrap();
        let labels = t64(vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5], &[3, 2]).cast(dtype).unwrap();
        let loss = Tensor::softmax_cross_entropy(&logits, &labels).unwrap();
        assert_eq!(loss.dims(), [3]);
        assert_close(&vals(&loss), &[0.0, 2e4, LN2], 1e-6);
        let sparse = Tensor::sparse_softmax_cross_entropy(&logits, &ti64(vec![0, 1, 1], &[3])).unwrap();
        assert_close(&vals(&sparse), &[0.0, 2e4, LN2], 1e-6);
    }
    // Uniform logits over C classes cost ln C whatever the label; a scalar label works.
    let logits = t64(vec![3.0; 4], &[4]);
    let loss = Tensor::sparse_softmax_cross_entropy(&logits, &Tensor::scalar(2i64, &Device::Cpu).unwrap()).unwrap();
    assert_close(&vals(&loss), &[4.0f64.ln()], 1e-15);
}

#[test]
fn one_hot_encodes_labels_of_any_shape() {
    let oh = Tensor::one_hot(&ti64(vec![0, 2, 1], &[3]), 3, DType::F32).unwrap();
    assert_eq!((oh.dims(), oh.dtype()), (&[3usize, 3][..], DType::F32));
    assert_eq!(oh.to_vec::<f32>().unwrap(), [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    let oh = Tensor::one_hot(&ti64(vec![1, 0], &[2, 1]), 2, DType::F64).unwrap();
    assert_eq!((oh.dims(), vals(&oh)), (&[2usize, 1, 2][..], vec![0.0, 1.0, 1.0, 0.0]));
    let oh = Tensor::one_hot(&Tensor::scalar(1i64, &Device::Cpu).unwrap(), 4, DType::I64).unwrap();
    assert_eq!((oh.dims(), oh.to_vec::<i64>().unwrap()), (&[4usize][..], vec![0, 1, 0, 0]));
}

#[test]
fn casts_convert_and_truncate() {
    let x = t64(vec![1.9, -1.9, 2.5, -0.5, 0.0], &[5]);
    assert_eq!(x.cast(DType::I64).unwrap().to_vec::<i64>().unwrap(), [1, -1, 2, 0, 0]);
    assert_eq!(x.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(), [1.9f32, -1.9, 2.5, -0.5, 0.0]);
    let i = ti64(vec![-3, 4], &[2]);
    assert_eq!(i.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(), [-3.0, 4.0]);
    assert_eq!(i.cast(DType::F64).unwrap().to_vec::<f64>().unwrap(), [-3.0, 4.0]);
    let same = x.cast(DType::F64).unwrap();
    assert_eq!(same.id(), x.id(), "a cast to the same dtype is the tensor itself");
}

#[test]
fn arange_counts_like_numpy() {
    let a = Tensor::arange(0.0, 5.0, 1.0, DType::I64, &Device::Cpu).unwrap();
    assert_eq!(a.to_vec::<i64>().unwrap(), [0, 1, 2, 3, 4]);
    let b = Tensor::arange(1.0, 2.0, 0.25, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(vals(&b), [1.0, 1.25, 1.5, 1.75]);
    let c = Tensor::arange(5.0, 0.0, -2.0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), [5.0, 3.0, 1.0]);
    let empty = Tensor::arange(3.0, 3.0, 1.0, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(empty.dims(), [0]);
    assert_eq!(Tensor::arange(3.0, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap().dims(), [0]);
}

#[test]
fn constant_constructors() {
    let z = Tensor::zeros([2, 3], DType::F32, &Device::Cpu).unwrap();
    assert_eq!((z.dims(), z.dtype(), z.to_vec::<f32>().unwrap()), (&[2usize, 3][..], DType::F32, vec![0.0; 6]));
    let o = Tensor::ones([4], DType::I64, &Device::Cpu).unwrap();
    assert_eq!(o.to_vec::<i64>().unwrap(), [1; 4]);
    let f = Tensor::full(2.5, (), DType::F64, &Device::Cpu).unwrap();
    assert_eq!((f.rank(), f.to_scalar::<f64>().unwrap()), (0, 2.5));
    assert_eq!(Tensor::full(-2.7, [2], DType::I64, &Device::Cpu).unwrap().to_vec::<i64>().unwrap(), [-2, -2]);
    let x = t64(vec![1.0, 2.0], &[1, 2]);
    assert_eq!((x.zeros_like().unwrap().dims(), vals(&x.zeros_like().unwrap())), (&[1usize, 2][..], vec![0.0; 2]));
    assert_eq!(vals(&x.ones_like().unwrap()), [1.0; 2]);
    let empty = Tensor::zeros([3, 0], DType::F64, &Device::Cpu).unwrap();
    assert_eq!((empty.elem_count(), vals(&empty)), (0, vec![]));
    let s = Tensor::from_slice(&[1i64, 2, 3], [3], &Device::Cpu).unwrap();
    assert_eq!(s.to_vec::<i64>().unwrap(), [1, 2, 3]);
}

#[test]
fn rand_uniform_is_seeded_in_range_with_the_right_moments() {
    let draw = |seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Tensor::rand_uniform([100, 200], -2.0, 3.0, DType::F64, &Device::Cpu, &mut rng).unwrap()
    };
    let (a, b, c) = (vals(&draw(1)), vals(&draw(1)), vals(&draw(2)));
    assert_eq!(a, b, "the same seed gives the same values");
    assert_ne!(a, c, "another seed gives other values");
    assert!(a.iter().all(|&v| (-2.0..3.0).contains(&v)));
    let n = a.len() as f64;
    let mean = a.iter().sum::<f64>() / n;
    let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    // Uniform on [-2, 3): mean 0.5, variance 25/12; standard errors ~0.01 and ~0.01.
    assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    assert!((var - 25.0 / 12.0).abs() < 0.06, "variance {var}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let f = Tensor::rand_uniform([1000], 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    assert_eq!(f.dtype(), DType::F32);
    assert!(f.to_vec::<f32>().unwrap().iter().all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn rand_normal_is_seeded_with_the_right_moments() {
    let draw = |seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Tensor::rand_normal([20000], 1.5, 0.5, DType::F32, &Device::Cpu, &mut rng).unwrap()
    };
    let (a, b, c) = (vals(&draw(9)), vals(&draw(9)), vals(&draw(10)));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let n = a.len() as f64;
    let mean = a.iter().sum::<f64>() / n;
    let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // Standard errors: 0.5 / sqrt(20000) = 0.0035 for the mean, ~0.0025 for the std.
    assert!((mean - 1.5).abs() < 0.02, "mean {mean}");
    assert!((std - 0.5).abs() < 0.015, "std {std}");
}

#[test]
fn reading_values_back() {
    let x = t32(vec![1.0, 2.0], &[2]);
    assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(x.to_vec_f64().unwrap(), [1.0, 2.0]);
    assert_err("to_vec with the wrong type", x.to_vec::<f64>(), &["to_vec", "f32", "f64"]);
    assert_err("to_vec with the wrong type", x.to_vec::<i64>(), &["f32", "i64"]);
    // Any one-element tensor is a scalar.
    assert_eq!(t64(vec![4.5], &[1, 1]).to_scalar::<f64>().unwrap(), 4.5);
    assert_eq!(Tensor::scalar(7i64, &Device::Cpu).unwrap().to_scalar::<i64>().unwrap(), 7);
    assert_err("to_scalar of two values", x.to_scalar::<f32>(), &["to_scalar", "[2]"]);
    assert_err("to_scalar of the wrong type", t32(vec![1.0], &[1]).to_scalar::<f64>(), &["f32", "f64"]);
    assert_eq!(x.to_device(&Device::Cpu).unwrap().id(), x.id());
    let d = x.detach();
    assert_ne!(d.id(), x.id());
    assert_eq!(d.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(format!("{x:?}"), "Tensor([2], f32, cpu)");
}

#[test]
fn variables_hold_and_replace_values() {
    let v = Variable::new("w", t32(vec![1.0, 2.0], &[2]), true);
    assert_eq!((v.name(), v.trainable()), ("w", true));
    v.assign_add(&t32(vec![0.5, 0.5], &[2])).unwrap();
    assert_eq!(v.value().to_vec::<f32>().unwrap(), [1.5, 2.5]);
    v.assign_sub(&t32(vec![1.5], &[1])).unwrap();
    assert_eq!(v.value().to_vec::<f32>().unwrap(), [0.0, 1.0]);
    v.assign(t32(vec![9.0, 8.0], &[2])).unwrap();
    assert_eq!(v.value_untracked().to_vec::<f32>().unwrap(), [9.0, 8.0]);
    let alias = v.clone();
    assert!(alias.same_as(&v));
    assert!(!Variable::new("w", t32(vec![9.0, 8.0], &[2]), true).same_as(&v));
}
