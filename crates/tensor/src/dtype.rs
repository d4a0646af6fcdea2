//! Element types: f32 for work, f64 for gradient checks, i64 for labels and indices.

use crate::cpu_backend::CpuStorage;

/// The element type of a tensor, chosen at run time (as in PyTorch and candle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: the working type of training.
    F32,
    /// 64-bit float: used by gradient checks.
    F64,
    /// 64-bit signed integer: labels, indices, `argmax` results. Not differentiable.
    I64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the dtype is a floating-point type (differentiable).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// The lower-case name used in messages and files ("f32").
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Rust type that can be stored in a tensor: `f32`, `f64` or `i64`.
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

/// A floating-point [`Element`]: `f32` or `f64`.
pub trait FloatElement: Element + num_traits::Float {}
impl FloatElement for f32 {}
impl FloatElement for f64 {}

macro_rules! impl_element {
    ($t:ty, $dtype:ident) => {
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
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f64, F64);
impl_element!(i64, I64);
