//! ReLU's Keras options, LeakyReLU, ELU, every ActivationFn by name and a user function,
//! through layers and as Conv2D/Dense activations.

use tapegrad_layers::{Activation, ActivationFn, Conv2D, Dense, Layer, LeakyReLU, Mode, ReLU, Result, ELU};
use tapegrad_tensor::{Device, Tensor};

fn x() -> Tensor {
    let v: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) * 0.75).collect();
    Tensor::from_vec(v, [2, 12], &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn relu_options_follow_keras() -> Result<()> {
    let xv = vals(&x());
    let relu6 = vals(&ReLU::relu6().call(&x(), Mode::Infer)?);
    assert_eq!(relu6, xv.iter().map(|v| v.clamp(0.0, 6.0)).collect::<Vec<_>>());
    let leaky = vals(&ReLU::new().negative_slope(0.1).call(&x(), Mode::Infer)?);
    assert_eq!(leaky, xv.iter().map(|&v| if v < 0.0 { 0.1 * v } else { v }).collect::<Vec<_>>());
    // Keras: max_value for x >= threshold (clipped), negative_slope * (x - threshold) below.
    let full = vals(&ReLU::new().max_value(4.0).negative_slope(0.5).threshold(1.0).call(&x(), Mode::Infer)?);
    let keras = |v: f32| if v > 1.0 { v.min(4.0) } else { 0.5 * (v - 1.0) };
    for (got, &v) in full.iter().zip(&xv) {
        assert!((got - keras(v)).abs() < 1e-6, "x {v}: {got} vs {}", keras(v));
    }
    let thresholded = vals(&ReLU::new().threshold(2.0).call(&x(), Mode::Infer)?);
    assert_eq!(thresholded, xv.iter().map(|&v| if v > 2.0 { v } else { 0.0 }).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn leaky_relu_and_elu_layers_have_keras_defaults() -> Result<()> {
    let xv = vals(&x());
    let leaky = vals(&LeakyReLU::new().call(&x(), Mode::Infer)?);
    assert_eq!(leaky, xv.iter().map(|&v| if v < 0.0 { v * 0.3f32 } else { v }).collect::<Vec<_>>());
    let elu = vals(&ELU::new().call(&x(), Mode::Infer)?);
    for (got, &v) in elu.iter().zip(&xv) {
        let want = if v > 0.0 { v } else { v.exp_m1() };
        assert!((got - want).abs() < 1e-6);
    }
    assert_eq!(LeakyReLU::new().type_name(), "LeakyReLU");
    assert_eq!(ELU::new().type_name(), "ELU");
    Ok(())
}

#[test]
fn bad_options_are_errors_naming_layer_option_and_value() {
    let cases: Vec<(Box<dyn Layer>, &str, &str)> = vec![
        (Box::new(ReLU::new().max_value(-1.0).named("r1")), "max_value", "-1"),
        (Box::new(ReLU::new().negative_slope(-0.5).named("r2")), "negative_slope", "-0.5"),
        (Box::new(ReLU::new().threshold(f64::NAN).named("r3")), "threshold", "NaN"),
        (Box::new(LeakyReLU::new().negative_slope(f64::NAN).named("l1")), "negative_slope", "NaN"),
        (Box::new(ELU::new().alpha(f64::INFINITY).named("e1")), "alpha", "inf"),
    ];
    for (layer, option, value) in cases {
        let msg = layer.call(&x(), Mode::Infer).unwrap_err().to_string();
        assert!(msg.contains(layer.name()) && msg.contains(option) && msg.contains(value), "{msg}");
    }
}

#[test]
fn every_keras_name_parses_and_applies() -> Result<()> {
    let names = [
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "gelu",
        "silu",
        "swish",
        "sigmoid",
        "tanh",
        "softmax",
        "softplus",
        "softsign",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "mish",
    ];
    for name in names {
        let f: ActivationFn = name.parse()?;
        let y = Activation::new(f.clone()).call(&x(), Mode::Infer)?;
        assert_eq!(y.dims(), &[2, 12], "{name}");
        assert!(vals(&y).iter().all(|v| v.is_finite()), "{name}");
        let direct = f.apply(&x())?;
        assert_eq!(vals(&direct), vals(&y), "{name}");
    }
    assert_eq!("swish".parse::<ActivationFn>()?, ActivationFn::Silu);
    assert_eq!("leaky_relu".parse::<ActivationFn>()?, ActivationFn::LeakyRelu { negative_slope: 0.2 });
    let msg = "gelu2".parse::<ActivationFn>().unwrap_err().to_string();
    assert!(msg.contains("gelu2") && msg.contains("hard_swish"), "{msg}");
    Ok(())
}

#[test]
fn a_user_function_works_in_conv2d_and_dense() -> Result<()> {
    let cube = ActivationFn::custom("cube", |x| x.mul(&x.square()?));
    assert_eq!(cube.as_str(), "cube");
    assert_eq!(cube, cube.clone());
    let dense = Dense::new(3).use_bias(false).activation(cube.clone());
    let plain = Dense::new(3).use_bias(false);
    let y = dense.call(&x(), Mode::Infer)?;
    // Same initial kernel: copy it across, then compare with cubing the linear output.
    plain.call(&x(), Mode::Infer)?;
    let (kd, kp) = (&dense.trainable_variables()[0], &plain.trainable_variables()[0]);
    kp.assign(kd.value())?;
    let want = plain.call(&x(), Mode::Infer)?.powf(3.0)?;
    for (a, b) in vals(&y).iter().zip(vals(&want)) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
    let images = x().reshape([1, 2, 3, 4])?;
    let conv = Conv2D::new(2, 1).activation(ActivationFn::Relu6).call(&images, Mode::Infer)?;
    assert!(vals(&conv).iter().all(|v| (0.0..=6.0).contains(v)));
    let failing = ActivationFn::custom("fails", |x| x.log()?.reshape([7]));
    let msg = Dense::new(2).named("d_fail").activation(failing).call(&x(), Mode::Infer).unwrap_err().to_string();
    assert!(msg.contains("d_fail"), "{msg}");
    Ok(())
}
