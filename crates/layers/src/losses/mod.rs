//! Losses as Keras defines them: softmax cross-entropy here; mean squared / absolute
//! error, Huber, binary cross-entropy and KL divergence in `pointwise.rs`.
//!
//! The functions return the tensor crate's `Result`, so that a loss can end the closure
//! of `GradientTape::record`. Arguments follow Keras' order: labels first, then
//! predictions (logits when `from_logits`). 16-bit (bf16, f16) labels and predictions are
//! cast to f32 first: losses run in f32 under the mixed-precision policies.

mod pointwise;

use crate::mixed_precision::full_precision;
pub use pointwise::{
    binary_crossentropy, huber, kl_divergence, mean_absolute_error, mean_squared_error, BinaryCrossentropy, Huber,
    KLDivergence, MeanAbsoluteError, MeanSquaredError,
};
use tapegrad_tensor::{DType, Error, Result, Tensor};

/// How per-example losses are reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over the examples (Keras' `sum_over_batch_size`, the default).
    #[default]
    Mean,
    /// The sum over the examples.
    Sum,
    /// One loss per example.
    None,
}

impl Reduction {
    fn apply(self, per_example: Tensor) -> Result<Tensor> {
        match self {
            Reduction::Mean => per_example.mean_all(),
            Reduction::Sum => per_example.sum_all(),
            Reduction::None => Ok(per_example),
        }
    }
}

/// The probability floor Keras clips probabilities to when they are not logits.
const PROBABILITY_EPSILON: f64 = 1e-7;

/// Softmax cross-entropy with options (Keras' `CategoricalCrossentropy` and
/// `SparseCategoricalCrossentropy`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropy {
    /// Whether predictions are logits (true) or probabilities (false, Keras' default).
    pub from_logits: bool,
    /// Label smoothing: targets become `y * (1 - s) + s / classes`.
    pub label_smoothing: f64,
    /// How the per-example losses are reduced.
    pub reduction: Reduction,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy { from_logits: false, label_smoothing: 0.0, reduction: Reduction::Mean }
    }
}

impl CrossEntropy {
    /// Cross-entropy from logits, mean reduction, no smoothing.
    pub fn from_logits() -> Self {
        CrossEntropy { from_logits: true, ..Default::default() }
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

    /// The loss for one-hot (or any distribution) `labels` of the predictions' shape
    /// `[..., classes]`.
    pub fn categorical(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        self.check()?;
        let classes = class_count(predictions, "categorical_crossentropy")?;
        let labels =
            if labels.dtype() == predictions.dtype() { labels.clone() } else { labels.cast(predictions.dtype())? };
        let targets = if self.label_smoothing > 0.0 {
            labels.affine(1.0 - self.label_smoothing, self.label_smoothing / classes as f64)?
        } else {
            labels
        };
        let per_example = if self.from_logits {
            Tensor::softmax_cross_entropy(predictions, &targets)?
        } else {
            let probs = predictions.div(&predictions.sum(&[-1], true)?)?;
            let probs = probs.clamp(PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)?;
            if targets.shape() != probs.shape() {
                return Err(Error::ShapeMismatch {
                    op: "categorical_crossentropy",
                    lhs: targets.shape().clone(),
                    rhs: probs.shape().clone(),
                });
            }
            targets.mul(&probs.log()?)?.sum(&[-1], false)?.neg()?
        };
        self.reduction.apply(per_example)
    }

    /// The loss for integer class `labels` (i64, the predictions' shape without the class
    /// axis).
    pub fn sparse(&self, labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
        // 16-bit predictions go to f32 first: the loss runs in f32 (Keras' loss dtype).
        let (labels, predictions) = (&full_precision(labels)?, &full_precision(predictions)?);
        self.check()?;
        check_sparse_labels(labels, predictions)?;
        if self.from_logits && self.label_smoothing == 0.0 {
            return self.reduction.apply(Tensor::sparse_softmax_cross_entropy(predictions, labels)?);
        }
        let classes = class_count(predictions, "sparse_categorical_crossentropy")?;
        if labels.rank() + 1 != predictions.rank() || labels.dims() != &predictions.dims()[..labels.rank()] {
            return Err(Error::invalid(
                "sparse_categorical_crossentropy",
                format!(
                    "labels of shape {} do not match predictions of shape {} (expected the predictions' shape without its last axis)",
                    labels.shape(),
                    predictions.shape()
                ),
            ));
        }
        self.categorical(&Tensor::one_hot(labels, classes, predictions.dtype())?, predictions)
    }

    fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(
                "crossentropy",
                format!("label_smoothing must be in [0, 1], got {}", self.label_smoothing),
            ));
        }
        Ok(())
    }
}

fn class_count(predictions: &Tensor, op: &'static str) -> Result<usize> {
    if predictions.rank() == 0 || !predictions.dtype().is_float() {
        return Err(Error::invalid(
            op,
            format!("predictions must be float with a class axis, got {} {}", predictions.dtype(), predictions.shape()),
        ));
    }
    Ok(predictions.dims()[predictions.rank() - 1])
}

/// Mean softmax cross-entropy of integer `labels` (i64 `[n]`) against `predictions`
/// `[n, classes]` (logits when `from_logits`), as Keras'
/// `sparse_categorical_crossentropy` followed by `reduce_mean`.
pub fn sparse_categorical_crossentropy(labels: &Tensor, predictions: &Tensor, from_logits: bool) -> Result<Tensor> {
    CrossEntropy { from_logits, ..Default::default() }.sparse(labels, predictions)
}

/// The label mistakes of the sparse loss, said as such: one-hot labels (the predictions'
/// shape) belong to the categorical loss, and class indices must be i64.
fn check_sparse_labels(labels: &Tensor, predictions: &Tensor) -> Result<()> {
    const OP: &str = "sparse_categorical_crossentropy";
    if labels.shape() == predictions.shape() && predictions.rank() >= 1 {
        return Err(Error::invalid(
            OP,
            format!(
                "labels of shape {} ({}) have the predictions' shape: they look one-hot. Use \
                 categorical_crossentropy (CrossEntropy::categorical) for one-hot labels, or pass class indices \
                 (i64) of shape {:?}",
                labels.shape(),
                labels.dtype(),
                &predictions.dims()[..predictions.rank() - 1]
            ),
        ));
    }
    if labels.dtype() != DType::I64 {
        return Err(Error::invalid(
            OP,
            format!(
                "labels must be class indices of dtype i64, got {} labels of shape {}: convert them with \
                 `labels.cast(DType::I64)`",
                labels.dtype(),
                labels.shape()
            ),
        ));
    }
    Ok(())
}

/// Mean softmax cross-entropy of one-hot `labels` against `predictions` of the same shape
/// (logits when `from_logits`), as Keras' `categorical_crossentropy` followed by
/// `reduce_mean` (the seed's loss).
pub fn categorical_crossentropy(labels: &Tensor, predictions: &Tensor, from_logits: bool) -> Result<Tensor> {
    CrossEntropy { from_logits, ..Default::default() }.categorical(labels, predictions)
}

/// One-hot encoding in f32, as `tf.one_hot(labels, depth)`.
pub fn one_hot(labels: &Tensor, depth: usize) -> Result<Tensor> {
    Tensor::one_hot(labels, depth, DType::F32)
}
