//! Batch normalization: the training forward pass with batch statistics and its fused
//! backward pass, and the inference forward pass from given statistics.
//!
//! Channels are the last axis: NHWC input `[N, H, W, C]` is normalised over N, H and W,
//! 2-D input `[N, C]` over N. The backward primitive computes `d_x`, `d_gamma` and
//! `d_beta` in one pass; it is not itself differentiable (asking an outer tape for a
//! second-order gradient through `batch_norm_train` is an error). The inference pass is
//! composed from elementwise ops and is differentiable to any order in all its inputs.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::BatchNormSpec;
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// Checks the input and the per-channel parameters; returns the `[rows, channels]` view.
fn batch_norm_spec(
    op: &'static str,
    x: &Tensor,
    params: &[(&str, Option<&Tensor>)],
    epsilon: f64,
) -> Result<BatchNormSpec> {
    x.check_float(op)?;
    if x.rank() != 2 && x.rank() != 4 {
        return Err(Error::invalid(
            op,
            format!("the input must be [N, C] or NHWC [N, H, W, C], got shape {} (rank {})", x.shape(), x.rank()),
        ));
    }
    let channels = x.dims()[x.rank() - 1];
    let rows: usize = x.dims()[..x.rank() - 1].iter().product();
    if rows == 0 {
        return Err(Error::invalid(
            op,
            format!("the input of shape {} has no rows to take statistics over", x.shape()),
        ));
    }
    for (name, p) in params {
        let Some(p) = p else { continue };
        x.check_same(p, op)?;
        if p.dims() != [channels] {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} has shape {} but the input of shape {} has {channels} channels (expected [{channels}])",
                    p.shape(),
                    x.shape()
                ),
            ));
        }
    }
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(Error::invalid(op, format!("epsilon must be finite and non-negative, got {epsilon}")));
    }
    Ok(BatchNormSpec { rows, channels, epsilon })
}

impl Tensor {
    /// Training-mode batch normalization: normalises with the batch mean and biased
    /// variance over N, H, W (NHWC input) or N (`[N, C]` input), then scales by `gamma`
    /// and shifts by `beta` (`[C]` each; missing means 1 and 0):
    /// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`.
    ///
    /// Returns `(y, batch_mean [C], batch_var [C])`, the variance biased (divided by the
    /// number of rows), for the moving-average update. Only `y` is differentiable (with
    /// respect to `x`, `gamma` and `beta`, by a fused backward kernel, first order only);
    /// the statistics are constants to the tape.
    pub fn batch_norm_train(
        &self,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        epsilon: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let spec = batch_norm_spec("batch_norm_train", self, &[("gamma", gamma), ("beta", beta)], epsilon)?;
        let stat_shape = Shape::new(&[spec.channels]);
        let outputs = [self.shape(), &stat_shape, &stat_shape];
        let (y, mean, var) = guarded("batch_norm_train", &[self], &outputs, self.dtype(), &self.device(), || {
            self.storage().batch_norm_train(gamma.map(|g| g.storage()), beta.map(|b| b.storage()), &spec)
        })?;
        let y = Tensor::from_storage(y, self.shape().clone());
        let mean = Tensor::from_storage(mean, stat_shape.clone());
        let var = Tensor::from_storage(var, stat_shape);
        let mut inputs = vec![self];
        inputs.extend(gamma);
        inputs.extend(beta);
        let (x, gamma_t, has_beta) = (self.clone(), gamma.cloned(), beta.is_some());
        let (saved_mean, saved_var) = (mean.clone(), var.clone());
        record_op("batch_norm_train", &inputs, &y, move |g| {
            let (dx, d_gamma, d_beta) = batch_norm_backward(&x, g, gamma_t.as_ref(), &saved_mean, &saved_var, spec)?;
            let mut grads = vec![Some(dx)];
            if gamma_t.is_some() {
                grads.push(Some(d_gamma));
            }
            if has_beta {
                grads.push(Some(d_beta));
            }
            Ok(grads)
        });
        Ok((y, mean, var))
    }

    /// Inference-mode batch normalization from given statistics (the moving averages):
    /// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`, with `mean`, `var`, `gamma`
    /// and `beta` of shape `[C]` (C the last axis of a `[N, C]` or NHWC input).
    /// Differentiable in all inputs.
    pub fn batch_norm_infer(
        &self,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        mean: &Tensor,
        var: &Tensor,
        epsilon: f64,
    ) -> Result<Tensor> {
        batch_norm_spec(
            "batch_norm_infer",
            self,
            &[("gamma", gamma), ("beta", beta), ("mean", Some(mean)), ("var", Some(var))],
            epsilon,
        )?;
        // Fold everything per-channel into one scale and one shift: two passes over x.
        let mut scale = var.add_scalar(epsilon)?.sqrt()?.recip()?;
        if let Some(g) = gamma {
            scale = scale.mul(g)?;
        }
        let mut shift = mean.mul(&scale)?.neg()?;
        if let Some(b) = beta {
            shift = shift.add(b)?;
        }
        self.mul(&scale)?.add(&shift)
    }
}

/// The fused batch-norm gradient. Its three outputs are recorded with a rule that
/// reports that they cannot be differentiated again.
fn batch_norm_backward(
    x: &Tensor,
    grad_out: &Tensor,
    gamma: Option<&Tensor>,
    mean: &Tensor,
    var: &Tensor,
    spec: BatchNormSpec,
) -> Result<(Tensor, Tensor, Tensor)> {
    let stat_shape = Shape::new(&[spec.channels]);
    let outputs = [x.shape(), &stat_shape, &stat_shape];
    let (dx, d_gamma, d_beta) =
        guarded("batch_norm_backward", &[x, grad_out], &outputs, x.dtype(), &x.device(), || {
            x.storage().batch_norm_backward(
                grad_out.storage(),
                gamma.map(|g| g.storage()),
                mean.storage(),
                var.storage(),
                &spec,
            )
        })?;
    let dx = Tensor::from_storage(dx, x.shape().clone());
    let d_gamma = Tensor::from_storage(d_gamma, stat_shape.clone());
    let d_beta = Tensor::from_storage(d_beta, stat_shape);
    let mut inputs = vec![x, grad_out];
    inputs.extend(gamma);
    for out in [&dx, &d_gamma, &d_beta] {
        record_op("batch_norm_backward", &inputs, out, |_| {
            Err(Error::invalid(
                "batch_norm_backward",
                "the batch-norm gradient is not differentiable (no second-order gradients through batch_norm_train)",
            ))
        });
    }
    Ok((dx, d_gamma, d_beta))
}
