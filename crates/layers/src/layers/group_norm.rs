//! [`GroupNormalization`]: per-sample statistics over groups of channels.

use super::get_or_build;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::mixed_precision::{in_full_precision, normalization_dtype, variable_dtype, Policy};
use crate::naming::unique_name;
use crate::{Error, InputSpec, Layer, Mode, Result};
use std::sync::OnceLock;
use tapegrad_tensor::{Shape, Tensor, Variable};

/// Group normalization with channels last (Keras' `layers.GroupNormalization`): the `C`
/// channels are split into `groups` consecutive groups; each group of each sample is
/// normalised with the mean and biased variance of its values over every axis but the
/// batch axis, then each channel is scaled by `gamma` and shifted by `beta` (`[C]` each):
/// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`.
///
/// Keras' defaults: 32 groups (`GroupNormalization::new(32)`), epsilon 1e-3, `center` (a
/// `beta`, zeros) and `scale` (a `gamma`, ones). `C` must be divisible by `groups`, else
/// building is an error naming the layer, the groups and the channels. `groups = C` is
/// instance normalization, `groups = 1` layer normalization with a per-channel affine map.
/// There are no moving statistics, so [`Mode::Train`] and [`Mode::Infer`] give the same
/// result. PyTorch's `nn.GroupNorm(groups, C)` is the same op on NCHW with
/// `.epsilon(1e-5)`.
#[derive(Debug)]
pub struct GroupNormalization {
    name: String,
    /// `None`: one group per channel (Keras' `groups=-1`).
    groups: Option<usize>,
    epsilon: f64,
    center: bool,
    scale: bool,
    gamma_initializer: Initializer,
    beta_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<GnWeights>,
}

#[derive(Debug)]
struct GnWeights {
    gamma: Option<Variable>,
    beta: Option<Variable>,
}

impl GroupNormalization {
    /// Group normalization into `groups` groups (Keras' default is 32), with Keras' other
    /// defaults.
    pub fn new(groups: usize) -> Self {
        GroupNormalization {
            name: unique_name("group_normalization"),
            groups: Some(groups),
            epsilon: 1e-3,
            center: true,
            scale: true,
            gamma_initializer: Initializer::Ones,
            beta_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// The epsilon added to the variance (1e-3).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to add a learned offset `beta`.
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to multiply by a learned scale `gamma`.
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// The initializer of `gamma` (ones).
    pub fn gamma_initializer(mut self, init: Initializer) -> Self {
        self.gamma_initializer = init;
        self
    }

    /// The initializer of `beta` (zeros).
    pub fn beta_initializer(mut self, init: Initializer) -> Self {
        self.beta_initializer = init;
        self
    }

    /// The layer's own dtype policy (Keras' `dtype=`); it normalises in f32 under every
    /// 16-bit policy: see [`mixed_precision`](crate::mixed_precision).
    pub fn dtype_policy(mut self, policy: Policy) -> Self {
        self.dtype_policy = Some(policy);
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// One group per channel, whatever the channel count (Keras' `groups=-1`): instance
    /// normalization, with a per-channel affine map.
    pub fn per_channel() -> Self {
        GroupNormalization { groups: None, ..Self::new(1) }
    }

    /// The number of groups; `None` for one per channel ([`GroupNormalization::per_channel`]).
    pub fn groups(&self) -> Option<usize> {
        self.groups
    }

    /// `gamma`, once built, if the layer scales.
    pub fn gamma(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.gamma.as_ref())
    }

    /// `beta`, once built, if the layer centers.
    pub fn beta(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.beta.as_ref())
    }

    /// The channels (last axis) of an input and the group count for them, checked.
    fn channels(&self, shape: &Shape) -> Result<(usize, usize)> {
        let Some(&channels) = shape.dims().last().filter(|_| shape.rank() >= 2) else {
            return Err(Error::layer(
                &self.name,
                format!("expects inputs with a batch axis and a channel axis last, got shape {shape}"),
            ));
        };
        let groups = self.groups.unwrap_or(channels);
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::layer(
                &self.name,
                format!(
                    "groups = {groups} must divide the number of channels, but the input of shape {shape} has \
                     {channels} channels"
                ),
            ));
        }
        Ok((channels, groups))
    }

    fn built(&self, input: &InputSpec) -> Result<&GnWeights> {
        get_or_build(&self.weights, || {
            // As BatchNormalization: epsilon 0 divides a constant slice by zero (NaN).
            if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
                return Err(Error::layer(&self.name, format!("epsilon must be finite and > 0, got {}", self.epsilon)));
            }
            let (channels, _) = self.channels(&input.shape)?;
            let shape = Shape::new(&[channels]);
            let fans = Fans::vector(channels);
            let make = |init: Initializer, what: &str| -> Result<Variable> {
                let dtype = normalization_dtype(variable_dtype(self.dtype_policy, input.dtype));
                let value = init.initialize_for((&self.name, what), &shape, fans, dtype, &input.device)?;
                Ok(Variable::new(format!("{}/{what}", self.name), value, true))
            };
            Ok(GnWeights {
                gamma: self.scale.then(|| make(self.gamma_initializer, "gamma")).transpose()?,
                beta: self.center.then(|| make(self.beta_initializer, "beta")).transpose()?,
            })
        })
    }
}

impl Layer for GroupNormalization {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(input))?;
        let (_, groups) = self.channels(input.shape())?;
        let gamma = w.gamma.as_ref().map(Variable::value);
        let beta = w.beta.as_ref().map(Variable::value);
        // In f32 for 16-bit inputs (Keras 3), with the f32 variables as they are.
        in_full_precision(input, |x| {
            x.group_norm(groups, gamma.as_ref(), beta.as_ref(), self.epsilon).in_layer(&self.name)
        })
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
            if let Some(g) = &w.gamma {
                visit("gamma", g);
            }
            if let Some(b) = &w.beta {
                visit("beta", b);
            }
        }
    }
}

impl Default for GroupNormalization {
    /// Keras' default of 32 groups.
    fn default() -> Self {
        Self::new(32)
    }
}
