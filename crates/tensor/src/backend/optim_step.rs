//! The hyperparameters of one optimizer step, as the backends' update kernels take them
//! (re-exported as `tapegrad_tensor::optim::{SgdStep, AdamStep}`).

use crate::{Error, Result};

/// The hyperparameters of one SGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// The learning rate of this step.
    pub learning_rate: f64,
    /// The momentum (0 for plain SGD, which keeps no velocity).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, added to the gradient (`g + weight_decay * var`, as PyTorch's SGD).
    pub weight_decay: f64,
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
    /// Added to `sqrt(v)` (Keras' placement, see [`adam_update`](crate::optim::adam_update)).
    pub epsilon: f64,
    /// Decoupled weight decay (AdamW): `var *= 1 - learning_rate * weight_decay` before the
    /// Adam update. 0 for Adam.
    pub weight_decay: f64,
}

/// The per-element constants of an Adam step, computed in f64 once per tensor (each is
/// then rounded to the parameter's dtype, as `mul_scalar` rounds its factor).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamCoefficients {
    /// `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`.
    pub lr_t: f64,
    /// `1 - beta_1`.
    pub one_minus_beta_1: f64,
    /// `1 - beta_2`.
    pub one_minus_beta_2: f64,
    /// Epsilon.
    pub epsilon: f64,
    /// `1 - lr * weight_decay`, applied only when `decay` is true.
    pub decay_factor: f64,
    /// Whether there is decoupled weight decay.
    pub decay: bool,
}

/// Fails unless `value` satisfies `ok`; the message names the option, the range and the value.
fn check_option(op: &'static str, name: &str, value: f64, range: &str, ok: bool) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(Error::invalid(op, format!("{name} must be {range}, got {value}")))
}

/// A learning rate or weight decay: finite and not negative.
fn check_non_negative(op: &'static str, name: &str, value: f64) -> Result<()> {
    check_option(op, name, value, "finite and >= 0", value.is_finite() && value >= 0.0)
}

impl SgdStep {
    /// Checks the hyperparameters: a finite, non-negative learning rate and weight decay,
    /// and a momentum in `[0, 1]`. The error names the option and its value.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "sgd_update";
        check_non_negative(OP, "learning_rate", self.learning_rate)?;
        check_option(OP, "momentum", self.momentum, "in [0, 1]", (0.0..=1.0).contains(&self.momentum))?;
        check_non_negative(OP, "weight_decay", self.weight_decay)
    }
}

impl AdamStep {
    /// Checks the hyperparameters: a finite, non-negative learning rate and weight decay,
    /// `beta_1` and `beta_2` in `[0, 1)` (at 1 the bias correction divides by zero), a
    /// finite `epsilon > 0` (at 0 a zero gradient makes `0 / 0`) and `step >= 1`. The
    /// error names the option and its value.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "adam_update";
        check_non_negative(OP, "learning_rate", self.learning_rate)?;
        for (name, beta) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            check_option(OP, name, beta, "in [0, 1)", (0.0..1.0).contains(&beta))?;
        }
        check_option(OP, "epsilon", self.epsilon, "finite and > 0", self.epsilon.is_finite() && self.epsilon > 0.0)?;
        check_non_negative(OP, "weight_decay", self.weight_decay)?;
        if self.step == 0 {
            return Err(Error::invalid(OP, "step must be at least 1 (it counts from 1), got 0"));
        }
        Ok(())
    }

    pub(crate) fn coefficients(&self) -> AdamCoefficients {
        let t = self.step as f64;
        AdamCoefficients {
            lr_t: self.learning_rate * (1.0 - self.beta_2.powf(t)).sqrt() / (1.0 - self.beta_1.powf(t)),
            one_minus_beta_1: 1.0 - self.beta_1,
            one_minus_beta_2: 1.0 - self.beta_2,
            epsilon: self.epsilon,
            decay_factor: 1.0 - self.learning_rate * self.weight_decay,
            decay: self.weight_decay != 0.0,
        }
    }
}
