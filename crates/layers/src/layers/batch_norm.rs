//! [`BatchNormalization`] over the last axis, with moving statistics.

use super::get_or_build;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::layer::traced;
use crate::mixed_precision::{self, normalization_dtype, variable_dtype, Policy};
use crate::naming::unique_name;
use crate::{Error, InputSpec, Layer, Mode, MovingStatistics, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tapegrad_tensor::{Shape, Tensor, Variable};

/// Batch normalization over the last (channel) axis (Keras' `layers.BatchNormalization`):
/// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`.
///
/// - [`Mode::Train`]: `mean` and `var` are the batch's (biased) statistics over every axis
///   but the last, and the moving statistics move toward them:
///   `moving -= (moving - batch) * (1 - momentum)`.
/// - [`Mode::Infer`]: the moving statistics are used and nothing changes.
///
/// Keras' defaults: momentum 0.99, epsilon 1e-3, `center` (a `beta`) and `scale` (a
/// `gamma`), gamma and moving variance start at 1, beta and moving mean at 0. The moving
/// variance is updated with the unbiased batch variance (`var * n / (n - 1)`, n the
/// number of values per channel), as TensorFlow's fused batch norm (which the seed's
/// Keras uses for NHWC inputs) and PyTorch do; `unbiased_moving_variance(false)` gives
/// Keras 3's biased update. For PyTorch's defaults use `.momentum(0.9).epsilon(1e-5)`.
/// `gamma` and `beta` are trainable; the moving statistics are not.
#[derive(Debug)]
pub struct BatchNormalization {
    pub(crate) name: String,
    pub(crate) momentum: f64,
    pub(crate) epsilon: f64,
    center: bool,
    scale: bool,
    unbiased_moving_variance: bool,
    gamma_initializer: Initializer,
    beta_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<BnWeights>,
    /// Training-mode calls that updated the moving statistics (see `moving_statistics`).
    updates: AtomicU64,
}

/// What [`BatchNormalization::compute`] applies after the normalisation.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    Identity,
    Relu,
    AddRelu(&'a Tensor),
}

#[derive(Debug)]
pub(crate) struct BnWeights {
    pub(crate) gamma: Option<Variable>,
    pub(crate) beta: Option<Variable>,
    pub(crate) moving_mean: Variable,
    pub(crate) moving_variance: Variable,
}

impl BatchNormalization {
    /// Batch normalization with Keras' defaults.
    pub fn new() -> Self {
        BatchNormalization {
            name: unique_name("batch_normalization"),
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            unbiased_moving_variance: true,
            gamma_initializer: Initializer::Ones,
            beta_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
            updates: AtomicU64::new(0),
        }
    }

    /// The moving-average momentum (0.99).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
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

    /// Whether the moving variance is updated with the unbiased batch variance (true,
    /// TF's fused kernel and PyTorch) or the biased one (Keras 3).
    pub fn unbiased_moving_variance(mut self, unbiased: bool) -> Self {
        self.unbiased_moving_variance = unbiased;
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

    /// The layer's own dtype policy (Keras' `dtype=`). Under every 16-bit policy the layer
    /// keeps its variables in f32 and normalises in f32 (the input widened, the output cast
    /// back to the input's dtype), as Keras does: see [`mixed_precision`](crate::mixed_precision).
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

    /// The moving mean, once built.
    pub fn moving_mean(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.moving_mean)
    }

    /// The moving variance, once built.
    pub fn moving_variance(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.moving_variance)
    }

    pub(crate) fn built(&self, input: &InputSpec) -> Result<&BnWeights> {
        get_or_build(&self.weights, || {
            if !(0.0..=1.0).contains(&self.momentum) {
                return Err(Error::layer(&self.name, format!("momentum must be in [0, 1], got {}", self.momentum)));
            }
            if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
                return Err(Error::layer(&self.name, format!("epsilon must be finite and > 0, got {}", self.epsilon)));
            }
            let Some(&channels) = input.shape.dims().last().filter(|_| input.shape.rank() >= 2) else {
                return Err(Error::layer(
                    &self.name,
                    format!("expects inputs with a batch axis and a channel axis last, got shape {}", input.shape),
                ));
            };
            let shape = Shape::new(&[channels]);
            let fans = Fans::vector(channels);
            // f32 statistics and parameters under the 16-bit policies (tf.keras' param dtype).
            let dtype = normalization_dtype(variable_dtype(self.dtype_policy, input.dtype));
            let make = |init: Initializer, what: &str, trainable: bool| -> Result<Variable> {
                let value = init.initialize_for((&self.name, what), &shape, fans, dtype, &input.device)?;
                Ok(Variable::new(format!("{}/{what}", self.name), value, trainable))
            };
            Ok(BnWeights {
                gamma: self.scale.then(|| make(self.gamma_initializer, "gamma", true)).transpose()?,
                beta: self.center.then(|| make(self.beta_initializer, "beta", true)).transpose()?,
                moving_mean: make(Initializer::Zeros, "moving_mean", false)?,
                moving_variance: make(Initializer::Ones, "moving_variance", false)?,
            })
        })
    }

    /// `relu(bn(x))` in one fused op in training (`Tensor::batch_norm_relu_train`), the
    /// values and gradients of this layer followed by a ReLU bit for bit. In inference the
    /// layer's output goes through `relu`. [`Sequential`](crate::Sequential) calls this
    /// for a BatchNormalization followed by a ReLU layer.
    pub fn call_relu(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        let policy = mixed_precision::enter_policy(self.dtype_policy);
        let input = &mixed_precision::autocast(input, policy.policy()).in_layer(&self.name)?;
        let w = self.built(&InputSpec::from(input))?;
        traced(self, self.compute(input, w, mode, Epilogue::Relu))
    }

    /// `relu(residual + bn(x))`, the end of a ResNet block, in one fused op in training
    /// (`Tensor::batch_norm_add_relu_train`; the residual's gradient included), the values
    /// and gradients of this layer, an `Add` and a ReLU bit for bit. `residual` must have
    /// the input's shape.
    pub fn call_add_relu(&self, input: &Tensor, residual: &Tensor, mode: Mode) -> Result<Tensor> {
        let _scope = tapegrad_tensor::check_numerics::name_scope(self.name());
        let policy = mixed_precision::enter_policy(self.dtype_policy);
        let input = &mixed_precision::autocast(input, policy.policy()).in_layer(&self.name)?;
        let residual = &mixed_precision::autocast(residual, policy.policy()).in_layer(&self.name)?;
        if residual.shape() != input.shape() {
            return Err(Error::layer(
                &self.name,
                format!(
                    "the residual has shape {} but the input has shape {} (they must be equal)",
                    residual.shape(),
                    input.shape()
                ),
            ));
        }
        let w = self.built(&InputSpec::from(input))?;
        traced(self, self.compute(input, w, mode, Epilogue::AddRelu(residual)))
    }

    pub(crate) fn compute(&self, x: &Tensor, w: &BnWeights, mode: Mode, epilogue: Epilogue<'_>) -> Result<Tensor> {
        let name = &self.name;
        if x.dtype().is_low_precision() {
            // Keras: batch norm computes in f32 under mixed policies (16-bit statistics
            // overflow or lose their precision); the output goes back to the input's dtype.
            let widen = |t: &Tensor| mixed_precision::full_precision(t).in_layer(name);
            let residual;
            let epilogue = match epilogue {
                Epilogue::AddRelu(r) => {
                    residual = widen(r)?;
                    Epilogue::AddRelu(&residual)
                }
                other => other,
            };
            let y = self.compute(&widen(x)?, w, mode, epilogue)?;
            return y.cast(x.dtype()).in_layer(name);
        }
        let channels = w.moving_mean.value_untracked().elem_count();
        if x.rank() == 4 {
            // The NHWC message, with its hint for channels-first data.
            crate::layers::nhwc::check_image_input(name, x.shape(), Some(channels))?;
        }
        if x.rank() < 2 || x.dims()[x.rank() - 1] != channels {
            return Err(Error::layer(
                name,
                format!("was built for {channels} channels (last axis) but got an input of shape {}", x.shape()),
            ));
        }
        // The ops take [N, C] or NHWC; other ranks are normalised as [rows, C].
        let flatten = |t: &Tensor| {
            if t.rank() == 2 || t.rank() == 4 {
                Ok(t.clone())
            } else {
                t.reshape([t.elem_count() / channels, channels]).in_layer(name)
            }
        };
        let flat = flatten(x)?;
        let gamma = w.gamma.as_ref().map(Variable::value);
        let beta = w.beta.as_ref().map(Variable::value);
        let (gamma, beta) = (gamma.as_ref(), beta.as_ref());
        let y = match mode {
            Mode::Train => {
                let (y, mean, var) = match epilogue {
                    Epilogue::Identity => flat.batch_norm_train(gamma, beta, self.epsilon),
                    Epilogue::Relu => flat.batch_norm_relu_train(gamma, beta, self.epsilon),
                    Epilogue::AddRelu(residual) => {
                        flat.batch_norm_add_relu_train(gamma, beta, &flatten(residual)?, self.epsilon)
                    }
                }
                .in_layer(name)?;
                let rows = x.elem_count() / channels;
                self.update_moving_statistics(w, &mean, &var, rows).in_layer(name)?;
                y
            }
            Mode::Infer => {
                let (moving_mean, moving_var) = (w.moving_mean.value_untracked(), w.moving_variance.value_untracked());
                let y = flat.batch_norm_infer(gamma, beta, &moving_mean, &moving_var, self.epsilon).in_layer(name)?;
                match epilogue {
                    Epilogue::Identity => y,
                    Epilogue::Relu => y.relu().in_layer(name)?,
                    Epilogue::AddRelu(residual) => flatten(residual)?.add(&y).and_then(|s| s.relu()).in_layer(name)?,
                }
            }
        };
        if y.shape() == x.shape() {
            Ok(y)
        } else {
            y.reshape(x.shape().clone()).in_layer(name)
        }
    }

    /// `moving -= (moving - batch) * (1 - momentum)`, on detached values so that no tape
    /// records it.
    pub(crate) fn update_moving_statistics(
        &self,
        w: &BnWeights,
        mean: &Tensor,
        var: &Tensor,
        rows: usize,
    ) -> tapegrad_tensor::Result<()> {
        let var = if self.unbiased_moving_variance && rows > 1 {
            var.detach().mul_scalar(rows as f64 / (rows - 1) as f64)?
        } else {
            var.detach()
        };
        let rate = 1.0 - self.momentum;
        for (moving, batch) in [(&w.moving_mean, mean.detach()), (&w.moving_variance, var)] {
            let current = moving.value_untracked();
            moving.assign(current.sub(&current.sub(&batch)?.mul_scalar(rate)?)?)?;
        }
        self.updates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for BatchNormalization {
    fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(input))?;
        self.compute(input, w, mode, Epilogue::Identity)
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    fn call_then_relu(&self, input: &Tensor, mode: Mode) -> Option<Result<Tensor>> {
        Some(self.call_relu(input, mode))
    }

    fn host_state(&self) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(self.updates.load(Ordering::Relaxed)))
    }

    fn restore_host_state(&self, state: &dyn std::any::Any) {
        if let Some(&updates) = state.downcast_ref::<u64>() {
            self.updates.store(updates, Ordering::Relaxed);
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, input: &InputSpec) -> Result<()> {
        self.built(input).map(|_| ())
    }

    fn moving_statistics(&self) -> Option<MovingStatistics> {
        Some(MovingStatistics { updates: self.updates.load(Ordering::Relaxed), momentum: self.momentum })
    }

    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        if let Some(w) = self.weights.get() {
            if let Some(g) = &w.gamma {
                visit("gamma", g);
            }
            if let Some(b) = &w.beta {
                visit("beta", b);
            }
            visit("moving_mean", &w.moving_mean);
            visit("moving_variance", &w.moving_variance);
        }
    }
}
