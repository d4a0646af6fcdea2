//! [`BinaryAccuracy`] and the [`MeanSquaredError`] metric, accumulated over batches.

use crate::losses;
use tapegrad_tensor::{DType, Error, Result, Tensor};

/// The fraction of elements whose thresholded prediction equals the 0/1 label (Keras'
/// `BinaryAccuracy`, threshold 0.5), over every batch seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryAccuracy {
    threshold: f64,
    correct: u64,
    total: u64,
}

impl Default for BinaryAccuracy {
    fn default() -> Self {
        BinaryAccuracy { threshold: 0.5, correct: 0, total: 0 }
    }
}

impl BinaryAccuracy {
    /// An empty accumulator with Keras' threshold 0.5.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty accumulator counting a prediction as 1 when it is above `threshold`
    /// (a probability, or 0 for logits). NaN is an error.
    pub fn with_threshold(threshold: f64) -> Result<Self> {
        if threshold.is_nan() {
            return Err(Error::invalid("binary_accuracy", format!("threshold must be a number, got {threshold}")));
        }
        Ok(BinaryAccuracy { threshold, ..Self::default() })
    }

    /// The threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Adds a batch: `labels` (0/1, float or i64) of the predictions' shape, or `[n]`
    /// against predictions `[n, 1]`.
    pub fn update_state(&mut self, labels: &Tensor, predictions: &Tensor) -> Result<()> {
        if !predictions.dtype().is_float() {
            return Err(Error::invalid(
                "binary_accuracy",
                format!("predictions must be float, got {}", predictions.dtype()),
            ));
        }
        let labels = if labels.dims() == predictions.dims() {
            labels.clone()
        } else if predictions.dims().last() == Some(&1)
            && labels.dims() == &predictions.dims()[..predictions.rank() - 1]
        {
            labels.reshape(predictions.shape().clone())?
        } else {
            return Err(Error::invalid(
                "binary_accuracy",
                format!("labels of shape {} do not match predictions of shape {}", labels.shape(), predictions.shape()),
            ));
        };
        let predicted = predictions.gt_scalar(self.threshold)?;
        let labels = labels.cast(predictions.dtype())?;
        let correct = predicted.equal(&labels)?.cast(DType::I64)?.sum_all()?.to_scalar::<i64>()?;
        self.correct += correct as u64;
        self.total += predictions.elem_count() as u64;
        Ok(())
    }

    /// The accuracy so far (0 when empty, as Keras).
    pub fn result(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// Forgets the batches seen (the threshold stays).
    pub fn reset_state(&mut self) {
        self.correct = 0;
        self.total = 0;
    }
}

/// The mean over every example seen of `mean((labels - predictions)², axis=-1)` (Keras'
/// `metrics.MeanSquaredError`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanSquaredError {
    total: f64,
    count: f64,
}

impl MeanSquaredError {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch (shapes as [`losses::MeanSquaredError`] accepts them).
    pub fn update_state(&mut self, labels: &Tensor, predictions: &Tensor) -> Result<()> {
        let per_example =
            losses::MeanSquaredError::new().reduction(losses::Reduction::None).call(labels, predictions)?;
        self.total += per_example.sum_all()?.cast(DType::F64)?.to_scalar::<f64>()?;
        self.count += per_example.elem_count() as f64;
        Ok(())
    }

    /// The mean squared error so far (0 when empty).
    pub fn result(&self) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.total / self.count
        }
    }

    /// Forgets everything.
    pub fn reset_state(&mut self) {
        *self = Self::default();
    }
}
