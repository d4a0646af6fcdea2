//! The tapegrad checkpoint format on top of safetensors: a canonical serialization (two
//! saves of the same state are byte-identical) and the integrity metadata that loading
//! verifies.
//!
//! Metadata keys, all required unless marked:
//! - `format` = "tapegrad-checkpoint", `format_version` = "2";
//! - `step`: a decimal `u64`;
//! - `optimizer` and `optimizer_iterations` (a decimal `u64`): both or neither, and
//!   required when the file holds any `optimizer/...` tensor;
//! - optional, for a `LossScaleOptimizer`: `loss_scale` (a finite `f64` above 0, written
//!   so that it reads back exactly) and `loss_scale_good_steps` (a decimal `u64`): both or
//!   neither, and only with `optimizer`;
//! - `crc32:<tensor name>`: the CRC-32 (IEEE, 8 lowercase hex digits) of that tensor's
//!   data bytes, one per tensor and none for a tensor the file lacks;
//! - `header_crc32`: the CRC-32 of the canonical header (every other metadata entry and
//!   every tensor's name, dtype and shape, in sorted order), so an edited step, a renamed
//!   key or swapped tensor names are caught as well as damaged data.
//!
//! No other key is accepted. The header is written with keys sorted and tensors sorted by
//! name, data laid out in the same order.

use super::bytes::TensorBytes;
use super::{Parsed, FORMAT, FORMAT_VERSION, OPTIMIZER_PREFIX};
use crate::mixed_precision::LossScaleState;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The metadata key prefix of per-tensor checksums.
pub(crate) const TENSOR_CHECKSUM_PREFIX: &str = "crc32:";
/// The metadata key of the header checksum.
pub(crate) const HEADER_CHECKSUM: &str = "header_crc32";
const PLAIN_KEYS: [&str; 7] =
    ["format", "format_version", "step", "optimizer", "optimizer_iterations", LOSS_SCALE, LOSS_SCALE_GOOD_STEPS];
/// The metadata key of a loss-scale optimizer's current scale (a decimal `f64`).
pub(crate) const LOSS_SCALE: &str = "loss_scale";
/// The metadata key of a loss-scale optimizer's finite steps since the scale changed.
pub(crate) const LOSS_SCALE_GOOD_STEPS: &str = "loss_scale_good_steps";

/// What [`verify`] found in a valid checkpoint's metadata.
pub(crate) struct Verified {
    pub(crate) step: u64,
    pub(crate) optimizer: Option<String>,
    pub(crate) optimizer_iterations: Option<u64>,
    pub(crate) loss_scale: Option<LossScaleState>,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// The checksum of the canonical header: sorted metadata entries (without the header
/// checksum itself), then every tensor's name, dtype and shape sorted by name. Fields are
/// NUL-separated, which no key or name of ours contains.
fn header_checksum<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize])>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut entries: Vec<(&str, &str)> = metadata.filter(|(k, _)| *k != HEADER_CHECKSUM).collect();
    entries.sort_unstable();
    for (k, v) in entries {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(v.as_bytes());
        h.update(b"\0");
    }
    h.update(b"\0tensors\0");
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape) in tensors {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(dtype.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(b"\0");
    }
    h.finalize()
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The bytes of a safetensors file holding `tensors` (sorted by name) and `metadata`
/// plus the checksum keys, with everything in a fixed order.
pub(crate) fn serialize(tensors: &BTreeMap<String, TensorBytes>, mut metadata: BTreeMap<String, String>) -> Vec<u8> {
    for (name, t) in tensors {
        metadata.insert(format!("{TENSOR_CHECKSUM_PREFIX}{name}"), format!("{:08x}", crc32(&t.data)));
    }
    let header_crc = header_checksum(
        metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        tensors.iter().map(|(n, t)| (n.as_str(), format!("{:?}", t.dtype), t.shape.as_slice())),
    );
    metadata.insert(HEADER_CHECKSUM.to_string(), format!("{header_crc:08x}"));

    let mut header = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in metadata.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(header, "{sep}{}:{}", json_string(k), json_string(v));
    }
    header.push('}');
    let mut offset = 0usize;
    for (name, t) in tensors {
        let shape = t.shape.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let end = offset + t.data.len();
        let _ = write!(
            header,
            ",{}:{{\"dtype\":\"{:?}\",\"shape\":[{shape}],\"data_offsets\":[{offset},{end}]}}",
            json_string(name),
            t.dtype
        );
        offset = end;
    }
    header.push('}');
    // safetensors pads the header with spaces to a multiple of 8 bytes (data alignment).
    let pad = header.len().next_multiple_of(8) - header.len();
    header.push_str(&" ".repeat(pad));
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for t in tensors.values() {
        bytes.extend_from_slice(&t.data);
    }
    bytes
}

/// Checks a parsed file against the format: its format and version, the required and
/// allowed keys, the header checksum and every tensor's data checksum. Errors name the
/// file and, for damaged data, the tensor.
pub(crate) fn verify(path: &Path, file: &Parsed<'_>) -> Result<Verified> {
    let bad = |msg: String| Error::Checkpoint { path: path.to_path_buf(), msg };
    let get = |key: &str| file.metadata.get(key).map(String::as_str);
    match get("format") {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(bad(format!(
                "metadata format = {other:?}: not a tapegrad checkpoint (expected {FORMAT:?}; \
                 to read weights saved by another tool, use checkpoint::import)"
            )))
        }
        None => {
            return Err(bad("no format metadata: not a tapegrad checkpoint (to read weights saved by another \
                            tool, use checkpoint::import)"
                .into()))
        }
    }
    match get("format_version") {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(bad(format!(
                "format version {v:?} is not supported (this build reads version {FORMAT_VERSION}, which \
                 carries checksums; version 1 files were written before them)"
            )))
        }
        None => return Err(bad("metadata format_version is missing".into())),
    }
    let recorded = get(HEADER_CHECKSUM).ok_or_else(|| bad(format!("metadata {HEADER_CHECKSUM} is missing")))?;
    let views: Vec<_> = file.names().into_iter().map(|n| (n, file.tensor(n))).collect();
    let mut tensors = Vec::with_capacity(views.len());
    for (name, view) in &views {
        let view = view.as_ref().map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.push((*name, view));
    }
    let actual = header_checksum(
        file.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        tensors.iter().map(|(n, v)| (*n, format!("{:?}", v.dtype()), v.shape())),
    );
    if parse_hex(recorded) != Some(actual) {
        return Err(bad(format!(
            "the header checksum is {actual:08x}, but {HEADER_CHECKSUM} records {recorded:?}: the metadata \
             or the tensor names, dtypes or shapes were changed after saving (the file is corrupt)"
        )));
    }
    for key in file.metadata.keys() {
        let known = PLAIN_KEYS.contains(&key.as_str()) || key == HEADER_CHECKSUM;
        let checksum_of = key.strip_prefix(TENSOR_CHECKSUM_PREFIX);
        if !known && checksum_of.is_none() {
            return Err(bad(format!("unknown metadata key {key:?}")));
        }
        if let Some(name) = checksum_of {
            if !tensors.iter().any(|(n, _)| *n == name) {
                return Err(bad(format!("metadata {key} names tensor {name:?}, which the file lacks")));
            }
        }
    }
    let number = |key: &str| -> Result<Option<u64>> {
        get(key)
            .map(|v| v.parse::<u64>().map_err(|_| bad(format!("metadata {key} = {v:?} is not a count"))))
            .transpose()
    };
    let step = number("step")?.ok_or_else(|| bad("metadata step is missing".into()))?;
    let optimizer = get("optimizer").map(str::to_string);
    let optimizer_iterations = number("optimizer_iterations")?;
    match (&optimizer, optimizer_iterations) {
        (Some(_), None) => return Err(bad("metadata optimizer is set but optimizer_iterations is missing".into())),
        (None, Some(_)) => return Err(bad("metadata optimizer_iterations is set but optimizer is missing".into())),
        (None, None) => {
            if let Some((name, _)) = tensors.iter().find(|(n, _)| n.starts_with(OPTIMIZER_PREFIX)) {
                return Err(bad(format!("tensor {name} is optimizer state, but metadata optimizer is missing")));
            }
        }
        (Some(_), Some(_)) => {}
    }
    let loss_scale = match (get(LOSS_SCALE), number(LOSS_SCALE_GOOD_STEPS)?) {
        (None, None) => None,
        (Some(scale), Some(good_steps)) => {
            let scale = scale
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| bad(format!("metadata {LOSS_SCALE} = {scale:?} is not a finite number above 0")))?;
            if optimizer.is_none() {
                return Err(bad(format!("metadata {LOSS_SCALE} is set but optimizer is missing")));
            }
            Some(LossScaleState { scale, good_steps })
        }
        (Some(_), None) => {
            return Err(bad(format!("metadata {LOSS_SCALE} is set but {LOSS_SCALE_GOOD_STEPS} is missing")))
        }
        (None, Some(_)) => {
            return Err(bad(format!("metadata {LOSS_SCALE_GOOD_STEPS} is set but {LOSS_SCALE} is missing")))
        }
    };
    for (name, view) in &tensors {
        let key = format!("{TENSOR_CHECKSUM_PREFIX}{name}");
        let recorded =
            get(&key).ok_or_else(|| bad(format!("tensor {name}: its checksum (metadata {key}) is missing")))?;
        let actual = crc32(view.data());
        if parse_hex(recorded) != Some(actual) {
            return Err(bad(format!(
                "tensor {name}: data checksum {actual:08x} differs from the recorded {recorded:?}: \
                 the tensor's data is corrupt"
            )));
        }
    }
    Ok(Verified { step, optimizer, optimizer_iterations, loss_scale })
}

fn parse_hex(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}
