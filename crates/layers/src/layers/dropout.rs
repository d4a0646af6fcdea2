//! [`Dropout`]: zeroes a fraction of the inputs while training.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{random, Error, Layer, Mode, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;
use tapegrad_tensor::{DType, Device, Tensor};

/// Sets each input to 0 with probability `rate` in [`Mode::Train`] and scales the rest by
/// `1 / (1 - rate)` (Keras' `layers.Dropout`); the identity in [`Mode::Infer`]. The mask
/// comes from the layer's own generator, seeded explicitly or from the thread's seeded
/// generator when the layer is made.
#[derive(Debug)]
pub struct Dropout {
    name: String,
    rate: f64,
    rng: Mutex<StdRng>,
}

impl Dropout {
    /// A dropout layer with the given drop probability, which must be in `[0, 1)`: another
    /// value is an error naming it at the layer's first call (build), so that the builder
    /// chains of `Sequential::add` need no `?`.
    pub fn new(rate: f64) -> Self {
        Dropout { name: unique_name("dropout"), rate, rng: Mutex::new(random::fork()) }
    }

    /// The same layer with its generator reseeded.
    pub fn seed(self, seed: u64) -> Self {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = StdRng::seed_from_u64(seed);
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The drop probability.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn compute(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::layer(&self.name, format!("rate must be in [0, 1), got {}", self.rate)));
        }
        if !mode.is_train() || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let name = &self.name;
        let uniform = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            Tensor::rand_uniform(x.shape().clone(), 0.0, 1.0, DType::F32, &Device::Cpu, &mut *rng).in_layer(name)?
        };
        // keep = u >= rate, scaled so that the expected output equals the input.
        let mask = uniform
            .ge_scalar(self.rate)
            .and_then(|m| m.cast(x.dtype()))
            .and_then(|m| m.mul_scalar(1.0 / (1.0 - self.rate)))
            .and_then(|m| m.to_device(&x.device()))
            .in_layer(name)?;
        x.mul(&mask).in_layer(name)
    }
}

impl Layer for Dropout {
    fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        self.compute(input, mode)
    }

    fn host_state(&self) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(self.rng.lock().unwrap_or_else(|e| e.into_inner()).clone()))
    }

    fn restore_host_state(&self, state: &dyn std::any::Any) {
        if let Some(rng) = state.downcast_ref::<StdRng>() {
            *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = rng.clone();
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
