//! `Trainer::fit` on CUDA against the same fit on the CPU: a small CNN (convolution, batch
//! norm, pooling, dense) from the same weights on the same shuffled batches gives the same
//! per-epoch losses and accuracies, validation included, and the same weights.
//!
//! Without a usable GPU the test prints `SKIPPED <test>: <reason>` and passes;
//! `REQUIRE_GPU=1` turns that into a failure. In CI it runs on the emulated GPU
//! (scripts/cuda-emu).
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapegrad::layers::optimizers::Adam;
use tapegrad::layers::training::{FitOptions, History, SparseCategoricalAccuracy, TensorDataset, Trainer};
use tapegrad::layers::{
    losses, Activation, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, InputSpec, Layer, Padding,
    Sequential,
};
use tapegrad::tensor::testing::cuda_device_or_skip;
use tapegrad::{DType, Device, Tensor};

fn model() -> Sequential {
    Sequential::new()
        .add(Conv2D::new(8, 3).padding(Padding::Same).use_bias(false))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3))
}

/// Images whose class shows in their mean colour, so that the CNN learns within 2 epochs.
fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..3)).collect();
    let mut pixels = Vec::with_capacity(n * 8 * 8 * 3);
    for &label in &labels {
        for _ in 0..64 {
            for c in 0..3 {
                let signal = if c as i64 == label { 1.0 } else { 0.0 };
                pixels.push(signal + rng.random_range(-0.5f32..0.5));
            }
        }
    }
    (
        Tensor::from_vec(pixels, [n, 8, 8, 3], &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, [n], &Device::Cpu).unwrap(),
    )
}

fn fit_on(device: Device, weights_from: Option<&Sequential>) -> (Sequential, History) {
    tapegrad::layers::random::set_seed(5);
    let model = model();
    model.build(&InputSpec::new([16, 8, 8, 3]).with_device(device)).unwrap();
    if let Some(source) = weights_from {
        for (to, from) in model.variables().iter().zip(source.variables()) {
            to.assign(from.value_untracked().to_device(&device).unwrap()).unwrap();
        }
    }
    let (x, y) = data(64, 1);
    let (vx, vy) = data(32, 2);
    let train = TensorDataset::new(x, y, 16).unwrap().shuffle(3);
    let val = TensorDataset::new(vx, vy, 16).unwrap();
    let loss = |y: &Tensor, p: &Tensor| losses::sparse_categorical_crossentropy(y, p, true);
    let mut trainer =
        Trainer::new(&model, Adam::new(0.01), loss).metric(SparseCategoricalAccuracy::new()).device(device);
    let history = trainer.fit(&train, FitOptions::new().epochs(2).validation_data(&val).verbose(0)).unwrap();
    drop(trainer);
    (model, history)
}

#[test]
fn fit_on_cuda_matches_fit_on_the_cpu() {
    let Some(gpu) = cuda_device_or_skip("fit_on_cuda_matches_fit_on_the_cpu") else { return };
    let (cpu_model, cpu) = fit_on(Device::Cpu, None);
    // Same initial weights: the CPU model's first values, rebuilt with the same seed.
    let (initial, _) = {
        tapegrad::layers::random::set_seed(5);
        let m = model();
        m.build(&InputSpec::new([16, 8, 8, 3])).unwrap();
        (m, ())
    };
    let (gpu_model, gpu) = fit_on(gpu, Some(&initial));
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        let (a, b) = (cpu.get(key).unwrap(), gpu.get(key).unwrap());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{key}: CPU {a:?}, CUDA {b:?}");
        }
    }
    assert!(cpu.last("val_accuracy").unwrap() > 0.5, "the CNN learns: {cpu:?}");
    for (c, g) in cpu_model.variables().iter().zip(gpu_model.variables()) {
        let (c, g) = (c.value_untracked().to_vec_f64().unwrap(), g.value_untracked().to_vec_f64().unwrap());
        let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = c.iter().zip(&g).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-4 * (1.0 + scale), "weights differ by {diff} (scale {scale})");
    }
    let _ = DType::F32;
}
