//! Batch normalization: the training forward pass with batch statistics and its fused
//! backward pass, and the inference forward pass from given statistics. The training pass
//! also comes fused with what follows it in a ResNet block: `relu(bn(x))` and
//! `relu(residual + bn(x))`, one forward and one backward pass each instead of three or
//! four (the same arithmetic in the same order, so the results equal the unfused ops'
//! bit for bit).
//!
//! Channels are the last axis: NHWC input `[N, H, W, C]` is normalised over N, H and W,
//! 2-D input `[N, C]` over N. The backward primitive computes `d_x`, `d_gamma` and
//! `d_beta` in one pass; it is not itself differentiable (asking an outer tape for a
//! second-order gradient through `batch_norm_train` is an error). The inference pass is
//! composed from elementwise ops and is differentiable to any order in all its inputs.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
/// The batch-norm block kernels; group norm reuses its per-channel affine maps.
pub(crate) mod rows;

use crate::backend::{BatchNormEpilogue, BatchNormSpec};
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// Checks the input and the per-channel parameters; returns the `[rows, channels]` view.
fn batch_norm_spec(
    op: &'static str,
    x: &Tensor,
    params: &[(&str, Option<&Tensor>)],
    epsilon: f64,
    epilogue: BatchNormEpilogue,
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
    Ok(BatchNormSpec { rows, channels, epsilon, epilogue })
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
        batch_norm_train_fused("batch_norm_train", self, gamma, beta, None, BatchNormEpilogue::Identity, epsilon)
    }

    /// [`batch_norm_train`](Self::batch_norm_train) followed by ReLU, in one forward and
    /// one backward pass: `y = relu(bn(x))`, where `relu` passes NaN through and its
    /// gradient is `y > 0`, as [`relu`](Self::relu)'s. Returns `(y, batch_mean,
    /// batch_var)`; the values and gradients equal those of `batch_norm_train` then
    /// `relu` bit for bit.
    pub fn batch_norm_relu_train(
        &self,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        epsilon: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        batch_norm_train_fused("batch_norm_relu_train", self, gamma, beta, None, BatchNormEpilogue::Relu, epsilon)
    }

    /// The end of a ResNet block in one forward and one backward pass:
    /// `y = relu(residual + bn(x))`, with `residual` of the input's shape (no
    /// broadcasting). Returns `(y, batch_mean, batch_var)`; differentiable in `x`, `gamma`,
    /// `beta` and `residual`, with the values and gradients of `batch_norm_train`, `add`
    /// and `relu` bit for bit.
    pub fn batch_norm_add_relu_train(
        &self,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        residual: &Tensor,
        epsilon: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "batch_norm_add_relu_train";
        self.check_same(residual, OP)?;
        if residual.shape() != self.shape() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the residual has shape {} but the input has shape {} (they must be equal)",
                    residual.shape(),
                    self.shape()
                ),
            ));
        }
        batch_norm_train_fused(OP, self, gamma, beta, Some(residual), BatchNormEpilogue::AddRelu, epsilon)
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
            BatchNormEpilogue::Identity,
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

/// The training pass with its epilogue (`residual` given exactly for `AddRelu`), recorded
/// with the fused backward pass as its rule.
fn batch_norm_train_fused(
    op: &'static str,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    residual: Option<&Tensor>,
    epilogue: BatchNormEpilogue,
    epsilon: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let spec = batch_norm_spec(op, x, &[("gamma", gamma), ("beta", beta)], epsilon, epilogue)?;
    let stat_shape = Shape::new(&[spec.channels]);
    let outputs = [x.shape(), &stat_shape, &stat_shape];
    let (y, mean, var) = guarded(op, &[x], &outputs, x.dtype(), &x.device(), || {
        x.storage().batch_norm_train(
            gamma.map(|g| g.storage()),
            beta.map(|b| b.storage()),
            residual.map(|r| r.storage()),
            &spec,
        )
    })?;
    let y = Tensor::from_storage(y, x.shape().clone());
    let mean = Tensor::from_storage(mean, stat_shape.clone());
    let var = Tensor::from_storage(var, stat_shape);
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    inputs.extend(residual);
    let (x, gamma_t, has_beta) = (x.clone(), gamma.cloned(), beta.is_some());
    let (saved_mean, saved_var) = (mean.clone(), var.clone());
    // The ReLU's mask is read from the output, which the next layer keeps alive anyway.
    let saved_y = (epilogue != BatchNormEpilogue::Identity).then(|| y.clone());
    record_op(op, &inputs, &y, move |g| {
        let (dx, d_gamma, d_beta, d_residual) =
            batch_norm_backward(&x, g, gamma_t.as_ref(), &saved_mean, &saved_var, saved_y.as_ref(), spec)?;
        let mut grads = vec![Some(dx)];
        if gamma_t.is_some() {
            grads.push(Some(d_gamma));
        }
        if has_beta {
            grads.push(Some(d_beta));
        }
        if d_residual.is_some() {
            grads.push(d_residual);
        }
        Ok(grads)
    });
    Ok((y, mean, var))
}

/// The fused batch-norm gradient `(d_x, d_gamma, d_beta, d_residual)`. Its outputs are
/// recorded with a rule that reports that they cannot be differentiated again.
fn batch_norm_backward(
    x: &Tensor,
    grad_out: &Tensor,
    gamma: Option<&Tensor>,
    mean: &Tensor,
    var: &Tensor,
    output: Option<&Tensor>,
    spec: BatchNormSpec,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    const OP: &str = "batch_norm_backward";
    let stat_shape = Shape::new(&[spec.channels]);
    let with_residual = spec.epilogue == BatchNormEpilogue::AddRelu;
    let mut outputs = vec![x.shape(), &stat_shape, &stat_shape];
    if with_residual {
        outputs.push(x.shape());
    }
    let (dx, d_gamma, d_beta, d_residual) = guarded(OP, &[x, grad_out], &outputs, x.dtype(), &x.device(), || {
        x.storage().batch_norm_backward(
            grad_out.storage(),
            gamma.map(|g| g.storage()),
            mean.storage(),
            var.storage(),
            output.map(|y| y.storage()),
            &spec,
        )
    })?;
    let dx = Tensor::from_storage(dx, x.shape().clone());
    let d_gamma = Tensor::from_storage(d_gamma, stat_shape.clone());
    let d_beta = Tensor::from_storage(d_beta, stat_shape);
    let d_residual = d_residual.map(|d| Tensor::from_storage(d, x.shape().clone()));
    let mut inputs = vec![x, grad_out];
    inputs.extend(gamma);
    inputs.extend(output);
    for out in [Some(&dx), Some(&d_gamma), Some(&d_beta), d_residual.as_ref()].into_iter().flatten() {
        record_op(OP, &inputs, out, |_| {
            Err(Error::invalid(
                OP,
                "the batch-norm gradient is not differentiable (no second-order gradients through batch_norm_train \
                 and its fused forms)",
            ))
        });
    }
    Ok((dx, d_gamma, d_beta, d_residual))
}
