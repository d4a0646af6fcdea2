//! Checkpoints: every variable of a model, the optimizer's state and the step counter in
//! one [safetensors](https://github.com/huggingface/safetensors) file.
//!
//! Layout of a file:
//! - each model variable under its path ("layer1.0.conv1.kernel", from
//!   [`Layer::named_variables`]);
//! - each optimizer slot under "optimizer/{slot}/{variable path}" ("optimizer/m/fc.bias");
//! - metadata: `format` ("tapegrad-checkpoint"), `format_version` ("2"), `step`, with
//!   an optimizer `optimizer` (its name) and `optimizer_iterations` (and, for a
//!   [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer), `loss_scale` and
//!   `loss_scale_good_steps`), a CRC-32 of every
//!   tensor's data and one of the header (see [`format`](self#integrity)).
//!
//! # Integrity
//! Every key the format needs is required and checked, no other key is accepted, and the
//! checksums are verified on every load and [`info`]: flipped bits in the data, swapped
//! tensor names, an edited step or a renamed key are reported as a corrupt file (naming
//! the tensor when its data is damaged), never loaded. The header is written in a fixed
//! order (keys and tensors sorted), so two saves of the same state are byte-identical.
//!
//! # Crash and full-disk safety
//! Saving writes `<file>.tmp-<pid>` beside the target, fsyncs it and renames it over the
//! target, so a crash never leaves a half-written checkpoint, and a failed write (a full
//! disk) removes the temporary and leaves the previous file untouched; the error names the
//! checkpoint's path. A temporary left by a killed process (SIGKILL runs no cleanup) is
//! removed by the next save of the same file, once its process is gone: only names of
//! that exact pattern whose process id is not alive on this machine are touched.
//!
//! Loading checks every name, shape and dtype first and reports all mismatches in one
//! error; nothing is changed unless everything matches. A truncated or corrupt file is an
//! error, never a panic.
//!
//! [`import`] reads weights saved by PyTorch (a state dict in a safetensors file) and
//! converts Keras and PyTorch layouts.

mod bytes;
mod format;
pub mod import;

use crate::mixed_precision::LossScaleState;
use crate::optimizers::Optimizer;
use crate::{Error, Layer, Result};
use bytes::{dtype_of, tensor_from_bytes, write_atomically, TensorBytes};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tapegrad_tensor::Variable;

/// The `format` metadata value of tapegrad checkpoints.
pub const FORMAT: &str = "tapegrad-checkpoint";
/// The `format_version` written by this version.
pub const FORMAT_VERSION: &str = "2";
/// The name prefix of optimizer state tensors.
pub const OPTIMIZER_PREFIX: &str = "optimizer/";

/// What a checkpoint's metadata says.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// The training step saved with it.
    pub step: u64,
    /// The optimizer's name, if its state was saved.
    pub optimizer: Option<String>,
    /// The optimizer's iteration count, if its state was saved.
    pub optimizer_iterations: Option<u64>,
    /// The loss-scaling state, if a
    /// [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer)'s state was saved.
    pub loss_scale: Option<LossScaleState>,
}

/// Saves `model`'s variables, `optimizer`'s state (if given) and `step` to `path`.
pub fn save(path: impl AsRef<Path>, model: &dyn Layer, optimizer: Option<&dyn Optimizer>, step: u64) -> Result<()> {
    let path = path.as_ref();
    let named = model.named_variables();
    let mut tensors: BTreeMap<String, TensorBytes> = BTreeMap::new();
    for (name, var) in &named {
        if tensors.insert(name.clone(), TensorBytes::from_tensor(&var.value_untracked())?).is_some() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: format!("two variables of the model have the path {name:?}"),
            });
        }
    }
    let mut metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    if let Some(opt) = optimizer {
        metadata.insert("optimizer".into(), opt.name().to_string());
        metadata.insert("optimizer_iterations".into(), opt.iterations().to_string());
        if let Some(state) = opt.loss_scale() {
            // `{}` writes the shortest decimal that parses back to the same f64.
            metadata.insert(format::LOSS_SCALE.into(), state.scale.to_string());
            metadata.insert(format::LOSS_SCALE_GOOD_STEPS.into(), state.good_steps.to_string());
        }
        for (var, slots) in opt.slots().iter() {
            // State of variables outside this model (another model's) is not saved.
            let Some((path_name, _)) = named.iter().find(|(_, v)| v.same_as(var)) else { continue };
            for (slot_name, slot) in opt.slot_names().iter().zip(slots) {
                if let Some(t) = slot {
                    tensors.insert(format!("{OPTIMIZER_PREFIX}{slot_name}/{path_name}"), TensorBytes::from_tensor(t)?);
                }
            }
        }
    }
    write_atomically(path, &format::serialize(&tensors, metadata))
}

/// Reads a checkpoint's metadata without loading it.
pub fn info(path: impl AsRef<Path>) -> Result<CheckpointInfo> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    parse_info(path, &file)
}

/// Loads `path` into `model` (which must be built) and, if given, `optimizer`. Every
/// model variable must be in the file with its shape and dtype, and the file must hold no
/// other model tensor; the optimizer (if given) must be of the type saved, and its state
/// must name model variables of matching shapes. All mismatches are reported together
/// and nothing is changed unless there are none. The optimizer's state is replaced by the
/// file's. Returns the metadata (the step to resume from).
pub fn load(
    path: impl AsRef<Path>,
    model: &dyn Layer,
    optimizer: Option<&mut dyn Optimizer>,
) -> Result<CheckpointInfo> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    let info = parse_info(path, &file)?;
    let named = model.named_variables();
    let by_path: HashMap<&str, &Variable> = named.iter().map(|(n, v)| (n.as_str(), v)).collect();
    if named.is_empty() {
        // One line: every tensor of the file would otherwise be listed as not in the model.
        let problems = vec![format!(
            "the model has no variables yet, and the file holds {} tensors: build the model (call it once, or \
             call build) before loading",
            file.names().len()
        )];
        return Err(Error::Mismatch { path: path.to_path_buf(), problems });
    }
    let mut problems = Vec::new();

    // Model variables.
    let mut values = Vec::with_capacity(named.len());
    for (name, var) in &named {
        match file.tensor(name) {
            Ok(view) => {
                if let Some(t) = read_tensor(name, &view, var, &mut problems)? {
                    values.push((var, t));
                }
            }
            Err(_) => problems.push(format!("{name}: missing from the file")),
        }
    }
    for name in file.names() {
        if !name.starts_with(OPTIMIZER_PREFIX) && !by_path.contains_key(name) {
            problems.push(format!("{name}: in the file but not in the model"));
        }
    }

    // Optimizer state.
    let mut slot_values = Vec::new();
    if let Some(opt) = optimizer.as_deref() {
        match &info.optimizer {
            None => {
                problems.push(format!("the file holds no optimizer state, but a {} optimizer was given", opt.name()))
            }
            Some(saved) if saved != opt.name() => problems
                .push(format!("the file holds {saved} optimizer state, but a {} optimizer was given", opt.name())),
            Some(_) => {
                for name in file.names() {
                    let Some(rest) = name.strip_prefix(OPTIMIZER_PREFIX) else { continue };
                    let Some((slot, var_path)) = rest.split_once('/') else {
                        problems.push(format!("{name}: not an optimizer slot name (expected optimizer/<slot>/<path>)"));
                        continue;
                    };
                    let Some(index) = opt.slot_names().iter().position(|s| *s == slot) else {
                        problems.push(format!(
                            "{name}: {} has no slot {slot:?} (its slots: {:?})",
                            opt.name(),
                            opt.slot_names()
                        ));
                        continue;
                    };
                    let Some(var) = by_path.get(var_path) else {
                        problems.push(format!("{name}: optimizer state for {var_path}, which is not in the model"));
                        continue;
                    };
                    let view = file.tensor(name).map_err(|e| corrupt(path, e))?;
                    if let Some(t) = read_tensor(name, &view, var, &mut problems)? {
                        slot_values.push(((*var).clone(), index, t));
                    }
                }
            }
        }
    }

    if let Some(opt) = optimizer.as_deref() {
        match (info.loss_scale, opt.loss_scale()) {
            (Some(saved), None) => problems.push(format!(
                "the file holds loss-scale state (scale {}, a LossScaleOptimizer's), but the {} optimizer given has \
                 no loss scale: wrap it in a LossScaleOptimizer",
                saved.scale,
                opt.name()
            )),
            (None, Some(_)) => problems.push(format!(
                "the file holds no loss-scale state, but a LossScaleOptimizer({}) was given: load it into the \
                 optimizer it was saved with",
                opt.name()
            )),
            _ => {}
        }
    }

    if !problems.is_empty() {
        return Err(Error::Mismatch { path: path.to_path_buf(), problems });
    }
    for (var, value) in values {
        var.assign(value)?;
    }
    if let Some(opt) = optimizer {
        let count = opt.slot_names().len();
        // verify() guarantees the count is present whenever an optimizer's state is.
        opt.set_iterations(info.optimizer_iterations.unwrap_or(0));
        if let Some(state) = info.loss_scale {
            // Checked above: the optimizer scales its loss, and the state is valid.
            opt.set_loss_scale(state)?;
        }
        let slots = opt.slots_mut();
        slots.clear();
        for (var, index, value) in slot_values {
            slots.set(&var, count, index, value);
        }
    }
    Ok(info)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn corrupt(path: &Path, e: safetensors::SafeTensorError) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
    }
}

/// A parsed safetensors file: its tensors and its metadata.
pub(crate) struct Parsed<'a> {
    tensors: SafeTensors<'a>,
    metadata: HashMap<String, String>,
}

impl<'a> Parsed<'a> {
    /// The tensor names, sorted (so that messages list them in a stable order).
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut names = self.tensors.names();
        names.sort_unstable();
        names
    }

    /// The entry named `name`.
    pub(crate) fn tensor(&self, name: &str) -> std::result::Result<TensorView<'a>, safetensors::SafeTensorError> {
        self.tensors.tensor(name)
    }
}

/// Parses the header and checks that every tensor's bytes lie within the file.
pub(crate) fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, e))?;
    Ok(Parsed { tensors, metadata })
}

fn parse_info(path: &Path, file: &Parsed<'_>) -> Result<CheckpointInfo> {
    let v = format::verify(path, file)?;
    Ok(CheckpointInfo {
        step: v.step,
        optimizer: v.optimizer,
        optimizer_iterations: v.optimizer_iterations,
        loss_scale: v.loss_scale,
    })
}

/// Converts one stored tensor for `var`, or notes why it does not fit.
fn read_tensor(
    name: &str,
    view: &TensorView<'_>,
    var: &Variable,
    problems: &mut Vec<String>,
) -> Result<Option<tapegrad_tensor::Tensor>> {
    let current = var.value_untracked();
    if view.shape() != current.dims() {
        problems.push(format!("{name}: shape {:?} in the file, {} in the model", view.shape(), current.shape()));
        return Ok(None);
    }
    if dtype_of(view.dtype()) != Some(current.dtype()) {
        problems.push(format!("{name}: dtype {:?} in the file, {} in the model", view.dtype(), current.dtype()));
        return Ok(None);
    }
    tensor_from_bytes(view.dtype(), view.data(), view.shape(), current.dtype(), &current.device())
}
