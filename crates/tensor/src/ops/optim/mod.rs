//! Fused optimizer updates: one SGD or Adam(W) step for one parameter tensor in a single
//! pass over its elements (one kernel launch on CUDA), instead of the ten or so
//! elementwise ops (and temporaries) the formulas take when written with tensor ops.
//!
//! Tensors are immutable, so an update returns the new parameter and the new optimizer
//! state; the caller swaps them in (`Variable::assign`, the optimizer's slot table). The
//! updates are not recorded on a [`GradientTape`](crate::GradientTape): an optimizer step
//! is not part of what is differentiated.
//!
//! Each kernel evaluates exactly the tensor-op formulas documented on [`sgd_update`] and
//! [`adam_update`], in the same order and in the parameter's dtype, with the
//! hyperparameters rounded to that dtype as `mul_scalar` would round them.
//!
//! For CUDA graphs, [`adam_update_many_in_place`] and [`sgd_update_many_in_place`] run the
//! same arithmetic in place, reading each step's learning rate and bias correction from a
//! device buffer ([`StepScalars`]) that the host writes before each replay; with dynamic
//! loss scaling, [`DeviceLossScale`] decides on the device whether a step is applied.
//!
//! ```
//! use tapegrad_tensor::optim::{adam_update, AdamStep};
//! use tapegrad_tensor::{Device, Tensor};
//! # fn main() -> tapegrad_tensor::Result<()> {
//! let w = Tensor::from_vec(vec![1.0f32, -2.0], [2], &Device::Cpu)?;
//! let g = Tensor::from_vec(vec![0.5f32, 0.5], [2], &Device::Cpu)?;
//! let step = AdamStep { learning_rate: 0.1, step: 1, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
//! let (w, m, v) = adam_update(&w, &g, None, None, &step)?;
//! assert!((w.to_vec::<f32>()?[0] - 0.9).abs() < 1e-5); // the first step moves by ~lr
//! assert_eq!(m.dims(), &[2]);
//! # let _ = v;
//! # Ok(())
//! # }
//! ```

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod in_place;
mod loss_scale;

pub use in_place::{adam_update_many_in_place, sgd_update_many_in_place, StepScalars};
pub use loss_scale::{DeviceLossScale, DeviceLossScaleState};

// The step types are what the backends consume, so they live beside the backend trait.
pub use crate::backend::optim_step::{AdamStep, SgdStep};

use crate::ops::output_guard::guarded;
use crate::{Error, Result, Tensor};

/// Checks that every present operand matches the parameter: a float dtype, the same
/// shape, dtype and device.
fn check_operands(op: &'static str, param: &Tensor, others: &[(&str, Option<&Tensor>)]) -> Result<()> {
    if !param.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: param.dtype(), expected: "f32 or f64" });
    }
    for (name, t) in others {
        let Some(t) = t else { continue };
        if t.shape() != param.shape() {
            return Err(Error::invalid(
                op,
                format!("the {name} has shape {} but the parameter has shape {}", t.shape(), param.shape()),
            ));
        }
        param.check_same(t, op)?;
    }
    Ok(())
}

/// One SGD step for one parameter, fused (with `g = grad + weight_decay * var` when there
/// is weight decay), as Keras writes it:
///
/// ```text
/// velocity = momentum * velocity - lr * g          (velocity starts at 0: pass None)
/// var += velocity                                   (plain momentum)
/// var += momentum * velocity - lr * g               (nesterov)
/// var -= lr * g                                     (momentum = 0; no velocity kept)
/// ```
///
/// Returns the new parameter and the new velocity (`None` without momentum).
pub fn sgd_update(
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    step: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    step.validate()?;
    check_operands("sgd_update", param, &[("gradient", Some(grad)), ("velocity", velocity)])?;
    let shape = param.shape().clone();
    let (value, velocity) =
        guarded("sgd_update", &[param, grad], &[&shape, &shape], param.dtype(), &param.device(), || {
            param.storage().sgd_update(grad.storage(), velocity.map(|v| v.storage()), step)
        })?;
    Ok((Tensor::from_storage(value, shape.clone()), velocity.map(|v| Tensor::from_storage(v, shape))))
}

/// One Adam step for one parameter, fused, as Keras computes it:
///
/// ```text
/// lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
/// m += (g - m) * (1 - beta_1)                       (m, v start at 0: pass None)
/// v += (g^2 - v) * (1 - beta_2)
/// var *= 1 - lr * weight_decay                      (AdamW only)
/// var -= lr_t * m / (sqrt(v) + epsilon)
/// ```
///
/// Keras adds epsilon to `sqrt(v)` of the *uncorrected* second moment, where PyTorch adds
/// it to `sqrt(v / (1 - beta_2^t))`; to reproduce PyTorch, pass
/// `epsilon_torch * sqrt(1 - beta_2^t)`. Returns the new parameter, `m` and `v`.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    step: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    step.validate()?;
    check_operands("adam_update", param, &[("gradient", Some(grad)), ("first moment", m), ("second moment", v)])?;
    let shape = param.shape().clone();
    let (value, m, v) =
        guarded("adam_update", &[param, grad], &[&shape, &shape, &shape], param.dtype(), &param.device(), || {
            param.storage().adam_update(grad.storage(), m.map(|t| t.storage()), v.map(|t| t.storage()), step)
        })?;
    Ok((
        Tensor::from_storage(value, shape.clone()),
        Tensor::from_storage(m, shape.clone()),
        Tensor::from_storage(v, shape),
    ))
}

/// One parameter's operands for [`adam_update_many`].
#[derive(Clone, Copy, Debug)]
pub struct AdamOperands<'a> {
    /// The parameter.
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// The first moment (`None` on the first step).
    pub m: Option<&'a Tensor>,
    /// The second moment (`None` on the first step).
    pub v: Option<&'a Tensor>,
}

/// One parameter's operands for [`sgd_update_many`].
#[derive(Clone, Copy, Debug)]
pub struct SgdOperands<'a> {
    /// The parameter.
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// The velocity (`None` on the first step or without momentum).
    pub velocity: Option<&'a Tensor>,
}

/// [`adam_update`] for many parameters with the same hyperparameters: the results of one
/// `adam_update` per parameter, bit for bit, in order. On CUDA, parameters of one device and
/// dtype are updated by one kernel launch per 40 (a table of pointers and sizes passed as
/// the kernel's parameter, so nothing is uploaded) instead of one launch each. Everything
/// is validated before anything is computed.
pub fn adam_update_many(items: &[AdamOperands<'_>], step: &AdamStep) -> Result<Vec<(Tensor, Tensor, Tensor)>> {
    step.validate()?;
    for it in items {
        check_operands(
            "adam_update",
            it.param,
            &[("gradient", Some(it.grad)), ("first moment", it.m), ("second moment", it.v)],
        )?;
    }
    #[cfg(feature = "cuda")]
    if let Some(cuda) = multi::on_one_cuda_device(items.iter().map(|it| (it.param, it.grad, it.m, it.v))) {
        let outputs = cuda::adam_update_multi(&cuda, step)?;
        return multi::wrap(items.iter().map(|it| (it.param, it.grad)), outputs, |value, m, v| {
            let (m, v) = (m.expect("adam has a first moment"), v.expect("adam has a second moment"));
            (value, m, v)
        });
    }
    items.iter().map(|it| adam_update(it.param, it.grad, it.m, it.v, step)).collect()
}

/// [`sgd_update`] for many parameters with the same hyperparameters: the results of one
/// `sgd_update` per parameter, bit for bit, in order; on CUDA one launch per 40 parameters
/// of one device and dtype (see [`adam_update_many`]).
pub fn sgd_update_many(items: &[SgdOperands<'_>], step: &SgdStep) -> Result<Vec<(Tensor, Option<Tensor>)>> {
    step.validate()?;
    for it in items {
        check_operands("sgd_update", it.param, &[("gradient", Some(it.grad)), ("velocity", it.velocity)])?;
    }
    #[cfg(feature = "cuda")]
    if let Some(cuda) = multi::on_one_cuda_device(items.iter().map(|it| (it.param, it.grad, it.velocity, None))) {
        let outputs = cuda::sgd_update_multi(&cuda, step)?;
        return multi::wrap(items.iter().map(|it| (it.param, it.grad)), outputs, |value, velocity, _| {
            (value, velocity)
        });
    }
    items.iter().map(|it| sgd_update(it.param, it.grad, it.velocity, step)).collect()
}

/// The glue between tensors and the multi-tensor CUDA kernels.
#[cfg(feature = "cuda")]
mod multi {
    use super::cuda::MultiItem;
    use crate::storage::Storage;
    use crate::{Result, Tensor};

    /// The items as CUDA operands when every tensor is on one CUDA device with one dtype
    /// (the operands were checked against their parameters); `None` sends them down the
    /// per-parameter path.
    pub(super) fn on_one_cuda_device<'a>(
        items: impl Iterator<Item = (&'a Tensor, &'a Tensor, Option<&'a Tensor>, Option<&'a Tensor>)>,
    ) -> Option<Vec<MultiItem<'a>>> {
        let cuda = |t: &'a Tensor| match t.storage() {
            Storage::Cuda(c) => Some(c),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let mut out = Vec::new();
        let mut first: Option<&Tensor> = None;
        for (param, grad, a, b) in items {
            let same = first.is_none_or(|f| f.device() == param.device() && f.dtype() == param.dtype());
            first.get_or_insert(param);
            let item = MultiItem {
                var: cuda(param)?,
                grad: cuda(grad)?,
                state_a: a.map(cuda).map_or(Some(None), |s| s.map(Some))?,
                state_b: b.map(cuda).map_or(Some(None), |s| s.map(Some))?,
            };
            if !same {
                return None;
            }
            out.push(item);
        }
        (!out.is_empty()).then_some(out)
    }

    /// Tensors of the kernels' outputs (shaped as their parameters), each checked for
    /// non-finite values as the per-parameter ops check theirs.
    pub(super) fn wrap<'a, R>(
        items: impl Iterator<Item = (&'a Tensor, &'a Tensor)>,
        outputs: Vec<(
            crate::cuda_backend::CudaStorage,
            Option<crate::cuda_backend::CudaStorage>,
            Option<crate::cuda_backend::CudaStorage>,
        )>,
        make: impl Fn(Tensor, Option<Tensor>, Option<Tensor>) -> R,
    ) -> Result<Vec<R>> {
        items
            .zip(outputs)
            .map(|((param, grad), (value, a, b))| {
                let (value, a, b) = (Storage::Cuda(value), a.map(Storage::Cuda), b.map(Storage::Cuda));
                let op = if b.is_some() { "adam_update" } else { "sgd_update" };
                for s in [Some(&value), a.as_ref(), b.as_ref()].into_iter().flatten() {
                    crate::check_numerics::check(op, &[param, grad], s)?;
                }
                let shape = param.shape().clone();
                let t = |s: Storage| Tensor::from_storage(s, shape.clone());
                Ok(make(t(value), a.map(t), b.map(t)))
            })
            .collect()
    }
}
