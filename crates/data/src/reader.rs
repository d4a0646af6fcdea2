//! Reading the CIFAR-10/100 binary files into a [`Dataset`] of NHWC images.

use crate::cifar::{CifarKind, LabelKind, Split, CIFAR_CHANNELS, CIFAR_IMAGE_BYTES, CIFAR_SIDE};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

/// Finds the directory that holds a split's files: `dir` itself, or the extracted
/// archive's folder inside it (`dir/cifar-100-binary`, `dir/cifar-10-batches-bin`).
///
/// Fails with a message listing the places looked at and how to get the files.
pub fn find_cifar_dir(dir: impl AsRef<Path>, kind: CifarKind, split: Split) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let files = kind.files(split);
    let candidates = [dir.to_path_buf(), dir.join(kind.folder())];
    for candidate in &candidates {
        if files.iter().all(|f| candidate.join(f).is_file()) {
            return Ok(candidate.clone());
        }
    }
    Err(DataError::NotFound {
        format: kind.name(),
        split: split.name(),
        files: files.join(", "),
        looked: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(" and "),
        hint: format!(
            "Point the data directory at the folder holding them, or at its parent holding {}/ \
             (the archive, to extract there: {})",
            kind.folder(),
            crate::download::Archive::official(kind).url
        ),
    })
}

/// Loads a split of a CIFAR dataset from `dir` (which holds the files itself or holds
/// the extracted archive's folder), with the chosen labels; images come out NHWC.
///
/// Fails when the files are missing, when a file is not a whole number of records, when
/// a label is out of range (naming the file and the record), when the split holds no
/// records, or when a file's MD5 differs from the folder's manifest (written by the
/// downloader from the verified archive; see [`crate::MANIFEST_FILE`]). Asking CIFAR-10
/// for coarse labels is an error. A record count other than the official one (a subset
/// in CIFAR format) loads, with a warning on stderr, once per folder and split.
pub fn load_cifar(dir: impl AsRef<Path>, kind: CifarKind, split: Split, labels: LabelKind) -> Result<Dataset> {
    let dir = dir.as_ref();
    let num_classes = classes(kind, labels)?;
    let dir = find_cifar_dir(dir, kind, split)?;
    let mut images = Vec::new();
    let mut all_labels = Vec::new();
    for file in kind.files(split) {
        let path = dir.join(file);
        let bytes = crate::alloc::read_file(&path)?;
        decode_records(&bytes, &path, kind, labels, &mut images, &mut all_labels)?;
        crate::manifest::verify_file(&dir, &path)?;
    }
    if all_labels.is_empty() {
        return Err(DataError::EmptySplit { path: dir, format: kind.name(), split: split.name() });
    }
    if let Some(warning) = record_count_warning(&dir, kind, split, all_labels.len()) {
        warn_once(warning);
    }
    Dataset::new(images, all_labels, [CIFAR_SIDE, CIFAR_SIDE, CIFAR_CHANNELS], num_classes)
}

/// The warning for a split of `records` records read from `dir`, when that is not the
/// official count: a subset, or a truncated or padded copy.
pub fn record_count_warning(dir: &Path, kind: CifarKind, split: Split, records: usize) -> Option<String> {
    let official = split.official_records();
    (records != official).then(|| {
        format!(
            "warning: {}: the {kind} {split} split holds {records} records, the official one {official} \
             (a subset, or a truncated or extended copy?)",
            dir.display()
        )
    })
}

/// Prints `warning` to stderr unless this process printed it already.
fn warn_once(warning: String) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&warning) {
        eprintln!("{warning}");
        seen.push(warning);
    }
}

/// Reads one CIFAR binary file (any name) with the chosen labels; images come out NHWC.
///
/// Fails as [`load_cifar`] does (an empty file is an error; the count is not compared
/// with the official one, and no manifest is consulted).
pub fn read_cifar_file(path: impl AsRef<Path>, kind: CifarKind, labels: LabelKind) -> Result<Dataset> {
    let path = path.as_ref();
    let num_classes = classes(kind, labels)?;
    let bytes = crate::alloc::read_file(path)?;
    let mut images = Vec::new();
    let mut all_labels = Vec::new();
    decode_records(&bytes, path, kind, labels, &mut images, &mut all_labels)?;
    if all_labels.is_empty() {
        return Err(DataError::EmptySplit { path: path.to_path_buf(), format: kind.name(), split: "file" });
    }
    Dataset::new(images, all_labels, [CIFAR_SIDE, CIFAR_SIDE, CIFAR_CHANNELS], num_classes)
}

fn classes(kind: CifarKind, labels: LabelKind) -> Result<usize> {
    kind.num_classes(labels).ok_or_else(|| {
        DataError::InvalidArgument(format!("{} has no {labels:?} labels; use LabelKind::Fine", kind.name()))
    })
}

/// Decodes the records of one file, appending NHWC pixels and labels. Every label byte
/// of a record is checked, the unused ones too: a bad byte means a corrupt file.
fn decode_records(
    bytes: &[u8],
    path: &Path,
    kind: CifarKind,
    labels: LabelKind,
    images: &mut Vec<u8>,
    out_labels: &mut Vec<i64>,
) -> Result<()> {
    let record_size = kind.record_size();
    let trailing = bytes.len() % record_size;
    if trailing != 0 {
        return Err(DataError::PartialRecord {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record_size,
            record: bytes.len() / record_size,
            trailing,
            format: kind.name(),
        });
    }
    let n = bytes.len() / record_size;
    let what = || format!("decoding {n} records of {}", path.display());
    crate::alloc::try_reserve(&what(), images, n * CIFAR_IMAGE_BYTES)?;
    crate::alloc::try_reserve(&what(), out_labels, n)?;
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    for (record, chunk) in bytes.chunks_exact(record_size).enumerate() {
        let label = match kind {
            CifarKind::Cifar10 => check(chunk[0], 10, path, record, "class")?,
            CifarKind::Cifar100 => {
                let coarse = check(chunk[0], 20, path, record, "coarse")?;
                let fine = check(chunk[1], 100, path, record, "fine")?;
                match labels {
                    LabelKind::Fine => fine,
                    LabelKind::Coarse => coarse,
                }
            }
        };
        out_labels.push(label);
        let pixels = &chunk[kind.label_bytes()..];
        // Planes R, G, B of 32x32 row-major -> HWC.
        images.extend((0..plane).flat_map(|p| (0..CIFAR_CHANNELS).map(move |c| pixels[c * plane + p])));
    }
    Ok(())
}

fn check(byte: u8, num_classes: usize, path: &Path, record: usize, which: &'static str) -> Result<i64> {
    if (byte as usize) < num_classes {
        Ok(byte as i64)
    } else {
        Err(DataError::LabelOutOfRange { path: path.to_path_buf(), record, which, label: byte as i64, num_classes })
    }
}
