//! Conversions between tensors and the little-endian bytes of safetensors files, and the
//! crash-safe file write.

use crate::{Error, Result};
use safetensors::Dtype;
use std::io::Write;
use std::path::{Path, PathBuf};
use tapegrad_tensor::half::{bf16, f16};
use tapegrad_tensor::{DType, Device, Tensor};

/// A tensor's bytes ready for `safetensors::serialize`.
pub(crate) struct TensorBytes {
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) data: Vec<u8>,
}

impl TensorBytes {
    /// Copies a tensor (from any device) into little-endian bytes.
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Self> {
        let (dtype, data) = match t.dtype() {
            DType::F32 => (Dtype::F32, t.to_vec::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
            DType::F64 => (Dtype::F64, t.to_vec::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
            DType::I64 => (Dtype::I64, t.to_vec::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
            DType::BF16 => (Dtype::BF16, t.to_vec::<bf16>()?.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()),
            DType::F16 => (Dtype::F16, t.to_vec::<f16>()?.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()),
        };
        Ok(TensorBytes { dtype, shape: t.dims().to_vec(), data })
    }
}

/// Our dtype for a safetensors dtype we store, if any.
pub(crate) fn dtype_of(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F64 => Some(DType::F64),
        Dtype::I64 => Some(DType::I64),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::F16 => Some(DType::F16),
        _ => None,
    }
}

/// A tensor of `shape` from the bytes of a safetensors entry, converted to `dtype` and put
/// on `device`. Float entries of any float type (f16, bf16, f32, f64) convert to a float
/// dtype; `None` if the entry's dtype cannot be read.
pub(crate) fn tensor_from_bytes(
    stored: Dtype,
    bytes: &[u8],
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let as_f64: Vec<f64> = match stored {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect()
        }
        Dtype::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
            .collect(),
        Dtype::I64 if dtype == DType::I64 => {
            let v: Vec<i64> =
                bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            return Ok(Some(Tensor::from_vec(v, shape, device)?));
        }
        _ => return Ok(None),
    };
    if !dtype.is_float() {
        return Ok(None);
    }
    // f32 stays exact: keep its bits rather than round-tripping through a cast op.
    let t = match dtype {
        DType::F32 => Tensor::from_vec(as_f64.into_iter().map(|v| v as f32).collect::<Vec<_>>(), shape, device)?,
        DType::F64 => Tensor::from_vec(as_f64, shape, device)?,
        // Rounded once from the stored value (exact where it was stored in this dtype).
        _ => Tensor::from_vec(as_f64, shape, &Device::Cpu)?.cast(dtype)?.to_device(device)?,
    };
    Ok(Some(t))
}

/// IEEE half precision to f64.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// write a temporary file beside it, fsync it, rename it over `path`, fsync the directory.
/// On any failure (a full disk) the temporary is removed and `path` is untouched; the
/// error names `path`, not the temporary. Temporaries of `path` left by killed processes
/// are removed first.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!("saving the checkpoint failed while {what}: {e}; the previous file, if any, is unchanged"),
            ),
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Checkpoint { path: path.to_path_buf(), msg: "the path names no file".into() })?;
    let prefix = format!("{}.tmp-", file_name.to_string_lossy());
    remove_stale_temporaries(&dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(failed("creating a temporary file beside it"))?;
        file.write_all(bytes).map_err(failed("writing"))?;
        file.sync_all().map_err(failed("flushing to disk"))?;
        std::fs::rename(&tmp, path).map_err(failed("renaming the temporary file over it"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Persist the rename itself; not every platform can open a directory, so this is best effort.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes `<prefix><pid>` files in `dir` whose process is gone: what a save killed by
/// SIGKILL (which runs no cleanup) leaves. Only exactly that pattern is touched, never a
/// file of a live process (another run saving to the same folder); where process ids
/// cannot be checked (no `/proc`), nothing is removed. Best effort: failures are ignored,
/// since they must not stop the save.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && process_is_gone(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether no process `pid` runs on this machine (false when that cannot be told).
fn process_is_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7c00).is_infinite());
    }

    #[test]
    fn bf16_and_f16_tensors_round_trip_bit_for_bit() -> Result<()> {
        let values = [1.0f32, -0.1, 65504.0, 3.0e-5, 1e-40, f32::INFINITY];
        let x = Tensor::from_vec(values.to_vec(), [2, 3], &Device::Cpu)?;
        for (dtype, stored) in [(DType::BF16, Dtype::BF16), (DType::F16, Dtype::F16)] {
            let t = x.cast(dtype)?;
            let bytes = TensorBytes::from_tensor(&t)?;
            assert_eq!((bytes.dtype, bytes.data.len()), (stored, 12));
            assert_eq!(dtype_of(stored), Some(dtype));
            let back = tensor_from_bytes(stored, &bytes.data, &[2, 3], dtype, &Device::Cpu)?.expect("a float entry");
            assert_eq!(back.dtype(), dtype);
            assert_eq!(back.to_vec_f64()?, t.to_vec_f64()?, "{dtype}");
            // Into an f32 variable, the stored values widen exactly.
            let wide =
                tensor_from_bytes(stored, &bytes.data, &[2, 3], DType::F32, &Device::Cpu)?.expect("a float entry");
            assert_eq!(wide.to_vec_f64()?, t.to_vec_f64()?, "{dtype} -> f32");
        }
        Ok(())
    }
}
