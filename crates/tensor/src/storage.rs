//! [`Storage`]: a tensor's buffer on whichever backend holds it, and the dispatch of
//! each primitive kernel to that backend.

use crate::backend::BatchNormGrads;
use crate::backend::GroupNormSpec;
use crate::backend::{
    ArgReduceOp, BackendStorage, BatchNormSpec, BinaryOp, Conv2dSpec, ConvActivation, MatmulSpec, Pool2dSpec, ReduceOp,
    StridedLayout, UnaryOp,
};
use crate::cpu_backend::CpuStorage;
#[cfg(feature = "cuda")]
use crate::cuda_backend::CudaStorage;
use crate::ops::optim::{AdamStep, SgdStep};
use crate::ops::pad::PadSpec;
use crate::ops::resize::ResizeSpec;
use crate::{DType, Device, Error, Result, Shape};

/// A contiguous buffer on one device. Immutable once made: ops return new storage.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// Memory of a CUDA device (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda(CudaStorage),
}

/// Applies the same expression to the backend storage inside, whichever it is, and wraps
/// a storage result back into its variant.
macro_rules! each_backend {
    ($s:expr, |$x:ident| $body:expr) => {
        match $s {
            Storage::Cpu($x) => Storage::Cpu($body?),
            #[cfg(feature = "cuda")]
            Storage::Cuda($x) => Storage::Cuda($body?),
        }
    };
}

/// Pairs two storages of one backend, or reports the devices.
macro_rules! same_device {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Storage::Cpu($x), Storage::Cpu($y)) => Ok(Storage::Cpu($body?)),
            #[cfg(feature = "cuda")]
            (Storage::Cuda($x), Storage::Cuda($y)) => Ok(Storage::Cuda($body?)),
            #[allow(unreachable_patterns)]
            (a, b) => Err(Error::DeviceMismatch { op: $op, lhs: a.device(), rhs: b.device() }),
        }
    };
}

impl Storage {
    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.device(),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A host copy of the buffer (synchronises with the device).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => s.try_clone("to_cpu"),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.to_cpu(),
        }
    }

    /// Uploads a host buffer to `device`.
    pub fn from_cpu(cpu: CpuStorage, device: &Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(cpu)),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::from_cpu(&cpu, *ordinal)?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(Error::DeviceUnavailable {
                device: *device,
                msg: "tapegrad was built without the `cuda` feature; rebuild with `--features cuda`".into(),
            }),
        }
    }

    /// `len` copies of `value` (converted to `dtype`) on `device`; a GPU fills its buffer
    /// itself rather than copying one from the host.
    pub fn full(len: usize, value: f64, dtype: DType, device: &Device) -> Result<Storage> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::full(len, value, dtype, *ordinal)?)),
            _ => Storage::from_cpu(CpuStorage::full(len, value, dtype)?, device),
        }
    }

    pub(crate) fn unary(&self, op: UnaryOp) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.unary(op)))
    }

    pub(crate) fn binary(&self, rhs: &Storage, op: BinaryOp, ls: &Shape, rs: &Shape, out: &Shape) -> Result<Storage> {
        same_device!("binary op", self, rhs, |a, b| a.binary(b, op, ls, rs, out))
    }

    pub(crate) fn reduce(&self, op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.reduce(op, shape, axes)))
    }

    pub(crate) fn arg_reduce(&self, op: ArgReduceOp, shape: &Shape, axis: usize) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.arg_reduce(op, shape, axis)))
    }

    pub(crate) fn matmul(&self, rhs: &Storage, spec: &MatmulSpec) -> Result<Storage> {
        same_device!("matmul", self, rhs, |a, b| a.matmul(b, spec))
    }

    pub(crate) fn strided_copy(&self, layout: &StridedLayout) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.strided_copy(layout)))
    }

    pub(crate) fn concat(parts: &[&Storage], outer: usize, inners: &[usize]) -> Result<Storage> {
        let first = parts.first().ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let mismatch =
            |other: &Storage| Error::DeviceMismatch { op: "concat", lhs: first.device(), rhs: other.device() };
        match first {
            Storage::Cpu(_) => {
                let cpu = parts
                    .iter()
                    .map(|p| match p {
                        Storage::Cpu(c) => Ok(c),
                        #[allow(unreachable_patterns)]
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cpu(CpuStorage::concat(&cpu, outer, inners)?))
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => {
                let cuda = parts
                    .iter()
                    .map(|p| match p {
                        Storage::Cuda(c) => Ok(c),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Storage::Cuda(CudaStorage::concat(&cuda, outer, inners)?))
            }
        }
    }

    pub(crate) fn cast(&self, dtype: DType) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.cast(dtype)))
    }

    pub(crate) fn log_softmax(&self, rows: usize, cols: usize) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.log_softmax(rows, cols)))
    }

    pub(crate) fn conv2d(
        &self,
        kernel: &Storage,
        bias: Option<&Storage>,
        spec: &Conv2dSpec,
        activation: ConvActivation,
    ) -> Result<Storage> {
        match (self, kernel, bias) {
            (Storage::Cpu(x), Storage::Cpu(k), None) => Ok(Storage::Cpu(x.conv2d(k, None, spec, activation)?)),
            (Storage::Cpu(x), Storage::Cpu(k), Some(Storage::Cpu(b))) => {
                Ok(Storage::Cpu(x.conv2d(k, Some(b), spec, activation)?))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(k), b) => {
                Ok(Storage::Cuda(x.conv2d(k, cuda_operand("conv2d", x, b)?, spec, activation)?))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch("conv2d", [Some(kernel), bias])),
        }
    }

    pub(crate) fn conv2d_backward_input(&self, kernel: &Storage, spec: &Conv2dSpec) -> Result<Storage> {
        same_device!("conv2d_backward_input", self, kernel, |dy, k| dy.conv2d_backward_input(k, spec))
    }

    /// `conv2d_backward_input(self, kernel) + bias` in one pass on the CPU; `None` on other
    /// devices or in low precision (the caller adds the bias as an op of its own).
    pub(crate) fn conv2d_backward_input_bias(
        &self,
        kernel: &Storage,
        bias: &Storage,
        spec: &Conv2dSpec,
    ) -> Result<Option<Storage>> {
        match (self, kernel, bias) {
            (Storage::Cpu(dy), Storage::Cpu(k), Storage::Cpu(b)) => {
                Ok(dy.conv2d_backward_input_bias(k, b, spec)?.map(Storage::Cpu))
            }
            #[allow(unreachable_patterns)]
            _ => Ok(None),
        }
    }

    /// `(conv2d(self, kernel), conv2d_backward_filter(self, grad_out))` through one shared
    /// column matrix on the CPU; `None` on other devices or where that route does not apply.
    pub(crate) fn conv2d_and_filter_grad(
        &self,
        kernel: &Storage,
        grad_out: &Storage,
        spec: &Conv2dSpec,
    ) -> Result<Option<(Storage, Storage)>> {
        match (self, kernel, grad_out) {
            (Storage::Cpu(x), Storage::Cpu(k), Storage::Cpu(dy)) => {
                Ok(x.conv2d_and_filter_grad(k, dy, spec)?.map(|(y, dk)| (Storage::Cpu(y), Storage::Cpu(dk))))
            }
            #[allow(unreachable_patterns)]
            _ => Ok(None),
        }
    }

    pub(crate) fn conv2d_backward_filter(&self, grad_out: &Storage, spec: &Conv2dSpec) -> Result<Storage> {
        same_device!("conv2d_backward_filter", self, grad_out, |x, dy| x.conv2d_backward_filter(dy, spec))
    }

    pub(crate) fn max_pool2d(&self, spec: &Pool2dSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.max_pool2d(spec)))
    }

    pub(crate) fn max_pool2d_backward(
        &self,
        output: &Storage,
        grad_out: &Storage,
        spec: &Pool2dSpec,
    ) -> Result<Storage> {
        match (self, output, grad_out) {
            (Storage::Cpu(x), Storage::Cpu(y), Storage::Cpu(dy)) => {
                Ok(Storage::Cpu(x.max_pool2d_backward(y, dy, spec)?))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(y), Storage::Cuda(dy)) => {
                Ok(Storage::Cuda(x.max_pool2d_backward(y, dy, spec)?))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch("max_pool2d_backward", [Some(output), Some(grad_out)])),
        }
    }

    pub(crate) fn avg_pool2d(&self, spec: &Pool2dSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.avg_pool2d(spec)))
    }

    pub(crate) fn avg_pool2d_backward(&self, spec: &Pool2dSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.avg_pool2d_backward(spec)))
    }

    pub(crate) fn batch_norm_train(
        &self,
        gamma: Option<&Storage>,
        beta: Option<&Storage>,
        residual: Option<&Storage>,
        spec: &BatchNormSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        const OP: &str = "batch_norm_train";
        match self {
            Storage::Cpu(x) => {
                let (gamma, beta) = (cpu_operand(OP, gamma)?, cpu_operand(OP, beta)?);
                let (y, mean, var) = x.batch_norm_train(gamma, beta, cpu_operand(OP, residual)?, spec)?;
                Ok((Storage::Cpu(y), Storage::Cpu(mean), Storage::Cpu(var)))
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(x) => {
                let (gamma, beta) = (cuda_operand(OP, x, gamma)?, cuda_operand(OP, x, beta)?);
                let (y, mean, var) = x.batch_norm_train(gamma, beta, cuda_operand(OP, x, residual)?, spec)?;
                Ok((Storage::Cuda(y), Storage::Cuda(mean), Storage::Cuda(var)))
            }
        }
    }

    pub(crate) fn batch_norm_backward(
        &self,
        grad_out: &Storage,
        gamma: Option<&Storage>,
        mean: &Storage,
        var: &Storage,
        output: Option<&Storage>,
        spec: &BatchNormSpec,
    ) -> Result<BatchNormGrads<Storage>> {
        const OP: &str = "batch_norm_backward";
        match (self, grad_out, mean, var) {
            (Storage::Cpu(x), Storage::Cpu(dy), Storage::Cpu(mean), Storage::Cpu(var)) => {
                let (gamma, output) = (cpu_operand(OP, gamma)?, cpu_operand(OP, output)?);
                let (dx, d_gamma, d_beta, d_res) = x.batch_norm_backward(dy, gamma, mean, var, output, spec)?;
                Ok((Storage::Cpu(dx), Storage::Cpu(d_gamma), Storage::Cpu(d_beta), d_res.map(Storage::Cpu)))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(dy), Storage::Cuda(mean), Storage::Cuda(var)) => {
                let (gamma, output) = (cuda_operand(OP, x, gamma)?, cuda_operand(OP, x, output)?);
                let (dx, d_gamma, d_beta, d_res) = x.batch_norm_backward(dy, gamma, mean, var, output, spec)?;
                Ok((Storage::Cuda(dx), Storage::Cuda(d_gamma), Storage::Cuda(d_beta), d_res.map(Storage::Cuda)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch(OP, [Some(grad_out), Some(mean), Some(var)])),
        }
    }

    pub(crate) fn gather_rows(&self, indices: &Storage, row_len: usize) -> Result<Storage> {
        same_device!("gather", self, indices, |t, i| t.gather_rows(i, row_len))
    }

    pub(crate) fn segment_sum_rows(&self, order: &Storage, offsets: &Storage, row_len: usize) -> Result<Storage> {
        match (self, order, offsets) {
            (Storage::Cpu(v), Storage::Cpu(o), Storage::Cpu(off)) => {
                Ok(Storage::Cpu(v.segment_sum_rows(o, off, row_len)?))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(v), Storage::Cuda(o), Storage::Cuda(off)) => {
                Ok(Storage::Cuda(v.segment_sum_rows(o, off, row_len)?))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch("scatter_add", [Some(order), Some(offsets)])),
        }
    }

    pub(crate) fn group_norm(
        &self,
        gamma: Option<&Storage>,
        beta: Option<&Storage>,
        spec: &GroupNormSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        const OP: &str = "group_norm";
        match self {
            Storage::Cpu(x) => {
                let (y, mean, rstd) = x.group_norm(cpu_operand(OP, gamma)?, cpu_operand(OP, beta)?, spec)?;
                Ok((Storage::Cpu(y), Storage::Cpu(mean), Storage::Cpu(rstd)))
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(x) => {
                let (y, mean, rstd) = x.group_norm(cuda_operand(OP, x, gamma)?, cuda_operand(OP, x, beta)?, spec)?;
                Ok((Storage::Cuda(y), Storage::Cuda(mean), Storage::Cuda(rstd)))
            }
        }
    }

    pub(crate) fn group_norm_backward(
        &self,
        grad_out: &Storage,
        gamma: Option<&Storage>,
        mean: &Storage,
        rstd: &Storage,
        spec: &GroupNormSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        const OP: &str = "group_norm_backward";
        match (self, grad_out, mean, rstd) {
            (Storage::Cpu(x), Storage::Cpu(dy), Storage::Cpu(mean), Storage::Cpu(rstd)) => {
                let (dx, d_gamma, d_beta) = x.group_norm_backward(dy, cpu_operand(OP, gamma)?, mean, rstd, spec)?;
                Ok((Storage::Cpu(dx), Storage::Cpu(d_gamma), Storage::Cpu(d_beta)))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(dy), Storage::Cuda(mean), Storage::Cuda(rstd)) => {
                let (dx, d_gamma, d_beta) = x.group_norm_backward(dy, cuda_operand(OP, x, gamma)?, mean, rstd, spec)?;
                Ok((Storage::Cuda(dx), Storage::Cuda(d_gamma), Storage::Cuda(d_beta)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch(OP, [Some(grad_out), Some(mean), Some(rstd)])),
        }
    }

    pub(crate) fn sgd_update(
        &self,
        grad: &Storage,
        velocity: Option<&Storage>,
        step: &SgdStep,
    ) -> Result<(Storage, Option<Storage>)> {
        const OP: &str = "sgd_update";
        match (self, grad) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                let (value, velocity) = x.sgd_update(g, cpu_operand(OP, velocity)?, step)?;
                Ok((Storage::Cpu(value), velocity.map(Storage::Cpu)))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(g)) => {
                let (value, velocity) = x.sgd_update(g, cuda_operand(OP, x, velocity)?, step)?;
                Ok((Storage::Cuda(value), velocity.map(Storage::Cuda)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch(OP, [Some(grad), velocity])),
        }
    }

    pub(crate) fn adam_update(
        &self,
        grad: &Storage,
        m: Option<&Storage>,
        v: Option<&Storage>,
        step: &AdamStep,
    ) -> Result<(Storage, Storage, Storage)> {
        const OP: &str = "adam_update";
        match (self, grad) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                let (value, m, v) = x.adam_update(g, cpu_operand(OP, m)?, cpu_operand(OP, v)?, step)?;
                Ok((Storage::Cpu(value), Storage::Cpu(m), Storage::Cpu(v)))
            }
            #[cfg(feature = "cuda")]
            (Storage::Cuda(x), Storage::Cuda(g)) => {
                let (value, m, v) = x.adam_update(g, cuda_operand(OP, x, m)?, cuda_operand(OP, x, v)?, step)?;
                Ok((Storage::Cuda(value), Storage::Cuda(m), Storage::Cuda(v)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.mismatch(OP, [Some(grad), m, v])),
        }
    }

    pub(crate) fn pad(&self, spec: &PadSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.pad(spec)))
    }

    pub(crate) fn pad_backward(&self, spec: &PadSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.pad_backward(spec)))
    }

    pub(crate) fn resize(&self, spec: &ResizeSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.resize(spec)))
    }

    pub(crate) fn resize_backward(&self, spec: &ResizeSpec) -> Result<Storage> {
        Ok(each_backend!(self, |s| s.resize_backward(spec)))
    }

    /// The device error for an op whose operands are not all on this storage's device.
    #[allow(dead_code)] // only reachable once a second backend exists
    fn mismatch<const N: usize>(&self, op: &'static str, others: [Option<&Storage>; N]) -> Error {
        let other = others.into_iter().flatten().find(|o| o.device() != self.device());
        Error::DeviceMismatch { op, lhs: self.device(), rhs: other.map_or(self.device(), |o| o.device()) }
    }
}

/// Borrows an optional operand as CPU storage, or reports its device.
fn cpu_operand<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a CpuStorage>> {
    match s {
        None => Ok(None),
        Some(Storage::Cpu(c)) => Ok(Some(c)),
        #[allow(unreachable_patterns)]
        Some(other) => Err(Error::DeviceMismatch { op, lhs: Device::Cpu, rhs: other.device() }),
    }
}

/// Borrows an optional operand as CUDA storage, or reports its device.
#[cfg(feature = "cuda")]
fn cuda_operand<'a>(op: &'static str, first: &CudaStorage, s: Option<&'a Storage>) -> Result<Option<&'a CudaStorage>> {
    match s {
        None => Ok(None),
        Some(Storage::Cuda(c)) => Ok(Some(c)),
        Some(other) => Err(Error::DeviceMismatch { op, lhs: first.device(), rhs: other.device() }),
    }
}
