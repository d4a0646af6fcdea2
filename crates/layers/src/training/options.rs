//! [`FitOptions`]: how long to train, on what validation data, with which callbacks.

use super::{Callback, DataSource};
use crate::{Error, Result};

/// The options of [`Trainer::fit`](super::Trainer::fit), as Keras' `fit` arguments; build
/// them with [`FitOptions::new`] and the chained setters. Every value is checked when
/// `fit` starts; a bad one is an error naming the option and the value.
pub struct FitOptions<'a> {
    /// The epoch index at which training ends (exclusive; Keras' `epochs`): with
    /// `initial_epoch` 2 and `epochs` 5, epochs 2, 3 and 4 run. At least 1 (default 1).
    pub epochs: u64,
    /// The most steps of an epoch (default: every batch of the loader).
    pub steps_per_epoch: Option<u64>,
    /// The first epoch index (resuming; default 0). Epoch `e` reads the loader's epoch
    /// `e`, so a resumed run sees the batches an uninterrupted one would.
    pub initial_epoch: u64,
    /// Data evaluated after every epoch (`val_loss`, `val_<metric>`).
    pub validation_data: Option<&'a dyn DataSource>,
    /// A fraction in (0, 1) of the training data held out for validation (its last
    /// examples, before shuffling); only for in-memory sources, not with
    /// `validation_data`.
    pub validation_split: Option<f64>,
    /// 0 silent, 1 a live progress bar on a terminal and a line per epoch (default), 2 a
    /// line per epoch.
    pub verbose: u8,
    /// Read the loss back every this many steps (the NaN check and the progress bar).
    /// Default: 1 on the CPU (reading costs nothing there), 25 on a GPU (the host then
    /// queues the next steps while the device works).
    pub sync_every: Option<u64>,
    /// Capture the training step (forward and backward passes, optimizer update) as a CUDA graph and replay
    /// it (see [`GraphedStep`](super::GraphedStep); default false). On the CPU, or where
    /// capture is impossible, steps run eagerly and the reason is printed once.
    pub cuda_graph: bool,
    /// The callbacks, called in this order (the progress display after them).
    pub callbacks: Vec<Box<dyn Callback + 'a>>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            steps_per_epoch: None,
            initial_epoch: 0,
            validation_data: None,
            validation_split: None,
            verbose: 1,
            sync_every: None,
            cuda_graph: false,
            callbacks: Vec::new(),
        }
    }
}

impl<'a> FitOptions<'a> {
    /// One epoch, no validation, verbose 1, no callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `epochs`.
    pub fn epochs(mut self, epochs: u64) -> Self {
        self.epochs = epochs;
        self
    }

    /// Caps the steps of an epoch.
    pub fn steps_per_epoch(mut self, steps: u64) -> Self {
        self.steps_per_epoch = Some(steps);
        self
    }

    /// Sets the first epoch index (to resume).
    pub fn initial_epoch(mut self, epoch: u64) -> Self {
        self.initial_epoch = epoch;
        self
    }

    /// Validates on `data` after every epoch.
    pub fn validation_data(mut self, data: &'a dyn DataSource) -> Self {
        self.validation_data = Some(data);
        self
    }

    /// Holds out the last `fraction` of the training data for validation.
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }

    /// Sets the verbosity (0, 1 or 2).
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }

    /// Reads the loss every `steps` steps.
    pub fn sync_every(mut self, steps: u64) -> Self {
        self.sync_every = Some(steps);
        self
    }

    /// Sets `cuda_graph`: replay the training step as a CUDA graph.
    pub fn cuda_graph(mut self, enabled: bool) -> Self {
        self.cuda_graph = enabled;
        self
    }

    /// Adds a callback (pass `&mut cb` to read it after `fit`).
    pub fn callback(mut self, callback: impl Callback + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Checks every option against the others.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("fit: {msg}")));
        if self.epochs == 0 {
            return bad("epochs must be at least 1, got 0".into());
        }
        if self.initial_epoch >= self.epochs {
            return bad(format!(
                "initial_epoch {} must be below epochs {} (epochs is the index at which training ends)",
                self.initial_epoch, self.epochs
            ));
        }
        if self.steps_per_epoch == Some(0) {
            return bad("steps_per_epoch must be at least 1, got 0".into());
        }
        if let Some(f) = self.validation_split {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("validation_split must be in (0, 1), got {f}"));
            }
            if self.validation_data.is_some() {
                return bad(format!("validation_split {f} and validation_data are exclusive; pass one"));
            }
        }
        if self.verbose > 2 {
            return bad(format!("verbose must be 0, 1 or 2, got {}", self.verbose));
        }
        if self.sync_every == Some(0) {
            return bad("sync_every must be at least 1, got 0".into());
        }
        Ok(())
    }
}
