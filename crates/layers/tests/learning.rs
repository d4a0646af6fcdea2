//! A small CNN built from the layers learns a synthetic image task: which quadrant of a
//! noisy 16x16 image holds a blob. The blob's position within its quadrant varies, and the
//! noise is strong, so a single pixel does not tell the answer.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tapegrad_layers::optimizers::{Adam, Optimizer};
use tapegrad_layers::{
    losses, metrics, random, Activation, BatchNormalization, Conv2D, Dense, Flatten, Layer, MaxPool2D, Mode, Padding,
    Result, Sequential,
};
use tapegrad_tensor::{Device, GradientTape, Tensor};

const SIZE: usize = 16;

/// `n` images [n, 16, 16, 1] and their quadrant labels (0 top-left, 1 top-right, 2
/// bottom-left, 3 bottom-right).
fn blobs(n: usize, rng: &mut StdRng) -> (Tensor, Tensor) {
    let noise = Normal::new(0.0, 0.5).unwrap();
    let mut pixels = Vec::with_capacity(n * SIZE * SIZE);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let quadrant = rng.random_range(0..4usize);
        let half = SIZE as f64 / 2.0;
        let cy = (quadrant / 2) as f64 * half + rng.random_range(2.0..half - 2.0);
        let cx = (quadrant % 2) as f64 * half + rng.random_range(2.0..half - 2.0);
        for y in 0..SIZE {
            for x in 0..SIZE {
                let d2 = (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                pixels.push(((-d2 / 4.0).exp() + noise.sample(rng)) as f32);
            }
        }
        labels.push(quadrant as i64);
    }
    (
        Tensor::from_vec(pixels, [n, SIZE, SIZE, 1], &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, [n], &Device::Cpu).unwrap(),
    )
}

#[test]
fn small_cnn_learns_the_quadrant_task() -> Result<()> {
    random::set_seed(2024);
    let mut rng = StdRng::seed_from_u64(7);
    let model = Sequential::new()
        .add(Conv2D::new(8, 3).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(MaxPool2D::new(2)) // 8x8
        .add(Conv2D::new(8, 3).padding(Padding::Same))
        .add(Activation::relu())
        .add(MaxPool2D::new(2)) // 4x4
        .add(Flatten::new())
        .add(Dense::new(4));
    let mut optimizer = Adam::new(1e-2);
    let (test_x, test_y) = blobs(400, &mut rng);
    let untrained = metrics::accuracy(&test_y, &model.call(&test_x, Mode::Infer)?)?;
    assert!(untrained < 0.5, "an untrained model should be near chance (0.25), got {untrained}");
    let mut accuracy = 0.0;
    for step in 0..300 {
        let (x, labels) = blobs(32, &mut rng);
        let tape = GradientTape::new();
        let loss = tape.record(|| {
            let logits = model.call(&x, Mode::Train)?;
            losses::sparse_categorical_crossentropy(&labels, &logits, true)
        })?;
        let grads = tape.gradient(&loss, &model.trainable_variables())?;
        optimizer.apply_gradients(&grads, &model.trainable_variables())?;
        if step % 50 == 49 {
            accuracy = metrics::accuracy(&test_y, &model.call(&test_x, Mode::Infer)?)?;
            println!("step {}: loss {:.4}, test accuracy {accuracy}", step + 1, loss.to_scalar::<f32>()?);
            if accuracy >= 0.97 {
                break;
            }
        }
    }
    assert!(accuracy >= 0.95, "test accuracy {accuracy} after {} steps", optimizer.iterations());
    Ok(())
}
