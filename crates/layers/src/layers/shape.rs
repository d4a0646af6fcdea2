//! Shape layers: [`Reshape`], [`Permute`], [`RepeatVector`]. Their arguments leave out the
//! batch axis, as Keras' do.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// Reshapes every example to `target` (Keras' `layers.Reshape`): the target leaves out the
/// batch axis, and one of its entries may be `-1`, inferred from the others.
///
/// ```
/// use tapegrad_layers::{Layer, Mode, Reshape};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let x = Tensor::ones([2, 12], DType::F32, &Device::Cpu)?;
/// assert_eq!(Reshape::new(&[3, 4]).call(&x, Mode::Infer)?.dims(), &[2, 3, 4]);
/// assert_eq!(Reshape::new(&[-1, 2]).call(&x, Mode::Infer)?.dims(), &[2, 6, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Reshape {
    name: String,
    target: Vec<isize>,
}

impl Reshape {
    /// Reshapes each example to `target` (batch axis left out; at most one `-1`).
    pub fn new(target: &[isize]) -> Self {
        Reshape { name: unique_name("reshape"), target: target.to_vec() }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The output shape of an input of shape `dims` (batch axis first).
    fn output_dims(&self, dims: &[usize]) -> Result<Vec<usize>> {
        let Some((&batch, example)) = dims.split_first() else {
            return Err(Error::layer(&self.name, "cannot reshape a scalar: the input needs a batch axis"));
        };
        let wrong = |why: String| {
            Error::layer(&self.name, format!("target shape {:?} {why} (input shape {dims:?})", self.target))
        };
        if let Some(bad) = self.target.iter().find(|&&d| d == 0 || d < -1) {
            return Err(wrong(format!("has the entry {bad}; entries must be positive or -1")));
        }
        let inferred: Vec<usize> = (0..self.target.len()).filter(|&i| self.target[i] == -1).collect();
        if inferred.len() > 1 {
            return Err(wrong("has more than one -1".to_string()));
        }
        // Checked products: a target such as [isize::MAX, 2] is an error, not an overflow.
        let product = |it: &mut dyn Iterator<Item = usize>| -> Option<usize> {
            let v: Vec<usize> = it.collect();
            if v.contains(&0) {
                return Some(0);
            }
            v.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
        };
        let elements = product(&mut example.iter().copied())
            .ok_or_else(|| wrong("cannot apply: the input's example has too many elements".to_string()))?;
        let known = product(&mut self.target.iter().filter(|&&d| d > 0).map(|&d| d as usize))
            .ok_or_else(|| wrong("has entries whose product overflows usize".to_string()))?;
        let mut out = vec![batch];
        out.extend(self.target.iter().map(|&d| d.max(0) as usize));
        match inferred.first() {
            Some(&i) if known > 0 && elements.is_multiple_of(known) => out[i + 1] = elements / known,
            None if known == elements => {}
            _ => {
                return Err(wrong(format!(
                    "does not fit the {elements} elements of each example (product of the known entries: {known})"
                )))
            }
        }
        Ok(out)
    }
}

impl Layer for Reshape {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let dims = self.output_dims(input.dims())?;
        input.reshape(dims).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Permutes the axes of every example (Keras' `layers.Permute`): `dims` numbers the axes
/// from 1, leaving out the batch axis, so `Permute::new(&[2, 1])` swaps the two axes of
/// `[batch, a, b]` inputs.
#[derive(Debug)]
pub struct Permute {
    name: String,
    dims: Vec<usize>,
}

impl Permute {
    /// Permutes the example axes into the order `dims` (1-based, batch axis left out).
    pub fn new(dims: &[usize]) -> Self {
        Permute { name: unique_name("permute"), dims: dims.to_vec() }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Layer for Permute {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let example_rank = input.rank().saturating_sub(1);
        let mut sorted = self.dims.clone();
        sorted.sort_unstable();
        if input.rank() == 0 || sorted != (1..=example_rank).collect::<Vec<_>>() {
            return Err(Error::layer(
                &self.name,
                format!(
                    "dims {:?} must be a permutation of 1..={example_rank} (the axes after the batch axis) for an \
                     input of shape {}",
                    self.dims,
                    input.shape()
                ),
            ));
        }
        let mut perm = vec![0];
        perm.extend(&self.dims);
        input.permute(&perm).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Repeats each example `n` times, `[batch, features] -> [batch, n, features]` (Keras'
/// `layers.RepeatVector`).
#[derive(Debug)]
pub struct RepeatVector {
    name: String,
    n: usize,
}

impl RepeatVector {
    /// Repeats the input `n` times along a new axis 1.
    pub fn new(n: usize) -> Self {
        RepeatVector { name: unique_name("repeat_vector"), n }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Layer for RepeatVector {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let &[batch, features] = input.dims() else {
            return Err(Error::layer(
                &self.name,
                format!("expects inputs of rank 2 ([batch, features]), got shape {}", input.shape()),
            ));
        };
        let repeated = input.unsqueeze(1).and_then(|x| x.broadcast_to([batch, self.n, features]));
        repeated.in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
