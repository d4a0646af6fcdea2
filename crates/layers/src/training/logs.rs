//! [`Logs`]: the name -> value map that `fit` hands to callbacks and returns from
//! `evaluate`.

use std::fmt;

/// Metric values by name (Keras' `logs` dict): `loss`, `accuracy`, `val_loss`,
/// `val_accuracy`, `lr`, ... Keys keep the order in which they were first inserted (the
/// loss first, then the metrics in the order given, then the validation values), which is
/// the order the progress line prints them in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    entries: Vec<(String, f64)>,
}

impl Logs {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, keeping its position if it is already there.
    pub fn insert(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.entries.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The names in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every entry of `other` (overwriting equal names).
    pub fn extend(&mut self, other: &Logs) {
        for (k, v) in other.iter() {
            self.insert(k, v);
        }
    }

    /// The same entries with `prefix` before each name (`val_` for validation).
    pub fn prefixed(&self, prefix: &str) -> Logs {
        Logs { entries: self.entries.iter().map(|(k, v)| (format!("{prefix}{k}"), *v)).collect() }
    }
}

/// `loss: 0.6931 - accuracy: 0.5000`, Keras' progress-line format.
impl fmt::Display for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" - ")?;
            }
            if k == "lr" || k.ends_with("learning_rate") {
                write!(f, "{k}: {v:.4e}")?;
            } else {
                write!(f, "{k}: {v:.4}")?;
            }
        }
        Ok(())
    }
}

impl<'a> FromIterator<(&'a str, f64)> for Logs {
    fn from_iter<I: IntoIterator<Item = (&'a str, f64)>>(iter: I) -> Self {
        let mut logs = Logs::new();
        for (k, v) in iter {
            logs.insert(k, v);
        }
        logs
    }
}
