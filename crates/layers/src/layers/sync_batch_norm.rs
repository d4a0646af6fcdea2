//! [`SyncBatchNormalization`]: batch normalization whose training statistics are those
//! of the global batch, reduced across data-parallel ranks.

use super::batch_norm::{BatchNormalization, BnWeights, Epilogue};
use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{InputSpec, Layer, Mode, MovingStatistics, Result};
use std::sync::Arc;
use tapegrad_distributed::{Communicator, ReduceOp};
use tapegrad_tensor::{Device, Tensor, Variable};

/// Batch normalization over the last axis with the statistics of the batch across every
/// rank of a [`Communicator`] (Keras' `layers.SyncBatchNormalization`, PyTorch's
/// `SyncBatchNorm`). On `n` ranks with batches `x_r` it computes what
/// [`BatchNormalization`] computes on the concatenated batch, forward (outputs, moving
/// statistics) and backward: the mean and variance are differentiable all-reduces, so the
/// backward pass all-reduces the per-channel sums of the output gradients (`dy` and
/// `dy * x_hat`) in turn. Every rank must call it in training mode the same number of
/// times, and run the backward pass. Inference uses the moving statistics, as
/// `BatchNormalization` does, with no communication.
///
/// Options, defaults and variables (`gamma`, `beta`, `moving_mean`, `moving_variance`)
/// are `BatchNormalization`'s, so checkpoints of either load into the other.
#[derive(Debug)]
pub struct SyncBatchNormalization {
    inner: BatchNormalization,
    comm: Arc<Communicator>,
}

impl SyncBatchNormalization {
    /// Synchronised batch normalization over `comm`'s ranks, with Keras' defaults.
    pub fn new(comm: Arc<Communicator>) -> Self {
        SyncBatchNormalization { inner: BatchNormalization::new().named(unique_name("sync_batch_normalization")), comm }
    }

    /// The moving-average momentum (0.99).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.inner = self.inner.momentum(momentum);
        self
    }

    /// The epsilon added to the variance (1e-3).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.inner = self.inner.epsilon(epsilon);
        self
    }

    /// Whether to add a learned offset `beta`.
    pub fn center(mut self, center: bool) -> Self {
        self.inner = self.inner.center(center);
        self
    }

    /// Whether to multiply by a learned scale `gamma`.
    pub fn scale(mut self, scale: bool) -> Self {
        self.inner = self.inner.scale(scale);
        self
    }

    /// Whether the moving variance uses the unbiased variance of the global batch.
    pub fn unbiased_moving_variance(mut self, unbiased: bool) -> Self {
        self.inner = self.inner.unbiased_moving_variance(unbiased);
        self
    }

    /// The layer's own dtype policy (as [`BatchNormalization::dtype_policy`]).
    pub fn dtype_policy(mut self, policy: crate::mixed_precision::Policy) -> Self {
        self.inner = self.inner.dtype_policy(policy);
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.named(name);
        self
    }

    /// The layer as plain batch normalization: its options and variables, for access.
    pub fn as_batch_normalization(&self) -> &BatchNormalization {
        &self.inner
    }

    /// The global batch's mean and biased variance, as differentiable all-reduces of
    /// per-channel sums (two passes, as the single-process kernel, for accuracy).
    fn train(&self, x: &Tensor, w: &BnWeights) -> Result<Tensor> {
        let name = &self.inner.name;
        let channels = w.moving_mean.value_untracked().elem_count();
        // Shape checks and their messages are BatchNormalization's (inference does them).
        if x.rank() < 2 || x.dims()[x.rank() - 1] != channels {
            return self.inner.compute(x, w, Mode::Infer, Epilogue::Identity);
        }
        let rows = x.elem_count() / channels;
        let flat = x.reshape([rows, channels]).in_layer(name)?;
        let local_rows = Tensor::from_vec(vec![rows as i64], [1], &Device::Cpu).in_layer(name)?;
        let global_rows = self.comm.all_reduce(&local_rows, ReduceOp::Sum)?.to_vec::<i64>().in_layer(name)?[0] as usize;
        let inv_n = 1.0 / global_rows as f64;
        let mean = self.comm.all_reduce_differentiable(&flat.sum(&[0], false).in_layer(name)?, ReduceOp::Sum)?;
        let mean = mean.mul_scalar(inv_n).in_layer(name)?;
        let centered = flat.sub(&mean).in_layer(name)?;
        let squares = centered.square().and_then(|s| s.sum(&[0], false)).in_layer(name)?;
        let var = self.comm.all_reduce_differentiable(&squares, ReduceOp::Sum)?.mul_scalar(inv_n).in_layer(name)?;
        let inv_std =
            var.add_scalar(self.inner.epsilon).and_then(|v| v.sqrt()).and_then(|s| s.recip()).in_layer(name)?;
        let mut y = centered.mul(&inv_std).in_layer(name)?;
        if let Some(g) = &w.gamma {
            y = y.mul(&g.value()).in_layer(name)?;
        }
        if let Some(b) = &w.beta {
            y = y.add(&b.value()).in_layer(name)?;
        }
        self.inner.update_moving_statistics(w, &mean, &var, global_rows).in_layer(name)?;
        y.reshape(x.shape().clone()).in_layer(name)
    }
}

impl Layer for SyncBatchNormalization {
    fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = self.inner.built(&InputSpec::from(input))?;
        if !input.dtype().is_float() {
            return self.inner.compute(input, w, mode, Epilogue::Identity);
        }
        match mode {
            // In f32 for 16-bit inputs, as BatchNormalization.
            Mode::Train => crate::mixed_precision::in_full_precision(input, |x| self.train(x, w)),
            Mode::Infer => self.inner.compute(input, w, mode, Epilogue::Identity),
        }
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn policy_override(&self) -> Option<crate::mixed_precision::Policy> {
        self.inner.policy_override()
    }

    fn build(&self, input: &InputSpec) -> Result<()> {
        self.inner.build(input)
    }

    fn moving_statistics(&self) -> Option<MovingStatistics> {
        self.inner.moving_statistics()
    }

    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        self.inner.visit_variables(visit)
    }
}
