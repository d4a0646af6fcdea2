//! Optimizers ([`Sgd`], [`Adam`], [`AdamW`]), learning-rate [`schedules`] and gradient
//! [`clipping`](clip_by_global_norm).
//!
//! An optimizer updates variables from gradients with `apply_gradients(&grads, &vars)`; a
//! `None` gradient (a variable the loss does not depend on) is skipped, as in Keras. The
//! per-variable state (momentum, Adam's moments) lives in a [`SlotTable`] keyed by variable,
//! and is saved in checkpoints with the iteration count. Each optimizer's arithmetic for
//! one variable is a single function in [`update`], which calls the tensor crate's fused
//! update (one pass over the elements; one kernel launch per variable on CUDA).

mod adam;
mod clipping;
pub mod schedules;
mod sgd;
mod slots;
pub mod update;

pub use adam::{Adam, AdamW};
pub use clipping::clip_by_global_norm;
pub use schedules::{LearningRate, LearningRateSchedule};
pub use sgd::Sgd;
pub use slots::SlotTable;

use crate::{Error, Result};
use tapegrad_tensor::{Tensor, Variable};

/// What every optimizer provides.
pub trait Optimizer {
    /// The optimizer's name ("Adam"); checkpoints record it.
    fn name(&self) -> &str;

    /// Updates each variable from its gradient; `None` gradients are skipped. Both lists
    /// must have the same length, and each gradient the shape of its variable. Counts one
    /// iteration.
    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()>;

    /// The number of `apply_gradients` calls so far (Keras' `optimizer.iterations`).
    fn iterations(&self) -> u64;

    /// Sets the iteration count (checkpoint loading).
    fn set_iterations(&mut self, iterations: u64);

    /// The learning rate the next step will use (the schedule at the current iteration).
    fn learning_rate(&self) -> f64;

    /// The names of the per-variable state tensors ("momentum"; "m", "v").
    fn slot_names(&self) -> &'static [&'static str];

    /// The per-variable state.
    fn slots(&self) -> &SlotTable;

    /// The per-variable state, for checkpoint loading.
    fn slots_mut(&mut self) -> &mut SlotTable;
}

/// Checks the two lists of an `apply_gradients` call and pairs the gradients that are
/// present with their variables.
pub(crate) fn pair_gradients<'a>(
    optimizer: &str,
    grads: &'a [Option<Tensor>],
    variables: &'a [Variable],
) -> Result<Vec<(usize, &'a Tensor, &'a Variable)>> {
    if grads.len() != variables.len() {
        return Err(Error::Optimizer {
            optimizer: optimizer.to_string(),
            msg: format!("{} gradients given for {} variables", grads.len(), variables.len()),
        });
    }
    let mut pairs = Vec::with_capacity(grads.len());
    for (i, (g, v)) in grads.iter().zip(variables).enumerate() {
        let Some(g) = g else { continue };
        let shape = v.value_untracked().shape().clone();
        if g.shape() != &shape {
            return Err(Error::Optimizer {
                optimizer: optimizer.to_string(),
                msg: format!("the gradient of {} has shape {} but the variable has shape {shape}", v.name(), g.shape()),
            });
        }
        pairs.push((i, g, v));
    }
    Ok(pairs)
}

/// Applies `global_clipnorm` (when set) to the gradients of one step.
pub(crate) fn maybe_clip(grads: &[Option<Tensor>], clipnorm: Option<f64>) -> Result<Option<Vec<Option<Tensor>>>> {
    match clipnorm {
        Some(c) => Ok(Some(clip_by_global_norm(grads, c)?.0)),
        None => Ok(None),
    }
}
