//! Conv2DTranspose, UpSampling2D, ZeroPadding2D and Cropping2D: Keras' output shapes,
//! parameter counts, summary rows and configuration errors.

use tapegrad_layers::{
    Conv2DTranspose, Cropping2D, InputSpec, Interpolation, Layer, Mode, Padding, Sequential, UpSampling2D,
    ZeroPadding2D,
};
use tapegrad_tensor::{DType, Device, Tensor};

fn input(h: usize, w: usize, c: usize) -> Tensor {
    Tensor::zeros([2, h, w, c], DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn conv2d_transpose_output_sizes_follow_keras() {
    // (kernel, strides, padding, output_padding, dilation) -> output height for an 8-row input,
    // from Keras' deconv_output_length.
    let cases: &[(usize, usize, Padding, Option<usize>, usize, usize)] = &[
        (3, 2, Padding::Valid, None, 1, 17),
        (3, 2, Padding::Same, None, 1, 16),
        (2, 2, Padding::Valid, None, 1, 16),
        (2, 2, Padding::Same, None, 1, 16),
        (4, 2, Padding::Same, None, 1, 16),
        (1, 2, Padding::Valid, None, 1, 16),
        (3, 2, Padding::Same, Some(1), 1, 16),
        (3, 2, Padding::Same, Some(0), 1, 15),
        (3, 2, Padding::Valid, Some(1), 1, 18),
        (5, 1, Padding::Valid, None, 1, 12),
        (3, 1, Padding::Same, None, 2, 8),
        (3, 1, Padding::Valid, None, 2, 12),
        (3, 3, Padding::Same, Some(2), 1, 24),
    ];
    for &(k, s, padding, op, d, expected) in cases {
        let mut layer = Conv2DTranspose::new(5, k).strides(s).padding(padding).dilation(d);
        if let Some(op) = op {
            layer = layer.output_padding(op);
        }
        let y = layer.call(&input(8, 8, 3), Mode::Train).unwrap();
        assert_eq!(y.dims(), &[2, expected, expected, 5], "k={k} s={s} {padding:?} op={op:?} d={d}");
    }
}

#[test]
fn conv2d_transpose_params_and_kernel_layout() {
    let layer = Conv2DTranspose::new(16, (3, 2)).strides(2);
    layer.build(&InputSpec::new([1, 4, 4, 8])).unwrap();
    assert_eq!(layer.kernel().unwrap().value().dims(), &[8, 3, 2, 16]);
    assert_eq!(layer.count_params().trainable, 3 * 2 * 8 * 16 + 16);
    let no_bias = Conv2DTranspose::new(16, 3).use_bias(false);
    no_bias.build(&InputSpec::new([1, 4, 4, 8])).unwrap();
    assert_eq!(no_bias.count_params().trainable, 3 * 3 * 8 * 16);
}

#[test]
fn summary_rows_show_shapes_and_params() {
    let model = Sequential::new()
        .add(ZeroPadding2D::new(((1, 0), (0, 1))).named("pad"))
        .add(Conv2DTranspose::new(4, 2).strides(2).named("up_conv"))
        .add(UpSampling2D::new(2).interpolation(Interpolation::Bilinear).named("up"))
        .add(Cropping2D::new(3).named("crop"));
    let summary = model.summary(&InputSpec::new([1, 7, 7, 3])).unwrap();
    let rows: Vec<(&str, &str, Option<&str>, usize)> = summary
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.type_name.as_str(), r.output_shape.as_deref(), r.params))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("pad", "ZeroPadding2D", Some("(None, 8, 8, 3)"), 0),
            ("up_conv", "Conv2DTranspose", Some("(None, 16, 16, 4)"), 2 * 2 * 3 * 4 + 4),
            ("up", "UpSampling2D", Some("(None, 32, 32, 4)"), 0),
            ("crop", "Cropping2D", Some("(None, 26, 26, 4)"), 0),
        ]
    );
}

#[test]
fn padding_and_cropping_accept_keras_forms() {
    let x = input(6, 5, 1);
    assert_eq!(ZeroPadding2D::new(2).call(&x, Mode::Infer).unwrap().dims(), &[2, 10, 9, 1]);
    assert_eq!(ZeroPadding2D::new((1, 2)).call(&x, Mode::Infer).unwrap().dims(), &[2, 8, 9, 1]);
    assert_eq!(ZeroPadding2D::default().call(&x, Mode::Infer).unwrap().dims(), &[2, 8, 7, 1]);
    assert_eq!(Cropping2D::new((1, 2)).call(&x, Mode::Infer).unwrap().dims(), &[2, 4, 1, 1]);
    assert_eq!(Cropping2D::new(((0, 5), (1, 0))).call(&x, Mode::Infer).unwrap().dims(), &[2, 1, 4, 1]);
    assert_eq!(UpSampling2D::new((2, 3)).call(&x, Mode::Infer).unwrap().dims(), &[2, 12, 15, 1]);
}

#[test]
fn padding_and_cropping_move_values() {
    let x = Tensor::from_vec((1..=4).map(|v| v as f32).collect(), [1, 2, 2, 1], &Device::Cpu).unwrap();
    let padded = ZeroPadding2D::new(((1, 0), (0, 1))).call(&x, Mode::Infer).unwrap();
    assert_eq!(padded.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
    let cropped = Cropping2D::new(((1, 0), (0, 1))).call(&padded, Mode::Infer).unwrap();
    assert_eq!(cropped.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

fn message(r: tapegrad_layers::Result<Tensor>) -> String {
    r.expect_err("the configuration should be refused").to_string()
}

#[test]
fn bad_configurations_name_layer_option_and_values() {
    let m = message(
        Conv2DTranspose::new(4, 3).strides(2).output_padding(2).named("dec").call(&input(4, 4, 2), Mode::Train),
    );
    assert!(m.contains("dec") && m.contains("output_padding (2, 2)") && m.contains("strides (2, 2)"), "{m}");
    let m = message(UpSampling2D::new((0, 2)).named("up").call(&input(4, 4, 2), Mode::Infer));
    assert!(m.contains("up") && m.contains("size") && m.contains("(0, 2)"), "{m}");
    let m = message(Cropping2D::new(((2, 2), (0, 0))).named("crop").call(&input(4, 4, 2), Mode::Infer));
    assert!(m.contains("crop") && m.contains("((2, 2), (0, 0))") && m.contains("[2, 4, 4, 2]"), "{m}");
    let m = message(
        ZeroPadding2D::new(1).named("zp").call(&Tensor::zeros([4, 4], DType::F32, &Device::Cpu).unwrap(), Mode::Infer),
    );
    assert!(m.contains("zp") && m.contains("NHWC"), "{m}");
    let m = message(
        Conv2DTranspose::new(4, 3)
            .named("ct")
            .call(&Tensor::zeros([4, 4, 2], DType::F32, &Device::Cpu).unwrap(), Mode::Infer),
    );
    assert!(m.contains("ct") && m.contains("NHWC"), "{m}");
}
