//! Bad inputs of `pad`, `resize` and `conv2d_transpose`: errors that name the op, the
//! option and the values.

mod common;

use common::*;
use tapegrad_tensor::{Conv2dTransposeParams, DType, Device, Interpolation, PadMode, Padding, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape.to_vec(), DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn reflect_padding_must_be_smaller_than_the_axis() {
    let x = zeros(&[2, 3]);
    assert_err("reflect", x.pad(&[(0, 0), (3, 0)], PadMode::Reflect), &["pad", "reflect", "(3, 0)", "axis 1", "3"]);
    assert_err("pairs", x.pad(&[(1, 1)], PadMode::Reflect), &["pad", "1 (before, after) pairs", "[2, 3]"]);
    let i = Tensor::zeros([2], DType::I64, &Device::Cpu).unwrap();
    assert_err("dtype", i.pad(&[(1, 1)], PadMode::default()), &["pad", "i64"]);
}

#[test]
fn resize_factors_must_be_positive() {
    let x = zeros(&[1, 2, 2, 1]);
    assert_err("zero", x.resize((0, 2), Interpolation::Nearest), &["resize", "at least 1", "(0, 2)"]);
    assert_err("rank", zeros(&[2, 2]).resize((2, 2), Interpolation::Bilinear), &["resize", "4-D NHWC"]);
}

#[test]
fn conv2d_transpose_checks_its_options() {
    let x = zeros(&[1, 4, 4, 2]);
    let k = zeros(&[2, 3, 3, 5]);
    let p = |strides, output_padding| Conv2dTransposeParams {
        strides,
        padding: Padding::Same,
        output_padding,
        ..Default::default()
    };
    assert_err(
        "output_padding",
        x.conv2d_transpose(&k, None, &p((2, 2), Some((2, 0)))),
        &["conv2d_transpose", "output_padding (2, 0)", "strides (2, 2)"],
    );
    assert_err(
        "channels",
        x.conv2d_transpose(&zeros(&[3, 3, 3, 5]), None, &p((1, 1), None)),
        &["conv2d_transpose", "2 channels", "expects 3"],
    );
    assert_err("bias", x.conv2d_transpose(&k, Some(&zeros(&[4])), &p((1, 1), None)), &["bias", "[4]", "5 filters"]);
    // Keras' 'same' with an even kernel and output_padding 0 gives an output that the
    // forward convolution does not map back to the input.
    let even = zeros(&[2, 2, 2, 5]);
    assert_err("geometry", x.conv2d_transpose(&even, None, &p((2, 2), Some((0, 0)))), &["does not map back", "4x4"]);
}
