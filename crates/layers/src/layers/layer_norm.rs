//! [`LayerNormalization`]: per-sample statistics over the trailing axes.

use super::get_or_build;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::mixed_precision::{in_full_precision, normalization_dtype, variable_dtype, Policy};
use crate::naming::unique_name;
use crate::{Error, InputSpec, Layer, Mode, Result};
use std::sync::OnceLock;
use tapegrad_tensor::{Shape, Tensor, Variable};

/// Layer normalization (Keras' `layers.LayerNormalization`): each sample is normalised
/// with the mean and biased variance of its values over `axis`, then scaled by `gamma`
/// and shifted by `beta`, both of the shape of those axes:
/// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`.
///
/// Keras' defaults: axis -1, epsilon 1e-3, `center` (a `beta`, zeros) and `scale` (a
/// `gamma`, ones). The axes may be any set that ends at the last axis (`[-1]`,
/// `[-3, -2, -1]` for whole NHWC images, in any order or sign); other sets are an error
/// at build. There are no moving statistics, so [`Mode::Train`] and [`Mode::Infer`] give
/// the same result. PyTorch's `nn.LayerNorm(normalized_shape)` is the same op with
/// `normalized_shape` the trailing dims and `.epsilon(1e-5)`.
#[derive(Debug)]
pub struct LayerNormalization {
    name: String,
    axes: Vec<isize>,
    epsilon: f64,
    center: bool,
    scale: bool,
    gamma_initializer: Initializer,
    beta_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<LnWeights>,
}

#[derive(Debug)]
struct LnWeights {
    gamma: Option<Variable>,
    beta: Option<Variable>,
}

impl LayerNormalization {
    /// Layer normalization over the last axis with Keras' defaults.
    pub fn new() -> Self {
        LayerNormalization {
            name: unique_name("layer_normalization"),
            axes: vec![-1],
            epsilon: 1e-3,
            center: true,
            scale: true,
            gamma_initializer: Initializer::Ones,
            beta_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// Normalise over one axis (-1); it must be the last one.
    pub fn axis(self, axis: isize) -> Self {
        self.axes(&[axis])
    }

    /// Normalise over several axes, which together must be the trailing axes of the input.
    pub fn axes(mut self, axes: &[isize]) -> Self {
        self.axes = axes.to_vec();
        self
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

    /// `gamma`, once built, if the layer scales.
    pub fn gamma(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.gamma.as_ref())
    }

    /// `beta`, once built, if the layer centers.
    pub fn beta(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.beta.as_ref())
    }

    /// The first normalised axis for an input of `rank`, if the axes are a trailing run.
    fn first_axis(&self, rank: usize) -> Result<usize> {
        let mut resolved = Vec::with_capacity(self.axes.len());
        for &a in &self.axes {
            let r = if a < 0 { a + rank as isize } else { a };
            if r < 0 || r >= rank as isize {
                return Err(Error::layer(
                    &self.name,
                    format!("axis {a} is out of range for an input of rank {rank} (axes {:?})", self.axes),
                ));
            }
            resolved.push(r as usize);
        }
        resolved.sort_unstable();
        resolved.dedup();
        let first = rank - resolved.len();
        if resolved.is_empty() || resolved != (first..rank).collect::<Vec<_>>() {
            return Err(Error::layer(
                &self.name,
                format!(
                    "axes {:?} are not the trailing axes of an input of rank {rank}: only a set of axes that \
                     ends at the last one is supported (e.g. [-1] or [-3, -2, -1])",
                    self.axes
                ),
            ));
        }
        Ok(first)
    }

    fn built(&self, input: &InputSpec) -> Result<&LnWeights> {
        get_or_build(&self.weights, || {
            // As BatchNormalization: epsilon 0 divides a constant slice by zero (NaN).
            if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
                return Err(Error::layer(&self.name, format!("epsilon must be finite and > 0, got {}", self.epsilon)));
            }
            let first_axis = self.first_axis(input.shape.rank())?;
            let shape = Shape::new(&input.shape.dims()[first_axis..]);
            let fans = Fans::vector(shape.elem_count());
            let make = |init: Initializer, what: &str| -> Result<Variable> {
                let dtype = normalization_dtype(variable_dtype(self.dtype_policy, input.dtype));
                let value = init.initialize_for((&self.name, what), &shape, fans, dtype, &input.device)?;
                Ok(Variable::new(format!("{}/{what}", self.name), value, true))
            };
            Ok(LnWeights {
                gamma: self.scale.then(|| make(self.gamma_initializer, "gamma")).transpose()?,
                beta: self.center.then(|| make(self.beta_initializer, "beta")).transpose()?,
            })
        })
    }
}

impl Default for LayerNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for LayerNormalization {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(input))?;
        // A rank other than the built one is fine while the normalised dims match gamma's
        // (the op checks that, naming both shapes).
        let first_axis = self.first_axis(input.rank())?;
        let gamma = w.gamma.as_ref().map(Variable::value);
        let beta = w.beta.as_ref().map(Variable::value);
        // In f32 for 16-bit inputs (Keras 3), with the f32 variables as they are.
        in_full_precision(input, |x| {
            x.layer_norm(first_axis, gamma.as_ref(), beta.as_ref(), self.epsilon).in_layer(&self.name)
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
