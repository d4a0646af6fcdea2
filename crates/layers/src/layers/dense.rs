//! [`Dense`]: `activation(x @ kernel + bias)` over the last axis.

use super::builders::weight_builders;
use super::get_or_build;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::mixed_precision::{read_variable, variable_dtype, Policy};
use crate::naming::unique_name;
use crate::{ActivationFn, Error, InputSpec, Layer, Mode, Result};
use std::sync::OnceLock;
use tapegrad_tensor::{Shape, Tensor, Variable};

/// A densely connected layer (Keras' `layers.Dense`). The kernel is `[in, out]` (Keras'
/// layout; a PyTorch `Linear` weight is its transpose); inputs of rank above 2 are
/// transformed along their last axis.
#[derive(Debug)]
pub struct Dense {
    name: String,
    units: usize,
    use_bias: bool,
    activation: ActivationFn,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<DenseWeights>,
}

#[derive(Debug)]
struct DenseWeights {
    kernel: Variable,
    bias: Option<Variable>,
}

impl Dense {
    /// A layer with `units` outputs, a bias, no activation, a glorot-uniform kernel and a
    /// zero bias (Keras' defaults).
    pub fn new(units: usize) -> Self {
        Dense {
            name: unique_name("dense"),
            units,
            use_bias: true,
            activation: ActivationFn::Linear,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    weight_builders!(kernel_initializer);

    /// The number of outputs.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The kernel `[in, out]`, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.kernel)
    }

    /// The bias `[out]`, once built, if the layer has one.
    pub fn bias(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.bias.as_ref())
    }

    fn built(&self, input: &InputSpec) -> Result<&DenseWeights> {
        get_or_build(&self.weights, || {
            if self.units == 0 {
                return Err(Error::layer(&self.name, "units must be at least 1, got 0"));
            }
            let Some(&inputs) = input.shape.dims().last().filter(|_| input.shape.rank() >= 2) else {
                return Err(Error::layer(
                    &self.name,
                    format!("expects inputs of rank 2 or more ([batch, ..., features]), got shape {}", input.shape),
                ));
            };
            let kernel_shape = Shape::new(&[inputs, self.units]);
            let kernel = self.kernel_initializer.initialize_for(
                (&self.name, "kernel"),
                &kernel_shape,
                Fans::dense(inputs, self.units),
                variable_dtype(self.dtype_policy, input.dtype),
                &input.device,
            )?;
            let kernel = Variable::new(format!("{}/kernel", self.name), kernel, true);
            let bias = if self.use_bias {
                let shape = Shape::new(&[self.units]);
                let b = self.bias_initializer.initialize_for(
                    (&self.name, "bias"),
                    &shape,
                    Fans::vector(self.units),
                    variable_dtype(self.dtype_policy, input.dtype),
                    &input.device,
                )?;
                Some(Variable::new(format!("{}/bias", self.name), b, true))
            } else {
                None
            };
            Ok(DenseWeights { kernel, bias })
        })
    }

    fn compute(&self, x: &Tensor, w: &DenseWeights) -> Result<Tensor> {
        let kernel = read_variable(&w.kernel).in_layer(&self.name)?;
        let inputs = kernel.dims()[0];
        if x.dims().last() != Some(&inputs) {
            return Err(Error::layer(
                &self.name,
                format!("was built for {inputs} input features but got an input of shape {}", x.shape()),
            ));
        }
        let name = &self.name;
        let flat =
            if x.rank() == 2 { x.clone() } else { x.reshape([x.elem_count() / inputs, inputs]).in_layer(name)? };
        let mut y = flat.matmul(&kernel).in_layer(name)?;
        if let Some(b) = &w.bias {
            y = y.add(&read_variable(b).in_layer(name)?).in_layer(name)?;
        }
        if x.rank() != 2 {
            let mut dims = x.dims().to_vec();
            *dims.last_mut().expect("rank checked") = self.units;
            y = y.reshape(dims).in_layer(name)?;
        }
        self.activation.apply(&y).in_layer(name)
    }
}

impl Layer for Dense {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(input))?;
        self.compute(input, w)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    fn build(&self, input: &InputSpec) -> Result<()> {
        self.built(input).map(|_| ())
    }

    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        if let Some(w) = self.weights.get() {
            visit("kernel", &w.kernel);
            if let Some(b) = &w.bias {
                visit("bias", b);
            }
        }
    }
}
