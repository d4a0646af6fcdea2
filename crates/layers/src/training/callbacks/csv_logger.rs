//! [`CSVLogger`]: one CSV row per epoch.

use crate::training::{Callback, CallbackContext, Logs};
use crate::{Error, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

/// Writes `epoch,<every logged name, sorted>` then one row per epoch (Keras'
/// `CSVLogger`), flushed after each row. The file is replaced unless `append(true)`
/// (resuming), which keeps its rows and writes no second header. Non-finite values are
/// written as `nan`, `inf`, `-inf`.
#[derive(Debug)]
pub struct CSVLogger {
    path: PathBuf,
    separator: char,
    append: bool,
    file: Option<File>,
    keys: Option<Vec<String>>,
}

impl CSVLogger {
    /// A logger writing to `path` with `,` separators.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CSVLogger { path: path.into(), separator: ',', append: false, file: None, keys: None }
    }

    /// The field separator.
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }

    /// Appends to an existing file instead of replacing it.
    pub fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }
}

/// A CSV field: numbers as Rust prints them (`0.5`, `NaN` as `nan`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v}")
    }
}

impl Callback for CSVLogger {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        super::log_file::create_parent(&self.path).map_err(|e| self.io(e))?;
        self.keys = None;
        if self.append && self.path.exists() {
            // Keep the existing header's columns.
            let file = File::open(&self.path).map_err(|e| self.io(e))?;
            let mut header = String::new();
            BufReader::new(file).read_line(&mut header).map_err(|e| self.io(e))?;
            let columns: Vec<String> = header.trim_end().split(self.separator).map(str::to_string).collect();
            if columns.len() > 1 {
                self.keys = Some(columns[1..].to_vec());
            }
        }
        let file = super::log_file::open(&self.path, self.append).map_err(|e| self.io(e))?;
        self.file = Some(file);
        Ok(())
    }

    fn on_epoch_end(&mut self, _ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        let sep = self.separator.to_string();
        let mut text = String::new();
        let keys = match &self.keys {
            Some(keys) => keys.clone(),
            None => {
                let mut keys: Vec<String> = logs.keys().map(str::to_string).collect();
                keys.sort();
                text.push_str(&format!("epoch{sep}{}\n", keys.join(&sep)));
                self.keys = Some(keys.clone());
                keys
            }
        };
        let row: Vec<String> = keys.iter().map(|k| logs.get(k).map(number).unwrap_or_default()).collect();
        text.push_str(&format!("{epoch}{sep}{}\n", row.join(&sep)));
        let result = match self.file.as_mut() {
            Some(file) => file.write_all(text.as_bytes()).and_then(|()| file.flush()),
            None => Ok(()),
        };
        result.map_err(|e| self.io(e))
    }

    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_>, _logs: &Logs) -> Result<()> {
        self.file = None;
        Ok(())
    }
}
