//! The arithmetic of one optimizer step for one variable, one function per optimizer.
//!
//! Each takes the variable's value, its gradient and its slots, and returns the new value
//! and slots, computed by the tensor crate's fused updates
//! ([`tapegrad_tensor::optim`]: one pass over the elements, one kernel launch on CUDA).
//! They follow Keras' formulas exactly (see each function).

use tapegrad_tensor::optim::{adam_update, sgd_update};
pub use tapegrad_tensor::optim::{AdamStep, SgdStep};
use tapegrad_tensor::{Result, Tensor};

/// One SGD step, as Keras writes it (with `g` already including weight decay):
///
/// ```text
/// velocity = momentum * velocity - lr * g          (velocity starts at 0)
/// var += velocity                                   (plain momentum)
/// var += momentum * velocity - lr * g               (nesterov)
/// var -= lr * g                                     (momentum = 0; no velocity kept)
/// ```
///
/// Returns the new value and the new velocity (`None` without momentum). One fused pass
/// ([`tapegrad_tensor::optim::sgd_update`]; one kernel launch on CUDA).
pub fn sgd_step(
    var: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    p: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    sgd_update(var, grad, velocity, p)
}

/// One Adam step as Keras computes it:
///
/// ```text
/// lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
/// m += (g - m) * (1 - beta_1)                       (m, v start at 0)
/// v += (g^2 - v) * (1 - beta_2)
/// var -= lr_t * m / (sqrt(v) + epsilon)
/// ```
///
/// Keras adds epsilon to `sqrt(v)` of the *uncorrected* second moment, where PyTorch adds
/// it to `sqrt(v_hat) = sqrt(v / (1 - beta_2^t))`; the two differ by a factor
/// `sqrt(1 - beta_2^t)` on epsilon, which matters early in training. To reproduce
/// PyTorch's Adam, pass `epsilon_torch * sqrt(1 - beta_2^t)`.
///
/// With `weight_decay > 0` (AdamW) the variable first shrinks by `lr * weight_decay * var`
/// (decoupled decay, Keras' and PyTorch's AdamW). Returns the new value, `m` and `v`. One
/// fused pass ([`tapegrad_tensor::optim::adam_update`]; one kernel launch on CUDA).
pub fn adam_step(
    var: &Tensor,
    grad: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    p: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    adam_update(var, grad, m, v, p)
}
