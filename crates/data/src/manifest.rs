//! The checksum manifest of a dataset folder: the MD5 of every extracted file, written
//! by the downloader once the published archive's MD5 has verified, and checked on load.
//!
//! The University of Toronto publishes only the archives' MD5s, not those of the files
//! inside, so a manifest can only be made from a verified archive. A folder that was
//! filled by other means (extracted by hand, copied, written by a tool) has no manifest
//! and its files are not checksummed: they are checked for whole records, valid labels
//! and their record counts (a count other than the official one is a warning).

use crate::cifar::CifarKind;
use crate::error::{DataError, Result};
use std::io::Read;
use std::path::Path;

/// The manifest's file name inside the dataset folder (the `md5sum` format: a digest,
/// two spaces, a file name per line, so `md5sum -c` can check it too).
pub const MANIFEST_FILE: &str = "tapegrad-md5sums.txt";

/// The MD5 (lowercase hex) of a file's bytes.
fn md5_of_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io("reading", path, e))?;
    let mut md5 = md5::Context::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        md5.consume(&buf[..n]);
    }
    Ok(format!("{:x}", md5.finalize()))
}

/// Writes the manifest of `kind`'s official files in `folder`.
pub fn write_manifest(folder: &Path, kind: CifarKind) -> Result<()> {
    let mut text = String::new();
    for file in kind.all_files() {
        text.push_str(&format!("{}  {file}\n", md5_of_file(&folder.join(file))?));
    }
    let path = folder.join(MANIFEST_FILE);
    std::fs::write(&path, text).map_err(|e| DataError::io("writing", &path, e))
}

/// Checks `path` (a file of `folder`) against `folder`'s manifest, when there is one
/// and it lists the file; `Ok(false)` when there is nothing to check against.
pub(crate) fn verify_file(folder: &Path, path: &Path) -> Result<bool> {
    let manifest = folder.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&manifest) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(DataError::io("reading", &manifest, e)),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(false) };
    let Some(expected) = text.lines().find_map(|l| l.split_once("  ").filter(|(_, f)| *f == name).map(|(d, _)| d))
    else {
        return Ok(false);
    };
    let actual = md5_of_file(path)?;
    if actual != expected.trim().to_ascii_lowercase() {
        return Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.trim().to_string(),
            actual,
            manifest,
        });
    }
    Ok(true)
}
