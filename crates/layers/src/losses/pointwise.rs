//! Losses computed elementwise and averaged over the last axis, as Keras defines them:
//! mean squared / absolute error, Huber, binary cross-entropy and KL divergence. Each
//! per-example loss is `mean(f(labels, predictions), axis=-1)` (a sum for KL), then
//! reduced by a [`Reduction`] (Keras' `sum_over_batch_size` by default).

use super::{Reduction, PROBABILITY_EPSILON};
use crate::mixed_precision::full_precision;
use tapegrad_tensor::{Error, Result, Tensor};

/// Labels in the predictions' dtype and shape. As Keras, labels `[n]` match predictions
/// `[n, 1]`; integer labels are cast.
fn aligned_labels(labels: &Tensor, predictions: &Tensor, op: &'static str) -> Result<Tensor> {
    if predictions.rank() == 0 || !predictions.dtype().is_float() {
        return Err(Error::invalid(
            op,
            format!(
                "predictions must be float with at least one axis, got {} {}",
                predictions.dtype(),
                predictions.shape()
            ),
        ));
    }
    let labels =
        if labels.dtype() == predictions.dtype() { labels.clone() } else { labels.cast(predictions.dtype())? };
    let dims = predictions.dims();
    if labels.dims() == dims {
        return Ok(labels);
    }
    if labels.rank() + 1 == predictions.rank() && dims[dims.len() - 1] == 1 && labels.dims() == &dims[..dims.len() - 1]
    {
        return labels.reshape(predictions.shape().clone());
    }
    Err(Error::invalid(
        op,
        format!("labels of shape {} do not match predictions of shape {}", labels.shape(), predictions.shape()),
    ))
}

/// Keras' `MeanSquaredError`: `mean((labels - predictions)², axis=-1)`, reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeanSquaredError {
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl MeanSquaredError {
    /// The loss with Keras' default reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same loss with another reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of `predictions` against `labels` of the same shape.
    pub fn call(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        let labels = aligned_labels(labels, predictions, "mean_squared_error")?;
        self.reduction.apply(predictions.sub(&labels)?.square()?.mean(&[-1], false)?)
    }
}

/// Keras' `MeanAbsoluteError`: `mean(|labels - predictions|, axis=-1)`, reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeanAbsoluteError {
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl MeanAbsoluteError {
    /// The loss with Keras' default reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same loss with another reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of `predictions` against `labels` of the same shape.
    pub fn call(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        let labels = aligned_labels(labels, predictions, "mean_absolute_error")?;
        self.reduction.apply(predictions.sub(&labels)?.abs()?.mean(&[-1], false)?)
    }
}

/// Keras' `Huber`: per element `0.5 e²` for `|e| <= delta`, else `delta (|e| - 0.5 delta)`,
/// averaged over the last axis, reduced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Huber {
    /// Where the loss turns from quadratic to linear (Keras' default 1.0; must be > 0).
    pub delta: f64,
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl Default for Huber {
    fn default() -> Self {
        Huber { delta: 1.0, reduction: Reduction::Mean }
    }
}

impl Huber {
    /// The loss with Keras' defaults (delta 1.0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The same loss with another `delta`.
    pub fn delta(mut self, delta: f64) -> Self {
        self.delta = delta;
        self
    }

    /// The same loss with another reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of `predictions` against `labels` of the same shape.
    pub fn call(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        let delta = self.delta;
        if !(delta.is_finite() && delta > 0.0) {
            return Err(Error::invalid("huber", format!("delta must be finite and > 0, got {delta}")));
        }
        let labels = aligned_labels(labels, predictions, "huber")?;
        let abs_error = predictions.sub(&labels)?.abs()?;
        // q = min(|e|, delta): 0.5 q² + delta (|e| - q) is both branches in one smooth form.
        let quadratic = abs_error.clamp(0.0, delta)?;
        let linear = abs_error.sub(&quadratic)?;
        let per_element = quadratic.square()?.affine(0.5, 0.0)?.add(&linear.affine(delta, 0.0)?)?;
        self.reduction.apply(per_element.mean(&[-1], false)?)
    }
}

/// Keras' `BinaryCrossentropy`: per element `-(y log p + (1 - y) log(1 - p))`, averaged
/// over the last axis, reduced. Probabilities are clipped to `[1e-7, 1 - 1e-7]` as Keras
/// does; logits go through `softplus(x) - x y`, which never overflows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BinaryCrossentropy {
    /// Whether predictions are logits (true) or probabilities (false, Keras' default).
    pub from_logits: bool,
    /// Label smoothing: labels become `y (1 - s) + s / 2`.
    pub label_smoothing: f64,
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl BinaryCrossentropy {
    /// The loss on probabilities with Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The loss on logits.
    pub fn from_logits() -> Self {
        BinaryCrossentropy { from_logits: true, ..Default::default() }
    }

    /// The same loss with label smoothing `s` (in `[0, 1]`).
    pub fn label_smoothing(mut self, s: f64) -> Self {
        self.label_smoothing = s;
        self
    }

    /// The same loss with another reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of `predictions` (probabilities, or logits when `from_logits`) against
    /// 0/1 (or soft) `labels` of the same shape.
    pub fn call(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        const OP: &str = "binary_crossentropy";
        let s = self.label_smoothing;
        if !(0.0..=1.0).contains(&s) {
            return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1], got {s}")));
        }
        let mut labels = aligned_labels(labels, predictions, OP)?;
        if s > 0.0 {
            labels = labels.affine(1.0 - s, 0.5 * s)?;
        }
        let per_element = if self.from_logits {
            predictions.softplus()?.sub(&predictions.mul(&labels)?)?
        } else {
            let p = predictions.clamp(PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)?;
            let positive = labels.mul(&p.log()?)?;
            let negative = labels.affine(-1.0, 1.0)?.mul(&p.affine(-1.0, 1.0)?.log()?)?;
            positive.add(&negative)?.neg()?
        };
        self.reduction.apply(per_element.mean(&[-1], false)?)
    }
}

/// Keras' `KLDivergence`: `sum(y log(y / p), axis=-1)` with both clipped to `[1e-7, 1]`,
/// reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KLDivergence {
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl KLDivergence {
    /// The loss with Keras' default reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same loss with another reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The divergence of the distributions `predictions` from `labels` (same shape, the
    /// distribution over the last axis).
    pub fn call(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        let labels = aligned_labels(labels, predictions, "kl_divergence")?;
        let y = labels.clamp(PROBABILITY_EPSILON, 1.0)?;
        let p = predictions.clamp(PROBABILITY_EPSILON, 1.0)?;
        self.reduction.apply(y.mul(&y.log()?.sub(&p.log()?)?)?.sum(&[-1], false)?)
    }
}

/// Mean squared error with Keras' default reduction (`keras.losses.mean_squared_error`
/// followed by the mean over the batch).
pub fn mean_squared_error(labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
    MeanSquaredError::new().call(labels, predictions)
}

/// Mean absolute error with Keras' default reduction.
pub fn mean_absolute_error(labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
    MeanAbsoluteError::new().call(labels, predictions)
}

/// Huber loss with threshold `delta` (Keras' default 1.0) and the default reduction.
pub fn huber(labels: &Tensor, predictions: &Tensor, delta: f64) -> Result<Tensor> {
    Huber::new().delta(delta).call(labels, predictions)
}

/// Binary cross-entropy of `predictions` (logits when `from_logits`) with the default
/// reduction.
pub fn binary_crossentropy(labels: &Tensor, predictions: &Tensor, from_logits: bool) -> Result<Tensor> {
    BinaryCrossentropy { from_logits, ..Default::default() }.call(labels, predictions)
}

/// KL divergence with the default reduction.
pub fn kl_divergence(labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
    KLDivergence::new().call(labels, predictions)
}
