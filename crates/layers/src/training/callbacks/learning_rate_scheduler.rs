//! [`LearningRateScheduler`]: the learning rate as a function of the epoch.

use crate::optimizers::{LearningRate, LearningRateSchedule};
use crate::training::{Callback, CallbackContext};
use crate::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// Sets the optimizer's learning rate at the start of every epoch (Keras'
/// `LearningRateScheduler`): `schedule(epoch, current_lr)`. The schedules of
/// `optimizers::schedules` plug in with [`LearningRateScheduler::from_schedule`], evaluated
/// at the epoch index (e.g. `StepDecay` with `step_size` in epochs). A rate that is not a
/// finite number >= 0 is an error naming the epoch.
pub struct LearningRateScheduler {
    schedule: Box<dyn FnMut(u64, f64) -> f64>,
    /// The rate set at each epoch begun, `(epoch, lr)`.
    pub set: Vec<(u64, f64)>,
}

impl fmt::Debug for LearningRateScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearningRateScheduler").field("set", &self.set).finish_non_exhaustive()
    }
}

impl LearningRateScheduler {
    /// The rate from `schedule(epoch, current_lr)` (Keras' signature).
    pub fn new(schedule: impl FnMut(u64, f64) -> f64 + 'static) -> Self {
        LearningRateScheduler { schedule: Box::new(schedule), set: Vec::new() }
    }

    /// The rate from one of the optimizers' schedules, evaluated at the epoch index.
    pub fn from_schedule(schedule: impl LearningRateSchedule + 'static) -> Self {
        let schedule: Arc<dyn LearningRateSchedule> = Arc::new(schedule);
        Self::new(move |epoch, _| schedule.learning_rate(epoch))
    }
}

impl Callback for LearningRateScheduler {
    fn on_epoch_begin(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64) -> Result<()> {
        let lr = (self.schedule)(epoch, ctx.optimizer.learning_rate());
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::Invalid(format!(
                "LearningRateScheduler: the schedule gave the learning rate {lr} at epoch {epoch}; \
                 it must be a finite number >= 0"
            )));
        }
        ctx.optimizer.set_learning_rate(LearningRate::Constant(lr));
        self.set.push((epoch, lr));
        Ok(())
    }
}
