//! [`ProgressLogger`]: Keras' progress display. `fit` adds it when `verbose` is 1 or 2.

use crate::training::{Callback, CallbackContext, Logs};
use crate::Result;
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Prints a line per epoch to stdout, as Keras does:
///
/// ```text
/// Epoch 1/3 - 12s - loss: 0.6931 - accuracy: 0.5000 - val_loss: 0.6802 - val_accuracy: 0.5600
/// ```
///
/// With verbose 1 and stdout a terminal, a live bar (`37/50 [======>...] - loss: 0.7012`)
/// is redrawn in place during the epoch whenever the loss is read; when stdout is a pipe
/// or a file (a log, a test) no bar is drawn, only the epoch lines.
#[derive(Debug)]
pub struct ProgressLogger {
    verbose: u8,
    terminal: bool,
    started: Option<Instant>,
    bar_drawn: bool,
}

impl ProgressLogger {
    /// The display for `verbose` 1 (bar on a terminal, then the line) or 2 (the line).
    pub fn new(verbose: u8) -> Self {
        ProgressLogger { verbose, terminal: std::io::stdout().is_terminal(), started: None, bar_drawn: false }
    }

    /// The epoch line: `Epoch {epoch+1}/{epochs} - {time} - {logs}` (the learning rate
    /// `lr` left out, as Keras prints it only when a callback sets it).
    pub fn epoch_line(epoch: u64, epochs: u64, seconds: f64, logs: &Logs) -> String {
        let shown: Logs = logs.iter().filter(|(k, _)| *k != "lr").collect();
        let time = if seconds >= 1.0 { format!("{seconds:.0}s") } else { format!("{:.0}ms", seconds * 1e3) };
        if shown.is_empty() {
            format!("Epoch {}/{epochs} - {time}", epoch + 1)
        } else {
            format!("Epoch {}/{epochs} - {time} - {shown}", epoch + 1)
        }
    }

    /// The live bar after `done` of `total` steps.
    fn bar(done: u64, total: u64, loss: f64) -> String {
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH / total.max(1)).min(WIDTH);
        let mut bar = "=".repeat(filled as usize);
        if filled < WIDTH {
            bar.push('>');
            bar.push_str(&".".repeat((WIDTH - filled - 1) as usize));
        }
        let width = total.to_string().len();
        format!("{done:>width$}/{total} [{bar}] - loss: {loss:.4}")
    }
}

impl Callback for ProgressLogger {
    fn on_epoch_begin(&mut self, _ctx: &mut CallbackContext<'_>, _epoch: u64) -> Result<()> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>, batch: u64, logs: &Logs) -> Result<()> {
        if self.verbose == 1 && self.terminal {
            if let Some(loss) = logs.get("loss") {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r{}", Self::bar(batch + 1, ctx.params.steps, loss));
                let _ = out.flush();
                self.bar_drawn = true;
            }
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> Result<()> {
        let seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let mut out = std::io::stdout().lock();
        if self.bar_drawn {
            // Clear the bar's line before the epoch's.
            let _ = write!(out, "\r\x1b[2K");
            self.bar_drawn = false;
        }
        let _ = writeln!(out, "{}", Self::epoch_line(epoch, ctx.params.epochs, seconds, logs));
        Ok(())
    }
}
