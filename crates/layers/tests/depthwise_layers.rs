//! Grouped Conv2D, DepthwiseConv2D and SeparableConv2D: shapes, Keras' parameter counts
//! and variable names, values against the convolution they stand for, summary rows, the
//! Keras kernel import, and the errors of bad group counts and multipliers.

use tapegrad_layers::checkpoint::import::keras_depthwise_kernel;
use tapegrad_layers::{Conv2D, DepthwiseConv2D, InputSpec, Layer, Mode, Padding, Result, SeparableConv2D, Sequential};
use tapegrad_tensor::{Conv2dParams, DType, Device, Tensor};

fn image(shape: [usize; 4]) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|i| ((i * 31 % 17) as f64 - 8.0) / 4.0).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn names(layer: &dyn Layer) -> Vec<String> {
    let mut out = Vec::new();
    layer.visit_variables(&mut |name, _| out.push(name.to_string()));
    out
}

#[test]
fn grouped_conv2d_has_keras_shapes_and_counts() -> Result<()> {
    let x = image([2, 6, 6, 8]);
    let conv = Conv2D::new(12, 3).groups(4).padding(Padding::Same);
    assert_eq!(conv.call(&x, Mode::Infer)?.dims(), &[2, 6, 6, 12]);
    // Keras: kh * kw * (in / groups) * filters + filters.
    assert_eq!(conv.count_params().trainable, 3 * 3 * 2 * 12 + 12);
    assert_eq!(conv.kernel().unwrap().value_untracked().dims(), &[12, 3, 3, 2]);
    assert_eq!(conv.conv_params().groups, 4);
    Ok(())
}

#[test]
fn depthwise_matches_a_grouped_convolution_and_counts_like_keras() -> Result<()> {
    let x = image([2, 7, 7, 4]);
    let dw = DepthwiseConv2D::new(3).strides(2).padding(Padding::Same).depth_multiplier(3).dilation(1);
    let y = dw.call(&x, Mode::Infer)?;
    assert_eq!(y.dims(), &[2, 4, 4, 12]);
    // Keras: kh * kw * channels * depth_multiplier + channels * depth_multiplier.
    assert_eq!(dw.count_params().trainable, 3 * 3 * 4 * 3 + 12);
    assert_eq!(names(&dw), ["depthwise_kernel", "bias"]);
    let kernel = dw.kernel().unwrap().value_untracked();
    assert_eq!(kernel.dims(), &[12, 3, 3, 1]);
    let params = Conv2dParams { strides: (2, 2), padding: Padding::Same, groups: 4, ..Default::default() };
    let expected = x.conv2d(&kernel, Some(&dw.bias().unwrap().value_untracked()), &params)?;
    assert_eq!(y.to_vec::<f64>()?, expected.to_vec::<f64>()?);
    let no_bias = DepthwiseConv2D::new((3, 1)).use_bias(false);
    no_bias.build(&InputSpec::new([1, 5, 5, 6]))?;
    assert_eq!(no_bias.count_params().trainable, 3 * 6);
    Ok(())
}

#[test]
fn separable_is_depthwise_then_pointwise_with_keras_names() -> Result<()> {
    let x = image([1, 5, 5, 3]);
    let sep = SeparableConv2D::new(4, 3).depth_multiplier(2).padding(Padding::Same);
    let y = sep.call(&x, Mode::Infer)?;
    assert_eq!(y.dims(), &[1, 5, 5, 4]);
    // Keras: kh * kw * in * m + in * m * filters + filters.
    assert_eq!(sep.count_params().trainable, 3 * 3 * 3 * 2 + 3 * 2 * 4 + 4);
    assert_eq!(names(&sep), ["depthwise_kernel", "pointwise_kernel", "bias"]);
    let depthwise = sep.depthwise_kernel().unwrap().value_untracked();
    let pointwise = sep.pointwise_kernel().unwrap().value_untracked();
    assert_eq!(pointwise.dims(), &[4, 1, 1, 6]);
    let spatial = Conv2dParams { padding: Padding::Same, groups: 3, ..Default::default() };
    let mid = x.conv2d(&depthwise, None, &spatial)?;
    let expected = mid.conv2d(&pointwise, Some(&sep.bias().unwrap().value_untracked()), &Conv2dParams::default())?;
    assert_eq!(y.to_vec::<f64>()?, expected.to_vec::<f64>()?);
    Ok(())
}

#[test]
fn summary_shows_the_new_layers() -> Result<()> {
    let model = Sequential::new()
        .add(DepthwiseConv2D::new(3).padding(Padding::Same))
        .add(SeparableConv2D::new(8, 3).strides(2).padding(Padding::Same))
        .add(Conv2D::new(8, 1).groups(2));
    let s = model.summary(&InputSpec::new([1, 8, 8, 4]))?;
    let types: Vec<_> = s.rows.iter().map(|r| r.type_name.clone()).collect();
    assert_eq!(types, ["DepthwiseConv2D", "SeparableConv2D", "Conv2D"]);
    let counts: Vec<_> = s.rows.iter().map(|r| r.params).collect();
    assert_eq!(counts, [3 * 3 * 4 + 4, 3 * 3 * 4 + 4 * 8 + 8, 4 * 8 + 8]);
    let shapes: Vec<_> = s.rows.iter().map(|r| r.output_shape.clone().unwrap()).collect();
    assert_eq!(shapes, ["(None, 8, 8, 4)", "(None, 4, 4, 8)", "(None, 4, 4, 8)"]);
    Ok(())
}

#[test]
fn keras_depthwise_kernels_import_in_channel_major_order() -> Result<()> {
    // Keras [kh, kw, channels, multiplier] = [1, 2, 2, 3]: element (0, x, c, j) = 100 x + 10 c + j.
    let keras: Vec<f64> =
        (0..2).flat_map(|x| (0..2).flat_map(move |c| (0..3).map(move |j| (100 * x + 10 * c + j) as f64))).collect();
    let ours = keras_depthwise_kernel(&Tensor::from_vec(keras, [1, 2, 2, 3], &Device::Cpu)?)?;
    assert_eq!(ours.dims(), &[6, 1, 2, 1]);
    let v = ours.to_vec::<f64>()?;
    // Ours [c * m + j, 0, x, 0].
    assert_eq!(v, [0.0, 100.0, 1.0, 101.0, 2.0, 102.0, 10.0, 110.0, 11.0, 111.0, 12.0, 112.0]);
    Ok(())
}

fn build_error(layer: &dyn Layer, shape: [usize; 4]) -> String {
    layer.build(&InputSpec::new(shape)).unwrap_err().to_string()
}

#[test]
fn bad_groups_and_multipliers_are_clear_errors() {
    let conv = Conv2D::new(6, 3).groups(4).named("grouped");
    let m = build_error(&conv, [1, 5, 5, 8]);
    assert!(m.contains("grouped") && m.contains("groups = 4") && m.contains("filters (6)"), "{m}");
    let conv = Conv2D::new(8, 3).groups(3).named("grouped2");
    let m = build_error(&conv, [1, 5, 5, 8]);
    assert!(m.contains("grouped2") && m.contains("input channels (8"), "{m}");
    let m = build_error(&Conv2D::new(8, 3).groups(0).named("g0"), [1, 5, 5, 8]);
    assert!(m.contains("g0") && m.contains("groups = 0"), "{m}");
    let m = build_error(&DepthwiseConv2D::new(3).depth_multiplier(0).named("dw"), [1, 5, 5, 8]);
    assert!(m.contains("dw") && m.contains("depth_multiplier") && m.contains("got 0"), "{m}");
    let m = build_error(&SeparableConv2D::new(4, 3).depth_multiplier(0).named("sep"), [1, 5, 5, 8]);
    assert!(m.contains("sep") && m.contains("depth_multiplier"), "{m}");
    // A built layer called with another channel count names the layer and the shape.
    let dw = DepthwiseConv2D::new(3).named("dw_built");
    dw.build(&InputSpec::new([1, 5, 5, 4])).unwrap();
    let m =
        dw.call(&Tensor::zeros([1, 5, 5, 3], DType::F64, &Device::Cpu).unwrap(), Mode::Infer).unwrap_err().to_string();
    assert!(m.contains("dw_built") && m.contains("4 channels") && m.contains("[1, 5, 5, 3]"), "{m}");
}
