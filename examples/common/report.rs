//! The `--metrics` file: one JSON object per epoch.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Appends one JSON object per epoch to a file, which it starts anew.
pub struct MetricsFile {
    path: PathBuf,
}

impl MetricsFile {
    /// Starts `path` empty (creating its folder).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, "")?;
        Ok(MetricsFile { path: path.to_path_buf() })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"key": value, ...}` in the order given, as one line.
    pub fn append(&self, fields: &[(&str, f64)]) -> std::io::Result<()> {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {}", json_number(*v))).collect();
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        writeln!(file, "{{{}}}", body.join(", "))
    }
}

/// JSON has no NaN or infinity: they are written as null. (`{}` writes whole numbers
/// without a fraction, so epochs and steps read as integers.)
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}
