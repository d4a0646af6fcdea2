//! [`Flatten`]: `[n, ...] -> [n, prod(...)]`.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// Flattens every axis after the batch axis (Keras' `layers.Flatten()`).
#[derive(Debug)]
pub struct Flatten {
    name: String,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Flatten { name: unique_name("flatten") }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Flatten {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        if input.rank() == 0 {
            return Err(Error::layer(&self.name, "cannot flatten a scalar: the input needs a batch axis"));
        }
        input.flatten_from_1().in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
