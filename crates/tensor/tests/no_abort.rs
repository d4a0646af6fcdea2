//! Ops whose output a user's shapes make impossibly large return `Error::OutOfMemory`
//! naming the op, the shape and the bytes; they never abort the process (issue 11 §1).
//!
//! The cases run in this process on purpose: an abort (`memory allocation of N bytes
//! failed`) kills the test binary, which `cargo test` reports as a failure, so a
//! regression cannot pass unseen.

use tapegrad_tensor::{Conv2dParams, DType, Device, Error, Padding, Result, Tensor};

const CPU: Device = Device::Cpu;

/// Asserts an out-of-memory error from `op` whose message names `shape` and the bytes.
fn assert_oom<T: std::fmt::Debug>(result: Result<T>, op: &str, shape: &str) {
    let err = result.expect_err("an impossible output must be an error");
    let msg = err.to_string();
    match &err {
        Error::OutOfMemory { op: got, requested, .. } => {
            assert_eq!(*got, op, "{msg}");
            assert!(msg.contains(&format!("{requested} bytes")), "bytes missing: {msg}");
            assert!(*requested > 1 << 30, "{msg}");
        }
        other => panic!("expected OutOfMemory from {op}, got: {other}"),
    }
    assert!(msg.contains(shape), "shape {shape} missing: {msg}");
}

fn ones(dims: &[usize]) -> Tensor {
    Tensor::ones(dims, DType::F32, &CPU).unwrap()
}

#[test]
fn broadcast_add_of_a_column_and_a_row() {
    let (a, b) = (ones(&[1_000_000, 1]), ones(&[1, 1_000_000]));
    assert_oom(a.add(&b), "add", "[1000000, 1000000]");
    assert_oom(a.mul(&b), "mul", "[1000000, 1000000]");
    assert_oom(a.gt(&b), "gt", "[1000000, 1000000]");
}

#[test]
fn matmul_outer_product() {
    let (a, b) = (ones(&[1_000_000, 1]), ones(&[1, 1_000_000]));
    assert_oom(a.matmul(&b), "matmul", "[1000000, 1000000]");
    // Transposed operands and a shared batch operand take other paths to the kernel.
    let (at, bt) = (ones(&[1, 1_000_000]), ones(&[1_000_000, 1]));
    assert_oom(at.matmul_transposed(&bt, true, true), "matmul", "[1000000, 1000000]");
    assert_oom(ones(&[2, 1_000_000, 1]).matmul(&b), "matmul", "[2, 1000000, 1000000]");
}

#[test]
fn conv2d_with_huge_explicit_padding() {
    let x = ones(&[1, 4, 4, 2]);
    let k = ones(&[3, 3, 3, 2]);
    let p = 1usize << 40;
    let params =
        Conv2dParams { padding: Padding::Explicit { top: p, bottom: p, left: p, right: p }, ..Default::default() };
    let err = x.conv2d(&k, None, &params).expect_err("padding 2^40 cannot be allocated");
    assert!(matches!(err, Error::OutOfMemory { op: "conv2d", .. }), "{err}");
    // Representable but refused by the allocator: a 2^20 border is terabytes of output.
    let p = 1usize << 20;
    let params =
        Conv2dParams { padding: Padding::Explicit { top: p, bottom: p, left: p, right: p }, ..Default::default() };
    assert_oom(x.conv2d(&k, None, &params), "conv2d", "[1, 2097154, 2097154, 3]");
}

#[test]
fn layout_ops_that_grow_their_input() {
    let col = ones(&[1_000_000, 1]);
    assert_oom(col.broadcast_to([1_000_000, 1_000_000]), "strided_copy", "[1000000, 1000000]");
    let wide = ones(&[1, 1_000_000]).broadcast_to([1_000_000, 1_000_000]);
    assert_oom(wide, "strided_copy", "[1000000, 1000000]");
}

#[test]
fn constructors_and_casts() {
    assert_oom(Tensor::zeros([1_000_000, 1_000_000], DType::F32, &CPU), "full", "[1000000, 1000000]");
    assert_oom(Tensor::full(2.5, [1 << 20, 1 << 24], DType::F64, &CPU), "full", "[1048576, 16777216]");
    assert_oom(Tensor::arange(0.0, 1e15, 1.0, DType::F32, &CPU), "arange", "[1000000000000000]");
    let mut rng = rand::rng();
    let huge = [1usize << 22, 1 << 22];
    assert_oom(Tensor::rand_normal(huge, 0.0, 1.0, DType::F32, &CPU, &mut rng), "rand_normal", "[4194304, 4194304]");
    assert_oom(Tensor::rand_uniform(huge, 0.0, 1.0, DType::F32, &CPU, &mut rng), "rand_uniform", "[4194304, 4194304]");
    // Overflowing element counts are the same error, not a panic.
    let overflow = Tensor::zeros([usize::MAX, 2], DType::F32, &CPU).unwrap_err();
    assert!(matches!(overflow, Error::OutOfMemory { op: "full", .. }), "{overflow}");
}

#[test]
fn one_hot_with_a_huge_depth() {
    let labels = Tensor::from_vec(vec![0i64; 1 << 20], [1 << 20], &CPU).unwrap();
    let err = Tensor::one_hot(&labels, 1 << 30, DType::F32).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert!(err.to_string().contains("[1048576, 1073741824]"), "{err}");
}

#[test]
fn recorded_ops_fail_cleanly_and_the_tape_stays_usable() {
    let tape = tapegrad_tensor::GradientTape::new();
    let (a, b) = (ones(&[1_000_000, 1]), ones(&[1, 1_000_000]));
    tape.watch(&a);
    assert_oom(tape.record(|| a.add(&b)), "add", "[1000000, 1000000]");
    let y = tape.record(|| a.square()?.sum_all()).unwrap();
    let grads = tape.gradient(&y, &[&a]).unwrap();
    assert_eq!(grads[0].as_ref().unwrap().dims(), &[1_000_000, 1]);
}
