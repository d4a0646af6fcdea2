//! Metrics: accuracy, top-k accuracy and running means, as Keras' metrics with
//! `update_state` / `result` / `reset_state`; binary accuracy, mean squared error and
//! mean IoU in their own files.

mod binary_regression;
mod mean_iou;

pub use binary_regression::{BinaryAccuracy, MeanSquaredError};
pub(crate) use mean_iou::mean_iou;
pub use mean_iou::MeanIoU;

use tapegrad_tensor::{DType, Error, Result, Tensor};

/// The number of rows of `predictions` `[n, classes]` whose highest score is at the label.
/// `labels` are class indices (i64 `[n]`) or one-hot rows of the predictions' shape.
/// Ties go to the lowest class index, as `argmax`.
pub fn correct_count(labels: &Tensor, predictions: &Tensor) -> Result<usize> {
    Ok(correct_count_tensor(labels, predictions)?.to_scalar::<i64>()? as usize)
}

/// [`correct_count`] as an `i64` scalar tensor on the predictions' device, so that a
/// training loop can add it up without waiting for the device at every step.
pub fn correct_count_tensor(labels: &Tensor, predictions: &Tensor) -> Result<Tensor> {
    let classes = class_indices(labels, predictions, "accuracy")?;
    let predicted = predictions.argmax(-1)?;
    predicted.equal(&classes)?.cast(DType::I64)?.sum_all()
}

/// The fraction of rows predicted correctly (Keras' `sparse_categorical_accuracy`, or
/// `categorical_accuracy` for one-hot labels).
pub fn accuracy(labels: &Tensor, predictions: &Tensor) -> Result<f64> {
    let n = predictions.dims().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(Error::invalid("accuracy", "an empty batch has no accuracy"));
    }
    Ok(correct_count(labels, predictions)? as f64 / n as f64)
}

/// The number of rows whose label is among the `k` highest scores. As TF's `in_top_k`, a
/// label tied with the k-th score counts: it is in the top k when fewer than `k` classes
/// score strictly higher.
pub fn top_k_correct_count(labels: &Tensor, predictions: &Tensor, k: usize) -> Result<usize> {
    let classes = class_indices(labels, predictions, "top_k_accuracy")?.to_vec::<i64>()?;
    let cols = predictions.dims()[1];
    // k = 0 counts nothing and k above the class count counts everything: either is a
    // misconfiguration, not an accuracy.
    if k == 0 || k > cols {
        return Err(Error::invalid(
            "top_k_accuracy",
            format!(
                "k must be in 1..={cols} for predictions of shape {} ({cols} classes), got {k}",
                predictions.shape()
            ),
        ));
    }
    let scores = predictions.to_vec_f64()?;
    let mut correct = 0;
    for (row, &label) in scores.chunks(cols).zip(&classes) {
        let target = row[label as usize];
        if row.iter().filter(|&&s| s > target).count() < k {
            correct += 1;
        }
    }
    Ok(correct)
}

/// The fraction of rows whose label is among the `k` highest scores (Keras'
/// `sparse_top_k_categorical_accuracy`).
pub fn top_k_accuracy(labels: &Tensor, predictions: &Tensor, k: usize) -> Result<f64> {
    let n = predictions.dims().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(Error::invalid("top_k_accuracy", "an empty batch has no accuracy"));
    }
    Ok(top_k_correct_count(labels, predictions, k)? as f64 / n as f64)
}

/// Class indices (i64 `[n]`) from labels given as indices or one-hot rows, checked against
/// predictions `[n, classes]`.
fn class_indices(labels: &Tensor, predictions: &Tensor, op: &'static str) -> Result<Tensor> {
    if predictions.rank() != 2 {
        return Err(Error::invalid(op, format!("predictions must be [batch, classes], got {}", predictions.shape())));
    }
    let (n, classes) = (predictions.dims()[0], predictions.dims()[1]);
    let indices = if labels.shape() == predictions.shape() { labels.argmax(-1)? } else { labels.clone() };
    if indices.dtype() != DType::I64 || indices.dims() != [n] {
        return Err(Error::invalid(
            op,
            format!(
                "labels must be i64 class indices [{n}] or one-hot rows {}, got {} {}",
                predictions.shape(),
                labels.dtype(),
                labels.shape()
            ),
        ));
    }
    if indices.device().is_cpu() {
        if let Some(bad) = indices.to_vec::<i64>()?.into_iter().find(|&c| c < 0 || c as usize >= classes) {
            return Err(Error::invalid(op, format!("label {bad} is outside 0..{classes}")));
        }
    }
    Ok(indices)
}

/// A running (weighted) mean (Keras' `metrics.Mean`), e.g. of the loss over an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mean {
    total: f64,
    count: f64,
}

impl Mean {
    /// An empty mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value with weight 1. A NaN or infinite value is kept (the mean becomes NaN or
    /// infinite, as Keras'), so that a diverging loss shows.
    pub fn update_state(&mut self, value: f64) {
        self.total += value;
        self.count += 1.0;
    }

    /// Adds one value with a weight, which must be finite and not negative: a NaN weight
    /// would turn every later result into NaN without saying why.
    pub fn update_state_weighted(&mut self, value: f64, weight: f64) -> Result<()> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(Error::invalid("mean", format!("a sample weight must be finite and >= 0, got {weight}")));
        }
        self.total += value * weight;
        self.count += weight;
        Ok(())
    }

    /// The mean so far (0 when empty, as Keras).
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

/// Accuracy accumulated over batches (Keras' `SparseCategoricalAccuracy`; one-hot labels
/// are accepted too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accuracy {
    correct: usize,
    total: usize,
}

impl Accuracy {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch.
    pub fn update_state(&mut self, labels: &Tensor, predictions: &Tensor) -> Result<()> {
        self.correct += correct_count(labels, predictions)?;
        self.total += predictions.dims()[0];
        Ok(())
    }

    /// The accuracy so far (0 when empty).
    pub fn result(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// Forgets everything.
    pub fn reset_state(&mut self) {
        *self = Self::default();
    }
}

/// Top-k accuracy accumulated over batches (Keras' `SparseTopKCategoricalAccuracy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopKAccuracy {
    k: usize,
    correct: usize,
    total: usize,
}

impl TopKAccuracy {
    /// An empty accumulator for the top `k` (Keras' default k is 5).
    pub fn new(k: usize) -> Self {
        TopKAccuracy { k, correct: 0, total: 0 }
    }

    /// Adds a batch.
    pub fn update_state(&mut self, labels: &Tensor, predictions: &Tensor) -> Result<()> {
        self.correct += top_k_correct_count(labels, predictions, self.k)?;
        self.total += predictions.dims()[0];
        Ok(())
    }

    /// The top-k accuracy so far (0 when empty).
    pub fn result(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// Forgets everything.
    pub fn reset_state(&mut self) {
        self.correct = 0;
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapegrad_tensor::Device;

    fn t(v: Vec<f32>, shape: [usize; 2]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn accuracy_and_top_k() {
        let logits = t(vec![0.1, 0.7, 0.2, 0.5, 0.3, 0.2, 0.1, 0.1, 0.8, 0.3, 0.3, 0.4], [4, 3]);
        let labels = Tensor::from_vec(vec![1i64, 1, 0, 1], [4], &Device::Cpu).unwrap();
        assert_eq!(correct_count(&labels, &logits).unwrap(), 1);
        assert_eq!(accuracy(&labels, &logits).unwrap(), 0.25);
        // top-2: row 0 yes, row 1 yes (0.3 second), row 2 tie 0.1/0.1 at the boundary counts, row 3 tie 0.3/0.3 under 0.4 counts
        assert_eq!(top_k_correct_count(&labels, &logits, 2).unwrap(), 4);
        assert_eq!(top_k_correct_count(&labels, &logits, 1).unwrap(), 1);
        let one_hot = Tensor::one_hot(&labels, 3, DType::F32).unwrap();
        assert_eq!(correct_count(&one_hot, &logits).unwrap(), 1);
        assert!(accuracy(&Tensor::from_vec(vec![3i64, 0, 0, 0], [4], &Device::Cpu).unwrap(), &logits).is_err());
        let mut acc = Accuracy::new();
        acc.update_state(&labels, &logits).unwrap();
        acc.update_state(&labels, &logits).unwrap();
        assert_eq!(acc.result(), 0.25);
        let mut top = TopKAccuracy::new(2);
        top.update_state(&labels, &logits).unwrap();
        assert_eq!(top.result(), 1.0);
    }

    #[test]
    fn running_mean() {
        let mut m = Mean::new();
        assert_eq!(m.result(), 0.0);
        m.update_state(1.0);
        m.update_state_weighted(4.0, 3.0).unwrap();
        assert_eq!(m.result(), 13.0 / 4.0);
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let err = m.update_state_weighted(1.0, bad).unwrap_err().to_string();
            assert!(err.contains("sample weight") && err.contains(&bad.to_string()), "{err}");
        }
        assert_eq!(m.result(), 13.0 / 4.0, "a refused weight leaves the mean as it was");
        m.reset_state();
        assert_eq!(m.result(), 0.0);
    }
}
