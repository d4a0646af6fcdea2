//! The on-disk cache of NVRTC-compiled kernel images (CUBIN or PTX), so that a process
//! does not recompile every kernel family (seconds each) that an earlier one compiled.
//!
//! Where: `$TAPEGRAD_KERNEL_CACHE`, else `$XDG_CACHE_HOME/tapegrad/kernels`, else
//! `$HOME/.cache/tapegrad/kernels`; `TAPEGRAD_KERNEL_CACHE=off` turns it off. An entry's
//! file name holds the source's name, the architecture, the NVRTC version and a 64-bit
//! hash of the compile options and the full source text, so any change to one of them
//! misses. Entries are written to a temporary file and renamed into place (a reader never
//! sees half an entry), and carry their length and a checksum: a corrupt or truncated
//! entry is recompiled and replaced, never handed to the driver. The cache only ever
//! saves time: a folder that cannot be created or written prints one warning and the
//! kernels are compiled as before.

use crate::Result;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The environment variable naming the cache folder (or `off`).
pub(crate) const CACHE_VAR: &str = "TAPEGRAD_KERNEL_CACHE";

/// The first bytes of every entry (the format's version is the digit).
const MAGIC: &[u8; 8] = b"TGKERN1\n";
/// Magic, payload length and payload checksum, in that order.
const HEADER_LEN: usize = MAGIC.len() + 8 + 8;

/// What one compiled image depends on.
pub(crate) struct CacheKey<'a> {
    /// The source's short name (readable file names; the hash covers the text).
    pub name: &'a str,
    /// `sm_XY` or `compute_XY`.
    pub arch: &'a str,
    /// The loaded NVRTC's version.
    pub nvrtc: (i32, i32),
    /// Every option passed to NVRTC.
    pub options: &'a [String],
    /// The full text NVRTC compiles (prelude included).
    pub text: &'a str,
}

impl CacheKey<'_> {
    /// The entry's file name.
    fn file_name(&self) -> String {
        let mut h = Fnv::new();
        for option in self.options {
            h.write(option.as_bytes());
            h.write(&[0]);
        }
        h.write(&[0xff]);
        h.write(self.text.as_bytes());
        let (major, minor) = self.nvrtc;
        format!("{}-{}-nvrtc{major}.{minor}-{:016x}.bin", self.name, self.arch, h.finish())
    }
}

/// 64-bit FNV-1a: stable across Rust versions and platforms (std's hasher is not
/// promised to be), which a key kept on disk needs.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    h.finish()
}

/// How an image was obtained (for the tests and the GPU check's report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Read from a valid entry.
    Hit,
    /// Compiled; stored if the folder was writable.
    Compiled,
    /// Compiled because the entry was corrupt or truncated; replaced if possible.
    Repaired,
}

static HITS: AtomicU64 = AtomicU64::new(0);
static COMPILES: AtomicU64 = AtomicU64::new(0);

/// The cache folder, or `None` when it is turned off or no folder can be named.
pub(crate) fn folder() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_VAR) {
        return (dir != "off").then(|| PathBuf::from(dir));
    }
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("tapegrad").join("kernels"))
}

/// Entries read and images compiled by this process so far.
pub(crate) fn counts() -> (u64, u64) {
    (HITS.load(Ordering::Relaxed), COMPILES.load(Ordering::Relaxed))
}

/// The image for `key`: from a valid entry under `dir`, else from `compile`, then stored.
/// Only `compile`'s error is an error; the cache's own failures are warnings.
pub(crate) fn load_or_compile(
    dir: Option<&Path>,
    key: &CacheKey,
    compile: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<(Vec<u8>, Outcome)> {
    let Some(dir) = dir else {
        COMPILES.fetch_add(1, Ordering::Relaxed);
        return compile().map(|image| (image, Outcome::Compiled));
    };
    let path = dir.join(key.file_name());
    let outcome = match std::fs::read(&path) {
        Ok(bytes) => match decode(&bytes) {
            Some(image) => {
                HITS.fetch_add(1, Ordering::Relaxed);
                return Ok((image.to_vec(), Outcome::Hit));
            }
            None => Outcome::Repaired,
        },
        Err(_) => Outcome::Compiled,
    };
    COMPILES.fetch_add(1, Ordering::Relaxed);
    let image = compile()?;
    if let Err(e) = store(dir, &path, &image) {
        warn_once(&format!(
            "tapegrad warning: cannot write the kernel cache in {} ({e}); kernels are compiled in every process \
             (set {CACHE_VAR} to a writable folder, or to `off`)",
            dir.display()
        ));
    }
    Ok((image, outcome))
}

/// The payload of a well-formed entry, or `None` (wrong magic, length or checksum).
fn decode(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (len, sum) = (word(MAGIC.len()), word(MAGIC.len() + 8));
    let payload = &bytes[HEADER_LEN..];
    (payload.len() as u64 == len && checksum(payload) == sum).then_some(payload)
}

fn encode(image: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + image.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&checksum(image).to_le_bytes());
    bytes.extend_from_slice(image);
    bytes
}

/// Writes the entry under a name no other writer uses, then renames it into place
/// (atomic within one file system; concurrent writers of one key write the same bytes).
fn store(dir: &Path, path: &Path, image: &[u8]) -> std::io::Result<()> {
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed)));
    let written = std::fs::write(&tmp, encode(image)).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn warn_once(message: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A fresh folder under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tapegrad-kernel-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn key<'a>(options: &'a [String], text: &'a str) -> CacheKey<'a> {
        CacheKey { name: "elementwise", arch: "sm_90", nvrtc: (13, 0), options, text }
    }

    /// `load_or_compile` with a compiler that returns `image` and counts its calls.
    fn fetch(dir: &Path, key: &CacheKey, image: &[u8], calls: &Cell<u32>) -> (Vec<u8>, Outcome) {
        load_or_compile(Some(dir), key, || {
            calls.set(calls.get() + 1);
            Ok(image.to_vec())
        })
        .unwrap()
    }

    #[test]
    fn a_second_use_reads_the_entry_instead_of_compiling() {
        let dir = scratch("hit");
        let options = vec!["--gpu-architecture=sm_90".to_string()];
        let calls = Cell::new(0);
        assert_eq!(fetch(&dir, &key(&options, "src"), b"CUBIN", &calls), (b"CUBIN".to_vec(), Outcome::Compiled));
        assert_eq!(fetch(&dir, &key(&options, "src"), b"other", &calls), (b"CUBIN".to_vec(), Outcome::Hit));
        assert_eq!(calls.get(), 1);
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 1, "one entry, no temporary left behind: {names:?}");
        assert!(names[0].starts_with("elementwise-sm_90-nvrtc13.0-"), "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn source_options_architecture_and_nvrtc_version_are_all_in_the_key() {
        let options = vec!["--std=c++17".to_string()];
        let other_options = vec!["--std=c++20".to_string()];
        let base = key(&options, "src").file_name();
        assert_eq!(base, key(&options, "src").file_name());
        assert_ne!(base, key(&options, "src2").file_name());
        assert_ne!(base, key(&other_options, "src").file_name());
        assert_ne!(base, CacheKey { arch: "sm_100", ..key(&options, "src") }.file_name());
        assert_ne!(base, CacheKey { nvrtc: (13, 1), ..key(&options, "src") }.file_name());
    }

    #[test]
    fn corrupt_or_truncated_entries_are_recompiled_and_replaced() {
        let dir = scratch("corrupt");
        let options = Vec::new();
        let k = key(&options, "src");
        let calls = Cell::new(0);
        fetch(&dir, &k, b"the image bytes", &calls);
        let path = dir.join(k.file_name());
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let damaged: [&[u8]; 4] = [&good[..good.len() - 3], &flipped, &good[..5], b""];
        for (i, bytes) in damaged.into_iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let (image, outcome) = fetch(&dir, &k, b"the image bytes", &calls);
            assert_eq!((image.as_slice(), outcome), (&b"the image bytes"[..], Outcome::Repaired), "damage {i}");
            assert_eq!(std::fs::read(&path).unwrap(), good, "damage {i}: the entry is rewritten");
        }
        assert_eq!(calls.get(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_folder_still_compiles() {
        // A folder below a regular file can never be created.
        let file = scratch("unwritable");
        std::fs::write(&file, b"not a folder").unwrap();
        let options = Vec::new();
        let calls = Cell::new(0);
        for _ in 0..2 {
            let (image, outcome) = fetch(&file.join("kernels"), &key(&options, "src"), b"img", &calls);
            assert_eq!((image.as_slice(), outcome), (&b"img"[..], Outcome::Compiled));
        }
        assert_eq!(calls.get(), 2);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_compile_error_is_returned_and_nothing_is_stored() {
        let dir = scratch("error");
        let options = Vec::new();
        let err = load_or_compile(Some(&dir), &key(&options, "src"), || Err(crate::Error::invalid("nvrtc", "bad")));
        assert!(err.is_err());
        assert!(!dir.join(key(&options, "src").file_name()).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
