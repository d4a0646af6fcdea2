//! Activation functions and the [`Activation`] and [`ReLU`] layers.

use crate::error::InLayer;
use crate::layer::traced;
use crate::naming::unique_name;
use crate::{Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// An elementwise (or, for softmax, last-axis) activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationFn {
    /// The identity.
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
}

impl ActivationFn {
    /// Applies the function.
    pub fn apply(self, x: &Tensor) -> tapegrad_tensor::Result<Tensor> {
        match self {
            ActivationFn::Linear => Ok(x.clone()),
            ActivationFn::Relu => x.relu(),
            ActivationFn::Sigmoid => x.sigmoid(),
            ActivationFn::Tanh => x.tanh(),
            ActivationFn::Softmax => x.softmax(-1),
        }
    }

    /// The Keras name ("relu").
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationFn::Linear => "linear",
            ActivationFn::Relu => "relu",
            ActivationFn::Sigmoid => "sigmoid",
            ActivationFn::Tanh => "tanh",
            ActivationFn::Softmax => "softmax",
        }
    }
}

impl std::str::FromStr for ActivationFn {
    type Err = crate::Error;

    /// Parses a Keras activation name: "linear", "relu", "sigmoid", "tanh", "softmax".
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" => ActivationFn::Linear,
            "relu" => ActivationFn::Relu,
            "sigmoid" => ActivationFn::Sigmoid,
            "tanh" => ActivationFn::Tanh,
            "softmax" => ActivationFn::Softmax,
            other => {
                return Err(crate::Error::Invalid(format!(
                    "unknown activation {other:?} (expected linear, relu, sigmoid, tanh or softmax)"
                )))
            }
        })
    }
}

/// A layer that applies an activation function (Keras' `layers.Activation('relu')`).
#[derive(Debug)]
pub struct Activation {
    name: String,
    function: ActivationFn,
}

impl Activation {
    /// A layer applying `function`.
    pub fn new(function: ActivationFn) -> Self {
        Activation { name: unique_name("activation"), function }
    }

    /// `Activation::new(ActivationFn::Relu)`.
    pub fn relu() -> Self {
        Self::new(ActivationFn::Relu)
    }

    /// `Activation::new(ActivationFn::Sigmoid)`.
    pub fn sigmoid() -> Self {
        Self::new(ActivationFn::Sigmoid)
    }

    /// `Activation::new(ActivationFn::Tanh)`.
    pub fn tanh() -> Self {
        Self::new(ActivationFn::Tanh)
    }

    /// `Activation::new(ActivationFn::Softmax)`.
    pub fn softmax() -> Self {
        Self::new(ActivationFn::Softmax)
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The function applied.
    pub fn function(&self) -> ActivationFn {
        self.function
    }
}

impl Layer for Activation {
    fn call(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        traced(self, self.function.apply(input).in_layer(&self.name))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn type_name(&self) -> &str {
        "Activation"
    }
}

/// The rectified linear unit as a layer (Keras' `layers.ReLU()`).
#[derive(Debug)]
pub struct ReLU {
    name: String,
}

impl ReLU {
    /// A ReLU layer.
    pub fn new() -> Self {
        ReLU { name: unique_name("re_lu") }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for ReLU {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for ReLU {
    fn call(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        traced(self, input.relu().in_layer(&self.name))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn type_name(&self) -> &str {
        "ReLU"
    }
}
