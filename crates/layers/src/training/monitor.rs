//! The monitored quantity of `ModelCheckpoint`, `EarlyStopping` and `ReduceLROnPlateau`:
//! its name, and whether lower or higher is better (Keras' `mode`).

use super::Logs;
use crate::{Error, Result};

/// Whether the monitored value should fall or rise (Keras' `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MonitorMode {
    /// Higher is better for names containing `acc`, `iou` or `auc` (and `fmeasure`
    /// prefixes), lower for everything else, as Keras' `"auto"`.
    #[default]
    Auto,
    /// Lower is better (losses).
    Min,
    /// Higher is better (accuracies).
    Max,
}

impl MonitorMode {
    /// `Min` or `Max` for the monitored `name` (resolves `Auto`).
    pub fn resolve(self, name: &str) -> MonitorMode {
        match self {
            MonitorMode::Auto => {
                let lower = name.to_ascii_lowercase();
                if lower.contains("acc")
                    || lower.contains("iou")
                    || lower.contains("auc")
                    || lower.starts_with("fmeasure")
                {
                    MonitorMode::Max
                } else {
                    MonitorMode::Min
                }
            }
            other => other,
        }
    }
}

/// A resolved monitor: the name and the direction.
#[derive(Clone, Debug)]
pub(crate) struct Monitor {
    pub(crate) name: String,
    pub(crate) mode: MonitorMode,
}

impl Monitor {
    pub(crate) fn new(name: &str, mode: MonitorMode) -> Self {
        Monitor { name: name.to_string(), mode: mode.resolve(name) }
    }

    /// The worst possible value (the starting "best").
    pub(crate) fn worst(&self) -> f64 {
        match self.mode {
            MonitorMode::Max => f64::NEG_INFINITY,
            _ => f64::INFINITY,
        }
    }

    /// Whether `current` beats `reference` by more than `min_delta` (>= 0).
    pub(crate) fn improves(&self, current: f64, reference: f64, min_delta: f64) -> bool {
        match self.mode {
            MonitorMode::Max => current - min_delta > reference,
            _ => current + min_delta < reference,
        }
    }

    /// The monitored value in `logs`, or an error naming the callback, the monitor and the
    /// names that are there.
    pub(crate) fn value(&self, callback: &str, logs: &Logs) -> Result<f64> {
        logs.get(&self.name).ok_or_else(|| {
            Error::Invalid(format!(
                "{callback}: monitor {:?} is not in the epoch's logs (available: {})",
                self.name,
                logs.keys().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Checks a callback option that must be a finite number >= 0.
pub(crate) fn non_negative(callback: &str, option: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{callback}: {option} must be a finite number >= 0, got {value}")))
    }
}
