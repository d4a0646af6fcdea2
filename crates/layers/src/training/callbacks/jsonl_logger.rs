//! [`JsonlLogger`]: one JSON object per epoch.

use crate::training::{Callback, CallbackContext, Logs};
use crate::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// Writes one JSON object per epoch, one per line (`{"epoch": 0, "loss": 0.69, ...}`,
/// the logs in their order), flushed after each line. JSON has no NaN or infinity: they
/// are written as `null`. The file is replaced unless `append(true)`.
#[derive(Debug)]
pub struct JsonlLogger {
    path: PathBuf,
    append: bool,
    file: Option<File>,
}

impl JsonlLogger {
    /// A logger writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlLogger { path: path.into(), append: false, file: None }
    }

    /// Appends to an existing file instead of replacing it.
    pub fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }

    /// The line for `epoch`: `{"epoch": e, "name": value, ...}`.
    pub fn line(epoch: u64, logs: &Logs) -> String {
        let mut fields = vec![format!("\"epoch\": {epoch}")];
        for (k, v) in logs.iter() {
            let value = if v.is_finite() { format!("{v}") } else { "null".into() };
            fields.push(format!("\"{}\": {value}", k.replace('\\', "\\\\").replace('"', "\\\"")));
        }
        format!("{{{}}}", fields.join(", "))
    }
}

impl Callback for JsonlLogger {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        super::log_file::create_parent(&self.path).map_err(|e| self.io(e))?;
        let file = super::log_file::open(&self.path, self.append).map_err(|e| self.io(e))?;
        self.file = Some(file);
        Ok(())
    }

    fn on_epoch_end(&mut self, _ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        let line = Self::line(epoch, logs);
        let result = match self.file.as_mut() {
            Some(file) => writeln!(file, "{line}").and_then(|()| file.flush()),
            None => Ok(()),
        };
        result.map_err(|e| self.io(e))
    }

    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_>, _logs: &Logs) -> Result<()> {
        self.file = None;
        Ok(())
    }
}
