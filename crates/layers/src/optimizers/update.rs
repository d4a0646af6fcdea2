//! The arithmetic of one optimizer step for one variable, one function per optimizer.
//!
//! These are the functions a backend replaces with fused kernels: each takes the
//! variable's value, its gradient and its slots, and returns the new value and slots.
//! They follow Keras' formulas exactly (see each function).

use tapegrad_tensor::{Result, Tensor};

/// The hyperparameters of one SGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// The learning rate of this step.
    pub learning_rate: f64,
    /// The momentum (0 for plain SGD).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, added to the gradient (`g + weight_decay * var`, as PyTorch's SGD).
    pub weight_decay: f64,
}

/// One SGD step, as Keras writes it (with `g` already including weight decay):
///
/// ```text
/// velocity = momentum * velocity - lr * g          (velocity starts at 0)
/// var += velocity                                   (plain momentum)
/// var += momentum * velocity - lr * g               (nesterov)
/// var -= lr * g                                     (momentum = 0; no velocity kept)
/// ```
///
/// Returns the new value and the new velocity (`None` without momentum).
pub fn sgd_step(
    var: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    p: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    let decayed;
    let g = if p.weight_decay != 0.0 {
        decayed = grad.add(&var.mul_scalar(p.weight_decay)?)?;
        &decayed
    } else {
        grad
    };
    let lr_g = g.mul_scalar(p.learning_rate)?;
    if p.momentum == 0.0 {
        return Ok((var.sub(&lr_g)?, None));
    }
    let velocity = match velocity {
        Some(v) => v.mul_scalar(p.momentum)?.sub(&lr_g)?,
        None => lr_g.neg()?,
    };
    let new_var =
        if p.nesterov { var.add(&velocity.mul_scalar(p.momentum)?)?.sub(&lr_g)? } else { var.add(&velocity)? };
    Ok((new_var, Some(velocity)))
}

/// The hyperparameters of one Adam(W) step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// The learning rate of this step (before bias correction).
    pub learning_rate: f64,
    /// The 1-based step number `t` used by bias correction.
    pub step: u64,
    /// Decay of the first moment.
    pub beta_1: f64,
    /// Decay of the second moment.
    pub beta_2: f64,
    /// Added to `sqrt(v)` (Keras' placement, see [`adam_step`]).
    pub epsilon: f64,
    /// Decoupled weight decay (AdamW): `var -= learning_rate * weight_decay * var` before
    /// the Adam update. 0 for Adam.
    pub weight_decay: f64,
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
/// (decoupled decay, Keras' and PyTorch's AdamW). Returns the new value, `m` and `v`.
pub fn adam_step(
    var: &Tensor,
    grad: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    p: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let t = p.step as f64;
    let lr_t = p.learning_rate * (1.0 - p.beta_2.powf(t)).sqrt() / (1.0 - p.beta_1.powf(t));
    let m = match m {
        Some(m) => m.add(&grad.sub(m)?.mul_scalar(1.0 - p.beta_1)?)?,
        None => grad.mul_scalar(1.0 - p.beta_1)?,
    };
    let g2 = grad.square()?;
    let v = match v {
        Some(v) => v.add(&g2.sub(v)?.mul_scalar(1.0 - p.beta_2)?)?,
        None => g2.mul_scalar(1.0 - p.beta_2)?,
    };
    let decayed;
    let var = if p.weight_decay != 0.0 {
        decayed = var.mul_scalar(1.0 - p.learning_rate * p.weight_decay)?;
        &decayed
    } else {
        var
    };
    let step = m.div(&v.sqrt()?.add_scalar(p.epsilon)?)?.mul_scalar(lr_t)?;
    Ok((var.sub(&step)?, m, v))
}
