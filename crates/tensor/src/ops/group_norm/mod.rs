//! Group and layer normalization: statistics per sample (and group), an affine map per
//! channel, and one fused backward primitive.
//!
//! Both ops are one primitive, [`group_norm`](crate::BackendStorage::group_norm), over a
//! buffer viewed as `[outer, spatial, groups, channels_per_group]` (see
//! [`GroupNormSpec`]): layer normalization over the trailing axes is one group with no
//! spatial positions, group normalization of NHWC input has `spatial = H * W`. The
//! backward primitive computes `d_x`, `d_gamma` and `d_beta` in one call; it is not itself
//! differentiable (asking an outer tape for a second-order gradient through these ops is
//! an error, as for `batch_norm_train`).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod kernels;

use crate::backend::GroupNormSpec;
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// Checks the dtype, epsilon and the affine parameters (each of shape `param_dims`).
fn check_operands(
    op: &'static str,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    param_dims: &[usize],
    epsilon: f64,
) -> Result<()> {
    x.check_float(op)?;
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        let Some(p) = p else { continue };
        x.check_same(p, op)?;
        if p.dims() != param_dims {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} has shape {} but the input of shape {} needs {}",
                    p.shape(),
                    x.shape(),
                    Shape::new(param_dims)
                ),
            ));
        }
    }
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(Error::invalid(op, format!("epsilon must be finite and non-negative, got {epsilon}")));
    }
    Ok(())
}

impl Tensor {
    /// Layer normalization over the axes `first_axis..rank` (Keras' `LayerNormalization`
    /// with those axes, PyTorch's `layer_norm` with `normalized_shape = dims[first_axis..]`):
    /// each slice over those axes is normalised with its own mean and biased variance, then
    /// scaled elementwise by `gamma` and shifted by `beta` (both of shape
    /// `dims[first_axis..]`; missing means 1 and 0):
    /// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`.
    ///
    /// Differentiable in `x`, `gamma` and `beta` by a fused backward kernel (first order
    /// only).
    pub fn layer_norm(
        &self,
        first_axis: usize,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        epsilon: f64,
    ) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        if first_axis >= self.rank() {
            return Err(Error::invalid(
                OP,
                format!(
                    "first_axis {first_axis} is out of range for an input of shape {} (rank {})",
                    self.shape(),
                    self.rank()
                ),
            ));
        }
        let normalized = &self.dims()[first_axis..];
        check_operands(OP, self, gamma, beta, normalized, epsilon)?;
        let spec = GroupNormSpec {
            outer: self.dims()[..first_axis].iter().product(),
            spatial: 1,
            groups: 1,
            channels_per_group: normalized.iter().product(),
            epsilon,
        };
        self.normalize_groups(OP, gamma, beta, spec)
    }

    /// Group normalization with channels last (Keras' `GroupNormalization`, PyTorch's
    /// `group_norm` on NCHW): the `C` channels of an input `[N, ..., C]` (rank at least 2)
    /// are split into `groups` consecutive groups, each group of each sample is normalised
    /// with the mean and biased variance of its values over every axis between the first
    /// and the last, then each channel is scaled by `gamma` and shifted by `beta` (`[C]`
    /// each; missing means 1 and 0). `groups = C` is instance normalization, `groups = 1`
    /// layer normalization over all but the first axis with a per-channel affine map.
    ///
    /// Differentiable in `x`, `gamma` and `beta` by a fused backward kernel (first order
    /// only).
    pub fn group_norm(
        &self,
        groups: usize,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        epsilon: f64,
    ) -> Result<Tensor> {
        const OP: &str = "group_norm";
        if self.rank() < 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "the input must be [N, ..., C] (rank 2 or more), got shape {} (rank {})",
                    self.shape(),
                    self.rank()
                ),
            ));
        }
        let channels = self.dims()[self.rank() - 1];
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::invalid(
                OP,
                format!(
                    "groups = {groups} must divide the {channels} channels (last axis) of the input of shape {}",
                    self.shape()
                ),
            ));
        }
        check_operands(OP, self, gamma, beta, &[channels], epsilon)?;
        let spec = GroupNormSpec {
            outer: self.dims()[0],
            spatial: self.dims()[1..self.rank() - 1].iter().product(),
            groups,
            channels_per_group: channels / groups,
            epsilon,
        };
        self.normalize_groups(OP, gamma, beta, spec)
    }

    /// The primitive under both ops, recorded with its fused gradient.
    fn normalize_groups(
        &self,
        op: &'static str,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        spec: GroupNormSpec,
    ) -> Result<Tensor> {
        let stat_shape = Shape::new(&[spec.stat_count()]);
        let outputs = [self.shape(), &stat_shape, &stat_shape];
        let (y, mean, rstd) = guarded(op, &[self], &outputs, self.dtype(), &self.device(), || {
            self.storage().group_norm(gamma.map(|g| g.storage()), beta.map(|b| b.storage()), &spec)
        })?;
        let y = Tensor::from_storage(y, self.shape().clone());
        let mean = Tensor::from_storage(mean, stat_shape.clone());
        let rstd = Tensor::from_storage(rstd, stat_shape);
        let mut inputs = vec![self];
        inputs.extend(gamma);
        inputs.extend(beta);
        let (x, gamma_t, has_beta) = (self.clone(), gamma.cloned(), beta.is_some());
        record_op(op, &inputs, &y, move |g| {
            let params = gamma_t.as_ref().map_or_else(|| Shape::new(&[spec.channels()]), |p| p.shape().clone());
            let (dx, d_gamma, d_beta) = group_norm_backward(&x, g, gamma_t.as_ref(), &mean, &rstd, spec)?;
            let mut grads = vec![Some(dx)];
            if gamma_t.is_some() {
                grads.push(Some(d_gamma.reshape(params.clone())?));
            }
            if has_beta {
                grads.push(Some(d_beta.reshape(params)?));
            }
            Ok(grads)
        });
        Ok(y)
    }
}

/// The fused gradient (`d_gamma` and `d_beta` flat, `[channels]`). Its three outputs are
/// recorded with a rule that reports that they cannot be differentiated again.
fn group_norm_backward(
    x: &Tensor,
    grad_out: &Tensor,
    gamma: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    spec: GroupNormSpec,
) -> Result<(Tensor, Tensor, Tensor)> {
    let param_shape = Shape::new(&[spec.channels()]);
    let outputs = [x.shape(), &param_shape, &param_shape];
    let (dx, d_gamma, d_beta) =
        guarded("group_norm_backward", &[x, grad_out], &outputs, x.dtype(), &x.device(), || {
            x.storage().group_norm_backward(
                grad_out.storage(),
                gamma.map(|g| g.storage()),
                mean.storage(),
                rstd.storage(),
                &spec,
            )
        })?;
    let dx = Tensor::from_storage(dx, x.shape().clone());
    let d_gamma = Tensor::from_storage(d_gamma, param_shape.clone());
    let d_beta = Tensor::from_storage(d_beta, param_shape);
    let mut inputs = vec![x, grad_out];
    inputs.extend(gamma);
    for out in [&dx, &d_gamma, &d_beta] {
        record_op("group_norm_backward", &inputs, out, |_| {
            Err(Error::invalid(
                "group_norm_backward",
                "the group/layer-norm gradient is not differentiable (no second-order gradients through \
                 group_norm or layer_norm)",
            ))
        });
    }
    Ok((dx, d_gamma, d_beta))
}
