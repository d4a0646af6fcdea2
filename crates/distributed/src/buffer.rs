//! Host copies of tensor data, the unit every backend moves and reduces.

use crate::{Error, Result};
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
}

/// Collectives do not move bf16 or f16 yet: their sums would need f32 accumulation.
fn unsupported(dtype: DType) -> Error {
    Error::Tensor(tapegrad_tensor::Error::UnsupportedDType {
        op: "collective",
        dtype,
        expected: "f32, f64 or i64; cast bf16 and f16 to f32 first",
    })
}

impl HostBuffer {
    /// Copies a tensor's elements to the host.
    pub fn from_tensor(t: &Tensor) -> Result<HostBuffer> {
        Ok(match t.dtype() {
            DType::F32 => HostBuffer::F32(t.to_vec::<f32>()?),
            DType::F64 => HostBuffer::F64(t.to_vec::<f64>()?),
            DType::I64 => HostBuffer::I64(t.to_vec::<i64>()?),
            dtype @ (DType::BF16 | DType::F16) => return Err(unsupported(dtype)),
        })
    }

    /// A tensor of `shape` on `device` holding these elements.
    pub fn into_tensor(self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Ok(match self {
            HostBuffer::F32(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::F64(v) => Tensor::from_vec(v, shape, device)?,
            HostBuffer::I64(v) => Tensor::from_vec(v, shape, device)?,
        })
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            HostBuffer::F32(_) => DType::F32,
            HostBuffer::F64(_) => DType::F64,
            HostBuffer::I64(_) => DType::I64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostBuffer::F32(v) => v.len(),
            HostBuffer::F64(v) => v.len(),
            HostBuffer::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of `dtype` with room for `capacity` elements; bf16 and f16 are
    /// refused, as in [`from_tensor`](Self::from_tensor).
    pub fn with_capacity(dtype: DType, capacity: usize) -> Result<HostBuffer> {
        Ok(match dtype {
            DType::F32 => HostBuffer::F32(Vec::with_capacity(capacity)),
            DType::F64 => HostBuffer::F64(Vec::with_capacity(capacity)),
            DType::I64 => HostBuffer::I64(Vec::with_capacity(capacity)),
            DType::BF16 | DType::F16 => return Err(unsupported(dtype)),
        })
    }

    /// Appends `other`'s elements (same dtype; the caller checks).
    pub(crate) fn extend(&mut self, other: &HostBuffer) -> Result<()> {
        match (self, other) {
            (HostBuffer::F32(a), HostBuffer::F32(b)) => a.extend_from_slice(b),
            (HostBuffer::F64(a), HostBuffer::F64(b)) => a.extend_from_slice(b),
            (HostBuffer::I64(a), HostBuffer::I64(b)) => a.extend_from_slice(b),
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
        match self {
            HostBuffer::F32(v) => HostBuffer::F32(v[start..start + len].to_vec()),
            HostBuffer::F64(v) => HostBuffer::F64(v[start..start + len].to_vec()),
            HostBuffer::I64(v) => HostBuffer::I64(v[start..start + len].to_vec()),
        }
    }

    /// Adds `other` elementwise (same dtype and length; the caller checks). Integers wrap,
    /// as the tensor crate's integer arithmetic does.
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

    /// Divides every element by `n` (a mean from a sum). Integers divide toward zero.
    pub(crate) fn divide(&mut self, n: usize) {
        match self {
            HostBuffer::F32(v) => v.iter_mut().for_each(|x| *x /= n as f32),
            HostBuffer::F64(v) => v.iter_mut().for_each(|x| *x /= n as f64),
            HostBuffer::I64(v) => v.iter_mut().for_each(|x| *x /= n as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_and_f16_are_refused_by_name() -> Result<()> {
        for dtype in [DType::BF16, DType::F16] {
            let t = Tensor::ones([3], DType::F32, &Device::Cpu)?.cast(dtype)?;
            for err in [HostBuffer::from_tensor(&t).unwrap_err(), HostBuffer::with_capacity(dtype, 4).unwrap_err()] {
                assert!(
                    matches!(&err, Error::Tensor(tapegrad_tensor::Error::UnsupportedDType { op: "collective", dtype: d, .. }) if *d == dtype),
                    "{err:?}"
                );
            }
        }
        assert_eq!(HostBuffer::with_capacity(DType::F32, 4)?, HostBuffer::F32(Vec::new()));
        Ok(())
    }
}
