//! Output shapes, parameter counts, variable paths, modes and seeding of the layers that
//! need no convolution ops.

use tapegrad_layers::random::set_seed;
use tapegrad_layers::{
    add, Activation, ActivationFn, Dense, Dropout, Flatten, InputSpec, Layer, Mode, ReLU, Result, Sequential,
};
use tapegrad_tensor::{DType, Device, Tensor};

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[test]
fn dense_shapes_params_and_math() -> Result<()> {
    let dense = Dense::new(3);
    assert!(dense.variables().is_empty(), "not built before the first call");
    let x = input(&[2, 4]);
    let y = dense.call(&x, Mode::Infer)?;
    assert_eq!(y.dims(), &[2, 3]);
    assert_eq!(dense.count_params().trainable, 4 * 3 + 3);
    assert_eq!(dense.kernel().unwrap().value_untracked().dims(), &[4, 3]);
    // y = x @ kernel + bias, computed here by hand.
    let k = dense.kernel().unwrap().value_untracked().to_vec::<f32>()?;
    let xv = x.to_vec::<f32>()?;
    let yv = y.to_vec::<f32>()?;
    for r in 0..2 {
        for c in 0..3 {
            let expect: f32 = (0..4).map(|i| xv[r * 4 + i] * k[i * 3 + c]).sum();
            assert!((yv[r * 3 + c] - expect).abs() < 1e-6);
        }
    }
    // Rank-3 inputs are transformed along the last axis.
    let y3 = dense.call(&input(&[2, 5, 4]), Mode::Infer)?;
    assert_eq!(y3.dims(), &[2, 5, 3]);
    // A wrong feature count names the layer and the shape.
    let err = dense.call(&input(&[2, 7]), Mode::Infer).unwrap_err().to_string();
    assert!(err.contains(dense.name()) && err.contains("[2, 7]"), "{err}");
    // Without bias; with activation.
    let d2 = Dense::new(2).use_bias(false).activation(ActivationFn::Relu);
    let y2 = d2.call(&x, Mode::Infer)?;
    assert!(y2.to_vec::<f32>()?.iter().all(|&v| v >= 0.0));
    assert_eq!(d2.count_params().trainable, 8);
    Ok(())
}

#[test]
fn explicit_build_uses_the_spec() -> Result<()> {
    let dense = Dense::new(6);
    dense.build(&InputSpec::new([1, 10]).with_dtype(DType::F64))?;
    let k = dense.kernel().unwrap().value_untracked();
    assert_eq!((k.dims(), k.dtype()), (&[10usize, 6][..], DType::F64));
    // Building again leaves the variables alone.
    let before = k.to_vec::<f64>()?;
    dense.build(&InputSpec::new([1, 10]).with_dtype(DType::F64))?;
    assert_eq!(dense.kernel().unwrap().value_untracked().to_vec::<f64>()?, before);
    Ok(())
}

#[test]
fn activations_flatten_and_add() -> Result<()> {
    let x = input(&[2, 3, 4]);
    let xv = x.to_vec::<f32>()?;
    let relu = ReLU::new().call(&x, Mode::Train)?.to_vec::<f32>()?;
    assert_eq!(relu, xv.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
    let sig = Activation::sigmoid().call(&x, Mode::Infer)?.to_vec::<f32>()?;
    assert!(sig.iter().zip(&xv).all(|(s, v)| (s - 1.0 / (1.0 + (-v).exp())).abs() < 1e-6));
    let tanh = Activation::new("tanh".parse()?).call(&x, Mode::Infer)?.to_vec::<f32>()?;
    assert!(tanh.iter().zip(&xv).all(|(s, v)| (s - v.tanh()).abs() < 1e-6));
    let soft = Activation::softmax().call(&x, Mode::Infer)?;
    let rows = soft.sum(&[-1], false)?.to_vec::<f32>()?;
    assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-6));
    assert!("swishy".parse::<ActivationFn>().is_err());

    let flat = Flatten::new().call(&x, Mode::Infer)?;
    assert_eq!(flat.dims(), &[2, 12]);
    assert_eq!(flat.to_vec::<f32>()?, xv);

    let sum = add(&[&x, &x, &x])?;
    assert_eq!(sum.to_vec::<f32>()?, xv.iter().map(|v| 3.0 * v).collect::<Vec<_>>());
    let err = add(&[&x, &flat]).unwrap_err().to_string();
    assert!(err.contains("[2, 12]") && err.contains("[2, 3, 4]"), "{err}");
    Ok(())
}

#[test]
fn dropout_drops_in_train_only() -> Result<()> {
    let x = Tensor::ones([100, 100], DType::F32, &Device::Cpu)?;
    let drop = Dropout::new(0.25).seed(5);
    assert_eq!(drop.call(&x, Mode::Infer)?.to_vec::<f32>()?, x.to_vec::<f32>()?, "identity in Infer");
    let y = drop.call(&x, Mode::Train)?.to_vec::<f32>()?;
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert!((kept as f64 / 1e4 - 0.75).abs() < 0.02, "kept {kept}");
    // Seeded: the same seed gives the same mask; the next call another.
    let again = Dropout::new(0.25).seed(5).call(&x, Mode::Train)?.to_vec::<f32>()?;
    assert_eq!(y, again);
    assert_ne!(y, drop.call(&x, Mode::Train)?.to_vec::<f32>()?);
    assert!(Dropout::new(1.0).call(&x, Mode::Infer).is_err(), "a bad rate fails in either mode");
    Ok(())
}

#[test]
fn sequential_nests_and_names_by_path() -> Result<()> {
    let inner = Sequential::new().add(Dense::new(5)).add(Activation::relu());
    let model = Sequential::new().add(Flatten::new()).add(inner).add(Dense::new(2).use_bias(false));
    let y = model.call(&input(&[3, 2, 2]), Mode::Train)?;
    assert_eq!(y.dims(), &[3, 2]);
    let names: Vec<String> = model.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["1.0.kernel", "1.0.bias", "2.kernel"]);
    assert_eq!(model.trainable_variables().len(), 3);
    assert!(model.non_trainable_variables().is_empty());
    assert_eq!(model.count_params().trainable, 4 * 5 + 5 + 5 * 2);
    assert_eq!(model.len(), 3);
    Ok(())
}

/// A user-written composite layer: a struct of layers, no macros.
struct Residual {
    fc1: Dense,
    fc2: Dense,
    gate: Option<Dense>,
}

impl Layer for Residual {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = self.fc1.call(x, mode)?.relu()?;
        let mut y = self.fc2.call(&h, mode)?.add(x)?;
        if let Some(g) = &self.gate {
            y = g.call(&y, mode)?;
        }
        Ok(y)
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("fc1", &self.fc1);
        visit("fc2", &self.fc2);
        if let Some(g) = &self.gate {
            visit("gate", g);
        }
    }
}

#[test]
fn composite_layers_build_lazily_and_report_paths() -> Result<()> {
    let block = Residual { fc1: Dense::new(8), fc2: Dense::new(4), gate: Some(Dense::new(4)) };
    assert_eq!(block.name(), "Residual");
    block.build(&InputSpec::new([1, 4]))?;
    let names: Vec<String> = block.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc1.kernel", "fc1.bias", "fc2.kernel", "fc2.bias", "gate.kernel", "gate.bias"]);
    let model = Sequential::new().add(block).add(Dense::new(3));
    model.build(&InputSpec::new([2, 4]))?;
    assert_eq!(model.named_variables()[0].0, "0.fc1.kernel");
    assert_eq!(model.count_params().trainable, (4 * 8 + 8) + (8 * 4 + 4) + (4 * 4 + 4) + (4 * 3 + 3));
    Ok(())
}

#[test]
fn one_seed_builds_bit_identical_models() -> Result<()> {
    let build = |seed| -> Result<Vec<Vec<f32>>> {
        set_seed(seed);
        let m = Sequential::new().add(Dense::new(16)).add(Dropout::new(0.5)).add(Dense::new(4));
        m.build(&InputSpec::new([1, 8]))?;
        m.variables().iter().map(|v| Ok(v.value_untracked().to_vec::<f32>()?)).collect()
    };
    assert_eq!(build(42)?, build(42)?);
    assert_ne!(build(42)?, build(43)?);
    Ok(())
}

#[test]
fn summary_lists_layers_shapes_and_totals() -> Result<()> {
    let model = Sequential::new().add(Flatten::new()).add(Dense::new(10)).add(Activation::relu()).add(Dense::new(2));
    let s = model.summary(&InputSpec::new([1, 4, 4]))?;
    assert_eq!(s.params.trainable, 16 * 10 + 10 + 10 * 2 + 2);
    assert_eq!(s.params.non_trainable, 0);
    let shapes: Vec<_> = s.rows.iter().map(|r| r.output_shape.clone().unwrap()).collect();
    assert_eq!(shapes, ["(None, 16)", "(None, 10)", "(None, 10)", "(None, 2)"]);
    let text = s.to_string();
    assert!(text.contains("Trainable params: 192"), "{text}");
    assert!(text.contains("Non-trainable params: 0"), "{text}");
    assert!(text.contains("(Dense)"), "{text}");
    Ok(())
}

#[test]
fn layer_errors_convert_inside_a_tape() -> Result<()> {
    let dense = Dense::new(2);
    dense.build(&InputSpec::new([1, 3]))?;
    let tape = tapegrad_tensor::GradientTape::new();
    let out = tape.record(|| {
        let y = dense.call(&input(&[2, 5]), Mode::Train)?;
        y.sum_all()
    });
    let err = out.unwrap_err().to_string();
    assert!(err.contains(dense.name()) && err.contains("[2, 5]"), "{err}");
    Ok(())
}
