//! Host copies of tensor data, the unit every backend moves and reduces.
//!
//! bf16 and f16 are moved as they are (broadcast and all-gather copy their two-byte
//! values unchanged), but never summed in their own precision: an all-reduce widens them
//! to f32 ([`HostBuffer::widened`]), sums (and, for a mean, divides) in f32 and rounds the
//! result to the dtype once ([`HostBuffer::narrowed`]). On the host backends (MPI, threads)
//! the f32 sum is the same on every rank, so the rounded result has the same bits on every
//! rank, and it is the correctly rounded value of that f32 sum.

use crate::{Error, Result};
use tapegrad_tensor::half::{bf16, f16};
use tapegrad_tensor::{DType, Device, Shape, Tensor};

/// A tensor's elements on the host, in one of the dtypes collectives support.
#[derive(Clone, Debug, PartialEq)]
pub enum HostBuffer {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 64-bit integers.
    I64(Vec<i64>),
    /// bfloat16 (reduced in f32, see the module's notes).
    BF16(Vec<bf16>),
    /// IEEE half precision (reduced in f32, see the module's notes).
    F16(Vec<f16>),
}

/// Applies `$body` to the vector inside any variant, rebuilding the same variant.
macro_rules! map_same {
    ($buf:expr, |$v:ident| $body:expr) => {
        match $buf {
            HostBuffer::F32($v) => HostBuffer::F32($body),
            HostBuffer::F64($v) => HostBuffer::F64($body),
            HostBuffer::I64($v) => HostBuffer::I64($body),
            HostBuffer::BF16($v) => HostBuffer::BF16($body),
            HostBuffer::F16($v) => HostBuffer::F16($body),
        }
    };
}

impl HostBuffer {
    /// Copies a tensor's elements to the host.
    pub fn from_tensor(t: &Tensor) -> Result<HostBuffer> {
        Ok(match t.dtype() {
            DType::F32 => HostBuffer::F32(t.to_vec::<f32>()?),
            DType::F64 => HostBuffer::F64(t.to_vec::<f64>()?),
            DType::I64 => HostBuffer::I64(t.to_vec::<i64>()?),
            DType::BF16 => HostBuffer::BF16(t.to_vec::<bf16>()?),
            DType::F16 => HostBuffer::F16(t.to_vec::<f16>()?),
        })
    }

    /// A tensor of `shape` on `device` holding these elements.
    pub fn into_tensor(self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Ok(match self {
            HostBuffer::F32(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::F64(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::I64(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::BF16(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::F16(v) => Tensor::from_vec(v, shape, device)?,
        })
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            HostBuffer::F32(_) => DType::F32,
            HostBuffer::F64(_) => DType::F64,
            HostBuffer::I64(_) => DType::I64,
            HostBuffer::BF16(_) => DType::BF16,
            HostBuffer::F16(_) => DType::F16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostBuffer::F32(v) => v.len(),
            HostBuffer::F64(v) => v.len(),
            HostBuffer::I64(v) => v.len(),
            HostBuffer::BF16(v) => v.len(),
            HostBuffer::F16(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of `dtype` with room for `capacity` elements. (Fallible so that a
    /// dtype no collective can move is refused here, naming it; every dtype can today.)
    pub fn with_capacity(dtype: DType, capacity: usize) -> Result<HostBuffer> {
        Ok(match dtype {
            DType::F32 => HostBuffer::F32(Vec::with_capacity(capacity)),
            DType::F64 => HostBuffer::F64(Vec::with_capacity(capacity)),
            DType::I64 => HostBuffer::I64(Vec::with_capacity(capacity)),
            DType::BF16 => HostBuffer::BF16(Vec::with_capacity(capacity)),
            DType::F16 => HostBuffer::F16(Vec::with_capacity(capacity)),
        })
    }

    /// The buffer an all-reduce sums: bf16 and f16 widened (exactly) to f32, the other
    /// dtypes as they are.
    pub(crate) fn widened(self) -> HostBuffer {
        match self {
            HostBuffer::BF16(v) => HostBuffer::F32(v.iter().map(|x| x.to_f32()).collect()),
            HostBuffer::F16(v) => HostBuffer::F32(v.iter().map(|x| x.to_f32()).collect()),
            other => other,
        }
    }

    /// An all-reduce's f32 result rounded (to nearest, ties to even) to `dtype` when that is
    /// bf16 or f16; other results as they are.
    pub(crate) fn narrowed(self, dtype: DType) -> Result<HostBuffer> {
        Ok(match (self, dtype) {
            (HostBuffer::F32(v), DType::BF16) => HostBuffer::BF16(v.into_iter().map(bf16::from_f32).collect()),
            (HostBuffer::F32(v), DType::F16) => HostBuffer::F16(v.into_iter().map(f16::from_f32).collect()),
            (b, DType::BF16 | DType::F16) => {
                return Err(Error::Backend {
                    backend: "buffer",
                    msg: format!("internal: narrowing {} {} elements to {dtype}", b.len(), b.dtype()),
                })
            }
            (b, _) => b,
        })
    }

    /// Appends `other`'s elements (same dtype; the caller checks).
    pub(crate) fn extend(&mut self, other: &HostBuffer) -> Result<()> {
        match (self, other) {
            (HostBuffer::F32(a), HostBuffer::F32(b)) => a.extend_from_slice(b),
            (HostBuffer::F64(a), HostBuffer::F64(b)) => a.extend_from_slice(b),
            (HostBuffer::I64(a), HostBuffer::I64(b)) => a.extend_from_slice(b),
            (HostBuffer::BF16(a), HostBuffer::BF16(b)) => a.extend_from_slice(b),
            (HostBuffer::F16(a), HostBuffer::F16(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(Error::Backend {
                    backend: "buffer",
                    msg: format!("internal: appending {} elements to a {} buffer", b.dtype(), a.dtype()),
                })
            }
        }
        Ok(())
    }

    /// Elements `start..start + len`.
    pub(crate) fn slice(&self, start: usize, len: usize) -> HostBuffer {
        map_same!(self, |v| v[start..start + len].to_vec())
    }

    /// Adds `other` elementwise (same dtype and length; the caller checks). Integers wrap,
    /// as the tensor crate's integer arithmetic does. bf16 and f16 are refused: they are
    /// summed widened ([`widened`](Self::widened)), never in their own precision.
    pub(crate) fn add_assign(&mut self, other: &HostBuffer) -> Result<()> {
        match (self, other) {
            (HostBuffer::F32(a), HostBuffer::F32(b)) if a.len() == b.len() => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y)
            }
            (HostBuffer::F64(a), HostBuffer::F64(b)) if a.len() == b.len() => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y)
            }
            (HostBuffer::I64(a), HostBuffer::I64(b)) if a.len() == b.len() => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x = x.wrapping_add(*y))
            }
            (a, b) => {
                return Err(Error::Backend {
                    backend: "buffer",
                    msg: format!(
                        "internal: adding {} {} elements to {} {} elements (the headers agreed)",
                        b.len(),
                        b.dtype(),
                        a.len(),
                        a.dtype()
                    ),
                })
            }
        }
        Ok(())
    }

    /// Divides every element by `n` (a mean from a sum). Integers divide toward zero; bf16
    /// and f16 (not reached: a mean divides the widened sum) divide in f32, rounding once.
    pub(crate) fn divide(&mut self, n: usize) {
        match self {
            HostBuffer::F32(v) => v.iter_mut().for_each(|x| *x /= n as f32),
            HostBuffer::F64(v) => v.iter_mut().for_each(|x| *x /= n as f64),
            HostBuffer::I64(v) => v.iter_mut().for_each(|x| *x /= n as i64),
            HostBuffer::BF16(v) => v.iter_mut().for_each(|x| *x = bf16::from_f32(x.to_f32() / n as f32)),
            HostBuffer::F16(v) => v.iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32() / n as f32)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_and_f16_round_trip_and_reduce_widened() -> Result<()> {
        let t = Tensor::from_vec(vec![1.0f32, 1.0 / 256.0, -3.0], [3], &Device::Cpu)?.cast(DType::BF16)?;
        let buf = HostBuffer::from_tensor(&t)?;
        assert_eq!(buf.dtype(), DType::BF16);
        let wide = buf.clone().widened();
        assert_eq!(wide, HostBuffer::F32(vec![1.0, 1.0 / 256.0, -3.0]));
        // 1 + 2^-8 (exact in f32) is halfway between two bf16 values: rounded once, to even.
        let mut sum = wide.slice(0, 1);
        sum.add_assign(&wide.slice(1, 1))?;
        assert_eq!(sum, HostBuffer::F32(vec![1.0 + 1.0 / 256.0]));
        assert_eq!(sum.narrowed(DType::BF16)?, HostBuffer::BF16(vec![bf16::from_f32(1.0)]));
        assert_eq!(buf.clone().into_tensor([3], &Device::Cpu)?.to_vec::<bf16>()?, t.to_vec::<bf16>()?);
        let mut two = HostBuffer::with_capacity(DType::F16, 4)?;
        let h = HostBuffer::F16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]);
        two.extend(&h)?;
        two.extend(&h)?;
        assert_eq!(two.len(), 4);
        assert!(HostBuffer::I64(vec![1]).narrowed(DType::F16).is_err());
        assert!(buf.clone().add_assign(&buf).is_err(), "bf16 is never summed in bf16");
        Ok(())
    }
}
