//! Six training steps of a small CNN against PyTorch's trajectory of the same model with
//! Keras semantics (tests/fixtures/make_trajectory_fixture.py made the fixture, in float64):
//! TF's asymmetric 'same' padding for a strided convolution and for max pooling, batch norm
//! with Keras' momentum, epsilon and moving statistics (the moving variance from the unbiased
//! batch variance, as TF's fused kernel), global average pooling, a dense
//! layer, sparse cross-entropy and Keras' Adam. Starting from the fixture's weights and fed
//! its batches, tapegrad (f32) must give the same loss at every step, the same weights and
//! moving statistics at the end, and the same inference-mode logits on a held-out batch.

use safetensors::SafeTensors;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::{
    losses, Activation, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, InputSpec, Layer, MaxPool2D, Mode,
    Padding, Sequential,
};
use tapegrad::{DType, Device, GradientTape, Tensor, Variable};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trajectory.safetensors");

/// A fixture tensor as f64 values and its shape.
fn read(file: &SafeTensors, name: &str) -> (Vec<f64>, Vec<usize>) {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    let bytes = view.data();
    let values = match view.dtype() {
        safetensors::Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => {
            bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
        }
        other => panic!("fixture tensor {name}: unexpected dtype {other:?}"),
    };
    (values, view.shape().to_vec())
}

fn tensor(file: &SafeTensors, name: &str, dtype: DType) -> Tensor {
    let (values, shape) = read(file, name);
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap().cast(dtype).unwrap()
}

fn model() -> Sequential {
    Sequential::new()
        .add(Conv2D::new(8, 3).strides(2).padding(Padding::Same))
        .add(Activation::relu())
        .add(MaxPool2D::new(2).strides(1).padding(Padding::Same))
        .add(Conv2D::new(16, 3).padding(Padding::Same).use_bias(false))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(5))
}

/// The model's variables in layer order, each with the fixture name it corresponds to.
fn named_variables(model: &Sequential) -> Vec<(&'static str, Variable)> {
    let names = [
        "conv1_kernel",
        "conv1_bias",
        "conv2_kernel",
        "bn_gamma",
        "bn_beta",
        "bn_moving_mean",
        "bn_moving_var",
        "dense_kernel",
        "dense_bias",
    ];
    let vars = model.variables();
    assert_eq!(
        vars.len(),
        names.len(),
        "variables: {:?}",
        vars.iter().map(|v| v.name().to_string()).collect::<Vec<_>>()
    );
    names.into_iter().zip(vars).collect()
}

fn assert_close(what: &str, ours: &[f64], torch: &[f64], tol: f64) {
    assert_eq!(ours.len(), torch.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(torch).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: tapegrad {a} vs PyTorch {b}");
    }
}

#[test]
fn small_cnn_follows_pytorchs_trajectory_with_keras_semantics() {
    follow_the_trajectory(Device::Cpu);
}

/// The same on a GPU (CI: the emulated one, scripts/cuda-emu); skips with the reason
/// where none is usable, unless `REQUIRE_GPU=1`.
#[cfg(feature = "cuda")]
#[test]
fn small_cnn_follows_pytorchs_trajectory_on_the_gpu() {
    match tapegrad::tensor::cuda::ensure_available(0) {
        Ok(()) => follow_the_trajectory(Device::Cuda(0)),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("REQUIRE_GPU=1 but {e}"),
        Err(e) => eprintln!("SKIPPED small_cnn_follows_pytorchs_trajectory_on_the_gpu: {e}"),
    }
}

fn follow_the_trajectory(device: Device) {
    // From the source tree where it was built, else from the working directory (the GPU
    // bundle runs from a copy of the repository on another machine).
    let path = if std::path::Path::new(FIXTURE).exists() { FIXTURE } else { "tests/fixtures/trajectory.safetensors" };
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    let file = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let (_, x_shape) = read(&file, "x");
    let (steps, batch) = (x_shape[0] - 1, x_shape[1]);

    let model = model();
    model.build(&InputSpec::new([batch, x_shape[2], x_shape[3], x_shape[4]]).with_device(device)).unwrap();
    let vars = named_variables(&model);
    for (name, var) in &vars {
        if !name.contains("moving") {
            let init = tensor(&file, &format!("init.{name}"), DType::F32).to_device(&device).unwrap();
            assert_eq!(init.dims(), var.value_untracked().dims(), "{name} ({})", var.name());
            var.assign(init).unwrap();
        }
    }

    let xs = tensor(&file, "x", DType::F32).to_device(&device).unwrap();
    let ys = tensor(&file, "y", DType::I64).to_device(&device).unwrap();
    let (expected_losses, _) = read(&file, "losses");
    let mut optimizer = Adam::new(1e-2);
    let trainable = model.trainable_variables();
    for (step, &expected_loss) in expected_losses.iter().enumerate().take(steps) {
        let x = xs.narrow(0, step, 1).unwrap().squeeze(0).unwrap();
        let y = ys.narrow(0, step, 1).unwrap().squeeze(0).unwrap();
        let tape = GradientTape::new();
        let loss =
            tape.record(|| losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true)).unwrap();
        let grads = tape.gradient(&loss, &trainable).unwrap();
        optimizer.apply_gradients(&grads, &trainable).unwrap();
        let loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert_close(&format!("loss of step {step}"), &[loss], &[expected_loss], 1e-5);
    }

    for (name, var) in &vars {
        let (expected, _) = read(&file, &format!("final.{name}"));
        assert_close(
            &format!("{name} after {steps} steps"),
            &var.value_untracked().to_vec_f64().unwrap(),
            &expected,
            1e-4,
        );
    }
    let heldout = xs.narrow(0, steps, 1).unwrap().squeeze(0).unwrap();
    let logits = model.call(&heldout, Mode::Infer).unwrap().to_vec_f64().unwrap();
    let (expected, _) = read(&file, "heldout_logits");
    assert_close("inference logits of the held-out batch", &logits, &expected, 1e-4);
}
