//! Downloading the official CIFAR archives into a cache directory: progress bar, MD5
//! check, extraction, and an atomic completion (the dataset folder appears by a rename,
//! only once everything in it is verified).

use crate::cifar::CifarKind;
use crate::error::{DataError, Result};
use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that overrides the default cache directory.
pub const DATA_DIR_ENV: &str = "TAPEGRAD_DATA";

/// An archive to download: where from, its published MD5 digest, and which dataset it
/// holds (which names the folder it extracts to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The dataset inside; the archive must extract to `kind.folder()`.
    pub kind: CifarKind,
    /// `http://`, `https://` or `file://` URL.
    pub url: String,
    /// The published MD5 digest, hex (either case).
    pub md5: String,
}

impl Archive {
    /// The official archive of a CIFAR dataset, from the University of Toronto.
    pub fn official(kind: CifarKind) -> Self {
        let (url, md5) = match kind {
            CifarKind::Cifar10 => {
                ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")
            }
            CifarKind::Cifar100 => {
                ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8")
            }
        };
        Self { kind, url: url.into(), md5: md5.into() }
    }
}

/// The default cache directory: `$TAPEGRAD_DATA` when set and not empty, else `./data`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os(DATA_DIR_ENV))
}

/// The cache directory for a value of `$TAPEGRAD_DATA`.
fn cache_dir_from(value: Option<std::ffi::OsString>) -> PathBuf {
    match value {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("data"),
    }
}

/// How to install an archive by hand into `cache_dir`: the URL, the MD5, the directory
/// and the layout expected.
pub fn manual_instructions(archive: &Archive, cache_dir: &Path) -> String {
    let folder = cache_dir.join(archive.kind.folder());
    format!(
        "To install {name} by hand: download {url} (MD5 {md5}) and extract it in {dir}, so that \
         {folder} holds {files}. Any directory that holds these files, or holds {sub}/ with them, \
         can be passed as the data directory.",
        name = archive.kind.name(),
        url = archive.url,
        md5 = archive.md5,
        dir = cache_dir.display(),
        folder = folder.display(),
        files = archive.kind.all_files().join(", "),
        sub = archive.kind.folder(),
    )
}

/// Makes sure the official archive of `kind` is in `cache_dir`, downloading and
/// extracting it if needed (with a progress bar on a terminal). Returns the dataset
/// folder, `cache_dir/<kind.folder()>`.
///
/// Fails as [`fetch_archive`] does.
pub fn ensure_cifar(kind: CifarKind, cache_dir: impl AsRef<Path>) -> Result<PathBuf> {
    let cache_dir = cache_dir.as_ref();
    fetch_archive(&Archive::official(kind), cache_dir, true)
}

/// Makes sure `archive` is extracted in `cache_dir` and returns its dataset folder,
/// `cache_dir/<archive.kind.folder()>`. A folder already holding all the files is taken
/// as it is. Otherwise the archive is downloaded to a temporary file (with a progress
/// bar when `progress` and stderr is a terminal), its MD5 is checked, it is extracted
/// into a temporary directory, and the dataset folder is renamed into place: an
/// interrupted or failed download leaves nothing that looks complete. The extracted
/// files' MD5s go into the folder's manifest ([`crate::MANIFEST_FILE`]), which loading checks.
///
/// Fails when the download fails (the message says how to install the files by hand),
/// when the MD5 differs, when the archive lacks the expected files, when the folder
/// exists but is incomplete, or on an I/O error in `cache_dir`.
pub fn fetch_archive(archive: &Archive, cache_dir: impl AsRef<Path>, progress: bool) -> Result<PathBuf> {
    let cache_dir = cache_dir.as_ref();
    let folder = cache_dir.join(archive.kind.folder());
    if folder.exists() {
        let missing = missing_files(&folder, archive.kind);
        if missing.is_empty() {
            return Ok(folder);
        }
        return Err(DataError::IncompleteDir { path: folder, missing: missing.join(", ") });
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| DataError::io("creating directory", cache_dir, e))?;

    let mut part = tempfile::Builder::new()
        .prefix(&format!(".{}.", archive.kind.folder()))
        .suffix(".tar.gz.part")
        .tempfile_in(cache_dir)
        .map_err(|e| DataError::io("creating a temporary file in", cache_dir, e))?;
    let (digest, bytes) = download(archive, cache_dir, part.as_file_mut(), progress)?;
    if !digest.eq_ignore_ascii_case(archive.md5.trim()) {
        return Err(DataError::Md5Mismatch {
            url: archive.url.clone(),
            expected: archive.md5.to_ascii_lowercase(),
            actual: digest,
            bytes,
            instructions: manual_instructions(archive, cache_dir),
        });
    }

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.extract.", archive.kind.folder()))
        .tempdir_in(cache_dir)
        .map_err(|e| DataError::io("creating a temporary directory in", cache_dir, e))?;
    let part_path = part.path().to_path_buf();
    let file = part.as_file_mut();
    file.seek(SeekFrom::Start(0)).map_err(|e| DataError::io("rewinding", &part_path, e))?;
    tar::Archive::new(GzDecoder::new(&*file))
        .unpack(staging.path())
        .map_err(|e| DataError::BadArchive { url: archive.url.clone(), reason: format!("extracting: {e}") })?;
    let extracted = staging.path().join(archive.kind.folder());
    let missing = missing_files(&extracted, archive.kind);
    if !missing.is_empty() {
        return Err(DataError::BadArchive {
            url: archive.url.clone(),
            reason: format!("it does not hold {}/ with {}", archive.kind.folder(), missing.join(", ")),
        });
    }
    // The archive's MD5 verified: record the files' digests, which loading checks.
    crate::manifest::write_manifest(&extracted, archive.kind)?;
    if let Err(e) = std::fs::rename(&extracted, &folder) {
        // Another process may have completed the same download meanwhile.
        if !(folder.exists() && missing_files(&folder, archive.kind).is_empty()) {
            return Err(DataError::io("moving the extracted archive to", &folder, e));
        }
    }
    Ok(folder)
}

/// The official files of `kind` that `folder` lacks.
fn missing_files(folder: &Path, kind: CifarKind) -> Vec<&'static str> {
    kind.all_files().into_iter().filter(|f| !folder.join(f).is_file()).collect()
}

/// Copies the archive's bytes into `out`; returns their MD5 (lowercase hex) and count.
fn download(archive: &Archive, cache_dir: &Path, out: &mut File, progress: bool) -> Result<(String, u64)> {
    let failed = |reason: String| DataError::Download {
        url: archive.url.clone(),
        reason,
        instructions: manual_instructions(archive, cache_dir),
    };
    let (mut reader, total) = open(&archive.url).map_err(failed)?;
    let bar = progress_bar(total, progress, archive.kind.folder());
    let mut md5 = md5::Context::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(format!("reading the response after {bytes} bytes: {e}"))),
        };
        md5.consume(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| DataError::io("writing the download into", cache_dir, e))?;
        bytes += n as u64;
        bar.set_position(bytes);
    }
    out.flush().map_err(|e| DataError::io("writing the download into", cache_dir, e))?;
    if let Some(total) = total.filter(|&t| t != bytes) {
        return Err(failed(format!("the download stopped after {bytes} of {total} bytes")));
    }
    bar.finish_and_clear();
    Ok((format!("{:x}", md5.finalize()), bytes))
}

/// Opens a URL for reading; returns the reader and the length when known.
fn open(url: &str) -> std::result::Result<(Box<dyn Read>, Option<u64>), String> {
    if let Some(path) = url.strip_prefix("file://") {
        let file = File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
        let len = file.metadata().ok().map(|m| m.len());
        return Ok((Box::new(file), len));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("unsupported URL scheme (expected http://, https:// or file://)".into());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        e => format!("{e} (offline, or the server is unreachable?)"),
    })?;
    let body = response.into_body();
    let len = body.content_length();
    Ok((Box::new(body.into_reader()), len))
}

/// A progress bar over `total` bytes, or a hidden one.
fn progress_bar(total: Option<u64>, visible: bool, name: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("downloading {name}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_is_the_variable_or_data() {
        // Tested without touching the process environment, which other tests read.
        assert_eq!(cache_dir_from(Some("/tmp/somewhere".into())), Path::new("/tmp/somewhere"));
        assert_eq!(cache_dir_from(Some("".into())), Path::new("data"));
        assert_eq!(cache_dir_from(None), Path::new("data"));
    }
}
