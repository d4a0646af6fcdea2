//! Element types: f32 for work, f64 for gradient checks, bf16 and f16 for mixed
//! precision, i64 for labels and indices.
//!
//! bf16 and f16 ([`half::bf16`], [`half::f16`]) are storage types: a tensor holds them in
//! two bytes each, and the CPU backend computes every op on them in f32 and rounds the
//! result once (round to nearest, ties to even); see docs/architecture.md.

use crate::cpu_backend::CpuStorage;

/// The element type of a tensor, chosen at run time (as in PyTorch and candle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: the working type of training.
    F32,
    /// 64-bit float: used by gradient checks.
    F64,
    /// bfloat16 (Keras' and TF's `"bfloat16"`): f32's 8-bit exponent with a 7-bit
    /// mantissa, for mixed-precision training. Stored as [`half::bf16`].
    BF16,
    /// IEEE 754 half precision (Keras' `"float16"`): 5-bit exponent, 10-bit mantissa, a
    /// largest finite value of 65504. Stored as [`half::f16`].
    F16,
    /// 64-bit signed integer: labels, indices, `argmax` results. Not differentiable.
    I64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the dtype is a floating-point type (differentiable).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
    }

    /// Whether the dtype is a 16-bit float (bf16 or f16): stored in two bytes, computed
    /// in f32.
    pub fn is_low_precision(self) -> bool {
        matches!(self, DType::BF16 | DType::F16)
    }

    /// The lower-case name used in messages and files ("f32").
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I64 => "i64",
        }
    }

    /// The name Keras and TensorFlow give the dtype ("float32", "bfloat16", "int64").
    pub fn keras_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            DType::I64 => "int64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Rust type that can be stored in a tensor: `f32`, `f64`, [`half::bf16`],
/// [`half::f16`] or `i64`.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The matching run-time dtype.
    const DTYPE: DType;
    /// Wraps a vector of this type into CPU storage.
    fn into_storage(data: Vec<Self>) -> CpuStorage;
    /// Borrows CPU storage as a slice of this type, if the dtype matches.
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
    /// Converts from f64 (rounding toward zero for integers).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
}

/// A floating-point [`Element`] the kernels compute in: `f32` or `f64`. bf16 and f16
/// are not among them: ops on those widen to f32.
pub trait FloatElement: Element + num_traits::Float {}
impl FloatElement for f32 {}
impl FloatElement for f64 {}

/// `$from` and `$to` convert one value from and to f64 (`$v` names it).
macro_rules! impl_element {
    ($t:ty, $dtype:ident, |$v:ident| $from:expr, |$w:ident| $to:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn into_storage(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$dtype(data)
            }
            fn slice(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$dtype(v) => Some(v),
                    _ => None,
                }
            }
            fn from_f64($v: f64) -> Self {
                $from
            }
            fn to_f64(self) -> f64 {
                let $w = self;
                $to
            }
        }
    };
}
impl_element!(f32, F32, |v| v as f32, |x| x as f64);
impl_element!(f64, F64, |v| v, |x| x);
impl_element!(i64, I64, |v| v as i64, |x| x as f64);
// bf16 and f16 convert through `half`, which rounds to nearest, ties to even.
impl_element!(half::bf16, BF16, |v| bf16_from_f64(v), |x| x.to_f64());
impl_element!(half::f16, F16, |v| f16_from_f64(v), |x| x.to_f64());

/// Rounds f64 to f32 "to odd": an exact value passes; an inexact one is truncated toward
/// zero and its last bit set. Rounding that f32 to nearest-even in a format at least two
/// bits narrower (bf16, f16) then gives the same result as rounding the f64 itself once.
///
/// Why not `half`'s `from_f64`: it drops the low 32 bits of the f64 mantissa before it
/// rounds, so a value just above a halfway point there rounds down (as a tie, to even).
fn f64_to_f32_round_to_odd(x: f64) -> f32 {
    let t = x as f32;
    if x.is_nan() || t as f64 == x {
        return t;
    }
    let mut bits = t.to_bits();
    if (t as f64).abs() > x.abs() {
        // Rounded away from zero (to infinity, beyond f32::MAX): step back toward zero.
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// f64 to bf16, rounded once to nearest with ties to even.
pub(crate) fn bf16_from_f64(x: f64) -> half::bf16 {
    half::bf16::from_f32(f64_to_f32_round_to_odd(x))
}

/// f64 to f16, rounded once to nearest with ties to even (beyond 65504, to infinity).
pub(crate) fn f16_from_f64(x: f64) -> half::f16 {
    half::f16::from_f32(f64_to_f32_round_to_odd(x))
}
