//! Where a policy acts: the policy in force while a layer runs (a per-thread scope that
//! [`Layer::call`](crate::Layer::call) enters), the cast of a layer's inputs and variables
//! to its compute dtype, and the f32 islands (normalisation, softmax, losses).

use super::{global_policy, Policy};
use crate::Result;
use std::cell::Cell;
use tapegrad_tensor::{DType, Tensor, Variable};

thread_local! {
    /// The policy of the innermost layer call running on this thread.
    static IN_FORCE: Cell<Option<Policy>> = const { Cell::new(None) };
}

/// The policy of a layer whose own policy is `own`: its own, else the policy of the layer
/// call it runs inside, else the global one.
pub fn resolve(own: Option<Policy>) -> Policy {
    own.or_else(|| IN_FORCE.with(Cell::get)).unwrap_or_else(global_policy)
}

/// The policy in force on this thread: that of the innermost running layer call, else the
/// global one.
pub fn current_policy() -> Policy {
    resolve(None)
}

/// Puts a policy in force until dropped (then the previous one is back).
#[must_use = "the policy is in force only while the scope lives"]
pub struct PolicyScope {
    previous: Option<Policy>,
}

impl PolicyScope {
    /// The policy this scope put in force.
    pub fn policy(&self) -> Policy {
        current_policy()
    }
}

impl Drop for PolicyScope {
    fn drop(&mut self) {
        IN_FORCE.with(|p| p.set(self.previous));
    }
}

/// Puts `resolve(own)` in force on this thread until the returned scope is dropped.
/// [`Layer::call`](crate::Layer::call) does this for every layer, so sublayers without a
/// policy of their own inherit their caller's.
pub fn enter_policy(own: Option<Policy>) -> PolicyScope {
    let policy = resolve(own);
    PolicyScope { previous: IN_FORCE.with(|p| p.replace(Some(policy))) }
}

/// `x` cast to `policy`'s compute dtype, when it is a float tensor of another dtype
/// (integer inputs, such as an embedding's ids, pass unchanged). Under `"float32"` an f64
/// input stays f64 (see [`Policy`]). The cast is differentiable: its gradient is cast back.
pub fn autocast(x: &Tensor, policy: Policy) -> tapegrad_tensor::Result<Tensor> {
    let to = autocast_dtype(x.dtype(), policy);
    if to == x.dtype() {
        Ok(x.clone())
    } else {
        x.cast(to)
    }
}

/// The dtype [`autocast`] gives an input of dtype `from` under `policy`.
fn autocast_dtype(from: DType, policy: Policy) -> DType {
    let keep = !from.is_float() || (policy == Policy::FLOAT32 && from == DType::F64);
    if keep {
        from
    } else {
        policy.compute_dtype()
    }
}

/// A variable's value as the running layer computes with it (Keras' `AutoCastVariable`):
/// cast to the compute dtype under a mixed policy, as it is otherwise. Read a layer's
/// variables through it in [`Layer::forward`](crate::Layer::forward): the cast is
/// recorded, so the gradient reaches the variable in its own dtype (f32).
pub fn read_variable(variable: &Variable) -> tapegrad_tensor::Result<Tensor> {
    let value = variable.value();
    let policy = current_policy();
    if policy.is_mixed() && value.dtype().is_float() && value.dtype() != policy.compute_dtype() {
        value.cast(policy.compute_dtype())
    } else {
        Ok(value)
    }
}

/// The dtype a layer with policy `own` creates its variables in, for an input of dtype
/// `input`: the policy's variable dtype under a mixed policy; otherwise the dtype the input
/// is cast to at call (so a `"float32"` model fed f64 is an f64 model, as before policies).
pub fn variable_dtype(own: Option<Policy>, input: DType) -> DType {
    let policy = resolve(own);
    if policy.is_mixed() || !input.is_float() {
        policy.variable_dtype()
    } else {
        autocast_dtype(input, policy)
    }
}

/// The dtype normalisation layers keep their variables in and compute in: f32 for a 16-bit
/// float (Keras computes batch norm in f32 under mixed policies: its statistics overflow
/// or lose their precision in 16 bits), the dtype itself otherwise.
pub fn normalization_dtype(dtype: DType) -> DType {
    if dtype.is_low_precision() {
        DType::F32
    } else {
        dtype
    }
}

/// Runs `f` on `x` widened to f32 when `x` is a 16-bit float, and casts its result back to
/// `x`'s dtype (Keras 3's batch and layer normalisation under mixed policies); on other
/// dtypes it is `f(x)`.
pub fn in_full_precision(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dtype = x.dtype();
    if !dtype.is_low_precision() {
        return f(x);
    }
    let y = f(&x.cast(DType::F32)?)?;
    Ok(y.cast(dtype)?)
}

/// `x` as f32 when it is a 16-bit float, as it is otherwise: model outputs before the
/// loss and the metrics, and the inputs of the losses.
pub fn full_precision(x: &Tensor) -> tapegrad_tensor::Result<Tensor> {
    if x.dtype().is_low_precision() {
        x.cast(DType::F32)
    } else {
        Ok(x.clone())
    }
}
