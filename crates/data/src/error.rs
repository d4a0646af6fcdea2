//! The one error type of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, downloading or batching data. Messages
/// name the files, record indices, sizes and URLs involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on a file or directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A CIFAR file's size is not a whole number of records.
    #[error(
        "{path}: {len} bytes is not a whole number of {record_size}-byte records \
         (record {record} is incomplete: {trailing} of {record_size} bytes); \
         the file is truncated or is not a {format} file"
    )]
    PartialRecord {
        /// The file.
        path: PathBuf,
        /// The file's size in bytes.
        len: u64,
        /// The size of one record of the expected format.
        record_size: usize,
        /// The index (from 0) of the incomplete record.
        record: usize,
        /// How many bytes of that record the file holds.
        trailing: usize,
        /// The expected format ("CIFAR-10" or "CIFAR-100").
        format: &'static str,
    },
    /// A record holds a label outside `0..num_classes`.
    #[error("{path}: record {record}: {which} label {label} is out of range (expected 0..{num_classes})")]
    LabelOutOfRange {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// The index (from 0) of the record.
        record: usize,
        /// Which label ("fine", "coarse" or "class").
        which: &'static str,
        /// The label found.
        label: i64,
        /// The number of classes.
        num_classes: usize,
    },
    /// The files of a CIFAR split were found in none of the places looked at.
    #[error("{format} {split} files not found: looked for {files} in {looked}. {hint}")]
    NotFound {
        /// The format ("CIFAR-10" or "CIFAR-100").
        format: &'static str,
        /// The split ("train" or "test").
        split: &'static str,
        /// The file names looked for.
        files: String,
        /// The directories looked in.
        looked: String,
        /// What to do about it.
        hint: String,
    },
    /// Downloading an archive failed (no network, connection refused, HTTP error...).
    /// The message carries the instructions for placing the files by hand.
    #[error("could not download {url}: {reason}\n{instructions}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
        /// How to put the files in place by hand.
        instructions: String,
    },
    /// A downloaded archive's MD5 digest is not the published one.
    #[error("{url}: MD5 mismatch: expected {expected}, got {actual} ({bytes} bytes downloaded); nothing was kept\n{instructions}")]
    Md5Mismatch {
        /// The URL.
        url: String,
        /// The published digest (lowercase hex).
        expected: String,
        /// The digest of what was downloaded (lowercase hex).
        actual: String,
        /// How many bytes were downloaded.
        bytes: u64,
        /// How to put the files in place by hand.
        instructions: String,
    },
    /// An archive could not be extracted, or does not hold the expected layout.
    #[error("{url}: bad archive: {reason}")]
    BadArchive {
        /// The URL of the archive.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A dataset folder exists but lacks some of its files.
    #[error("{path} exists but lacks {missing}: complete it by hand, or remove it to download again")]
    IncompleteDir {
        /// The folder.
        path: PathBuf,
        /// The missing file names.
        missing: String,
    },
    /// A file's MD5 differs from the one its folder's manifest recorded when the
    /// verified archive was extracted.
    #[error(
        "{path}: MD5 {actual} differs from {expected}, recorded in {manifest} when the verified archive \
         was extracted: the file was changed or damaged since; remove the folder to download it again"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The recorded digest.
        expected: String,
        /// The file's digest.
        actual: String,
        /// The manifest.
        manifest: PathBuf,
    },
    /// A split holds no records.
    #[error("{path}: the {format} {split} split holds no records (empty files?); nothing to train or test on")]
    EmptySplit {
        /// The folder (or file) read.
        path: PathBuf,
        /// The format ("CIFAR-10" or "CIFAR-100").
        format: &'static str,
        /// The split ("train" or "test"), or "file" for a single file.
        split: &'static str,
    },
    /// A buffer whose size the data decides could not be allocated.
    #[error("out of memory: {what} needs {bytes} bytes, which could not be allocated")]
    OutOfMemory {
        /// What the buffer was for (the file, or the dataset and its record count).
        what: String,
        /// The bytes requested.
        bytes: u64,
    },
    /// An argument is invalid (a zero batch size, a negative standard deviation, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A conversion to tensors failed.
    #[error("converting a batch to tensors: {0}")]
    Tensor(#[source] Box<tapegrad_tensor::Error>),
}

/// The result type of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;

impl From<tapegrad_tensor::Error> for DataError {
    fn from(e: tapegrad_tensor::Error) -> Self {
        DataError::Tensor(Box::new(e))
    }
}

impl DataError {
    /// An [`DataError::Io`] error for `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { action, path: path.into(), source }
    }
}
