//! Bad input gives a clear error, never a panic: every case asserts that the message
//! names the op and the shapes, axes, dtypes or values involved.

mod common;

use common::*;
use rand::SeedableRng;
use tapegrad_tensor::{Conv2dParams, Conv2dTransposeParams, DType, Device, Padding, Tensor};

#[test]
fn shapes_that_do_not_broadcast() {
    let (a, b) = (t64(vec![0.0; 6], &[2, 3]), t64(vec![0.0; 4], &[4]));
    for (name, r) in [("add", a.add(&b)), ("sub", a.sub(&b)), ("mul", a.mul(&b)), ("div", a.div(&b))] {
        assert_err(name, r, &[name, "[2, 3]", "[4]", "broadcast"]);
    }
    assert_err("maximum", a.maximum(&b), &["maximum", "[2, 3]", "[4]"]);
    assert_err("equal", a.equal(&b), &["equal", "[2, 3]", "[4]"]);
    assert_err("broadcast_to", t64(vec![0.0; 3], &[3]).broadcast_to([2, 4]), &["broadcast_to", "[3]", "[2, 4]"]);
    // broadcast_to never shrinks.
    assert_err("broadcast_to smaller", a.broadcast_to([3]), &["broadcast_to", "[2, 3]", "[3]"]);
    assert_err("broadcast_to fewer dims", a.broadcast_to([1, 3]), &["[2, 3]", "[1, 3]"]);
}

#[test]
fn axes_out_of_range_or_repeated() {
    let x = t64(vec![0.0; 6], &[2, 3]);
    assert_err("sum axis 2", x.sum(&[2], false), &["sum", "axis 2", "[2, 3]"]);
    assert_err("mean axis -3", x.mean(&[-3], false), &["mean", "axis -3", "[2, 3]"]);
    assert_err("max axis 5", x.max(&[0, 5], true), &["max", "axis 5"]);
    assert_err("min repeated", x.min(&[1, -1], false), &["min", "repeated", "[1, -1]"]);
    assert_err("sum repeated", x.sum(&[0, 0], false), &["sum", "repeated"]);
    assert_err("argmax", x.argmax(2), &["argmax", "axis 2", "[2, 3]"]);
    assert_err("argmin", x.argmin(-3), &["argmin", "axis -3"]);
    assert_err("softmax", x.softmax(2), &["log_softmax", "axis 2", "[2, 3]"]);
    assert_err("log_softmax", x.log_softmax(-3), &["log_softmax", "axis -3"]);
    assert_err("transpose", x.transpose(0, 2), &["transpose", "axis 2"]);
    assert_err("unsqueeze", x.unsqueeze(4), &["unsqueeze", "axis 4", "[2, 3]"]);
    assert_err("unsqueeze negative", x.unsqueeze(-4), &["unsqueeze", "axis -4"]);
    assert_err("squeeze range", x.squeeze(2), &["squeeze", "axis 2"]);
    assert_err("squeeze size", x.squeeze(1), &["squeeze", "[2, 3]", "size 3"]);
    assert_err("narrow axis", x.narrow(2, 0, 1), &["narrow", "axis 2"]);
    assert_err("concat axis", Tensor::concat(&[&x, &x], 2), &["concat", "axis 2"]);
    assert_err("stack axis", Tensor::stack(&[&x, &x], 4), &["axis 4"]);
    // A scalar has no axes.
    let s = Tensor::scalar(1.0f64, &Device::Cpu).unwrap();
    assert_err("scalar argmax", s.argmax(0), &["argmax", "axis 0", "rank 0"]);
    assert_err("scalar softmax", s.softmax(-1), &["log_softmax", "axis -1"]);
    assert_err("scalar flatten", s.flatten_from_1(), &["flatten", "scalar"]);
}

#[test]
fn mixed_dtypes() {
    let (f, d) = (t32(vec![1.0; 4], &[2, 2]), t64(vec![1.0; 4], &[2, 2]));
    let i = ti64(vec![1; 4], &[2, 2]);
    assert_err("add", f.add(&d), &["add", "f32", "f64"]);
    assert_err("mul", d.mul(&i), &["mul", "f64", "i64"]);
    assert_err("matmul", f.matmul(&d), &["matmul", "f32", "f64"]);
    assert_err("concat", Tensor::concat(&[&f, &d], 0), &["concat", "f32", "f64"]);
    assert_err("stack", Tensor::stack(&[&d, &i], 0), &["f64", "i64"]);
    assert_err("softmax_cross_entropy", Tensor::softmax_cross_entropy(&f, &d), &["f64", "f32"]);
    assert_err("softmax_cross_entropy i64 labels", Tensor::softmax_cross_entropy(&d, &i), &["i64", "f64"]);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_unavailable() {
    let gpu = Device::Cuda(0);
    let hint = ["cuda:0", "--features cuda"];
    assert_err("from_vec", Tensor::from_vec(vec![1.0f32], [1], &gpu), &hint);
    assert_err("zeros", Tensor::zeros([2], DType::F32, &gpu), &hint);
    assert_err("full", Tensor::full(1.0, [2], DType::F64, &gpu), &hint);
    assert_err("arange", Tensor::arange(0.0, 3.0, 1.0, DType::I64, &gpu), &hint);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert_err("rand_normal", Tensor::rand_normal([2], 0.0, 1.0, DType::F32, &gpu, &mut rng), &hint);
    assert_err("to_device", t32(vec![1.0], &[1]).to_device(&Device::Cuda(1)), &["cuda:1", "--features cuda"]);
}

#[test]
fn buffer_lengths_that_do_not_match_the_shape() {
    assert_err(
        "from_vec",
        Tensor::from_vec(vec![1.0f32; 5], [2, 3], &Device::Cpu),
        &["from_vec", "5 elements", "[2, 3]", "holds 6"],
    );
    assert_err("from_vec scalar", Tensor::from_vec(Vec::<f64>::new(), (), &Device::Cpu), &["0 elements", "[]"]);
    assert_err("from_slice", Tensor::from_slice(&[1i64, 2], [3], &Device::Cpu), &["2 elements", "[3]"]);
}

#[test]
fn shapes_too_large_to_allocate_are_errors_not_panics() {
    // Allocatable in principle (under isize::MAX bytes) but far beyond any machine: an
    // error naming the shape, not an aborted process.
    let petabyte = [1usize << 24, 1 << 24];
    assert_err(
        "zeros 1 PB",
        Tensor::zeros(petabyte, DType::F32, &Device::Cpu),
        &["full", "16777216", "cannot be allocated"],
    );
    assert_err(
        "rand_normal 1 PB",
        Tensor::rand_normal(petabyte, 0.0, 1.0, DType::F32, &Device::Cpu, &mut rand::rngs::StdRng::seed_from_u64(0)),
        &["rand_normal", "cannot be allocated"],
    );
    let huge = [usize::MAX, 2];
    assert_err("from_vec", Tensor::from_vec(Vec::<f32>::new(), huge, &Device::Cpu), &["from_vec", "too many"]);
    assert_err("zeros", Tensor::zeros(huge, DType::F32, &Device::Cpu), &["full", "too many"]);
    assert_err("ones", Tensor::ones([1 << 62, 4], DType::F64, &Device::Cpu), &["too many"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert_err(
        "rand_uniform",
        Tensor::rand_uniform(huge, 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng),
        &["rand_uniform", "too many"],
    );
    assert_err("arange", Tensor::arange(0.0, 1e300, 1.0, DType::F32, &Device::Cpu), &["arange", "too many"]);
    assert_err("one_hot", Tensor::one_hot(&ti64(vec![], &[0]), 1 << 62, DType::F32), &["too many"]);
    let x = t64(vec![1.0, 2.0], &[2]);
    assert_err("broadcast_to", x.broadcast_to([1 << 62, 2]), &["broadcast_to", "too many"]);
    assert_err("reshape", x.reshape([usize::MAX, 2]), &["reshape", "[2]"]);
    // Empty operands whose product would be enormous.
    let (a, b) = (t64(vec![], &[1 << 40, 0]), t64(vec![], &[0, 1 << 40]));
    assert_err("matmul", a.matmul(&b), &["matmul", "too many"]);
    // A zero anywhere makes the shape empty, however large the other dimensions.
    assert_eq!(Tensor::zeros([usize::MAX, 2, 0], DType::F32, &Device::Cpu).unwrap().elem_count(), 0);
}

#[test]
fn matmul_shapes_that_do_not_fit() {
    let (a, b) = (t64(vec![0.0; 6], &[2, 3]), t64(vec![0.0; 20], &[4, 5]));
    assert_err("inner", a.matmul(&b), &["matmul", "[2, 3]", "[4, 5]"]);
    assert_err("transposed", a.matmul_transposed(&a, false, false), &["[2, 3]", "[2, 3]"]);
    assert_err("rhs transposed", a.matmul_transposed(&b, false, true), &["[4, 5] (transposed)"]);
    assert_err("rank 1", t64(vec![0.0; 3], &[3]).matmul(&a), &["matmul", "[3]", "[2, 3]"]);
    let (x, y) = (t64(vec![0.0; 12], &[2, 2, 3]), t64(vec![0.0; 36], &[3, 3, 4]));
    assert_err("batch", x.matmul(&y), &["matmul", "[2, 2, 3]", "[3, 3, 4]"]);
    assert_err("i64", ti64(vec![1; 4], &[2, 2]).matmul(&ti64(vec![1; 4], &[2, 2])), &["matmul", "i64"]);
}

#[test]
fn layout_arguments_that_do_not_fit() {
    let x = t64(vec![0.0; 6], &[2, 3]);
    assert_err("reshape", x.reshape([4]), &["reshape", "[2, 3]", "[4]"]);
    assert_err("reshape to scalar", x.reshape(()), &["reshape", "[2, 3]", "[]"]);
    assert_err("permute repeated", x.permute(&[0, 0]), &["permute", "[0, 0]", "[2, 3]"]);
    assert_err("permute short", x.permute(&[0]), &["permute", "[0]"]);
    assert_err("permute range", x.permute(&[0, 2]), &["permute", "[0, 2]"]);
    assert_err("permute long", x.permute(&[0, 1, 2]), &["permute", "[0, 1, 2]"]);
    assert_err("narrow past the end", x.narrow(1, 2, 2), &["narrow", "2..4", "[2, 3]"]);
    assert_err("narrow start", x.narrow(0, 3, 0), &["narrow", "3..3"]);
    assert_err("narrow overflow", x.narrow(1, usize::MAX, 2), &["narrow", "out of bounds"]);
    let y = t64(vec![0.0; 4], &[2, 2]);
    let z = t64(vec![0.0; 6], &[3, 2]);
    assert_err("concat mismatch", Tensor::concat(&[&x, &z], 1), &["concat", "[2, 3]", "[3, 2]"]);
    assert_err("concat rank", Tensor::concat(&[&x, &t64(vec![0.0; 3], &[3])], 0), &["concat", "[2, 3]", "[3]"]);
    assert_err("concat nothing", Tensor::concat(&[], 0), &["concat", "no tensors"]);
    assert_err("stack mismatch", Tensor::stack(&[&x, &y], 0), &["stack", "[2, 3]", "[2, 2]"]);
    assert_err("stack nothing", Tensor::stack(&[], 0), &["stack", "no tensors"]);
}

#[test]
fn labels_that_do_not_fit() {
    let labels = ti64(vec![0, 3, 1], &[3]);
    assert_err("one_hot high", Tensor::one_hot(&labels, 3, DType::F32), &["one_hot", "label 3", "index 1", "0..3"]);
    assert_err("one_hot negative", Tensor::one_hot(&ti64(vec![-1], &[1]), 3, DType::F32), &["label -1"]);
    assert_err(
        "one_hot float labels",
        Tensor::one_hot(&t32(vec![0.0], &[1]), 3, DType::F32),
        &["one_hot", "f32", "i64"],
    );
    let logits = t64(vec![0.0; 6], &[2, 3]);
    assert_err(
        "sparse CE label shape",
        Tensor::sparse_softmax_cross_entropy(&logits, &ti64(vec![0, 1, 2], &[3])),
        &["sparse_softmax_cross_entropy", "[3]", "[2, 3]"],
    );
    assert_err(
        "sparse CE scalar logits",
        Tensor::sparse_softmax_cross_entropy(&Tensor::scalar(1.0f64, &Device::Cpu).unwrap(), &ti64(vec![0], &[1])),
        &["sparse_softmax_cross_entropy", "[1]", "[]"],
    );
    assert_err(
        "sparse CE label range",
        Tensor::sparse_softmax_cross_entropy(&logits, &ti64(vec![0, 5], &[2])),
        &["label 5", "0..3"],
    );
    assert_err(
        "sparse CE float labels",
        Tensor::sparse_softmax_cross_entropy(&logits, &t64(vec![0.0, 1.0], &[2])),
        &["f64", "i64"],
    );
    assert_err(
        "CE shape",
        Tensor::softmax_cross_entropy(&logits, &t64(vec![0.0; 4], &[2, 2])),
        &["softmax_cross_entropy", "[2, 3]", "[2, 2]"],
    );
    let s = Tensor::scalar(1.0f64, &Device::Cpu).unwrap();
    assert_err("CE scalar", Tensor::softmax_cross_entropy(&s, &s), &["softmax_cross_entropy", "class axis"]);
}

#[test]
fn float_ops_on_integers() {
    let i = ti64(vec![1, 2], &[2]);
    let checks: Vec<(&str, tapegrad_tensor::Result<Tensor>)> = vec![
        ("exp", i.exp()),
        ("log", i.log()),
        ("sqrt", i.sqrt()),
        ("sigmoid", i.sigmoid()),
        ("tanh", i.tanh()),
        ("powf", i.powf(2.0)),
        ("recip", i.recip()),
        ("affine", i.affine(2.0, 1.0)),
        ("mean", i.mean(&[0], false)),
        ("log_softmax", i.softmax(0)),
        ("log_softmax", i.log_softmax(0)),
    ];
    for (name, r) in checks {
        assert_err(name, r, &[name, "i64", "f32", "f64"]);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert_err(
        "rand_uniform i64",
        Tensor::rand_uniform([2], 0.0, 1.0, DType::I64, &Device::Cpu, &mut rng),
        &["rand_uniform", "i64"],
    );
    // Clamping integers to bounds that contain no integer.
    assert_err("i64 clamp", i.clamp(0.5, 0.7), &["clamp", "0.5", "0.7", "no integer"]);
    assert_eq!(i.clamp(1.5, 1.5 + 1e-9).err().map(|e| e.to_string().contains("no integer")), Some(true));
}

#[test]
fn bad_numeric_arguments() {
    let x = t64(vec![0.0; 2], &[2]);
    assert_err("clamp reversed", x.clamp(1.0, 0.0), &["clamp", "[1, 0]"]);
    assert_err("clamp NaN", x.clamp(f64::NAN, 0.0), &["clamp", "NaN"]);
    assert_err("arange step 0", Tensor::arange(0.0, 1.0, 0.0, DType::F32, &Device::Cpu), &["arange", "step 0"]);
    assert_err("arange NaN", Tensor::arange(0.0, f64::NAN, 1.0, DType::F32, &Device::Cpu), &["arange", "NaN"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert_err(
        "rand_uniform empty range",
        Tensor::rand_uniform([2], 1.0, 1.0, DType::F32, &Device::Cpu, &mut rng),
        &["rand_uniform", "[1, 1)"],
    );
    assert_err(
        "rand_normal negative std",
        Tensor::rand_normal([2], 0.0, -1.0, DType::F32, &Device::Cpu, &mut rng),
        &["rand_normal", "-1"],
    );
    assert_err(
        "rand_normal NaN mean",
        Tensor::rand_normal([2], f64::NAN, 1.0, DType::F32, &Device::Cpu, &mut rng),
        &["rand_normal", "NaN"],
    );
}

#[test]
fn reductions_over_empty_axes() {
    let e = t64(vec![], &[2, 0]);
    assert_err("max", e.max(&[1], false), &["max", "empty", "[2, 0]"]);
    assert_err("min", e.min(&[-1], true), &["min", "empty"]);
    assert_err("mean", e.mean(&[1], false), &["mean", "empty", "[2, 0]"]);
    assert_err("argmax", e.argmax(1), &["argmax", "empty", "[2, 0]"]);
    assert_err("log_softmax", e.log_softmax(1), &["log_softmax", "empty"]);
    // Sums over empty axes are 0; max over a non-empty axis of an empty tensor is empty.
    assert_eq!(vals(&e.sum(&[1], false).unwrap()), [0.0, 0.0]);
    assert_eq!(e.max(&[0], false).unwrap().dims(), [0]);
}

#[test]
fn windows_strides_and_dilations_near_usize_max_are_errors() {
    let x = t32(vec![0.0; 32], &[1, 4, 4, 2]);
    let k = t32(vec![0.0; 54], &[3, 3, 3, 2]);
    let same = |strides, dilation| Conv2dParams { strides, padding: Padding::Same, dilation, groups: 1 };
    assert_err("conv2d dilation", x.conv2d(&k, None, &same((1, 1), (usize::MAX, 1))), &["conv2d", "overflow"]);
    assert_err("max_pool2d window", x.max_pool2d((usize::MAX, 2), (1, 1), Padding::Same), &["max_pool2d", "overflow"]);
    let kt = t32(vec![0.0; 54], &[2, 3, 3, 3]);
    let tp = Conv2dTransposeParams { strides: (usize::MAX, 1), ..Default::default() };
    assert_err("conv2d_transpose stride", x.conv2d_transpose(&kt, None, &tp), &["conv2d_transpose", "overflows"]);
}

#[test]
fn integer_arithmetic_wraps_instead_of_panicking() {
    // NumPy, PyTorch and TF wrap i64 overflow; a debug build must not panic on it either.
    let (max, min) = (ti64(vec![i64::MAX], &[1]), ti64(vec![i64::MIN], &[1]));
    let one = ti64(vec![1], &[1]);
    assert_eq!(max.add(&one).unwrap().to_vec::<i64>().unwrap(), [i64::MIN]);
    assert_eq!(min.sub(&one).unwrap().to_vec::<i64>().unwrap(), [i64::MAX]);
    assert_eq!(max.mul(&ti64(vec![2], &[1])).unwrap().to_vec::<i64>().unwrap(), [-2]);
    assert_eq!(ti64(vec![i64::MAX, 1], &[2]).sum_all().unwrap().to_vec::<i64>().unwrap(), [i64::MIN]);
}

#[test]
fn casting_a_float_to_i64_truncates_and_saturates_as_on_cuda() {
    // A computed tensor is cast as the CUDA kernels cast it (the same results on both
    // devices, checked there by cuda_ops.rs): fractions truncate, NaN becomes 0 and values
    // beyond the range saturate. A constant that no i64 holds is refused (below).
    let got = t64(vec![-2.7, 3.9, f64::NAN, f64::INFINITY, -1e19], &[5]).cast(DType::I64).unwrap();
    assert_eq!(got.to_vec::<i64>().unwrap(), [-2, 3, 0, i64::MAX, i64::MIN]);
}

#[test]
fn an_integer_constant_no_i64_holds_is_an_error() {
    for v in [f64::NAN, f64::INFINITY, -1e19] {
        assert_err("full i64", Tensor::full(v, [2], DType::I64, &Device::Cpu), &["full", &v.to_string(), "i64"]);
    }
}
