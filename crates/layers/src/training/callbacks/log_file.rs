//! The file of a logging callback (CSV, JSONL): its folder created, then opened for
//! appending (a resumed run) or anew.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Creates the folder that will hold `path`, if it names one.
pub(super) fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

/// Opens `path` for writing, appending to it or starting it anew.
pub(super) fn open(path: &Path, append: bool) -> std::io::Result<File> {
    OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path)
}
