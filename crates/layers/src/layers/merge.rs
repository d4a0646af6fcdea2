//! Merge layers, which combine several tensors into one (Keras' `layers.Add`,
//! `Concatenate`, ...), and their functional forms ([`add`], [`concatenate`], ...).
//!
//! They are [`Layer`]s called through [`Layer::call_many`]; their single-input
//! [`Layer::call`] is an error naming the layer. They hold no variables, so a composite
//! layer may keep one as a field, call it, and visit it as a sublayer to give it a row in
//! `summary()`.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::{Shape, Tensor};

/// The elementwise merges: inputs of one shape, combined element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elementwise {
    Add,
    Subtract,
    Multiply,
    Average,
    Maximum,
    Minimum,
}

impl Elementwise {
    fn apply(self, name: &str, inputs: &[&Tensor]) -> Result<Tensor> {
        let first = check_same_shapes(name, inputs)?;
        if self == Elementwise::Subtract && inputs.len() != 2 {
            return Err(Error::layer(name, format!("Subtract takes exactly two inputs (a - b), got {}", inputs.len())));
        }
        let mut out = first.clone();
        for t in &inputs[1..] {
            out = match self {
                Elementwise::Add | Elementwise::Average => out.add(t),
                Elementwise::Subtract => out.sub(t),
                Elementwise::Multiply => out.mul(t),
                Elementwise::Maximum => out.maximum(t),
                Elementwise::Minimum => out.minimum(t),
            }
            .in_layer(name)?;
        }
        if self == Elementwise::Average {
            out = out.mul_scalar(1.0 / inputs.len() as f64).in_layer(name)?;
        }
        Ok(out)
    }
}

/// The first input, once every input is known to have its shape (Keras requires equal
/// shapes; there is no implicit broadcasting between merged tensors).
fn check_same_shapes<'a>(name: &str, inputs: &[&'a Tensor]) -> Result<&'a Tensor> {
    let first = *inputs.first().ok_or_else(|| Error::layer(name, "needs at least one input, got none"))?;
    for (i, t) in inputs.iter().enumerate().skip(1) {
        if t.shape() != first.shape() {
            return Err(Error::layer(
                name,
                format!(
                    "inputs must all have one shape, but input {i} has shape {} and input 0 has shape {} (all: {})",
                    t.shape(),
                    first.shape(),
                    list_shapes(inputs)
                ),
            ));
        }
    }
    Ok(first)
}

fn list_shapes(inputs: &[&Tensor]) -> String {
    inputs.iter().map(|t| t.shape().to_string()).collect::<Vec<_>>().join(", ")
}

fn single_input_error(name: &str, type_name: &str) -> Error {
    Error::layer(
        name,
        format!("{type_name} is a merge layer: call it on a list of inputs with call_many(&[&a, &b], mode)"),
    )
}

macro_rules! elementwise_merge_layer {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $prefix:literal, $(#[$fn_doc:meta])* $function:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            name: String,
        }

        impl $name {
            /// The merge layer (Keras' defaults; it has no options).
            pub fn new() -> Self {
                $name { name: unique_name($prefix) }
            }

            /// The same layer under another name.
            pub fn named(mut self, name: impl Into<String>) -> Self {
                self.name = name.into();
                self
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Layer for $name {
            fn forward(&self, _input: &Tensor, _mode: Mode) -> Result<Tensor> {
                Err(single_input_error(&self.name, stringify!($name)))
            }

            fn forward_many(&self, inputs: &[&Tensor], _mode: Mode) -> Result<Tensor> {
                $kind.apply(&self.name, inputs)
            }

            fn name(&self) -> &str {
                &self.name
            }
        }

        $(#[$fn_doc])*
        pub fn $function(inputs: &[&Tensor]) -> Result<Tensor> {
            $kind.apply($prefix, inputs)
        }
    };
}

elementwise_merge_layer!(
    /// The elementwise sum of inputs of one shape (Keras' `layers.Add`).
    ///
    /// ```
    /// use tapegrad_layers::{Add, Layer, Mode};
    /// use tapegrad_tensor::{DType, Device, Tensor};
    /// # fn main() -> tapegrad_layers::Result<()> {
    /// let a = Tensor::ones([2, 3], DType::F32, &Device::Cpu)?;
    /// let sum = Add::new().call_many(&[&a, &a, &a], Mode::Infer)?;
    /// assert_eq!(sum.to_vec::<f32>()?, vec![3.0; 6]);
    /// # Ok(())
    /// # }
    /// ```
    Add,
    Elementwise::Add,
    "add",
    /// The elementwise sum of inputs of one shape (Keras' functional `layers.add([a, b])`).
    add
);

elementwise_merge_layer!(
    /// `a - b` of exactly two inputs of one shape (Keras' `layers.Subtract`).
    Subtract,
    Elementwise::Subtract,
    "subtract",
    /// `a - b` of exactly two inputs of one shape (Keras' `layers.subtract([a, b])`).
    subtract
);

elementwise_merge_layer!(
    /// The elementwise product of inputs of one shape (Keras' `layers.Multiply`).
    Multiply,
    Elementwise::Multiply,
    "multiply",
    /// The elementwise product of inputs of one shape (Keras' `layers.multiply`).
    multiply
);

elementwise_merge_layer!(
    /// The elementwise mean of inputs of one shape (Keras' `layers.Average`).
    Average,
    Elementwise::Average,
    "average",
    /// The elementwise mean of inputs of one shape (Keras' `layers.average`).
    average
);

elementwise_merge_layer!(
    /// The elementwise maximum of inputs of one shape (Keras' `layers.Maximum`); the
    /// gradient goes to the larger input, the first one on ties.
    Maximum,
    Elementwise::Maximum,
    "maximum",
    /// The elementwise maximum of inputs of one shape (Keras' `layers.maximum`).
    maximum
);

elementwise_merge_layer!(
    /// The elementwise minimum of inputs of one shape (Keras' `layers.Minimum`).
    Minimum,
    Elementwise::Minimum,
    "minimum",
    /// The elementwise minimum of inputs of one shape (Keras' `layers.minimum`).
    minimum
);

/// Joins inputs along one axis (Keras' `layers.Concatenate(axis)`): their shapes must match
/// on every other axis. The axis counts the batch axis (0) as Keras does, and a negative
/// axis counts from the end (`-1`, Keras' default, is the channels of NHWC images).
///
/// ```
/// use tapegrad_layers::{Concatenate, Layer, Mode};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let a = Tensor::ones([2, 8, 8, 16], DType::F32, &Device::Cpu)?;
/// let b = Tensor::ones([2, 8, 8, 32], DType::F32, &Device::Cpu)?;
/// let y = Concatenate::new(-1).call_many(&[&a, &b], Mode::Infer)?;
/// assert_eq!(y.dims(), &[2, 8, 8, 48]);
/// assert!(Concatenate::new(4).call_many(&[&a, &b], Mode::Infer).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Concatenate {
    name: String,
    axis: isize,
}

impl Concatenate {
    /// Concatenation along `axis` (batch axis included; negative counts from the end).
    pub fn new(axis: isize) -> Self {
        Concatenate { name: unique_name("concatenate"), axis }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The axis it concatenates along, as given.
    pub fn axis(&self) -> isize {
        self.axis
    }
}

impl Default for Concatenate {
    /// Concatenation along the last axis (Keras' default `axis=-1`).
    fn default() -> Self {
        Self::new(-1)
    }
}

impl Layer for Concatenate {
    fn forward(&self, _input: &Tensor, _mode: Mode) -> Result<Tensor> {
        Err(single_input_error(&self.name, "Concatenate"))
    }

    fn forward_many(&self, inputs: &[&Tensor], _mode: Mode) -> Result<Tensor> {
        concatenate_checked(&self.name, inputs, self.axis)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Joins inputs along `axis` (Keras' functional `layers.concatenate([a, b], axis)`).
pub fn concatenate(inputs: &[&Tensor], axis: isize) -> Result<Tensor> {
    concatenate_checked("concatenate", inputs, axis)
}

fn concatenate_checked(name: &str, inputs: &[&Tensor], axis: isize) -> Result<Tensor> {
    let first = *inputs.first().ok_or_else(|| Error::layer(name, "needs at least one input, got none"))?;
    let rank = first.rank();
    let resolved = if axis < 0 { axis + rank as isize } else { axis };
    if resolved < 0 || resolved >= rank as isize {
        return Err(Error::layer(
            name,
            format!(
                "axis {axis} is out of range for inputs of rank {rank} (valid: {} to {}); input shapes: {}",
                -(rank as isize),
                rank as isize - 1,
                list_shapes(inputs)
            ),
        ));
    }
    let a = resolved as usize;
    let without_axis = |s: &Shape| {
        let mut d = s.dims().to_vec();
        d.remove(a);
        d
    };
    for (i, t) in inputs.iter().enumerate().skip(1) {
        if t.rank() != rank || without_axis(t.shape()) != without_axis(first.shape()) {
            return Err(Error::layer(
                name,
                format!(
                    "inputs must match on every axis but the concatenation axis {axis}, but input {i} has shape {} \
                     and input 0 has shape {} (all: {})",
                    t.shape(),
                    first.shape(),
                    list_shapes(inputs)
                ),
            ));
        }
    }
    Tensor::concat(inputs, axis).in_layer(name)
}
