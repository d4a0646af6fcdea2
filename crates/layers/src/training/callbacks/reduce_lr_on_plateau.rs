//! [`ReduceLROnPlateau`]: lower the learning rate when the monitor stops improving.

use crate::optimizers::LearningRate;
use crate::training::monitor::{non_negative, Monitor, MonitorMode};
use crate::training::{Callback, CallbackContext, Logs};
use crate::{Error, Result};

/// Multiplies the learning rate by `factor` when `monitor` has not improved by more than
/// `min_delta` for `patience` epochs, then waits `cooldown` epochs before counting again,
/// never going below `min_lr` (Keras' `ReduceLROnPlateau`, rule for rule: defaults
/// `val_loss`, factor 0.1, patience 10, min_delta 1e-4, cooldown 0, min_lr 0).
#[derive(Debug)]
pub struct ReduceLROnPlateau {
    monitor: String,
    mode: MonitorMode,
    factor: f64,
    patience: u64,
    min_delta: f64,
    cooldown: u64,
    min_lr: f64,
    wait: u64,
    cooldown_counter: u64,
    best: f64,
    /// Each reduction made: `(epoch, new learning rate)`.
    pub reductions: Vec<(u64, f64)>,
}

impl ReduceLROnPlateau {
    /// Keras' defaults.
    pub fn new() -> Self {
        ReduceLROnPlateau {
            monitor: "val_loss".into(),
            mode: MonitorMode::Auto,
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
            best: f64::NAN,
            reductions: Vec::new(),
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

    /// The multiplier of each reduction, in (0, 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Epochs without improvement before a reduction.
    pub fn patience(mut self, epochs: u64) -> Self {
        self.patience = epochs;
        self
    }

    /// The least change that counts as an improvement (>= 0).
    pub fn min_delta(mut self, delta: f64) -> Self {
        self.min_delta = delta;
        self
    }

    /// Epochs after a reduction during which nothing is counted.
    pub fn cooldown(mut self, epochs: u64) -> Self {
        self.cooldown = epochs;
        self
    }

    /// The lowest learning rate (>= 0).
    pub fn min_lr(mut self, lr: f64) -> Self {
        self.min_lr = lr;
        self
    }
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        Self::new()
    }
}

impl Callback for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::Invalid(format!(
                "ReduceLROnPlateau: factor must be in (0, 1) (it multiplies the learning rate), got {}",
                self.factor
            )));
        }
        non_negative("ReduceLROnPlateau", "min_delta", self.min_delta)?;
        non_negative("ReduceLROnPlateau", "min_lr", self.min_lr)?;
        self.best = Monitor::new(&self.monitor, self.mode).worst();
        self.wait = 0;
        self.cooldown_counter = 0;
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        let monitor = Monitor::new(&self.monitor, self.mode);
        let current = monitor.value("ReduceLROnPlateau", logs)?;
        let in_cooldown = self.cooldown_counter > 0;
        if in_cooldown {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if monitor.improves(current, self.best, self.min_delta) {
            self.best = current;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                let old = ctx.optimizer.learning_rate();
                // Keras compares in f32: a rate already at min_lr is left alone.
                if (old as f32) > (self.min_lr as f32) {
                    let new = (old * self.factor).max(self.min_lr);
                    ctx.optimizer.set_learning_rate(LearningRate::Constant(new));
                    self.reductions.push((epoch, new));
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(())
    }
}
