//! The parametrised rectifier layers: [`ReLU`] (Keras' `max_value`, `negative_slope`,
//! `threshold`), [`LeakyReLU`] and [`ELU`]. Options are checked when the layer is called,
//! so the builders stay infallible; a bad value is an error naming the layer and option.

use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// Keras' `relu(x, negative_slope, max_value, threshold)`: `x` clipped to `max_value` for
/// `x >= threshold`, else `negative_slope * (x - threshold)`. The plain, leaky and
/// clipped (relu6) cases are single fused passes; the rest composes Keras' own formula.
pub(crate) fn relu_with(
    x: &Tensor,
    max_value: Option<f64>,
    negative_slope: f64,
    threshold: f64,
) -> tapegrad_tensor::Result<Tensor> {
    match (max_value, negative_slope == 0.0, threshold == 0.0) {
        (None, true, true) => return x.relu(),
        (Some(max), true, true) => return x.relu_max(max),
        (None, false, true) => return x.leaky_relu(negative_slope),
        _ => {}
    }
    // As keras.layers.ReLU.static_call: a threshold keeps x only above it, max_value clips
    // into [0, max_value], and the negative part is subtracted last.
    let mut y = if threshold != 0.0 { x.mul(&x.gt_scalar(threshold)?)? } else { x.relu()? };
    if let Some(max) = max_value {
        y = y.clamp(0.0, max)?;
    }
    if negative_slope != 0.0 {
        let negative_part = x.affine(-1.0, threshold)?.relu()?;
        y = y.sub(&negative_part.affine(negative_slope, 0.0)?)?;
    }
    Ok(y)
}

/// The rectified linear unit as a layer (Keras' `layers.ReLU(max_value, negative_slope,
/// threshold)`): `min(x, max_value)` for `x >= threshold`, else
/// `negative_slope * (x - threshold)`.
#[derive(Debug)]
pub struct ReLU {
    name: String,
    max_value: Option<f64>,
    negative_slope: f64,
    threshold: f64,
}

impl ReLU {
    /// A plain ReLU (no maximum, slope 0, threshold 0: Keras' defaults).
    pub fn new() -> Self {
        ReLU { name: unique_name("re_lu"), max_value: None, negative_slope: 0.0, threshold: 0.0 }
    }

    /// `ReLU::new().max_value(6.0)`: MobileNet's ReLU6, one fused pass.
    pub fn relu6() -> Self {
        Self::new().max_value(6.0)
    }

    /// The same layer saturating at `max_value` (must be `>= 0`).
    pub fn max_value(mut self, max_value: f64) -> Self {
        self.max_value = Some(max_value);
        self
    }

    /// The same layer with slope `negative_slope` (must be `>= 0`) below the threshold.
    pub fn negative_slope(mut self, negative_slope: f64) -> Self {
        self.negative_slope = negative_slope;
        self
    }

    /// The same layer with another threshold (finite).
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn check(&self) -> Result<()> {
        if let Some(max) = self.max_value.filter(|m| m.is_nan() || *m < 0.0) {
            return Err(Error::layer(&self.name, format!("max_value must be >= 0, got {max}")));
        }
        if self.negative_slope.is_nan() || self.negative_slope < 0.0 || self.negative_slope.is_infinite() {
            return Err(Error::layer(
                &self.name,
                format!("negative_slope must be finite and >= 0, got {}", self.negative_slope),
            ));
        }
        if !self.threshold.is_finite() {
            return Err(Error::layer(&self.name, format!("threshold must be finite, got {}", self.threshold)));
        }
        Ok(())
    }
}

impl Default for ReLU {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for ReLU {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        self.check()?;
        let y = relu_with(input, self.max_value, self.negative_slope, self.threshold);
        y.in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_relu(&self) -> bool {
        // The options under which `relu_with` is the plain `relu`.
        self.max_value.is_none() && self.negative_slope == 0.0 && self.threshold == 0.0
    }
}

/// `x` for `x >= 0`, else `negative_slope * x` (Keras' `layers.LeakyReLU`, whose default
/// slope is 0.3; PyTorch's `LeakyReLU` uses 0.01).
#[derive(Debug)]
pub struct LeakyReLU {
    name: String,
    negative_slope: f64,
}

impl LeakyReLU {
    /// Keras' default: `negative_slope` 0.3.
    pub fn new() -> Self {
        LeakyReLU { name: unique_name("leaky_re_lu"), negative_slope: 0.3 }
    }

    /// The same layer with another slope (must be finite and `>= 0`).
    pub fn negative_slope(mut self, negative_slope: f64) -> Self {
        self.negative_slope = negative_slope;
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for LeakyReLU {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for LeakyReLU {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let slope = self.negative_slope;
        if !slope.is_finite() || slope < 0.0 {
            return Err(Error::layer(&self.name, format!("negative_slope must be finite and >= 0, got {slope}")));
        }
        input.leaky_relu(slope).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// `x` for `x > 0`, else `alpha * (e^x - 1)` (Keras' `layers.ELU`, alpha 1.0).
#[derive(Debug)]
pub struct ELU {
    name: String,
    alpha: f64,
}

impl ELU {
    /// Keras' default: `alpha` 1.0.
    pub fn new() -> Self {
        ELU { name: unique_name("elu"), alpha: 1.0 }
    }

    /// The same layer with another `alpha` (finite).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for ELU {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for ELU {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        if !self.alpha.is_finite() {
            return Err(Error::layer(&self.name, format!("alpha must be finite, got {}", self.alpha)));
        }
        input.elu(self.alpha).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
