//! [`MeanIoU`]: the mean intersection over union of a segmentation, from a confusion
//! matrix accumulated over batches.

use tapegrad_tensor::{DType, Error, Result, Tensor};

/// Keras' `MeanIoU(num_classes)`: for each class `TP / (TP + FP + FN)` from the confusion
/// matrix of every batch seen, averaged over the classes present in the labels or the
/// predictions (a class absent from both is ignored, as Keras).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeanIoU {
    num_classes: usize,
    /// A label whose pixels are left out (Keras' `ignore_class`, e.g. a "void" 255).
    ignore_class: Option<i64>,
    /// `confusion[label * num_classes + predicted]`.
    confusion: Vec<u64>,
}

impl MeanIoU {
    /// An empty accumulator over `num_classes` classes (at least 1).
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::invalid("mean_iou", "num_classes must be at least 1, got 0"));
        }
        let too_large = || {
            Error::invalid(
                "mean_iou",
                format!("num_classes {num_classes} needs a confusion matrix too large to allocate"),
            )
        };
        let cells = num_classes.checked_mul(num_classes).ok_or_else(too_large)?;
        let mut confusion = Vec::new();
        confusion.try_reserve_exact(cells).map_err(|_| too_large())?;
        confusion.resize(cells, 0);
        Ok(MeanIoU { num_classes, ignore_class: None, confusion })
    }

    /// Leaves out every pixel labelled `class` (Keras' `ignore_class`): it counts neither
    /// for its label nor for its prediction. It may lie outside `0..num_classes` (a "void"
    /// label such as 255 or -1).
    pub fn ignore_class(mut self, class: i64) -> Self {
        self.ignore_class = Some(class);
        self
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Adds a batch. `labels` are class indices (i64, or integral floats) of any shape;
    /// `predictions` are class indices of the same shape, or float scores with one more
    /// axis of `num_classes` (the highest score wins, as argmax).
    pub fn update_state(&mut self, labels: &Tensor, predictions: &Tensor) -> Result<()> {
        let n = self.num_classes;
        let predicted = if predictions.dtype().is_float()
            && predictions.rank() == labels.rank() + 1
            && predictions.dims().last() == Some(&n)
        {
            predictions.argmax(-1)?
        } else {
            predictions.clone()
        };
        if predicted.dims() != labels.dims() {
            return Err(Error::invalid(
                "mean_iou",
                format!(
                    "predictions of shape {} do not match labels of shape {} (expected class indices of the labels' shape, or scores with a last axis of {n} classes)",
                    predictions.shape(),
                    labels.shape()
                ),
            ));
        }
        let class = |v: f64, what: &str| -> Result<usize> {
            if v >= 0.0 && v < n as f64 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(Error::invalid("mean_iou", format!("{what} {v} is not a class in 0..{n}")))
            }
        };
        let truth = labels.cast(DType::F64)?.to_vec::<f64>()?;
        let guess = predicted.cast(DType::F64)?.to_vec::<f64>()?;
        // Every pixel is checked before any is counted: a bad batch changes nothing.
        let ignored = self.ignore_class.map(|c| c as f64);
        let pairs = truth
            .into_iter()
            .zip(guess)
            .filter(|&(t, _)| Some(t) != ignored)
            .map(|(t, p)| Ok((class(t, "label")?, class(p, "predicted class")?)))
            .collect::<Result<Vec<_>>>()?;
        for (t, p) in pairs {
            self.confusion[t * n + p] += 1;
        }
        Ok(())
    }

    /// The confusion matrix so far, row `label`, column `predicted`.
    pub fn confusion_matrix(&self) -> Vec<Vec<u64>> {
        self.confusion.chunks(self.num_classes).map(|row| row.to_vec()).collect()
    }

    /// The mean IoU so far (0 when empty).
    pub fn result(&self) -> f64 {
        mean_iou(&self.confusion, self.num_classes)
    }

    /// Forgets the batches seen.
    pub fn reset_state(&mut self) {
        self.confusion.iter_mut().for_each(|c| *c = 0);
    }
}

/// The mean over the classes present (a non-empty union) of `TP / (TP + FP + FN)`, from a
/// confusion matrix `confusion[label * n + predicted]`; 0 when no class is present.
pub(crate) fn mean_iou(confusion: &[u64], n: usize) -> f64 {
    let (mut sum, mut present) = (0.0, 0usize);
    for c in 0..n {
        let tp = confusion[c * n + c];
        let row: u64 = confusion[c * n..(c + 1) * n].iter().sum();
        let col: u64 = (0..n).map(|r| confusion[r * n + c]).sum();
        let union = row + col - tp;
        if union > 0 {
            sum += tp as f64 / union as f64;
            present += 1;
        }
    }
    if present == 0 {
        0.0
    } else {
        sum / present as f64
    }
}
