//! [`History`]: what `fit` returns.

use super::Logs;
use std::collections::BTreeMap;

/// Every value logged at the end of every epoch (Keras' `History`): `history["loss"][i]`
/// is the training loss of the `i`-th epoch run (`epoch[i]` is that epoch's index, which
/// starts at `initial_epoch`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The index of each epoch run (Keras' `history.epoch`).
    pub epoch: Vec<u64>,
    /// Each name's value per epoch, in the order of [`History::epoch`] (Keras'
    /// `history.history`). A name missing at some epoch (a metric logged only sometimes)
    /// holds NaN there.
    pub history: BTreeMap<String, Vec<f64>>,
    /// The epoch (index) at which a callback stopped training, if one did.
    pub stopped_epoch: Option<u64>,
    /// Warnings printed during training (to stderr), such as the batch-normalization one.
    pub warnings: Vec<String>,
}

impl History {
    /// The values of `name`, one per epoch, if it was logged.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.history.get(name).map(Vec::as_slice)
    }

    /// The last epoch's value of `name`.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(|v| v.last().copied())
    }

    /// The number of epochs recorded.
    pub fn len(&self) -> usize {
        self.epoch.len()
    }

    /// Whether no epoch was recorded.
    pub fn is_empty(&self) -> bool {
        self.epoch.is_empty()
    }

    /// Records the end of `epoch` with its logs.
    pub(crate) fn push(&mut self, epoch: u64, logs: &Logs) {
        let done = self.epoch.len();
        for (k, v) in logs.iter() {
            self.history.entry(k.to_string()).or_insert_with(|| vec![f64::NAN; done]).push(v);
        }
        for values in self.history.values_mut() {
            values.resize(done + 1, f64::NAN);
        }
        self.epoch.push(epoch);
    }
}
