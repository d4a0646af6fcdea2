//! Gradient clipping by global norm (TF's `tf.clip_by_global_norm`).

use crate::Result;
use tapegrad_tensor::{DType, Tensor};

/// Scales the gradients so that their global norm `sqrt(sum_i |g_i|^2)` is at most
/// `clip_norm`: each becomes `g * clip_norm / max(global_norm, clip_norm)`. `None`
/// gradients stay `None`. Returns the clipped gradients and the global norm before
/// clipping (an f64 scalar tensor). Computed with tensor ops, so the device is not waited
/// for.
pub fn clip_by_global_norm(grads: &[Option<Tensor>], clip_norm: f64) -> Result<(Vec<Option<Tensor>>, Tensor)> {
    if clip_norm.is_nan() || clip_norm <= 0.0 {
        return Err(crate::Error::Invalid(format!("clip_by_global_norm: clip_norm must be positive, got {clip_norm}")));
    }
    let mut sum_sq: Option<Tensor> = None;
    for g in grads.iter().flatten() {
        let s = g.square()?.sum_all()?.cast(DType::F64)?;
        sum_sq = Some(match sum_sq {
            Some(acc) => acc.add(&s)?,
            None => s,
        });
    }
    let Some(sum_sq) = sum_sq else {
        return Ok((grads.to_vec(), Tensor::scalar(0.0f64, &Default::default())?));
    };
    let norm = sum_sq.sqrt()?;
    let limit = Tensor::full(clip_norm, [], DType::F64, &norm.device())?;
    let scale = limit.div(&norm.maximum(&limit)?)?;
    let clipped = grads
        .iter()
        .map(|g| g.as_ref().map(|g| g.mul(&scale.cast(g.dtype())?)).transpose())
        .collect::<tapegrad_tensor::Result<Vec<_>>>()?;
    Ok((clipped, norm))
}
