//! Check-numerics mode, as TensorFlow's `tf.debugging.enable_check_numerics`: every op's
//! output is checked for NaN and infinity, and the first op that produces one fails with
//! [`Error::NonFinite`] naming the op, its input shapes, the output and the layer it ran
//! in (the [`name_scope`] stack), instead of letting the NaN spread silently through the
//! rest of a training step. Gradient computations run the same ops, so a NaN born in the
//! backward pass is caught at its op too.
//!
//! Off by default. Switch it on with [`enable`] or by starting the process with
//! `TAPEGRAD_CHECK_NUMERICS=1` (read once, at the first op). When it is off, an op pays
//! one relaxed atomic load and a name scope pushes nothing. When it is on, every output
//! is scanned, and a CUDA output is copied to the host first: a debugging mode, slow.
//!
//! ```
//! use tapegrad_tensor::{check_numerics, Device, Error, Tensor};
//! # fn main() -> tapegrad_tensor::Result<()> {
//! let x = Tensor::from_vec(vec![1.0f32, -1.0], [2], &Device::Cpu)?;
//! check_numerics::enable();
//! let err = {
//!     let _scope = check_numerics::name_scope("my_layer");
//!     x.sqrt().unwrap_err()
//! };
//! check_numerics::disable();
//! assert!(matches!(err, Error::NonFinite { op: "sqrt", .. }));
//! assert!(err.to_string().contains("my_layer"));
//! # Ok(())
//! # }
//! ```

use crate::cpu_backend::CpuStorage;
use crate::{Error, Result, Storage, Tensor};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

/// Not yet decided (the environment variable is read at the first query).
const UNSET: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// The environment variable that switches the mode on for a whole process.
pub const ENV_VAR: &str = "TAPEGRAD_CHECK_NUMERICS";

/// Switches check-numerics mode on for every thread.
pub fn enable() {
    STATE.store(ON, Ordering::Relaxed);
}

/// Switches check-numerics mode off for every thread.
pub fn disable() {
    STATE.store(OFF, Ordering::Relaxed);
}

/// Whether check-numerics mode is on.
#[inline]
pub fn is_enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => init_from_env(),
    }
}

#[cold]
fn init_from_env() -> bool {
    let on = std::env::var(ENV_VAR).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "on" | "yes"));
    // A concurrent enable()/disable() wins over the environment.
    let _ = STATE.compare_exchange(UNSET, if on { ON } else { OFF }, Ordering::Relaxed, Ordering::Relaxed);
    STATE.load(Ordering::Relaxed) == ON
}

thread_local! {
    static SCOPES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Set while [`all_finite`] probes: its NaN are expected.
    static SUSPENDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A name pushed on this thread's scope stack by [`name_scope`]; popped when dropped.
#[must_use = "the scope ends when this guard is dropped"]
pub struct NameScope {
    pushed: bool,
}

impl Drop for NameScope {
    fn drop(&mut self) {
        if self.pushed {
            SCOPES.with(|s| s.borrow_mut().pop());
        }
    }
}

/// Opens a name scope (as `tf.name_scope`) on this thread until the returned guard is
/// dropped: ops that fail a numerics check inside it name the scopes, outermost first
/// (`resnet18/conv2d_3`). Layers open one with their name in each call. When the mode is
/// off this pushes nothing.
pub fn name_scope(name: &str) -> NameScope {
    if !is_enabled() {
        return NameScope { pushed: false };
    }
    SCOPES.with(|s| s.borrow_mut().push(name.to_string()));
    NameScope { pushed: true }
}

/// The open name scopes of this thread joined by `/` (empty outside any).
pub fn current_scope() -> String {
    SCOPES.with(|s| s.borrow().join("/"))
}

/// NaN and infinite elements of a host buffer (integers have none).
fn count_non_finite(cpu: &CpuStorage) -> (usize, usize) {
    fn count<T: num_traits::Float>(v: &[T]) -> (usize, usize) {
        v.iter().fold((0, 0), |(nan, inf), x| (nan + x.is_nan() as usize, inf + x.is_infinite() as usize))
    }
    match cpu {
        CpuStorage::F32(v) => count(v),
        CpuStorage::F64(v) => count(v),
        CpuStorage::BF16(v) => count(v),
        CpuStorage::F16(v) => count(v),
        CpuStorage::I64(_) => (0, 0),
    }
}

/// The op outputs a numerics check scans: one storage or several.
pub(crate) trait OpOutputs {
    /// Each output buffer.
    fn storages(&self) -> Vec<&Storage>;
}

impl OpOutputs for Storage {
    fn storages(&self) -> Vec<&Storage> {
        vec![self]
    }
}

impl OpOutputs for (Storage, Storage, Storage) {
    fn storages(&self) -> Vec<&Storage> {
        vec![&self.0, &self.1, &self.2]
    }
}

impl OpOutputs for (Storage, Storage, Storage, Option<Storage>) {
    fn storages(&self) -> Vec<&Storage> {
        [&self.0, &self.1, &self.2].into_iter().chain(self.3.as_ref()).collect()
    }
}

impl OpOutputs for Option<Storage> {
    fn storages(&self) -> Vec<&Storage> {
        self.iter().collect()
    }
}

impl OpOutputs for Option<(Storage, Storage)> {
    fn storages(&self) -> Vec<&Storage> {
        self.iter().flat_map(|(a, b)| [a, b]).collect()
    }
}

impl OpOutputs for (Storage, Option<Storage>) {
    fn storages(&self) -> Vec<&Storage> {
        std::iter::once(&self.0).chain(self.1.as_ref()).collect()
    }
}

/// When the mode is on, fails with [`Error::NonFinite`] if any of `op`'s outputs holds
/// NaN or infinity, naming the op, its inputs' shapes, the output and the layer scope.
pub(crate) fn check(op: &'static str, inputs: &[&Tensor], outputs: &impl OpOutputs) -> Result<()> {
    if !is_enabled() || SUSPENDED.with(|s| s.get()) {
        return Ok(());
    }
    for (index, storage) in outputs.storages().into_iter().enumerate() {
        let (nan, inf) = match storage {
            Storage::Cpu(cpu) => count_non_finite(cpu),
            #[allow(unreachable_patterns)]
            other => count_non_finite(&other.to_cpu()?),
        };
        if nan + inf == 0 {
            continue;
        }
        let shapes: Vec<String> = inputs.iter().map(|t| format!("{} {}", t.shape(), t.dtype())).collect();
        let scope = current_scope();
        let place = if scope.is_empty() { String::new() } else { format!(" in layer {scope}") };
        let which = if outputs.storages().len() > 1 { format!(" {index}") } else { String::new() };
        return Err(Error::NonFinite {
            op,
            msg: format!(
                "output{which} holds {nan} NaN and {inf} infinite values of {} elements{place} (inputs: {}) \
                 [check_numerics]",
                storage.len(),
                if shapes.is_empty() { "none".to_string() } else { shapes.join(", ") }
            ),
        });
    }
    Ok(())
}

/// Whether every element of every float tensor is finite, with one read from each device
/// that holds one of them, whatever the number of tensors: `sum(x * 0)` is 0 exactly when
/// `x` is all finite (NaN otherwise), and those sums are added on their device (in f64)
/// before the one read. `LossScaleOptimizer` calls it once per step on the gradients;
/// training loops call it before writing a checkpoint. Works whether or not the mode is on
/// (its own probe is not reported).
pub fn all_finite(tensors: &[&Tensor]) -> Result<bool> {
    // The probe makes NaN from non-finite values on purpose: not a finding on this thread.
    let suspended = SUSPENDED.with(|s| s.replace(true));
    let probe = (|| {
        // One running sum per device, in the order the devices first appear.
        let mut sums: Vec<Tensor> = Vec::new();
        for t in tensors.iter().filter(|t| t.dtype().is_float()) {
            let zero_if_finite = t.mul_scalar(0.0)?.sum_all()?.cast(crate::DType::F64)?;
            match sums.iter_mut().find(|s| s.device() == t.device()) {
                Some(sum) => *sum = sum.add(&zero_if_finite)?,
                None => sums.push(zero_if_finite),
            }
        }
        let mut total = 0.0;
        for sum in sums {
            total += sum.to_scalar::<f64>()?;
        }
        Ok(total)
    })();
    SUSPENDED.with(|s| s.set(suspended));
    Ok(probe? == 0.0)
}
