//! Writing CIFAR binary files: the inverse of the reader, for tests and for fixtures
//! that stand in for the real data (a fake `--data-dir`).

use crate::cifar::{CifarKind, Split, CIFAR_CHANNELS, CIFAR_IMAGE_BYTES, CIFAR_SIDE};
use crate::error::{DataError, Result};
use crate::synthetic::synthetic;
use std::path::{Path, PathBuf};

/// Encodes NHWC 32x32x3 images and their labels as CIFAR records.
///
/// `fine` holds one label byte per image (the class, for CIFAR-10). `coarse` is for
/// CIFAR-100 only: one byte per image, or `None` for `fine / 5`. Label values are not
/// checked, so that tests can write corrupt files; the reader checks them.
///
/// Fails when the lengths disagree, or when CIFAR-10 is given coarse labels.
pub fn encode_cifar(kind: CifarKind, images: &[u8], fine: &[u8], coarse: Option<&[u8]>) -> Result<Vec<u8>> {
    let n = fine.len();
    if images.len() != n * CIFAR_IMAGE_BYTES {
        return Err(DataError::InvalidArgument(format!(
            "encode_cifar: {} pixel bytes for {n} labels (expected {})",
            images.len(),
            n * CIFAR_IMAGE_BYTES
        )));
    }
    match (kind, coarse) {
        (CifarKind::Cifar10, Some(_)) => {
            return Err(DataError::InvalidArgument("encode_cifar: CIFAR-10 has no coarse labels".into()))
        }
        (CifarKind::Cifar100, Some(c)) if c.len() != n => {
            return Err(DataError::InvalidArgument(format!(
                "encode_cifar: {} coarse labels for {n} fine labels",
                c.len()
            )))
        }
        _ => {}
    }
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    let mut out =
        crate::alloc::try_with_capacity(&format!("encode_cifar: {n} records"), n.saturating_mul(kind.record_size()))?;
    for (i, image) in images.chunks_exact(CIFAR_IMAGE_BYTES).enumerate() {
        if kind == CifarKind::Cifar100 {
            out.push(coarse.map_or(fine[i] / 5, |c| c[i]));
        }
        out.push(fine[i]);
        // HWC -> planes R, G, B.
        out.extend((0..CIFAR_CHANNELS).flat_map(|c| (0..plane).map(move |p| image[p * CIFAR_CHANNELS + c])));
    }
    Ok(out)
}

/// Writes a complete fake CIFAR directory in the official layout,
/// `dir/<kind.folder()>/...`, filled with [`synthetic`] images: `per_file` records in
/// every file of both splits (CIFAR-10's five training files too). Returns the folder.
///
/// Fails when a file cannot be written.
pub fn write_synthetic_cifar(dir: impl AsRef<Path>, kind: CifarKind, per_file: usize, seed: u64) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let folder = dir.join(kind.folder());
    std::fs::create_dir_all(&folder).map_err(|e| DataError::io("creating directory", &folder, e))?;
    let classes = kind.num_classes(Default::default()).unwrap_or(10);
    let files = kind.files(Split::Train).iter().chain(kind.files(Split::Test));
    for (i, name) in files.enumerate() {
        let data = synthetic(per_file, classes, seed.wrapping_add(i as u64))?;
        let fine: Vec<u8> = data.labels().iter().map(|&l| l as u8).collect();
        let bytes = encode_cifar(kind, data.images(), &fine, None)?;
        let path = folder.join(name);
        std::fs::write(&path, bytes).map_err(|e| DataError::io("writing", &path, e))?;
    }
    Ok(folder)
}
