//! The [`Callback`] trait (Keras' hooks) and what a hook may reach: the model, the
//! optimizer and the request to stop ([`CallbackContext`]).

use super::Logs;
use crate::optimizers::Optimizer;
use crate::{Layer, Result};

/// What a hook sees of the training run besides the logs (Keras' `callback.model` and
/// `callback.params`).
pub struct CallbackContext<'a> {
    /// The model being trained (or evaluated).
    pub model: &'a dyn Layer,
    /// Its optimizer (for the learning rate and checkpoints).
    pub optimizer: &'a mut dyn Optimizer,
    /// The run's parameters.
    pub params: FitParams,
    stop: bool,
}

impl<'a> CallbackContext<'a> {
    pub(crate) fn new(model: &'a dyn Layer, optimizer: &'a mut dyn Optimizer, params: FitParams) -> Self {
        CallbackContext { model, optimizer, params, stop: false }
    }

    /// Asks `fit` to stop (Keras' `model.stop_training = True`): after the current batch
    /// when called from a batch hook, after the current epoch from an epoch hook.
    pub fn stop_training(&mut self) {
        self.stop = true;
    }

    /// Whether a callback asked to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop
    }
}

/// The parameters of a `fit` run (Keras' `callback.params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitParams {
    /// The epoch index at which training ends (exclusive), as `fit`'s `epochs`.
    pub epochs: u64,
    /// The first epoch index run.
    pub initial_epoch: u64,
    /// The steps of each epoch (the loader's batches, capped by `steps_per_epoch`).
    pub steps: u64,
    /// The verbosity (0 quiet, 1 progress bar on a terminal and a line per epoch, 2 a line
    /// per epoch).
    pub verbose: u8,
}

/// Hooks called by `fit` and `evaluate`, with Keras' names and order:
///
/// ```text
/// on_train_begin
///   on_epoch_begin(e)
///     on_train_batch_begin(s) / on_train_batch_end(s)   for each step s of the epoch
///     on_test_begin / on_test_end                       validation, if any
///   on_epoch_end(e)                                      logs: loss, metrics, val_*, lr
/// on_train_end
/// ```
///
/// `evaluate` calls `on_test_begin` / `on_test_end` only. Batch logs hold `batch` (the
/// step index), `size` (the batch's examples) and `loss` when the loss was read at that
/// step (every step on the CPU, every `sync_every` steps on a GPU). Every hook has an empty
/// default; a hook that fails stops `fit` with its error. A callback passed as `&mut cb`
/// stays the caller's, to inspect after `fit`.
#[allow(unused_variables)]
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// After the last epoch (also after a stop requested by a callback), with the last
    /// epoch's logs.
    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_>, logs: &Logs) -> Result<()> {
        Ok(())
    }
    /// Before epoch `epoch` (its index).
    fn on_epoch_begin(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64) -> Result<()> {
        Ok(())
    }
    /// After epoch `epoch` and its validation.
    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        Ok(())
    }
    /// Before training step `batch` (its index within the epoch).
    fn on_train_batch_begin(&mut self, ctx: &mut CallbackContext<'_>, batch: u64) -> Result<()> {
        Ok(())
    }
    /// After training step `batch`.
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>, batch: u64, logs: &Logs) -> Result<()> {
        Ok(())
    }
    /// Before a validation or evaluation pass.
    fn on_test_begin(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// After a validation or evaluation pass, with its logs (without the `val_` prefix).
    fn on_test_end(&mut self, ctx: &mut CallbackContext<'_>, logs: &Logs) -> Result<()> {
        Ok(())
    }
}

/// Implements every hook of [`Callback`] for a pointer type by calling the pointee's.
macro_rules! forward_to_pointee {
    ($($pointer:ty),*) => {
        $(impl<C: Callback + ?Sized> Callback for $pointer {
            forward_to_pointee!(@hooks
                on_train_begin();
                on_train_end(logs: &Logs);
                on_epoch_begin(epoch: u64);
                on_epoch_end(epoch: u64, logs: &Logs);
                on_train_batch_begin(batch: u64);
                on_train_batch_end(batch: u64, logs: &Logs);
                on_test_begin();
                on_test_end(logs: &Logs);
            );
        })*
    };
    (@hooks $($hook:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $hook(&mut self, ctx: &mut CallbackContext<'_> $(, $arg: $ty)*) -> Result<()> {
            (**self).$hook(ctx $(, $arg)*)
        })*
    };
}

// A callback lent to `fit` (`&mut early_stopping`) stays readable afterwards; a boxed one
// can sit in a list of several kinds.
forward_to_pointee!(&mut C, Box<C>);
