//! softmax, log_softmax, softmax cross-entropy from logits, and one_hot.
//!
//! `log_softmax` over the last axis is the one primitive (a stable, fused kernel); the
//! rest is composed from tensor ops, so it runs on every backend and is differentiable
//! wherever its parts are.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{DType, Error, Result, Tensor};

/// `0..depth` as i64 on `device`. On a GPU it is uploaded once per depth and kept: a
/// training step then makes no host-to-device copy for its one-hot labels, which a CUDA
/// graph could not capture (`cuda_graph`).
fn class_indices(depth: usize, device: crate::Device) -> Result<Tensor> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: Mutex<Option<HashMap<(usize, crate::Device), Tensor>>> = Mutex::new(None);
    if device.is_cpu() {
        return Tensor::arange(0.0, depth as f64, 1.0, DType::I64, &device);
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(t) = cache.get(&(depth, device)) {
        return Ok(t.clone());
    }
    let t = Tensor::arange(0.0, depth as f64, 1.0, DType::I64, &device)?;
    cache.insert((depth, device), t.clone());
    Ok(t)
}

impl Tensor {
    /// `log(softmax(x))` along `axis`, computed as `x - max - log(sum(exp(x - max)))`:
    /// finite for logits of any size.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.check_float("log_softmax")?;
        let a = self.shape().axis(axis, "log_softmax")?;
        let last = self.rank() - 1;
        if a != last {
            // Move the axis last, apply, move it back.
            return self.transpose(a as isize, last as isize)?.log_softmax(-1)?.transpose(a as isize, last as isize);
        }
        let cols = self.dims()[last];
        if cols == 0 {
            return Err(Error::invalid("log_softmax", format!("axis {axis} of shape {} is empty", self.shape())));
        }
        let rows = self.elem_count() / cols;
        let storage = guarded("log_softmax", &[self], &[self.shape()], self.dtype(), &self.device(), || {
            self.storage().log_softmax(rows, cols)
        })?;
        let out = Tensor::from_storage(storage, self.shape().clone());
        let y = out.clone();
        record_op("log_softmax", &[self], &out, move |g| {
            // d/dx = g - softmax(x) * sum(g)
            let sum = g.sum(&[-1], true)?;
            Ok(vec![Some(g.sub(&y.exp()?.mul(&sum)?)?)])
        });
        Ok(out)
    }

    /// `softmax(x)` along `axis`.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.log_softmax(axis)?.exp()
    }

    /// One-hot encoding of integer `labels` (any shape, dtype i64) into `depth` classes:
    /// a new last axis, 1 at the label and 0 elsewhere, in `dtype`. No gradient. On the CPU
    /// a label outside `0..depth` is an error; on other devices (where checking would
    /// wait for the device) it gives a row of zeros, as TF's `one_hot`.
    pub fn one_hot(labels: &Tensor, depth: usize, dtype: DType) -> Result<Tensor> {
        if labels.dtype() != DType::I64 {
            return Err(Error::UnsupportedDType { op: "one_hot", dtype: labels.dtype(), expected: "i64 labels" });
        }
        if labels.device().is_cpu() {
            let values = labels.to_vec::<i64>()?;
            if let Some((i, &v)) = values.iter().enumerate().find(|(_, &v)| v < 0 || v as usize >= depth) {
                return Err(Error::invalid("one_hot", format!("label {v} at index {i} is outside 0..{depth}")));
            }
        }
        let classes = class_indices(depth, labels.device())?;
        labels.unsqueeze(-1)?.equal(&classes)?.cast(dtype)
    }

    /// Softmax cross-entropy from logits `[..., classes]` and labels of the same shape
    /// (one-hot or any distribution): `-sum(labels * log_softmax(logits), -1)`, one loss per
    /// row. Stable for large logits; differentiable in both arguments.
    pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if logits.shape() != labels.shape() {
            return Err(Error::ShapeMismatch {
                op: "softmax_cross_entropy",
                lhs: logits.shape().clone(),
                rhs: labels.shape().clone(),
            });
        }
        if logits.rank() == 0 {
            return Err(Error::invalid("softmax_cross_entropy", "logits must have a class axis"));
        }
        labels.mul(&logits.log_softmax(-1)?)?.sum(&[-1], false)?.neg()
    }

    /// Softmax cross-entropy from logits `[..., classes]` and integer class labels `[...]`
    /// (dtype i64), one loss per row.
    pub fn sparse_softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if logits.rank() == 0 || labels.dims() != &logits.dims()[..logits.rank() - 1] {
            return Err(Error::invalid(
                "sparse_softmax_cross_entropy",
                format!("labels of shape {} do not match logits of shape {} (expected the logits' shape without its last axis)", labels.shape(), logits.shape()),
            ));
        }
        let classes = logits.dims()[logits.rank() - 1];
        let one_hot = Tensor::one_hot(labels, classes, logits.dtype())?;
        Tensor::softmax_cross_entropy(logits, &one_hot)
    }
}
