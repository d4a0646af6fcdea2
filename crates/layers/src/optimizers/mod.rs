//! Optimizers ([`Sgd`], [`Adam`], [`AdamW`]), learning-rate [`schedules`] and gradient
//! [`clipping`](clip_by_global_norm).
//!
//! An optimizer updates variables from gradients with `apply_gradients(&grads, &vars)`; a
//! `None` gradient (a variable the loss does not depend on) is skipped, as in Keras. The
//! per-variable state (momentum, Adam's moments) lives in a [`SlotTable`] keyed by variable,
//! and is saved in checkpoints with the iteration count. Each optimizer's arithmetic for
//! one variable is a single function in [`update`], which calls the tensor crate's fused
//! update (one pass over the elements; one kernel launch per variable on CUDA).
//!
//! Builders (`Adam::new(lr).beta_1(..)`) cannot fail; the hyperparameters are validated
//! at the start of every `apply_gradients`, before any variable changes: a NaN or negative
//! learning rate (a schedule's included, at the step it gives it), `beta_1`/`beta_2`
//! outside `[0, 1)`, `epsilon <= 0`, a momentum outside `[0, 1]`, a NaN or negative weight
//! decay, or a `global_clipnorm` that is not positive are errors naming the optimizer,
//! the option and its value. Every gradient is checked against its variable (count,
//! shape, dtype, device) before the first update too, so a failed call changes nothing.

mod adam;
mod clipping;
pub mod schedules;
mod sgd;
mod shared;
mod slots;
pub mod update;

pub use adam::{Adam, AdamW};
pub use clipping::clip_by_global_norm;
pub use schedules::{LearningRate, LearningRateSchedule};
pub use sgd::Sgd;
pub use slots::SlotTable;

use crate::mixed_precision::LossScaleState;
use crate::{Error, Result};
use tapegrad_tensor::optim::StepScalars;
use tapegrad_tensor::{Tensor, Variable};

/// The error of an optimizer that cannot run its update inside a CUDA graph.
fn no_graph_update(optimizer: &str) -> Error {
    Error::Optimizer {
        optimizer: optimizer.to_string(),
        msg: "this optimizer cannot run its update inside a CUDA graph (supports_graph_update is false)".into(),
    }
}

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

    /// Replaces the learning rate (a constant or a schedule) from the next step on, as
    /// assigning Keras' `optimizer.learning_rate` does. The training callbacks
    /// (`LearningRateScheduler`, `ReduceLROnPlateau`) call it. The value is validated by
    /// the next `apply_gradients`, like the rate given to the constructor.
    fn set_learning_rate(&mut self, learning_rate: LearningRate);

    /// The names of the per-variable state tensors ("momentum"; "m", "v").
    fn slot_names(&self) -> &'static [&'static str];

    /// The per-variable state.
    fn slots(&self) -> &SlotTable;

    /// The per-variable state, for checkpoint loading.
    fn slots_mut(&mut self) -> &mut SlotTable;

    /// The loss the gradient is taken of: `loss` times the loss scale for a
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer), `loss` itself
    /// for every other optimizer (the default), as Keras 3's `optimizer.scale_loss`. Call
    /// it under the tape, and take the gradient of what it returns; `apply_gradients`
    /// divides the scale out again. [`train_step`](crate::training::train_step) and `fit`
    /// call it.
    fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.clone())
    }

    /// The dynamic loss-scaling state of a
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer) (checkpoints save
    /// it); `None` (the default) for an optimizer without loss scaling.
    fn loss_scale(&self) -> Option<LossScaleState> {
        None
    }

    /// Replaces the loss-scaling state (checkpoint loading); an error for an optimizer
    /// without loss scaling (the default).
    fn set_loss_scale(&mut self, state: LossScaleState) -> Result<()> {
        Err(Error::Optimizer {
            optimizer: self.name().to_string(),
            msg: format!("has no loss scale to set to {state:?} (wrap it in a LossScaleOptimizer)"),
        })
    }

    /// Whether the update can be captured in a CUDA graph with the step
    /// ([`capture_update`](Optimizer::capture_update),
    /// [`prepare_graph_update`](Optimizer::prepare_graph_update)); false by default, and
    /// then a [`GraphedStep`](crate::training::GraphedStep) applies the gradients eagerly
    /// after each replay. [`Sgd`], [`Adam`] and [`AdamW`] support it.
    fn supports_graph_update(&self) -> bool {
        false
    }

    /// Writes the values of the coming step (the learning rate at
    /// [`iterations`](Optimizer::iterations), and for Adam the bias correction of step
    /// `iterations + 1`) into the small device buffer that a captured update reads, making
    /// the buffer on first use (on the device and in the dtype of `variables`, which must
    /// share both). Queued on the device's stream, so the update replayed next reads them.
    /// Validates them as [`apply_gradients`](Optimizer::apply_gradients) does. Counts
    /// nothing: the caller counts the step ([`set_iterations`](Optimizer::set_iterations))
    /// once its replay is queued.
    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        let _ = variables;
        Err(no_graph_update(self.name()))
    }

    /// The [`id`](tapegrad_tensor::optim::StepScalars::id) of the device buffer that
    /// [`prepare_graph_update`](Optimizer::prepare_graph_update) writes, once it is made;
    /// `None` before, and for optimizers without a captured update. A
    /// [`GraphedStep`](crate::training::GraphedStep) whose graph reads another buffer (a
    /// new optimizer, or one whose buffer was remade for another dtype or device) captures
    /// again rather than replay an update that reads stale values.
    fn graph_update_buffer(&self) -> Option<u64> {
        None
    }

    /// During a CUDA-graph capture, queues the update of `variables` from `grads` **in
    /// place**: the variables' current values and the optimizer's slots are overwritten at
    /// each replay, with the step's values read from the buffer that
    /// [`prepare_graph_update`](Optimizer::prepare_graph_update) writes (call it once
    /// before the capture, and before each replay). Assigns and counts nothing; every
    /// variable with a gradient must already have its slots (an ordinary step made them).
    /// The values and slots must be buffers no one else reads:
    /// [`GraphedStep`](crate::training::GraphedStep) makes private copies.
    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let _ = (grads, variables);
        Err(no_graph_update(self.name()))
    }

    /// The values [`prepare_graph_update`](Optimizer::prepare_graph_update) would write for
    /// the step that follows `iterations` steps (in
    /// [`StepScalars`](tapegrad_tensor::optim::StepScalars)' layout), validated as that
    /// step would validate them. A
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer) writes them for
    /// its next steps at once, since only the device knows which of them comes next. An
    /// error by default (no captured update).
    fn graph_update_values(&self, iterations: u64) -> Result<Vec<f64>> {
        let _ = iterations;
        Err(no_graph_update(self.name()))
    }

    /// The device buffer of per-step values that the captured update reads, once
    /// [`prepare_graph_update`](Optimizer::prepare_graph_update) made it; `None` before,
    /// and by default.
    fn graph_step_scalars(&self) -> Option<&StepScalars> {
        None
    }

    /// [`scale_loss`](Optimizer::scale_loss) inside a CUDA-graph capture: a scale that
    /// changes from step to step must be read on the device when the graph replays. The
    /// default is `scale_loss` (for an optimizer whose scale never changes);
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer) reads its scale
    /// from the device.
    fn capture_scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        self.scale_loss(loss)
    }

    /// Called by [`GraphedStep`](crate::training::GraphedStep) once a replay of the
    /// captured update is queued: counts the step (by default one more
    /// [`iterations`](Optimizer::iterations)). A
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer) counts a step
    /// the device may still skip, and reads the outcome back when it needs it.
    fn graph_update_replayed(&mut self) {
        self.set_iterations(self.iterations() + 1);
    }
}

/// A boxed optimizer is an optimizer (`LossScaleOptimizer<Box<dyn Optimizer>>` wraps one
/// chosen at run time).
impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        (**self).apply_gradients(grads, variables)
    }
    fn iterations(&self) -> u64 {
        (**self).iterations()
    }
    fn set_iterations(&mut self, iterations: u64) {
        (**self).set_iterations(iterations)
    }
    fn learning_rate(&self) -> f64 {
        (**self).learning_rate()
    }
    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        (**self).set_learning_rate(learning_rate)
    }
    fn slot_names(&self) -> &'static [&'static str] {
        (**self).slot_names()
    }
    fn slots(&self) -> &SlotTable {
        (**self).slots()
    }
    fn slots_mut(&mut self) -> &mut SlotTable {
        (**self).slots_mut()
    }
    fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        (**self).scale_loss(loss)
    }
    fn loss_scale(&self) -> Option<LossScaleState> {
        (**self).loss_scale()
    }
    fn set_loss_scale(&mut self, state: LossScaleState) -> Result<()> {
        (**self).set_loss_scale(state)
    }
    fn supports_graph_update(&self) -> bool {
        (**self).supports_graph_update()
    }
    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        (**self).prepare_graph_update(variables)
    }
    fn graph_update_buffer(&self) -> Option<u64> {
        (**self).graph_update_buffer()
    }
    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        (**self).capture_update(grads, variables)
    }
    fn graph_update_values(&self, iterations: u64) -> Result<Vec<f64>> {
        (**self).graph_update_values(iterations)
    }
    fn graph_step_scalars(&self) -> Option<&StepScalars> {
        (**self).graph_step_scalars()
    }
    fn capture_scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        (**self).capture_scale_loss(loss)
    }
    fn graph_update_replayed(&mut self) {
        (**self).graph_update_replayed()
    }
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
        let value = v.value_untracked();
        let fail = |what: &str, got: String, want: String| Error::Optimizer {
            optimizer: optimizer.to_string(),
            msg: format!("the gradient of {} (#{i}) has {what} {got} but the variable has {what} {want}", v.name()),
        };
        if g.shape() != value.shape() {
            return Err(fail("shape", g.shape().to_string(), value.shape().to_string()));
        }
        if g.dtype() != value.dtype() {
            return Err(fail("dtype", g.dtype().to_string(), value.dtype().to_string()));
        }
        if g.device() != value.device() {
            return Err(fail("device", g.device().to_string(), value.device().to_string()));
        }
        pairs.push((i, g, v));
    }
    Ok(pairs)
}

/// Validates one step's hyperparameters (`check` is the fused update's own validation)
/// and the clip norm, naming the optimizer, the option and its value; a learning rate
/// that a schedule gave is reported with the schedule and the iteration.
pub(crate) fn check_hyperparameters(
    optimizer: &str,
    learning_rate: &LearningRate,
    iterations: u64,
    global_clipnorm: Option<f64>,
    check: tapegrad_tensor::Result<()>,
) -> Result<()> {
    let fail = |msg: String| Error::Optimizer { optimizer: optimizer.to_string(), msg };
    if let Err(err) = check {
        let mut msg = match err {
            tapegrad_tensor::Error::Invalid { msg, .. } => msg,
            other => other.to_string(),
        };
        if let (LearningRate::Schedule(s), true) = (learning_rate, msg.starts_with("learning_rate")) {
            msg = format!("{msg} (from the schedule {s:?} at iteration {iterations})");
        }
        return Err(fail(msg));
    }
    if let Some(c) = global_clipnorm {
        if c.is_nan() || c <= 0.0 {
            return Err(fail(format!("global_clipnorm must be > 0, got {c}")));
        }
    }
    Ok(())
}
