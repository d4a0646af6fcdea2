//! Check-numerics mode (issue 11 §2): off by default; once on, the first op whose output
//! holds NaN or infinity fails, naming the op, its input shapes and the name scope.
//!
//! The mode is process-wide, so the tests of this file run one at a time under a lock.

use std::sync::Mutex;
use tapegrad_tensor::{check_numerics, DType, Device, Error, GradientTape, Tensor};

static MODE: Mutex<()> = Mutex::new(());

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn off_by_default_nan_flows_silently() {
    let _lock = MODE.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var(check_numerics::ENV_VAR).is_ok() {
        return; // the environment asked for the mode: the default is not under test
    }
    check_numerics::disable();
    let y = t(vec![-1.0, 4.0], &[2]).sqrt().unwrap();
    assert!(y.to_vec::<f32>().unwrap()[0].is_nan());
}

#[test]
fn first_non_finite_op_is_named_with_inputs_and_scope() {
    let _lock = MODE.lock().unwrap_or_else(|e| e.into_inner());
    check_numerics::enable();
    let x = t(vec![1.0, 0.0, 2.0, 3.0], &[2, 2]);
    let err = {
        let _model = check_numerics::name_scope("model");
        let _layer = check_numerics::name_scope("dense_3");
        // 1/0 is the first infinity; the later ops never run.
        x.recip().and_then(|r| r.mul(&x)).unwrap_err()
    };
    check_numerics::disable();
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFinite { op: "recip", .. }), "{msg}");
    assert!(msg.contains("model/dense_3"), "{msg}");
    assert!(msg.contains("[2, 2] f32"), "{msg}");
    assert!(msg.contains("1 infinite"), "{msg}");
    assert_eq!(check_numerics::current_scope(), "", "scopes pop when their guards drop");
}

#[test]
fn binary_matmul_and_reductions_are_checked() {
    let _lock = MODE.lock().unwrap_or_else(|e| e.into_inner());
    check_numerics::enable();
    let big = t(vec![3e38, 3e38], &[1, 2]);
    let sum = big.sum_all().unwrap_err();
    assert!(matches!(sum, Error::NonFinite { op: "sum", .. }), "{sum}");
    let mm = big.matmul(&t(vec![3e38, 3e38], &[2, 1])).unwrap_err();
    assert!(matches!(mm, Error::NonFinite { op: "matmul", .. }), "{mm}");
    assert!(mm.to_string().contains("[1, 2] f32, [2, 1] f32"), "{mm}");
    let nan = t(vec![f32::NAN], &[1]);
    let add = t(vec![1.0, 2.0], &[2]).add(&nan).unwrap_err();
    assert!(matches!(add, Error::NonFinite { op: "add", .. }), "{add}");
    // Finite work passes untouched; constants (a -inf mask) are not computed values.
    assert_eq!(t(vec![1.0, 2.0], &[2]).add_scalar(1.0).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    assert!(Tensor::full(f64::NEG_INFINITY, [2], DType::F32, &Device::Cpu).is_ok());
    check_numerics::disable();
}

#[test]
fn gradients_are_checked_too() {
    let _lock = MODE.lock().unwrap_or_else(|e| e.into_inner());
    check_numerics::enable();
    // sqrt at 0 is finite forward (0) but its gradient 0.5 / sqrt(0) is infinite.
    let x = t(vec![0.0, 4.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.sqrt()?.sum_all()).unwrap();
    let err = tape.gradient(&y, &[&x]).unwrap_err();
    check_numerics::disable();
    assert!(err.to_string().contains("infinite"), "{err}");
}

#[test]
fn all_finite_finds_nan_and_inf_in_any_tensor() {
    let _lock = MODE.lock().unwrap_or_else(|e| e.into_inner());
    let good = t(vec![1.0, -2.0], &[2]);
    assert!(check_numerics::all_finite(&[&good, &good]).unwrap());
    assert!(!check_numerics::all_finite(&[&good, &t(vec![f32::NAN], &[1])]).unwrap());
    check_numerics::enable();
    assert!(!check_numerics::all_finite(&[&t(vec![f32::INFINITY, 0.0], &[2])]).unwrap());
    assert!(check_numerics::is_enabled(), "the mode is restored");
    check_numerics::disable();
    assert!(check_numerics::all_finite(&[]).unwrap());
}
