//! [`EarlyStopping`]: stop when the monitored value stops improving.

use crate::training::monitor::{non_negative, Monitor, MonitorMode};
use crate::training::{Callback, CallbackContext, Logs};
use crate::{Error, Result};
use tapegrad_tensor::{Tensor, Variable};

/// Stops training when `monitor` has not improved by more than `min_delta` for `patience`
/// epochs (Keras 3's `EarlyStopping`, rule for rule):
///
/// - an epoch improves when its value beats the best so far by more than `min_delta`
///   (lower is better for losses, higher for accuracies: `mode`); it resets the wait, and
///   (with `restore_best_weights`) remembers every variable's value;
/// - with a `baseline`, an improvement resets the wait only if it also beats the baseline;
/// - training stops at the end of the epoch whose wait reaches `patience` (never after the
///   first epoch), restoring the best epoch's variables when asked (moving statistics
///   included, as Keras' `get_weights`).
#[derive(Debug)]
pub struct EarlyStopping {
    monitor: String,
    mode: MonitorMode,
    patience: u64,
    min_delta: f64,
    baseline: Option<f64>,
    restore_best_weights: bool,
    wait: u64,
    best: f64,
    best_weights: Option<Vec<(Variable, Tensor)>>,
    /// The epoch whose state was best.
    pub best_epoch: Option<u64>,
    /// The epoch at which it stopped training, if it did.
    pub stopped_epoch: Option<u64>,
}

impl EarlyStopping {
    /// Monitors `val_loss` with patience 0 and min_delta 0 (Keras' defaults).
    pub fn new() -> Self {
        EarlyStopping {
            monitor: "val_loss".into(),
            mode: MonitorMode::Auto,
            patience: 0,
            min_delta: 0.0,
            baseline: None,
            restore_best_weights: false,
            wait: 0,
            best: f64::NAN,
            best_weights: None,
            best_epoch: None,
            stopped_epoch: None,
        }
    }

    /// The logged value to watch.
    pub fn monitor(mut self, name: &str) -> Self {
        self.monitor = name.to_string();
        self
    }

    /// Whether lower or higher is better.
    pub fn mode(mut self, mode: MonitorMode) -> Self {
        self.mode = mode;
        self
    }

    /// Epochs without improvement before stopping.
    pub fn patience(mut self, epochs: u64) -> Self {
        self.patience = epochs;
        self
    }

    /// The least change that counts as an improvement (a finite number >= 0; its sign is
    /// ignored by Keras, rejected here).
    pub fn min_delta(mut self, delta: f64) -> Self {
        self.min_delta = delta;
        self
    }

    /// A value the monitor must beat for an improvement to reset the wait.
    pub fn baseline(mut self, value: f64) -> Self {
        self.baseline = Some(value);
        self
    }

    /// Restores the best epoch's variables when stopping.
    pub fn restore_best_weights(mut self, yes: bool) -> Self {
        self.restore_best_weights = yes;
        self
    }

    fn snapshot(ctx: &CallbackContext<'_>) -> Vec<(Variable, Tensor)> {
        ctx.model.variables().into_iter().map(|v| (v.clone(), v.value_untracked())).collect()
    }
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self::new()
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        non_negative("EarlyStopping", "min_delta", self.min_delta)?;
        if let Some(b) = self.baseline.filter(|b| !b.is_finite()) {
            return Err(Error::Invalid(format!("EarlyStopping: baseline must be finite, got {b}")));
        }
        let monitor = Monitor::new(&self.monitor, self.mode);
        self.wait = 0;
        self.best = monitor.worst();
        self.best_weights = None;
        self.best_epoch = None;
        self.stopped_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        let monitor = Monitor::new(&self.monitor, self.mode);
        let current = monitor.value("EarlyStopping", logs)?;
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(Self::snapshot(ctx));
        }
        self.wait += 1;
        if monitor.improves(current, self.best, self.min_delta) {
            self.best = current;
            self.best_epoch = Some(epoch);
            if self.restore_best_weights {
                self.best_weights = Some(Self::snapshot(ctx));
            }
            if self.baseline.is_none_or(|b| monitor.improves(current, b, self.min_delta)) {
                self.wait = 0;
            }
            return Ok(());
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            ctx.stop_training();
            if let Some(weights) = &self.best_weights {
                for (variable, value) in weights {
                    variable.assign(value.clone())?;
                }
            }
        }
        Ok(())
    }
}
