//! Importing weights from PyTorch and Keras layouts.
//!
//! Our layouts: convolution kernels `[out, kh, kw, in]`, Dense kernels `[in, out]`
//! (Keras'), BN vectors `[channels]`. PyTorch stores convolution weights `[out, in, kh, kw]`
//! (OIHW) and `Linear` weights `[out, in]`; Keras stores convolution kernels
//! `[kh, kw, in, out]` and Dense kernels `[in, out]`.
//!
//! To import a PyTorch model, save its state dict to a safetensors file
//! (`safetensors.torch.save_file(model.state_dict(), "model.safetensors")`), build the
//! equivalent tapegrad model, and call [`import_pytorch`] with a name map. [`TorchNames`]
//! is a ready map: it renames PyTorch's suffixes (`weight` -> `kernel` or `gamma`, `bias`
//! -> `bias` or `beta`, `running_mean` -> `moving_mean`, `running_var` ->
//! `moving_variance`, `num_batches_tracked` skipped) and, optionally, module prefixes:
//!
//! ```no_run
//! use tapegrad_layers::checkpoint::import::{import_pytorch, TorchNames};
//! # fn demo(model: &dyn tapegrad_layers::Layer) -> tapegrad_layers::Result<()> {
//! let names = TorchNames::new(model).prefix("conv1", "preprocess.0").prefix("bn1", "preprocess.1");
//! let report = import_pytorch("resnet18_torch.safetensors", model, &|n| names.map(n))?;
//! println!("imported {} tensors, skipped {:?}", report.imported.len(), report.skipped);
//! # Ok(())
//! # }
//! ```
//!
//! Remember PyTorch's other defaults when building the tapegrad model: BatchNorm epsilon
//! 1e-5 (Keras 1e-3) and momentum 0.9 in Keras terms (PyTorch's `momentum=0.1`).

use super::bytes::tensor_from_bytes;
use super::{parse, read};
use crate::{Error, Layer, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tapegrad_tensor::{Tensor, Variable};

/// A PyTorch convolution weight `[out, in, kh, kw]` as our kernel `[out, kh, kw, in]`.
pub fn torch_conv_kernel(weight: &Tensor) -> Result<Tensor> {
    Ok(weight.permute(&[0, 2, 3, 1])?)
}

/// Our convolution kernel `[out, kh, kw, in]` as a PyTorch weight `[out, in, kh, kw]`.
pub fn to_torch_conv_kernel(kernel: &Tensor) -> Result<Tensor> {
    Ok(kernel.permute(&[0, 3, 1, 2])?)
}

/// A PyTorch `Linear` weight `[out, in]` as our Dense kernel `[in, out]`.
pub fn torch_linear_weight(weight: &Tensor) -> Result<Tensor> {
    Ok(weight.transpose(0, 1)?)
}

/// A Keras convolution kernel `[kh, kw, in, out]` as ours `[out, kh, kw, in]`.
pub fn keras_conv_kernel(kernel: &Tensor) -> Result<Tensor> {
    Ok(kernel.permute(&[3, 0, 1, 2])?)
}

/// A Keras depthwise kernel `[kh, kw, channels, depth_multiplier]` as ours
/// `[channels * depth_multiplier, kh, kw, 1]` (output channel `c * depth_multiplier + j`).
pub fn keras_depthwise_kernel(kernel: &Tensor) -> Result<Tensor> {
    let &[kh, kw, channels, multiplier] = kernel.dims() else {
        return Err(crate::Error::layer(
            "keras_depthwise_kernel",
            format!("expects a 4-D kernel [kh, kw, channels, depth_multiplier], got shape {}", kernel.shape()),
        ));
    };
    Ok(kernel.permute(&[2, 3, 0, 1])?.reshape([channels * multiplier, kh, kw, 1])?)
}

/// Our convolution kernel `[out, kh, kw, in]` in Keras' layout `[kh, kw, in, out]`.
pub fn to_keras_conv_kernel(kernel: &Tensor) -> Result<Tensor> {
    Ok(kernel.permute(&[1, 2, 3, 0])?)
}

/// What [`import_pytorch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// `(pytorch name, tapegrad path)` of each tensor imported.
    pub imported: Vec<(String, String)>,
    /// PyTorch names the name map skipped.
    pub skipped: Vec<String>,
}

/// Loads a PyTorch state dict saved as safetensors into `model` (built), converting
/// layouts by rank: a 4-D weight is read as OIHW and becomes `[out, kh, kw, in]`, a 2-D
/// weight is read as `Linear`'s `[out, in]` and becomes `[in, out]`, anything else is
/// copied. `name_map` turns a PyTorch name into a variable path, or `None` to skip it.
/// Every model variable must be imported exactly once; every mismatch (an unknown path, a
/// shape that does not fit, a variable left out) is reported together, and nothing is
/// changed unless there is none. Float entries of any precision are converted to the
/// variable's dtype.
pub fn import_pytorch(
    path: impl AsRef<Path>,
    model: &dyn Layer,
    name_map: &dyn Fn(&str) -> Option<String>,
) -> Result<ImportReport> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    let named = model.named_variables();
    let by_path: HashMap<&str, &Variable> = named.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut problems = Vec::new();
    let mut report = ImportReport::default();
    let mut values: Vec<(&Variable, Tensor)> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    for torch_name in file.names() {
        let Some(target) = name_map(torch_name) else {
            report.skipped.push(torch_name.to_string());
            continue;
        };
        let Some(var) = by_path.get(target.as_str()) else {
            problems.push(format!("{torch_name}: maps to {target}, which is not a variable of the model"));
            continue;
        };
        if !done.insert(target.clone()) {
            problems.push(format!("{torch_name}: maps to {target}, which another tensor already filled"));
            continue;
        }
        let view = file
            .tensor(torch_name)
            .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), msg: format!("{torch_name}: {e}") })?;
        let current = var.value_untracked();
        let Some(raw) = tensor_from_bytes(view.dtype(), view.data(), view.shape(), current.dtype(), &current.device())?
        else {
            problems.push(format!("{torch_name}: dtype {:?} cannot be read into {}", view.dtype(), current.dtype()));
            continue;
        };
        let converted = match (raw.rank(), current.rank()) {
            (4, 4) => torch_conv_kernel(&raw)?,
            (2, 2) => torch_linear_weight(&raw)?,
            _ => raw,
        };
        if converted.shape() != current.shape() {
            problems.push(format!(
                "{torch_name}: shape {:?} (as {} in our layout) does not fit {target} of shape {}",
                view.shape(),
                converted.shape(),
                current.shape()
            ));
            continue;
        }
        report.imported.push((torch_name.to_string(), target.clone()));
        values.push((var, converted));
    }
    for (name, _) in &named {
        if !done.contains(name) {
            problems.push(format!("{name}: no PyTorch tensor maps to it"));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Mismatch { path: path.to_path_buf(), problems });
    }
    for (var, value) in values {
        var.assign(value)?;
    }
    Ok(report)
}

/// The usual PyTorch-to-tapegrad name map: suffixes renamed by what the model holds, and
/// module prefixes renamed as asked. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct TorchNames {
    paths: HashSet<String>,
    prefixes: Vec<(String, String)>,
}

impl TorchNames {
    /// A map for `model`'s variables (the model must be built).
    pub fn new(model: &dyn Layer) -> Self {
        TorchNames { paths: model.named_variables().into_iter().map(|(n, _)| n).collect(), prefixes: Vec::new() }
    }

    /// Also renames the module prefix `torch` to `ours` ("fc" -> "dense", "conv1" ->
    /// "preprocess.0"); the longest matching prefix wins.
    pub fn prefix(mut self, torch: &str, ours: &str) -> Self {
        self.prefixes.push((torch.to_string(), ours.to_string()));
        self.prefixes.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        self
    }

    /// The variable path for a PyTorch name, or `None` for tensors with no counterpart
    /// (`num_batches_tracked`).
    pub fn map(&self, torch_name: &str) -> Option<String> {
        let (module, attr) = torch_name.rsplit_once('.').unwrap_or(("", torch_name));
        let module = self
            .prefixes
            .iter()
            .find_map(|(t, o)| {
                if module == t {
                    Some(o.clone())
                } else {
                    module.strip_prefix(t.as_str()).filter(|r| r.starts_with('.')).map(|r| format!("{o}{r}"))
                }
            })
            .unwrap_or_else(|| module.to_string());
        let join = |a: &str| if module.is_empty() { a.to_string() } else { format!("{module}.{a}") };
        let candidates: &[&str] = match attr {
            "weight" => &["kernel", "gamma"],
            "bias" => &["bias", "beta"],
            "running_mean" => &["moving_mean"],
            "running_var" => &["moving_variance"],
            "num_batches_tracked" => return None,
            other => return Some(join(other)),
        };
        let first = join(candidates[0]);
        Some(candidates.iter().map(|c| join(c)).find(|p| self.paths.contains(p)).unwrap_or(first))
    }
}
