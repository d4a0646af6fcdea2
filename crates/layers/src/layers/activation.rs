//! Activation functions ([`ActivationFn`], including user-supplied ones) and the
//! [`Activation`] layer.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Layer, Mode, Result};
use std::fmt;
use std::sync::Arc;
use tapegrad_tensor::Tensor;

/// The signature of a user-supplied activation.
pub type ActivationFnPtr = dyn Fn(&Tensor) -> tapegrad_tensor::Result<Tensor> + Send + Sync;

/// A user-supplied activation function with its name (shown by `summary()` and errors).
#[derive(Clone)]
pub struct CustomActivation {
    name: String,
    function: Arc<ActivationFnPtr>,
}

impl CustomActivation {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for CustomActivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomActivation({:?})", self.name)
    }
}

/// Two custom activations are equal when they share the same function object.
impl PartialEq for CustomActivation {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.function, &other.function)
    }
}

/// An elementwise (or, for softmax, last-axis) activation function: Keras' built-in ones
/// and any user function ([`ActivationFn::custom`]).
///
/// The common CNN activations (relu, relu6, leaky_relu, elu, gelu, silu, hard_sigmoid,
/// hard_swish, softplus, mish, ...) run their forward pass as one fused elementwise kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum ActivationFn {
    /// The identity.
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, else `negative_slope * x` (Keras' `leaky_relu` activation
    /// defaults to 0.2, its `LeakyReLU` layer to 0.3).
    LeakyRelu {
        /// The slope of the negative part.
        negative_slope: f64,
    },
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`.
    Elu {
        /// The scale of the negative part (Keras' default 1.0).
        alpha: f64,
    },
    /// `x * Φ(x)`: exact with erf, or the tanh approximation when `approximate`.
    Gelu {
        /// Use the tanh approximation (Keras' default false).
        approximate: bool,
    },
    /// `x * sigmoid(x)` (SiLU, Keras' `swish`).
    Silu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `relu6(x + 3) / 6` (Keras 3's definition, as PyTorch's `hardsigmoid`).
    HardSigmoid,
    /// `x * relu6(x + 3) / 6` (Keras' `hard_silu` / `hard_swish`).
    HardSwish,
    /// `x * tanh(softplus(x))`.
    Mish,
    /// A user-supplied function.
    Custom(CustomActivation),
}

/// The Keras names [`ActivationFn`] parses.
const KERAS_NAMES: &str = "linear, relu, relu6, leaky_relu, elu, gelu, silu, swish, sigmoid, tanh, softmax, \
                           softplus, softsign, hard_sigmoid, hard_silu, hard_swish or mish";

impl ActivationFn {
    /// A user-supplied activation named `name`, e.g.
    /// `ActivationFn::custom("square", |x| x.square())`.
    pub fn custom(
        name: impl Into<String>,
        function: impl Fn(&Tensor) -> tapegrad_tensor::Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        ActivationFn::Custom(CustomActivation { name: name.into(), function: Arc::new(function) })
    }

    /// Applies the function.
    pub fn apply(&self, x: &Tensor) -> tapegrad_tensor::Result<Tensor> {
        match self {
            ActivationFn::Linear => Ok(x.clone()),
            ActivationFn::Relu => x.relu(),
            ActivationFn::Relu6 => x.relu6(),
            ActivationFn::LeakyRelu { negative_slope } => x.leaky_relu(*negative_slope),
            ActivationFn::Elu { alpha } => x.elu(*alpha),
            ActivationFn::Gelu { approximate } => x.gelu(*approximate),
            ActivationFn::Silu => x.silu(),
            ActivationFn::Sigmoid => x.sigmoid(),
            ActivationFn::Tanh => x.tanh(),
            // Softmax runs and answers in f32 for 16-bit inputs: the (and Keras')
            // "softmax in f32" (probabilities near 0 and 1 are lost in 16 bits).
            ActivationFn::Softmax => crate::mixed_precision::full_precision(x)?.softmax(-1),
            ActivationFn::Softplus => x.softplus(),
            ActivationFn::Softsign => x.softsign(),
            ActivationFn::HardSigmoid => x.hard_sigmoid(),
            ActivationFn::HardSwish => x.hard_swish(),
            ActivationFn::Mish => x.mish(),
            ActivationFn::Custom(custom) => (custom.function)(x),
        }
    }

    /// The Keras name ("relu"), or a custom function's name.
    pub fn as_str(&self) -> &str {
        match self {
            ActivationFn::Linear => "linear",
            ActivationFn::Relu => "relu",
            ActivationFn::Relu6 => "relu6",
            ActivationFn::LeakyRelu { .. } => "leaky_relu",
            ActivationFn::Elu { .. } => "elu",
            ActivationFn::Gelu { .. } => "gelu",
            ActivationFn::Silu => "silu",
            ActivationFn::Sigmoid => "sigmoid",
            ActivationFn::Tanh => "tanh",
            ActivationFn::Softmax => "softmax",
            ActivationFn::Softplus => "softplus",
            ActivationFn::Softsign => "softsign",
            ActivationFn::HardSigmoid => "hard_sigmoid",
            ActivationFn::HardSwish => "hard_swish",
            ActivationFn::Mish => "mish",
            ActivationFn::Custom(custom) => custom.name(),
        }
    }
}

impl std::str::FromStr for ActivationFn {
    type Err = crate::Error;

    /// Parses a Keras activation name, with Keras' defaults for the parameters
    /// (`leaky_relu`: negative_slope 0.2; `elu`: alpha 1.0; `gelu`: exact). `swish` is
    /// `silu`, `hard_silu` is `hard_swish`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" => ActivationFn::Linear,
            "relu" => ActivationFn::Relu,
            "relu6" => ActivationFn::Relu6,
            "leaky_relu" => ActivationFn::LeakyRelu { negative_slope: 0.2 },
            "elu" => ActivationFn::Elu { alpha: 1.0 },
            "gelu" => ActivationFn::Gelu { approximate: false },
            "silu" | "swish" => ActivationFn::Silu,
            "sigmoid" => ActivationFn::Sigmoid,
            "tanh" => ActivationFn::Tanh,
            "softmax" => ActivationFn::Softmax,
            "softplus" => ActivationFn::Softplus,
            "softsign" => ActivationFn::Softsign,
            "hard_sigmoid" => ActivationFn::HardSigmoid,
            "hard_silu" | "hard_swish" => ActivationFn::HardSwish,
            "mish" => ActivationFn::Mish,
            other => {
                return Err(crate::Error::Invalid(format!("unknown activation {other:?} (expected {KERAS_NAMES})")))
            }
        })
    }
}

/// A layer that applies an activation function (Keras' `layers.Activation('relu')`).
#[derive(Debug)]
pub struct Activation {
    name: String,
    function: ActivationFn,
    dtype_policy: Option<crate::mixed_precision::Policy>,
}

impl Activation {
    /// A layer applying `function`.
    pub fn new(function: ActivationFn) -> Self {
        Activation { name: unique_name("activation"), function, dtype_policy: None }
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

    /// The layer's own dtype policy (Keras' `dtype=`): `Activation::softmax()
    /// .dtype_policy(Policy::FLOAT32)` is Keras' advice for a mixed-precision model's last
    /// layer (a softmax computes in f32 under any policy here anyway); see
    /// [`mixed_precision`](crate::mixed_precision).
    pub fn dtype_policy(mut self, policy: crate::mixed_precision::Policy) -> Self {
        self.dtype_policy = Some(policy);
        self
    }

    /// The function applied.
    pub fn function(&self) -> &ActivationFn {
        &self.function
    }
}

impl Layer for Activation {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        self.function.apply(input).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_relu(&self) -> bool {
        matches!(self.function, ActivationFn::Relu)
    }

    fn policy_override(&self) -> Option<crate::mixed_precision::Policy> {
        self.dtype_policy
    }
}
