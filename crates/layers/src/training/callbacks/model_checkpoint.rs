//! [`ModelCheckpoint`]: the best and the last state, saved atomically.

use crate::checkpoint;
use crate::optimizers::Optimizer;
use crate::training::monitor::{Monitor, MonitorMode};
use crate::training::{Callback, CallbackContext, Logs};
use crate::{Error, Layer, Result};
use std::path::{Path, PathBuf};

/// Saves the model and its optimizer after epochs (Keras' `ModelCheckpoint`), through the
/// checkpoint module (written to a temporary file, fsynced, renamed: a crash never leaves
/// a half-written file):
///
/// - `filepath`: with `save_best_only(true)`, the state of the epoch with the best
///   `monitor` value so far (`val_loss` by default, `mode` deciding which way is better);
///   otherwise the state of every epoch (the file is replaced).
/// - [`ModelCheckpoint::last`]: also the state of every epoch, best or not, to resume from
///   with [`ModelCheckpoint::resume`] and `FitOptions::initial_epoch`.
///
/// A checkpoint's `step` is the number of epochs completed (the `initial_epoch` to resume
/// with). A state whose loss, monitored value or variables are not finite is never saved.
#[derive(Debug)]
pub struct ModelCheckpoint {
    filepath: PathBuf,
    last: Option<PathBuf>,
    monitor: String,
    mode: MonitorMode,
    save_best_only: bool,
    best: Option<f64>,
    /// The epochs whose state went to `filepath`.
    pub saved_epochs: Vec<u64>,
}

impl ModelCheckpoint {
    /// Saves every epoch to `filepath`, monitoring `val_loss` (for `save_best_only`).
    pub fn new(filepath: impl Into<PathBuf>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            last: None,
            monitor: "val_loss".into(),
            mode: MonitorMode::Auto,
            save_best_only: false,
            best: None,
            saved_epochs: Vec::new(),
        }
    }

    /// The logged value that decides the best epoch (`val_loss`).
    pub fn monitor(mut self, name: &str) -> Self {
        self.monitor = name.to_string();
        self
    }

    /// Whether lower or higher is better (`Auto`: from the name).
    pub fn mode(mut self, mode: MonitorMode) -> Self {
        self.mode = mode;
        self
    }

    /// Saves only when the monitored value improves on the best so far.
    pub fn save_best_only(mut self, yes: bool) -> Self {
        self.save_best_only = yes;
        self
    }

    /// Also saves every epoch's state to `path` (the resumable "last" checkpoint).
    pub fn last(mut self, path: impl Into<PathBuf>) -> Self {
        self.last = Some(path.into());
        self
    }

    /// The best value to beat at the start (Keras' `initial_value_threshold`): when
    /// resuming, the best value of the interrupted run, so that a worse epoch does not
    /// replace its best file.
    pub fn initial_value_threshold(mut self, value: f64) -> Self {
        self.best = Some(value);
        self
    }

    /// The best monitored value saved so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Loads the "last" checkpoint at `path` into `model` (built) and `optimizer`, and
    /// returns the epoch to resume at (pass it as `initial_epoch`); 0 when `path` does not
    /// exist (a fresh run).
    pub fn resume(path: impl AsRef<Path>, model: &dyn Layer, optimizer: &mut dyn Optimizer) -> Result<u64> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(0);
        }
        Ok(checkpoint::load(path, model, Some(optimizer))?.step)
    }

    fn save(ctx: &CallbackContext<'_>, path: &Path, epoch: u64) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        checkpoint::save(path, ctx.model, Some(&*ctx.optimizer), epoch + 1)
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        // Never write a non-finite state: not the loss, not the monitored value, not a variable.
        let loss_ok = logs.get("loss").is_none_or(f64::is_finite);
        let variables = ctx.model.variables();
        let values: Vec<_> = variables.iter().map(|v| v.value_untracked()).collect();
        let finite = loss_ok && tapegrad_tensor::check_numerics::all_finite(&values.iter().collect::<Vec<_>>())?;
        if !finite {
            eprintln!("ModelCheckpoint: epoch {epoch} has a non-finite loss or variable; nothing saved");
            return Ok(());
        }
        if let Some(last) = &self.last {
            Self::save(ctx, last, epoch)?;
        }
        if self.save_best_only {
            let monitor = Monitor::new(&self.monitor, self.mode);
            let current = monitor.value("ModelCheckpoint", logs)?;
            let best = self.best.unwrap_or(monitor.worst());
            if !(current.is_finite() && monitor.improves(current, best, 0.0)) {
                return Ok(());
            }
            self.best = Some(current);
        }
        Self::save(ctx, &self.filepath, epoch)?;
        self.saved_epochs.push(epoch);
        Ok(())
    }
}
