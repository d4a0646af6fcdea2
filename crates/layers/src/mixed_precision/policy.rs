//! [`Policy`]: the dtype a layer computes in and the dtype its variables are kept in, with
//! Keras' names, and the process-wide default ([`set_global_policy`]).

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tapegrad_tensor::DType;

/// A dtype policy (Keras' `keras.DTypePolicy`): the dtype a layer computes in
/// ([`compute_dtype`](Policy::compute_dtype)) and the dtype its variables are created and
/// kept in ([`variable_dtype`](Policy::variable_dtype)).
///
/// | name | compute | variables | use |
/// |---|---|---|---|
/// | `"float32"` (default) | f32 | f32 | full precision |
/// | `"mixed_bfloat16"` | bf16 | f32 | mixed precision (no loss scaling needed) |
/// | `"mixed_float16"` | f16 | f32 | mixed precision, with a [`LossScaleOptimizer`](super::LossScaleOptimizer) |
/// | `"bfloat16"`, `"float16"` | bf16 / f16 | bf16 / f16 | inference only: the optimizers refuse 16-bit variables |
/// | `"float64"` | f64 | f64 | gradient checks |
///
/// Under `"float32"`, as before policies existed, an f64 input is left f64 and builds f64
/// variables (Keras would cast it to f32): the f64 gradient checks of plain models keep
/// working. See the [module docs](super) for where the casts happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    name: &'static str,
    compute: DType,
    variable: DType,
}

/// Every policy, by name; the global policy is stored as an index into it.
const POLICIES: [Policy; 6] = [
    Policy::FLOAT32,
    Policy::MIXED_BFLOAT16,
    Policy::MIXED_FLOAT16,
    Policy::BFLOAT16,
    Policy::FLOAT16,
    Policy::FLOAT64,
];

impl Policy {
    /// `"float32"`: compute and variables in f32 (the default).
    pub const FLOAT32: Policy = Policy { name: "float32", compute: DType::F32, variable: DType::F32 };
    /// `"mixed_bfloat16"`: compute in bf16, variables in f32.
    pub const MIXED_BFLOAT16: Policy = Policy { name: "mixed_bfloat16", compute: DType::BF16, variable: DType::F32 };
    /// `"mixed_float16"`: compute in f16, variables in f32; train it with a
    /// [`LossScaleOptimizer`](super::LossScaleOptimizer).
    pub const MIXED_FLOAT16: Policy = Policy { name: "mixed_float16", compute: DType::F16, variable: DType::F32 };
    /// `"bfloat16"`: compute and variables in bf16 (inference; optimizers refuse bf16).
    pub const BFLOAT16: Policy = Policy { name: "bfloat16", compute: DType::BF16, variable: DType::BF16 };
    /// `"float16"`: compute and variables in f16 (inference; optimizers refuse f16).
    pub const FLOAT16: Policy = Policy { name: "float16", compute: DType::F16, variable: DType::F16 };
    /// `"float64"`: compute and variables in f64.
    pub const FLOAT64: Policy = Policy { name: "float64", compute: DType::F64, variable: DType::F64 };

    /// The policy named `name` (Keras' names, listed on [`Policy`]); any other name is an
    /// [`Error::Invalid`] that lists the valid ones.
    pub fn new(name: &str) -> Result<Policy> {
        POLICIES.iter().copied().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<String> = POLICIES.iter().map(|p| format!("{:?}", p.name)).collect();
            Error::Invalid(format!("unknown dtype policy {name:?}: expected one of {}", names.join(", ")))
        })
    }

    /// The policy's Keras name ("mixed_bfloat16").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The dtype layers compute in: their inputs and variables are cast to it at call.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The dtype layers create and keep their variables in (what the optimizer updates).
    pub fn variable_dtype(&self) -> DType {
        self.variable
    }

    /// Whether the compute dtype differs from the variable dtype (the `mixed_*` policies):
    /// then a layer casts its variables to the compute dtype when it reads them.
    pub fn is_mixed(&self) -> bool {
        self.compute != self.variable
    }

    fn index(&self) -> usize {
        POLICIES.iter().position(|p| p == self).expect("every Policy value is one of POLICIES")
    }
}

impl Default for Policy {
    /// `"float32"`.
    fn default() -> Self {
        Policy::FLOAT32
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for Policy {
    type Err = Error;

    /// [`Policy::new`].
    fn from_str(name: &str) -> Result<Policy> {
        Policy::new(name)
    }
}

/// The global policy, as an index into `POLICIES` (0: float32).
static GLOBAL: AtomicUsize = AtomicUsize::new(0);

/// Sets the policy of every layer that has no policy of its own and is not called inside a
/// layer that has one (Keras' `keras.mixed_precision.set_global_policy`). It is a process-wide
/// setting, read when a layer is called (and built): set it before building the model.
///
/// ```
/// use tapegrad_layers::mixed_precision::{global_policy, set_global_policy, Policy};
/// # fn main() -> tapegrad_layers::Result<()> {
/// set_global_policy("mixed_bfloat16".parse()?);
/// assert_eq!(global_policy().compute_dtype(), tapegrad_tensor::DType::BF16);
/// set_global_policy(Policy::FLOAT32);
/// # Ok(())
/// # }
/// ```
pub fn set_global_policy(policy: Policy) {
    GLOBAL.store(policy.index(), Ordering::Relaxed);
}

/// The global policy (`"float32"` unless [`set_global_policy`] changed it; Keras'
/// `keras.mixed_precision.global_policy`).
pub fn global_policy() -> Policy {
    POLICIES[GLOBAL.load(Ordering::Relaxed)]
}
