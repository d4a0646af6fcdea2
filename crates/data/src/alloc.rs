//! Fallible allocation for buffers whose size a caller or a file decides (a record count,
//! a file's length): a request the allocator cannot meet is [`DataError::OutOfMemory`],
//! never an abort.

use crate::error::{DataError, Result};
use std::io::Read;
use std::path::Path;

/// An empty vector with room for `len` elements, or [`DataError::OutOfMemory`] naming `what`.
pub(crate) fn try_with_capacity<T>(what: &str, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(what, &mut v, len)?;
    Ok(v)
}

/// `len` copies of `fill`, or [`DataError::OutOfMemory`] naming `what`.
pub(crate) fn try_vec<T: Clone>(what: &str, len: usize, fill: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(what, len)?;
    v.resize(len, fill);
    Ok(v)
}

/// Room for `more` elements beyond `v`'s length, or [`DataError::OutOfMemory`].
pub(crate) fn try_reserve<T>(what: &str, v: &mut Vec<T>, more: usize) -> Result<()> {
    v.try_reserve_exact(more).map_err(|_| DataError::OutOfMemory {
        what: what.to_string(),
        bytes: (more as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })
}

/// A whole file's bytes, with its buffer allocated fallibly from the file's length.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    let len = file.metadata().map_err(|e| DataError::io("reading the size of", path, e))?.len();
    let len = usize::try_from(len)
        .map_err(|_| DataError::OutOfMemory { what: format!("reading {}", path.display()), bytes: len })?;
    let mut bytes = try_with_capacity(&format!("reading {}", path.display()), len)?;
    file.read_to_end(&mut bytes).map_err(|e| DataError::io("reading", path, e))?;
    Ok(bytes)
}
