//! [`TerminateOnNaN`]: stop cleanly at a non-finite loss.

use crate::training::{Callback, CallbackContext, Logs};
use crate::Result;

/// Stops training at the first batch whose loss is NaN or infinite (Keras'
/// `TerminateOnNaN`). Without it `fit` fails with `Error::NonFiniteLoss`; with it `fit`
/// ends the epoch (running validation and the epoch hooks, whose logs then hold the
/// non-finite loss) and returns the `History` so far. `ModelCheckpoint` never saves such
/// a state. It sees the steps whose loss `fit` reads (every step on the CPU, every
/// `sync_every` steps on a GPU); a NaN between two reads is caught by the epoch's mean and
/// is then `Error::NonFiniteLoss`.
#[derive(Debug, Default)]
pub struct TerminateOnNaN {
    /// The epoch and step at which it stopped training, if it did.
    pub stopped_at: Option<(u64, u64)>,
    epoch: u64,
}

impl TerminateOnNaN {
    /// The callback.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Callback for TerminateOnNaN {
    fn on_epoch_begin(&mut self, _ctx: &mut CallbackContext<'_>, epoch: u64) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>, batch: u64, logs: &Logs) -> Result<()> {
        if logs.get("loss").is_some_and(|l| !l.is_finite()) {
            eprintln!("Batch {batch}: invalid loss, terminating training");
            self.stopped_at = Some((self.epoch, batch));
            ctx.stop_training();
        }
        Ok(())
    }
}
