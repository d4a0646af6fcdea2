//! [`Add`] and [`add`]: the elementwise sum of several tensors (Keras' `layers.add`).

use crate::naming::unique_name;
use crate::{Error, Result};
use tapegrad_tensor::Tensor;

/// Sums tensors of one shape, as Keras' `layers.Add()`. It takes several inputs, so it is
/// not a [`Layer`](crate::Layer) (whose `call` takes one); it has no variables.
#[derive(Debug)]
pub struct Add {
    name: String,
}

impl Add {
    /// An add layer.
    pub fn new() -> Self {
        Add { name: unique_name("add") }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The elementwise sum of `inputs` (at least one; all of the same shape).
    pub fn call(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        sum_same_shape(&self.name, inputs)
    }
}

impl Default for Add {
    fn default() -> Self {
        Self::new()
    }
}

/// The elementwise sum of tensors of one shape (Keras' functional `layers.add([a, b])`).
pub fn add(inputs: &[&Tensor]) -> Result<Tensor> {
    sum_same_shape("add", inputs)
}

fn sum_same_shape(name: &str, inputs: &[&Tensor]) -> Result<Tensor> {
    let (first, rest) = inputs.split_first().ok_or_else(|| Error::layer(name, "needs at least one input"))?;
    let mut total = (*first).clone();
    for (i, t) in rest.iter().enumerate() {
        if t.shape() != first.shape() {
            return Err(Error::layer(
                name,
                format!("input {} has shape {} but input 0 has shape {}", i + 1, t.shape(), first.shape()),
            ));
        }
        total = total.add(t).map_err(|e| Error::in_layer(name, e))?;
    }
    Ok(total)
}
