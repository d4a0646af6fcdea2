//! Bad options are errors naming the option and its value (issue 11 §2): optimizer
//! hyperparameters and schedules at `apply_gradients`, layer options at build, metric
//! options at update; and a rejected `apply_gradients` changes nothing.

use tapegrad_layers::metrics::TopKAccuracy;
use tapegrad_layers::optimizers::schedules::CosineDecay;
use tapegrad_layers::optimizers::{Adam, AdamW, Optimizer, Sgd};
use tapegrad_layers::training::{TensorDataset, Trainer};
use tapegrad_layers::{
    losses, BatchNormalization, Conv2D, Cropping2D, Dense, Dropout, Embedding, GroupNormalization, Initializer, Layer,
    LayerNormalization, Mode, Padding, Reshape,
};
use tapegrad_tensor::{DType, Device, Tensor, Variable};

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn var(name: &str, v: Vec<f32>) -> Variable {
    let n = v.len();
    Variable::new(name, t(v, &[n]), true)
}

/// Runs one step of `opt` and returns its error message, checking that nothing changed.
fn rejected(mut opt: impl Optimizer) -> String {
    let v = var("w", vec![1.0, 2.0]);
    let grads = vec![Some(t(vec![0.0, 0.5], &[2]))];
    let msg = opt.apply_gradients(&grads, std::slice::from_ref(&v)).unwrap_err().to_string();
    assert_eq!(v.value_untracked().to_vec::<f32>().unwrap(), vec![1.0, 2.0], "{msg}");
    assert_eq!(opt.iterations(), 0, "{msg}");
    msg
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} missing from: {msg}");
    }
}

#[test]
fn optimizer_hyperparameters() {
    assert_names(&rejected(Sgd::new(f64::NAN)), &["SGD", "learning_rate", "NaN"]);
    assert_names(&rejected(Sgd::new(-0.1)), &["learning_rate", "-0.1"]);
    assert_names(&rejected(Sgd::new(0.1).momentum(1.5)), &["momentum", "1.5"]);
    assert_names(&rejected(Sgd::new(0.1).momentum(-0.5)), &["momentum", "-0.5"]);
    assert_names(&rejected(Sgd::new(0.1).weight_decay(f64::NAN)), &["weight_decay", "NaN"]);
    assert_names(&rejected(Sgd::new(0.1).global_clipnorm(0.0)), &["global_clipnorm", "0"]);
    assert_names(&rejected(Adam::new(0.1).beta_1(1.0)), &["Adam", "beta_1", "1"]);
    assert_names(&rejected(Adam::new(0.1).beta_2(-0.1)), &["beta_2", "-0.1"]);
    assert_names(&rejected(Adam::new(0.1).epsilon(0.0)), &["epsilon", "0"]);
    assert_names(&rejected(Adam::new(0.1).epsilon(f64::NAN)), &["epsilon", "NaN"]);
    assert_names(&rejected(Adam::new(f64::INFINITY)), &["learning_rate", "inf"]);
    assert_names(&rejected(AdamW::new(0.1).weight_decay(-1.0)), &["AdamW", "weight_decay", "-1"]);
    assert_names(&rejected(Adam::new(0.1).global_clipnorm(f64::NAN)), &["global_clipnorm", "NaN"]);
}

#[test]
fn schedules_that_give_a_bad_rate_are_named() {
    let msg = rejected(Sgd::new(CosineDecay::new(f64::NAN, 10)));
    assert_names(&msg, &["learning_rate", "NaN", "CosineDecay", "iteration 0"]);
    let msg = rejected(Adam::new(CosineDecay::new(-1.0, 10)));
    assert_names(&msg, &["learning_rate", "-1", "CosineDecay"]);
}

#[test]
fn apply_gradients_is_atomic() {
    let (a, b) = (var("a", vec![1.0, 2.0]), var("b", vec![3.0]));
    let vars = vec![a.clone(), b.clone()];
    let wrong_dtype = Tensor::ones([1], DType::F64, &Device::Cpu).unwrap();
    let wrong_shape = t(vec![1.0, 1.0], &[2]);
    for bad in [wrong_dtype, wrong_shape] {
        for mut opt in [Box::new(Adam::new(0.1)) as Box<dyn Optimizer>, Box::new(Sgd::new(0.1).momentum(0.9))] {
            let grads = vec![Some(t(vec![1.0, 1.0], &[2])), Some(bad.clone())];
            let msg = opt.apply_gradients(&grads, &vars).unwrap_err().to_string();
            assert_names(&msg, &["gradient of b"]);
            assert_eq!(a.value_untracked().to_vec::<f32>().unwrap(), vec![1.0, 2.0], "{msg}");
            assert_eq!(opt.iterations(), 0);
            assert!(opt.slots().is_empty(), "no state was created: {msg}");
        }
    }
    let mut opt = Adam::new(0.1);
    let msg = opt.apply_gradients(&[None], &vars).unwrap_err().to_string();
    assert_names(&msg, &["1 gradients given for 2 variables"]);
}

#[test]
fn layer_options_are_checked_at_build() {
    let x = Tensor::ones([2, 4, 4, 3], DType::F32, &Device::Cpu).unwrap();
    let call = |layer: &dyn Layer| layer.call(&x, Mode::Train).unwrap_err().to_string();
    assert_names(&call(&Dense::new(0).named("head")), &["head", "units", "0"]);
    assert_names(&call(&Conv2D::new(0, 3)), &["filters", "0"]);
    assert_names(&call(&Conv2D::new(4, (0, 3))), &["kernel_size", "(0, 3)"]);
    assert_names(&call(&Conv2D::new(4, 3).strides((1, 0))), &["strides", "(1, 0)"]);
    assert_names(&call(&Conv2D::new(4, 3).dilation(0)), &["dilation", "(0, 0)"]);
    assert_names(&call(&BatchNormalization::new().momentum(f64::NAN)), &["momentum", "NaN"]);
    assert_names(&call(&BatchNormalization::new().momentum(1.5)), &["momentum", "1.5"]);
    assert_names(&call(&BatchNormalization::new().epsilon(0.0)), &["epsilon", "0"]);
    assert_names(&call(&BatchNormalization::new().epsilon(-1e-3)), &["epsilon", "-0.001"]);
    for rate in [f64::NAN, 1.0, -0.1] {
        assert_names(&call(&Dropout::new(rate)), &["rate", &rate.to_string()]);
    }
}

#[test]
fn top_k_needs_k_within_the_classes() {
    let logits = t(vec![0.1, 0.7, 0.2, 0.5, 0.3, 0.2], &[2, 3]);
    let labels = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu).unwrap();
    for k in [0, 4] {
        let msg = TopKAccuracy::new(k).update_state(&labels, &logits).unwrap_err().to_string();
        assert_names(&msg, &["k must be in 1..=3", &format!("got {k}")]);
    }
    let mut top = TopKAccuracy::new(3);
    top.update_state(&labels, &logits).unwrap();
    assert_eq!(top.result(), 1.0);
}

#[test]
fn layers_too_large_to_allocate_are_errors_not_aborts() {
    // The initial values are drawn into a fallibly reserved buffer: 2^40 x 8 f32 would
    // abort the process if it were a plain Vec.
    let x = Tensor::ones([2, 8], DType::F32, &Device::Cpu).unwrap();
    let msg = Dense::new(1 << 40).named("huge").call(&x, Mode::Train).unwrap_err().to_string();
    assert_names(&msg, &["layer huge", "initializer", "out of memory", "[8, 1099511627776]"]);
    let ids = Tensor::from_vec(vec![0i64], [1], &Device::Cpu).unwrap();
    let msg = Embedding::new(1 << 40, 1 << 20).call(&ids, Mode::Train).unwrap_err().to_string();
    assert_names(&msg, &["too many elements"]);
    let img = Tensor::ones([1, 4, 4, 3], DType::F32, &Device::Cpu).unwrap();
    // Fans of a kernel this wide overflow usize; the shape is refused instead.
    let msg =
        Conv2D::new(2, (1 << 31, 1 << 31)).padding(Padding::Same).call(&img, Mode::Train).unwrap_err().to_string();
    assert_names(&msg, &["too many elements"]);
}

#[test]
fn initializer_parameters_that_give_no_finite_values() {
    let x = Tensor::ones([2, 3], DType::F32, &Device::Cpu).unwrap();
    let call = |init: Initializer| {
        Dense::new(2).named("head").kernel_initializer(init).call(&x, Mode::Train).unwrap_err().to_string()
    };
    // The error names the layer and its variable, then the initializer and the bad value.
    let named = ["layer head", "kernel initializer"];
    assert_names(&call(Initializer::Constant(f64::NAN)), &[&named[..], &["Constant", "NaN"]].concat());
    let msg = call(Initializer::RandomNormal { mean: 0.0, std: -1.0 });
    assert_names(&msg, &[&named[..], &["RandomNormal", "std -1"]].concat());
    let msg = call(Initializer::RandomUniform { low: 0.0, high: f64::INFINITY });
    assert_names(&msg, &[&named[..], &["RandomUniform", "inf"]].concat());
    let msg = BatchNormalization::new()
        .named("bn")
        .gamma_initializer(Initializer::Constant(f64::INFINITY))
        .call(&Tensor::ones([2, 4], DType::F32, &Device::Cpu).unwrap(), Mode::Train)
        .unwrap_err()
        .to_string();
    assert_names(&msg, &["layer bn", "gamma initializer", "Constant(inf)"]);
}

#[test]
fn shape_options_near_usize_max_are_errors() {
    let x = Tensor::ones([2, 4, 4, 3], DType::F32, &Device::Cpu).unwrap();
    let msg = Reshape::new(&[isize::MAX, isize::MAX]).call(&x, Mode::Train).unwrap_err().to_string();
    assert_names(&msg, &["reshape", "overflows"]);
    let msg = Cropping2D::new(((usize::MAX, 1), (0, 0))).call(&x, Mode::Train).unwrap_err().to_string();
    assert_names(&msg, &["cropping", "leaves nothing"]);
}

#[test]
fn normalization_epsilon_must_be_positive() {
    let x = Tensor::ones([2, 4, 4, 4], DType::F32, &Device::Cpu).unwrap();
    for eps in [0.0, -1e-3, f64::NAN] {
        let msg = LayerNormalization::new().epsilon(eps).call(&x, Mode::Train).unwrap_err().to_string();
        assert_names(&msg, &["epsilon", &eps.to_string()]);
        let msg = GroupNormalization::new(2).epsilon(eps).call(&x, Mode::Train).unwrap_err().to_string();
        assert_names(&msg, &["epsilon", &eps.to_string()]);
    }
}

#[test]
fn evaluating_no_batches_is_an_error_not_a_nan_loss() {
    let model = Dense::new(2);
    let empty = TensorDataset::new(
        Tensor::zeros([0, 2], DType::F32, &Device::Cpu).unwrap(),
        Tensor::from_vec(Vec::<i64>::new(), [0], &Device::Cpu).unwrap(),
        4,
    )
    .unwrap();
    let mut trainer = Trainer::new(&model, Adam::new(0.1), |y, p| losses::sparse_categorical_crossentropy(y, p, true));
    assert_names(&trainer.evaluate(&empty).unwrap_err().to_string(), &["evaluate", "no batches"]);
    let train = TensorDataset::new(
        Tensor::zeros([4, 2], DType::F32, &Device::Cpu).unwrap(),
        Tensor::from_vec(vec![0i64; 4], [4], &Device::Cpu).unwrap(),
        2,
    )
    .unwrap();
    let options = tapegrad_layers::training::FitOptions::new().epochs(1).verbose(0).validation_data(&empty);
    assert_names(&trainer.fit(&train, options).unwrap_err().to_string(), &["fit", "validation data", "no batches"]);
}
