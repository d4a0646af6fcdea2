//! bf16 and f16 on the CPU: stored in two bytes, computed in f32.
//!
//! The CPU kernels are written once, for f32 and f64. An op on bf16 or f16 widens its
//! float operands to f32 (exact: every bf16 and f16 value is an f32 value), runs the f32
//! kernel, and rounds each float result back once, to nearest with ties to even (`half`'s
//! conversion). So a low-precision op equals the same op computed in f32 and then rounded:
//! sums and matrix products accumulate in f32, and nothing rounds in between. Copies
//! (reshape, transpose, slice, concat) move the two-byte values without converting them.

use half::{bf16, f16};
use rayon::prelude::*;

use super::CpuStorage;
use crate::dtype::{bf16_from_f64, f16_from_f64};
use crate::utilities::{alloc, PAR_MIN_LEN};
use crate::{DType, Error, Result};

/// Maps `v` into a fallibly reserved vector, in parallel when it is long.
fn convert<A: Copy + Send + Sync, B: Send>(
    op: &'static str,
    v: &[A],
    f: impl Fn(A) -> B + Send + Sync,
) -> Result<Vec<B>> {
    let mut out = alloc::try_with_capacity(op, v.len())?;
    if v.len() < PAR_MIN_LEN {
        out.extend(v.iter().map(|&x| f(x)));
    } else {
        out.par_extend(v.par_iter().with_min_len(PAR_MIN_LEN / 4).map(|&x| f(x)));
    }
    Ok(out)
}

impl CpuStorage {
    /// The buffer's dtype if it is bf16 or f16, the dtypes that compute through f32.
    pub(super) fn low_precision(&self) -> Option<DType> {
        match self {
            CpuStorage::BF16(_) => Some(DType::BF16),
            CpuStorage::F16(_) => Some(DType::F16),
            _ => None,
        }
    }

    /// The bf16 or f16 buffer converted to f32 (exact). Other dtypes are refused: they
    /// would not round-trip.
    pub(super) fn widen(&self, op: &'static str) -> Result<CpuStorage> {
        Ok(match self {
            CpuStorage::BF16(v) => CpuStorage::F32(convert(op, v, bf16::to_f32)?),
            CpuStorage::F16(v) => CpuStorage::F32(convert(op, v, f16::to_f32)?),
            other => {
                let msg = format!("only bf16 and f16 widen to f32, not {}", dtype_of(other));
                return Err(Error::invalid(op, msg));
            }
        })
    }

    /// Widens a second operand of an op on `dtype`, which must have that dtype too: a bf16
    /// op does not silently accept an f32 operand.
    pub(super) fn widen_operand(&self, op: &'static str, dtype: DType) -> Result<CpuStorage> {
        if self.low_precision() != Some(dtype) {
            return Err(Error::DTypeMismatch { op, lhs: dtype, rhs: dtype_of(self) });
        }
        self.widen(op)
    }

    /// Like [`widen_operand`](Self::widen_operand), for an optional operand.
    pub(super) fn widen_opt(s: Option<&Self>, op: &'static str, dtype: DType) -> Result<Option<CpuStorage>> {
        s.map(|s| s.widen_operand(op, dtype)).transpose()
    }

    /// Runs `f32_op` on this bf16/f16 buffer widened to f32 and rounds its result back
    /// to this buffer's dtype.
    pub(super) fn through_f32(
        &self,
        op: &'static str,
        f32_op: impl FnOnce(&CpuStorage) -> Result<CpuStorage>,
    ) -> Result<CpuStorage> {
        f32_op(&self.widen(op)?)?.round_to(op, dtype_of(self))
    }

    /// Rounds an f32 result of a widened kernel to `dtype` (bf16 or f16), to nearest with
    /// ties to even. Results of other dtypes (i64 indices) pass through.
    pub(super) fn round_to(self, op: &'static str, dtype: DType) -> Result<CpuStorage> {
        Ok(match (self, dtype) {
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(convert(op, &v, bf16::from_f32)?),
            (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(convert(op, &v, f16::from_f32)?),
            (other, _) => other,
        })
    }
}

/// The dtype of a buffer (the trait method, callable without importing the trait).
fn dtype_of(s: &CpuStorage) -> DType {
    crate::backend::BackendStorage::dtype(s)
}

/// Converts a buffer to another dtype where one side is bf16 or f16, rounding to nearest
/// with ties to even where the target is narrower; `None` where neither side is 16-bit.
pub(super) fn cast_low(s: &CpuStorage, dtype: DType) -> Option<Result<CpuStorage>> {
    const OP: &str = "cast";
    let out = match (s, dtype) {
        (CpuStorage::BF16(v), DType::BF16) => convert(OP, v, |x| x).map(CpuStorage::BF16),
        (CpuStorage::BF16(v), DType::F16) => convert(OP, v, |x| f16::from_f32(x.to_f32())).map(CpuStorage::F16),
        (CpuStorage::BF16(v), DType::F32) => convert(OP, v, bf16::to_f32).map(CpuStorage::F32),
        (CpuStorage::BF16(v), DType::F64) => convert(OP, v, bf16::to_f64).map(CpuStorage::F64),
        (CpuStorage::F16(v), DType::F16) => convert(OP, v, |x| x).map(CpuStorage::F16),
        // Every f16 value is exact in f32, so the only rounding is f32 -> bf16.
        (CpuStorage::F16(v), DType::BF16) => convert(OP, v, |x| bf16::from_f32(x.to_f32())).map(CpuStorage::BF16),
        (CpuStorage::F16(v), DType::F32) => convert(OP, v, f16::to_f32).map(CpuStorage::F32),
        (CpuStorage::F16(v), DType::F64) => convert(OP, v, f16::to_f64).map(CpuStorage::F64),
        (CpuStorage::F32(v), DType::BF16) => convert(OP, v, bf16::from_f32).map(CpuStorage::BF16),
        (CpuStorage::F32(v), DType::F16) => convert(OP, v, f16::from_f32).map(CpuStorage::F16),
        (CpuStorage::F64(v), DType::BF16) => convert(OP, v, bf16_from_f64).map(CpuStorage::BF16),
        (CpuStorage::F64(v), DType::F16) => convert(OP, v, f16_from_f64).map(CpuStorage::F16),
        // As `as` casts do: toward zero, saturating, NaN to 0.
        (CpuStorage::BF16(v), DType::I64) => convert(OP, v, |x| x.to_f32() as i64).map(CpuStorage::I64),
        (CpuStorage::F16(v), DType::I64) => convert(OP, v, |x| x.to_f32() as i64).map(CpuStorage::I64),
        (CpuStorage::I64(v), DType::BF16) => convert(OP, v, |x| bf16_from_f64(x as f64)).map(CpuStorage::BF16),
        (CpuStorage::I64(v), DType::F16) => convert(OP, v, |x| f16_from_f64(x as f64)).map(CpuStorage::F16),
        _ => return None,
    };
    Some(out)
}
