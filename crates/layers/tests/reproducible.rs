//! CPU training is bit-reproducible: a small CNN (convolution, batch norm, pooling, dense,
//! Adam) trained 20 steps in a 2-thread pool twice gives byte-identical checkpoints, and
//! the thread count does not change the result either (see docs/architecture.md,
//! "Reproducibility").

use tapegrad_layers::checkpoint;
use tapegrad_layers::optimizers::{Adam, Optimizer};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::{
    losses, Activation, BatchNormalization, Conv2D, Dense, Flatten, InputSpec, Layer, MaxPool2D, Mode, Padding, Result,
    Sequential,
};
use tapegrad_tensor::{Device, GradientTape, Tensor};

const STEPS: usize = 20;

/// Trains in a pool of `threads` threads and returns the checkpoint's bytes.
fn train(threads: usize, name: &str) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| -> Result<Vec<u8>> {
        set_seed(7);
        let model = Sequential::new()
            .add(Conv2D::new(8, 3).padding(Padding::Same))
            .add(BatchNormalization::new())
            .add(Activation::relu())
            .add(MaxPool2D::new(2))
            .add(Conv2D::new(8, 3))
            .add(BatchNormalization::new())
            .add(Activation::relu())
            .add(Flatten::new())
            .add(Dense::new(10));
        // 32 images of 16x16: 8,192 batch-norm rows, several reduction tasks in every pass.
        let (n, side) = (32, 16);
        model.build(&InputSpec::new([1, side, side, 3]))?;
        let mut opt = Adam::new(1e-2);
        for step in 0..STEPS {
            let pixels: Vec<f32> =
                (0..n * side * side * 3).map(|i| (((i + step * 131) * 7919) % 1013) as f32 / 1013.0 - 0.5).collect();
            let x = Tensor::from_vec(pixels, [n, side, side, 3], &Device::Cpu)?;
            let y =
                Tensor::from_vec((0..n).map(|i| ((i * 7 + step) % 10) as i64).collect::<Vec<_>>(), [n], &Device::Cpu)?;
            let tape = GradientTape::new();
            let loss =
                tape.record(|| losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true))?;
            let grads = tape.gradient(&loss, &model.trainable_variables())?;
            opt.apply_gradients(&grads, &model.trainable_variables())?;
        }
        let path = std::env::temp_dir().join(format!("tapegrad-repro-{}-{name}.safetensors", std::process::id()));
        checkpoint::save(&path, &model, Some(&opt), STEPS as u64)?;
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        Ok(bytes)
    })
    .unwrap()
}

#[test]
fn two_thread_runs_give_byte_identical_checkpoints() {
    assert!(train(2, "a") == train(2, "b"), "two 2-thread runs of {STEPS} steps differ");
}

/// Holds for this model: its convolutions are single-chunk, and the filter gradient of
/// larger ones still splits by the thread count (docs/architecture.md, "Reproducibility").
#[test]
fn one_and_two_threads_give_byte_identical_checkpoints() {
    assert!(train(1, "one") == train(2, "two"), "a 1-thread run and a 2-thread run differ");
}
