//! The [`Metric`]s `fit` and `evaluate` report, and the running mean of the loss, both
//! accumulated on the device: updating them queues work and reads nothing back, so a GPU
//! step does not wait for the host. Only [`Metric::result`] reads (at the end of an epoch,
//! or every few steps for the progress bar).

use crate::metrics::{self, BinaryAccuracy, MeanIoU};
use crate::Result;
use tapegrad_tensor::{DType, Tensor};

/// A metric that `fit` and `evaluate` update after every batch (Keras'
/// `update_state` / `result` / `reset_state`). `update_state` should keep its sums on the
/// device; `result` reads them.
pub trait Metric {
    /// The name logged (`accuracy`; `val_accuracy` for the validation value).
    fn name(&self) -> &str;

    /// Adds a batch: targets and the model's outputs.
    fn update_state(&mut self, targets: &Tensor, predictions: &Tensor) -> Result<()>;

    /// The value over every batch since the last reset (reads the device).
    fn result(&self) -> Result<f64>;

    /// Forgets every batch.
    fn reset_state(&mut self);
}

/// Adds `value` to an optional running device sum.
fn accumulate(sum: &mut Option<Tensor>, value: Tensor) -> Result<()> {
    *sum = Some(match sum.take() {
        Some(s) => s.add(&value)?,
        None => value,
    });
    Ok(())
}

/// Keras' `SparseCategoricalAccuracy` (logged as `accuracy`): the fraction of targets
/// whose highest score is at the target class. Predictions `[..., classes]` and `i64`
/// targets of the predictions' shape without the last axis (one per image, or one per
/// pixel for segmentation). The count of correct targets stays on the device.
#[derive(Clone, Debug, Default)]
pub struct SparseCategoricalAccuracy {
    correct: Option<Tensor>,
    total: usize,
}

impl SparseCategoricalAccuracy {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Metric for SparseCategoricalAccuracy {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn update_state(&mut self, targets: &Tensor, predictions: &Tensor) -> Result<()> {
        let classes = predictions.dims().last().copied().unwrap_or(0);
        let n = targets.elem_count();
        let count = metrics::correct_count_tensor(&targets.reshape([n])?, &predictions.reshape([n, classes.max(1)])?)?;
        accumulate(&mut self.correct, count)?;
        self.total += n;
        Ok(())
    }

    fn result(&self) -> Result<f64> {
        match &self.correct {
            Some(c) if self.total > 0 => Ok(c.to_scalar::<i64>()? as f64 / self.total as f64),
            _ => Ok(0.0),
        }
    }

    fn reset_state(&mut self) {
        *self = Self::default();
    }
}

/// Mean IoU (logged as `mean_iou`). It counts its confusion matrix on the host, so it
/// reads every batch back: fine on a CPU, a synchronisation per step on a GPU, where
/// [`SparseMeanIoU`] keeps the matrix on the device.
impl Metric for MeanIoU {
    fn name(&self) -> &str {
        "mean_iou"
    }

    fn update_state(&mut self, targets: &Tensor, predictions: &Tensor) -> Result<()> {
        Ok(MeanIoU::update_state(self, targets, predictions)?)
    }

    fn result(&self) -> Result<f64> {
        Ok(MeanIoU::result(self))
    }

    fn reset_state(&mut self) {
        MeanIoU::reset_state(self)
    }
}

/// Keras' `MeanIoU(num_classes)` (logged as `mean_iou`) with its confusion matrix on the
/// device: `i64` class-index targets of any shape, and scores with one more (last) axis of
/// `num_classes` (the highest score is the predicted class). Each batch's matrix is
/// `one_hot(targets)^T @ one_hot(predicted)` (exact counts: batches are cut into chunks of
/// at most 2^24 targets), added up in f64; `result` reads it and averages `TP / (TP + FP +
/// FN)` over the classes present, as [`MeanIoU`]. A target outside `0..num_classes` is an
/// error naming it, unless it is [`SparseMeanIoU::ignore_class`], whose targets count
/// nowhere. Memory: two `[targets, classes]` one-hot matrices per batch.
#[derive(Clone, Debug)]
pub struct SparseMeanIoU {
    num_classes: usize,
    ignore_class: Option<i64>,
    confusion: Option<Tensor>,
}

impl SparseMeanIoU {
    /// An empty accumulator over `num_classes` classes (at least 1).
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(crate::Error::Invalid("SparseMeanIoU: num_classes must be at least 1, got 0".into()));
        }
        Ok(SparseMeanIoU { num_classes, ignore_class: None, confusion: None })
    }

    /// Leaves out every target equal to `class` (Keras' `ignore_class`), also one inside
    /// `0..num_classes`: it counts neither for its label nor for its prediction.
    pub fn ignore_class(mut self, class: i64) -> Self {
        self.ignore_class = Some(class);
        self
    }
}

impl Metric for SparseMeanIoU {
    fn name(&self) -> &str {
        "mean_iou"
    }

    fn update_state(&mut self, targets: &Tensor, predictions: &Tensor) -> Result<()> {
        let n = self.num_classes;
        if predictions.rank() != targets.rank() + 1 || predictions.dims().last() != Some(&n) {
            return Err(crate::Error::Invalid(format!(
                "SparseMeanIoU: predictions of shape {} do not match targets of shape {} (expected scores with a \
                 last axis of {n} classes)",
                predictions.shape(),
                targets.shape()
            )));
        }
        let count = targets.elem_count();
        let (truth, guess) = (targets.reshape([count])?, predictions.argmax(-1)?.reshape([count])?);
        const CHUNK: usize = 1 << 24; // f32 counts stay exact
        for start in (0..count).step_by(CHUNK) {
            let len = CHUNK.min(count - start);
            let chunk = truth.narrow(0, start, len)?;
            let t = match self.ignore_class {
                None => Tensor::one_hot(&chunk, n, DType::F32)?,
                Some(ignored) => {
                    // Ignored targets become class 0 with a zero row: they count nowhere,
                    // whether or not `ignored` is a class.
                    let ignored = Tensor::full(ignored as f64, (), DType::I64, &chunk.device())?;
                    let keep = chunk.not_equal(&ignored)?;
                    let rows = Tensor::one_hot(&chunk.mul(&keep)?, n, DType::F32)?;
                    rows.mul(&keep.cast(DType::F32)?.unsqueeze(-1)?)?
                }
            };
            let p = Tensor::one_hot(&guess.narrow(0, start, len)?, n, DType::F32)?;
            accumulate(&mut self.confusion, t.matmul_transposed(&p, true, false)?.cast(DType::F64)?)?;
        }
        Ok(())
    }

    fn result(&self) -> Result<f64> {
        let Some(confusion) = &self.confusion else { return Ok(0.0) };
        let counts: Vec<u64> = confusion.to_vec::<f64>()?.into_iter().map(|c| c as u64).collect();
        Ok(metrics::mean_iou(&counts, self.num_classes))
    }

    fn reset_state(&mut self) {
        self.confusion = None;
    }
}

/// Binary accuracy (logged as `binary_accuracy`); counted on the host like [`MeanIoU`].
impl Metric for BinaryAccuracy {
    fn name(&self) -> &str {
        "binary_accuracy"
    }

    fn update_state(&mut self, targets: &Tensor, predictions: &Tensor) -> Result<()> {
        Ok(BinaryAccuracy::update_state(self, targets, predictions)?)
    }

    fn result(&self) -> Result<f64> {
        Ok(BinaryAccuracy::result(self))
    }

    fn reset_state(&mut self) {
        BinaryAccuracy::reset_state(self)
    }
}

/// The mean of a per-batch loss, weighted by each batch's number of targets, summed on
/// the device (the loss `fit` logs).
#[derive(Clone, Debug, Default)]
pub(crate) struct LossMean {
    sum: Option<Tensor>,
    count: usize,
}

impl LossMean {
    /// Adds a batch's mean loss over `count` targets.
    pub(crate) fn update(&mut self, loss: &Tensor, count: usize) -> Result<()> {
        accumulate(&mut self.sum, loss.mul_scalar(count as f64)?)?;
        self.count += count;
        Ok(())
    }

    /// The mean so far (NaN before any batch), read from the device.
    pub(crate) fn result(&self) -> Result<f64> {
        match &self.sum {
            Some(s) if self.count > 0 => Ok(s.to_vec_f64()?[0] / self.count as f64),
            _ => Ok(f64::NAN),
        }
    }
}
