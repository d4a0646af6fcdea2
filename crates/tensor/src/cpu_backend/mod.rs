//! The CPU backend: host vectors, rayon threads, the `gemm` crate.
//!
//! This file only routes each primitive of [`BackendStorage`] to its kernel, which lives
//! beside its op (`ops/<family>/cpu.rs`), and matches on the dtype. bf16 and f16 go
//! through the f32 kernels (`low_precision.rs`).

mod low_precision;

use crate::backend::BatchNormGrads;
use crate::backend::GroupNormSpec;
use crate::backend::{
    ArgReduceOp, BackendStorage, BatchNormSpec, BinaryOp, Conv2dSpec, ConvActivation, MatmulSpec, Pool2dSpec, ReduceOp,
    StridedLayout, UnaryOp,
};
use crate::ops::group_norm;
use crate::ops::optim::{AdamStep, SgdStep};
use crate::ops::pad::{self, PadSpec};
use crate::ops::resize::{self, ResizeSpec};
use crate::ops::{conv, elementwise, gather, layout, matmul, norm, optim, pool, reduce, softmax};
use crate::utilities::{alloc, PAR_MIN_LEN};
use crate::{DType, Element, Error, Result, Shape};

/// A contiguous host buffer of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bf16 elements (computed in f32).
    BF16(Vec<half::bf16>),
    /// f16 elements (computed in f32).
    F16(Vec<half::f16>),
    /// i64 elements.
    I64(Vec<i64>),
}

/// The error of an op that runs on f32 and f64 only. The ones that refuse bf16 and f16
/// (normalizations, optimizer updates) say to cast: their statistics and variables belong
/// in f32, as in Keras' mixed precision.
fn unsupported(op: &'static str, dtype: DType) -> Error {
    let expected = if dtype.is_low_precision() { "f32 or f64; cast bf16 and f16 to f32 first" } else { "f32 or f64" };
    Error::UnsupportedDType { op, dtype, expected }
}

/// Applies a generic expression to the vector inside, keeping the dtype.
macro_rules! map_any {
    ($s:expr, $v:ident => $e:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($e),
            CpuStorage::F64($v) => CpuStorage::F64($e),
            CpuStorage::BF16($v) => CpuStorage::BF16($e),
            CpuStorage::F16($v) => CpuStorage::F16($e),
            CpuStorage::I64($v) => CpuStorage::I64($e),
        }
    };
}

/// Runs a float kernel generic over `$t` at the dtype of `$s`, wrapping the `Vec<$t>`
/// it returns; i64 is reported as unsupported (bf16 and f16 are widened before).
macro_rules! float_kernel {
    ($s:expr, $op:expr, $t:ident => $e:expr) => {
        match $s.dtype() {
            DType::F32 => {
                type $t = f32;
                CpuStorage::F32($e)
            }
            DType::F64 => {
                type $t = f64;
                CpuStorage::F64($e)
            }
            dtype @ (DType::I64 | DType::BF16 | DType::F16) => return Err(unsupported($op, dtype)),
        }
    };
}

/// Like `float_kernel`, for kernels returning three vectors.
macro_rules! float_kernel3 {
    ($s:expr, $op:expr, $t:ident => $e:expr) => {
        match $s.dtype() {
            DType::F32 => {
                type $t = f32;
                let (a, b, c) = $e;
                (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c))
            }
            DType::F64 => {
                type $t = f64;
                let (a, b, c) = $e;
                (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c))
            }
            dtype @ (DType::I64 | DType::BF16 | DType::F16) => return Err(unsupported($op, dtype)),
        }
    };
}

/// Like `map_any`, for ops defined on float dtypes only.
macro_rules! map_float {
    ($s:expr, $op:expr, $v:ident => $e:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($e),
            CpuStorage::F64($v) => CpuStorage::F64($e),
            other @ (CpuStorage::I64(_) | CpuStorage::BF16(_) | CpuStorage::F16(_)) => {
                return Err(unsupported($op, other.dtype()))
            }
        }
    };
}

impl CpuStorage {
    /// A buffer of `len` zeros, or [`Error::OutOfMemory`].
    pub fn zeros(len: usize, dtype: DType) -> Result<Self> {
        Self::zeros_for("zeros", len, dtype)
    }

    /// Like [`zeros`](Self::zeros), the error naming `op`.
    pub(crate) fn zeros_for(op: &'static str, len: usize, dtype: DType) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(alloc::try_zeros(op, len)?),
            DType::F64 => CpuStorage::F64(alloc::try_zeros(op, len)?),
            DType::BF16 => CpuStorage::BF16(alloc::try_zeros(op, len)?),
            DType::F16 => CpuStorage::F16(alloc::try_zeros(op, len)?),
            DType::I64 => CpuStorage::I64(alloc::try_zeros(op, len)?),
        })
    }

    /// A buffer of `len` copies of `value` (converted to the dtype), or
    /// [`Error::OutOfMemory`].
    pub fn full(len: usize, value: f64, dtype: DType) -> Result<Self> {
        if value == 0.0 && value.is_sign_positive() {
            return Self::zeros(len, dtype);
        }
        const OP: &str = "full";
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(alloc::try_vec(OP, len, value as f32)?),
            DType::F64 => CpuStorage::F64(alloc::try_vec(OP, len, value)?),
            DType::BF16 => CpuStorage::BF16(alloc::try_vec(OP, len, crate::dtype::bf16_from_f64(value))?),
            DType::F16 => CpuStorage::F16(alloc::try_vec(OP, len, crate::dtype::f16_from_f64(value))?),
            DType::I64 => CpuStorage::I64(alloc::try_vec(OP, len, value as i64)?),
        })
    }

    /// A copy of the buffer, or [`Error::OutOfMemory`] naming `op`.
    pub fn try_clone(&self, op: &'static str) -> Result<Self> {
        fn copy<T: Copy>(op: &'static str, v: &[T]) -> Result<Vec<T>> {
            let mut out = alloc::try_with_capacity(op, v.len())?;
            out.extend_from_slice(v);
            Ok(out)
        }
        Ok(map_any!(self, v => copy(op, v)?))
    }

    /// Borrows the buffer as `&[T]`, or reports the dtype mismatch against `T`.
    fn typed<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        T::slice(self).ok_or(Error::DTypeMismatch { op, lhs: T::DTYPE, rhs: self.dtype() })
    }

    /// Like [`typed`](Self::typed), for an optional operand.
    fn typed_opt<'a, T: Element>(s: Option<&'a Self>, op: &'static str) -> Result<Option<&'a [T]>> {
        s.map(|s| s.typed::<T>(op)).transpose()
    }

    /// `conv2d(self, kernel)` and `conv2d_backward_filter(self, grad_out)` from one
    /// im2col of `self` (see `ops/conv/shared_columns_cpu.rs`), or `None` where that route
    /// does not apply (low precision, or a shape whose products run through other kernels).
    pub(crate) fn conv2d_and_filter_grad(
        &self,
        kernel: &Self,
        grad_out: &Self,
        spec: &Conv2dSpec,
    ) -> Result<Option<(Self, Self)>> {
        const OP: &str = "conv2d_backward_filter";
        fn wrap<T>(pair: Option<(Vec<T>, Vec<T>)>, f: fn(Vec<T>) -> CpuStorage) -> Option<(CpuStorage, CpuStorage)> {
            pair.map(|(y, dk)| (f(y), f(dk)))
        }
        Ok(match self {
            CpuStorage::F32(x) => wrap(
                conv::shared_columns_cpu::conv2d_and_filter_grad(x, kernel.typed(OP)?, grad_out.typed(OP)?, spec)?,
                CpuStorage::F32,
            ),
            CpuStorage::F64(x) => wrap(
                conv::shared_columns_cpu::conv2d_and_filter_grad(x, kernel.typed(OP)?, grad_out.typed(OP)?, spec)?,
                CpuStorage::F64,
            ),
            _ => None,
        })
    }

    /// `conv2d_backward_input(self, kernel) + bias` (a transposed convolution with its bias)
    /// in one pass over the output, or `None` in low precision (the caller adds the bias).
    pub(crate) fn conv2d_backward_input_bias(
        &self,
        kernel: &Self,
        bias: &Self,
        spec: &Conv2dSpec,
    ) -> Result<Option<Self>> {
        const OP: &str = "conv2d_transpose";
        if self.low_precision().is_some() {
            return Ok(None);
        }
        Ok(Some(float_kernel!(self, OP, T => conv::cpu::conv2d_backward_input_bias::<T>(
            self.typed(OP)?,
            kernel.typed(OP)?,
            Some(bias.typed(OP)?),
            spec
        )?)))
    }

    /// The elements converted to f64, or [`Error::OutOfMemory`].
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        use num_traits::AsPrimitive;
        fn conv<A: AsPrimitive<f64>>(v: &[A]) -> Result<Vec<f64>> {
            let mut out = alloc::try_with_capacity("to_vec_f64", v.len())?;
            out.extend(v.iter().map(|x| x.as_()));
            Ok(out)
        }
        match self {
            CpuStorage::F32(v) => conv(v),
            CpuStorage::F64(v) => conv(v),
            CpuStorage::BF16(v) => conv(v),
            CpuStorage::F16(v) => conv(v),
            CpuStorage::I64(v) => conv(v),
        }
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(elementwise::cpu::unary_float(v, op)?),
            CpuStorage::F64(v) => CpuStorage::F64(elementwise::cpu::unary_float(v, op)?),
            CpuStorage::I64(v) => CpuStorage::I64(elementwise::cpu::unary_int(v, op)?),
            CpuStorage::BF16(_) | CpuStorage::F16(_) => return self.through_f32(op.name(), |x| x.unary(op)),
        })
    }

    fn binary(&self, rhs: &Self, op: BinaryOp, ls: &Shape, rs: &Shape, out: &Shape) -> Result<Self> {
        Ok(match (self, rhs) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(elementwise::cpu::binary(a, b, op, ls, rs, out)?)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(elementwise::cpu::binary(a, b, op, ls, rs, out)?)
            }
            (CpuStorage::I64(a), CpuStorage::I64(b)) => {
                CpuStorage::I64(elementwise::cpu::binary(a, b, op, ls, rs, out)?)
            }
            (CpuStorage::BF16(_), CpuStorage::BF16(_)) | (CpuStorage::F16(_), CpuStorage::F16(_)) => {
                let (name, low) = ("binary", self.dtype());
                return self.through_f32(name, |a| a.binary(&rhs.widen_operand(name, low)?, op, ls, rs, out));
            }
            _ => return Err(Error::DTypeMismatch { op: "binary", lhs: self.dtype(), rhs: rhs.dtype() }),
        })
    }

    fn reduce(&self, op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<Self> {
        if self.low_precision().is_some() {
            // Accumulates in f32 and rounds once.
            return self.through_f32("reduce", |x| x.reduce(op, shape, axes));
        }
        Ok(map_any!(self, v => reduce::cpu::reduce(v, op, shape, axes)?))
    }

    fn arg_reduce(&self, op: ArgReduceOp, shape: &Shape, axis: usize) -> Result<Self> {
        Ok(CpuStorage::I64(match self {
            CpuStorage::F32(v) => reduce::cpu::arg_reduce(v, op, shape, axis),
            CpuStorage::F64(v) => reduce::cpu::arg_reduce(v, op, shape, axis),
            CpuStorage::I64(v) => reduce::cpu::arg_reduce(v, op, shape, axis),
            // Every bf16 and f16 value is exact in f32, so the order is the same.
            CpuStorage::BF16(_) | CpuStorage::F16(_) => return self.widen("arg_reduce")?.arg_reduce(op, shape, axis),
        }))
    }

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self> {
        Ok(match (self, rhs) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(matmul::cpu::matmul(a, b, spec)?),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(matmul::cpu::matmul(a, b, spec)?),
            // Widened to f32, accumulated in f32 by the f32 GEMM, rounded once.
            (CpuStorage::BF16(_), CpuStorage::BF16(_)) | (CpuStorage::F16(_), CpuStorage::F16(_)) => {
                let low = self.dtype();
                return self.through_f32("matmul", |a| a.matmul(&rhs.widen_operand("matmul", low)?, spec));
            }
            (a, b) if a.dtype() != b.dtype() => {
                return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() })
            }
            (a, _) => {
                return Err(Error::UnsupportedDType { op: "matmul", dtype: a.dtype(), expected: "a float dtype" })
            }
        })
    }

    fn strided_copy(&self, l: &StridedLayout) -> Result<Self> {
        Ok(map_any!(self, v => layout::cpu::strided_copy(v, l)?))
    }

    fn concat(parts: &[&Self], outer: usize, inners: &[usize]) -> Result<Self> {
        let dtype = parts.first().map(|p| p.dtype()).ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        macro_rules! cat {
            ($variant:ident) => {{
                let slices = parts
                    .iter()
                    .map(|p| match p {
                        CpuStorage::$variant(v) => Ok(v.as_slice()),
                        other => Err(Error::DTypeMismatch { op: "concat", lhs: dtype, rhs: other.dtype() }),
                    })
                    .collect::<Result<Vec<_>>>()?;
                CpuStorage::$variant(layout::cpu::concat(&slices, outer, inners)?)
            }};
        }
        Ok(match dtype {
            DType::F32 => cat!(F32),
            DType::F64 => cat!(F64),
            DType::BF16 => cat!(BF16),
            DType::F16 => cat!(F16),
            DType::I64 => cat!(I64),
        })
    }

    fn cast(&self, dtype: DType) -> Result<Self> {
        use num_traits::AsPrimitive;
        use rayon::prelude::*;
        fn conv<A: AsPrimitive<B> + Send + Sync, B: Copy + 'static + Send + Sync>(v: &[A]) -> Result<Vec<B>> {
            // Reserved fallibly first; the parallel extend then fills that capacity.
            let mut out = alloc::try_with_capacity("cast", v.len())?;
            if v.len() < PAR_MIN_LEN {
                out.extend(v.iter().map(|x| x.as_()));
            } else {
                out.par_extend(v.par_iter().with_min_len(PAR_MIN_LEN / 4).map(|x| x.as_()));
            }
            Ok(out)
        }
        if let Some(out) = low_precision::cast_low(self, dtype) {
            return out;
        }
        Ok(match (self, dtype) {
            (CpuStorage::F32(v), DType::F32) => CpuStorage::F32(conv(v)?),
            (CpuStorage::F32(v), DType::F64) => CpuStorage::F64(conv(v)?),
            (CpuStorage::F32(v), DType::I64) => CpuStorage::I64(conv(v)?),
            (CpuStorage::F64(v), DType::F32) => CpuStorage::F32(conv(v)?),
            (CpuStorage::F64(v), DType::F64) => CpuStorage::F64(conv(v)?),
            (CpuStorage::F64(v), DType::I64) => CpuStorage::I64(conv(v)?),
            (CpuStorage::I64(v), DType::F32) => CpuStorage::F32(conv(v)?),
            (CpuStorage::I64(v), DType::F64) => CpuStorage::F64(conv(v)?),
            (CpuStorage::I64(v), DType::I64) => CpuStorage::I64(conv(v)?),
            (from, to) => {
                return Err(Error::invalid("cast", format!("no conversion from {} to {to}", from.dtype())));
            }
        })
    }

    fn log_softmax(&self, rows: usize, cols: usize) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32("log_softmax", |x| x.log_softmax(rows, cols));
        }
        Ok(map_float!(self, "log_softmax", v => softmax::cpu::log_softmax(v, rows, cols)?))
    }

    fn conv2d(
        &self,
        kernel: &Self,
        bias: Option<&Self>,
        spec: &Conv2dSpec,
        activation: ConvActivation,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        if let Some(low) = self.low_precision() {
            // The bias in f32, then one rounding; the ReLU after it, as the unfused ops do
            // (the same bits: a negative sum that rounds to -0 stays -0 through `relu`).
            let (k, b) = (kernel.widen_operand(OP, low)?, Self::widen_opt(bias, OP, low)?);
            let y = self.through_f32(OP, |x| x.conv2d(&k, b.as_ref(), spec, ConvActivation::Identity))?;
            return match activation {
                ConvActivation::Identity => Ok(y),
                ConvActivation::Relu => y.unary(UnaryOp::Relu),
            };
        }
        Ok(float_kernel!(self, OP, T => conv::cpu::conv2d_activated::<T>(
            self.typed(OP)?,
            kernel.typed(OP)?,
            Self::typed_opt(bias, OP)?,
            spec,
            activation
        )?))
    }

    fn conv2d_backward_input(&self, kernel: &Self, spec: &Conv2dSpec) -> Result<Self> {
        const OP: &str = "conv2d_backward_input";
        if let Some(low) = self.low_precision() {
            let k = kernel.widen_operand(OP, low)?;
            return self.through_f32(OP, |dy| dy.conv2d_backward_input(&k, spec));
        }
        Ok(
            float_kernel!(self, OP, T => conv::cpu::conv2d_backward_input::<T>(self.typed(OP)?, kernel.typed(OP)?, spec)?),
        )
    }

    fn conv2d_backward_filter(&self, grad_out: &Self, spec: &Conv2dSpec) -> Result<Self> {
        const OP: &str = "conv2d_backward_filter";
        if let Some(low) = self.low_precision() {
            let dy = grad_out.widen_operand(OP, low)?;
            return self.through_f32(OP, |x| x.conv2d_backward_filter(&dy, spec));
        }
        Ok(float_kernel!(self, OP, T => conv::cpu::conv2d_backward_filter::<T>(
            self.typed(OP)?,
            grad_out.typed(OP)?,
            spec
        )?))
    }

    fn max_pool2d(&self, spec: &Pool2dSpec) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32("max_pool2d", |x| x.max_pool2d(spec));
        }
        Ok(float_kernel!(self, "max_pool2d", T => pool::cpu::max_pool2d::<T>(self.typed("max_pool2d")?, spec)?))
    }

    fn max_pool2d_backward(&self, output: &Self, grad_out: &Self, spec: &Pool2dSpec) -> Result<Self> {
        const OP: &str = "max_pool2d_backward";
        if let Some(low) = self.low_precision() {
            let (y, dy) = (output.widen_operand(OP, low)?, grad_out.widen_operand(OP, low)?);
            return self.through_f32(OP, |x| x.max_pool2d_backward(&y, &dy, spec));
        }
        Ok(float_kernel!(self, OP, T => pool::cpu::max_pool2d_backward::<T>(
            self.typed(OP)?,
            output.typed(OP)?,
            grad_out.typed(OP)?,
            spec
        )?))
    }

    fn avg_pool2d(&self, spec: &Pool2dSpec) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32("avg_pool2d", |x| x.avg_pool2d(spec));
        }
        Ok(float_kernel!(self, "avg_pool2d", T => pool::cpu::avg_pool2d::<T>(self.typed("avg_pool2d")?, spec)?))
    }

    fn avg_pool2d_backward(&self, spec: &Pool2dSpec) -> Result<Self> {
        const OP: &str = "avg_pool2d_backward";
        if self.low_precision().is_some() {
            return self.through_f32(OP, |dy| dy.avg_pool2d_backward(spec));
        }
        Ok(float_kernel!(self, OP, T => pool::cpu::avg_pool2d_backward::<T>(self.typed(OP)?, spec)?))
    }

    fn batch_norm_train(
        &self,
        gamma: Option<&Self>,
        beta: Option<&Self>,
        residual: Option<&Self>,
        spec: &BatchNormSpec,
    ) -> Result<(Self, Self, Self)> {
        const OP: &str = "batch_norm_train";
        Ok(float_kernel3!(self, OP, T => norm::cpu::batch_norm_train::<T>(
            self.typed(OP)?,
            Self::typed_opt(gamma, OP)?,
            Self::typed_opt(beta, OP)?,
            Self::typed_opt(residual, OP)?,
            spec
        )?))
    }

    fn batch_norm_backward(
        &self,
        grad_out: &Self,
        gamma: Option<&Self>,
        mean: &Self,
        var: &Self,
        output: Option<&Self>,
        spec: &BatchNormSpec,
    ) -> Result<BatchNormGrads<Self>> {
        const OP: &str = "batch_norm_backward";
        macro_rules! backward {
            ($t:ty, $variant:ident) => {{
                let (dx, d_gamma, d_beta, d_res) = norm::cpu::batch_norm_backward::<$t>(
                    self.typed(OP)?,
                    grad_out.typed(OP)?,
                    Self::typed_opt(gamma, OP)?,
                    mean.typed(OP)?,
                    var.typed(OP)?,
                    Self::typed_opt(output, OP)?,
                    spec,
                )?;
                let wrap = CpuStorage::$variant;
                Ok((wrap(dx), wrap(d_gamma), wrap(d_beta), d_res.map(wrap)))
            }};
        }
        match self.dtype() {
            DType::F32 => backward!(f32, F32),
            DType::F64 => backward!(f64, F64),
            dtype @ (DType::I64 | DType::BF16 | DType::F16) => Err(unsupported(OP, dtype)),
        }
    }

    fn gather_rows(&self, indices: &Self, row_len: usize) -> Result<Self> {
        const OP: &str = "gather";
        if self.low_precision().is_some() {
            return self.through_f32(OP, |x| x.gather_rows(indices, row_len));
        }
        let indices = indices.typed::<i64>(OP)?;
        Ok(float_kernel!(self, OP, T => gather::cpu::gather_rows::<T>(self.typed(OP)?, indices, row_len)?))
    }

    fn segment_sum_rows(&self, order: &Self, offsets: &Self, row_len: usize) -> Result<Self> {
        const OP: &str = "scatter_add";
        if self.low_precision().is_some() {
            // Sums in f32 and rounds once.
            return self.through_f32(OP, |v| v.segment_sum_rows(order, offsets, row_len));
        }
        let (order, offsets) = (order.typed::<i64>(OP)?, offsets.typed::<i64>(OP)?);
        Ok(float_kernel!(self, OP, T => gather::cpu::segment_sum_rows::<T>(self.typed(OP)?, order, offsets, row_len)?))
    }

    fn group_norm(
        &self,
        gamma: Option<&Self>,
        beta: Option<&Self>,
        spec: &GroupNormSpec,
    ) -> Result<(Self, Self, Self)> {
        const OP: &str = "group_norm";
        Ok(float_kernel3!(self, OP, T => group_norm::cpu::group_norm::<T>(
            self.typed(OP)?,
            Self::typed_opt(gamma, OP)?,
            Self::typed_opt(beta, OP)?,
            spec
        )?))
    }

    fn group_norm_backward(
        &self,
        grad_out: &Self,
        gamma: Option<&Self>,
        mean: &Self,
        rstd: &Self,
        spec: &GroupNormSpec,
    ) -> Result<(Self, Self, Self)> {
        const OP: &str = "group_norm_backward";
        Ok(float_kernel3!(self, OP, T => group_norm::cpu::group_norm_backward::<T>(
            self.typed(OP)?,
            grad_out.typed(OP)?,
            Self::typed_opt(gamma, OP)?,
            mean.typed(OP)?,
            rstd.typed(OP)?,
            spec
        )?))
    }

    fn sgd_update(&self, grad: &Self, velocity: Option<&Self>, step: &SgdStep) -> Result<(Self, Option<Self>)> {
        const OP: &str = "sgd_update";
        fn run<T: crate::FloatElement>(
            x: &CpuStorage,
            g: &CpuStorage,
            v: Option<&CpuStorage>,
            step: &SgdStep,
        ) -> Result<(CpuStorage, Option<CpuStorage>)> {
            let (value, velocity) =
                optim::cpu::sgd_update::<T>(x.typed(OP)?, g.typed(OP)?, CpuStorage::typed_opt(v, OP)?, step)?;
            Ok((T::into_storage(value), velocity.map(T::into_storage)))
        }
        match self.dtype() {
            DType::F32 => run::<f32>(self, grad, velocity, step),
            DType::F64 => run::<f64>(self, grad, velocity, step),
            dtype @ (DType::I64 | DType::BF16 | DType::F16) => Err(unsupported(OP, dtype)),
        }
    }

    fn adam_update(
        &self,
        grad: &Self,
        m: Option<&Self>,
        v: Option<&Self>,
        step: &AdamStep,
    ) -> Result<(Self, Self, Self)> {
        const OP: &str = "adam_update";
        Ok(float_kernel3!(self, OP, T => optim::cpu::adam_update::<T>(
            self.typed(OP)?,
            grad.typed(OP)?,
            Self::typed_opt(m, OP)?,
            Self::typed_opt(v, OP)?,
            step
        )?))
    }

    fn pad(&self, spec: &PadSpec) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32("pad", |x| x.pad(spec));
        }
        Ok(float_kernel!(self, "pad", T => pad::cpu::pad::<T>(self.typed("pad")?, spec)?))
    }

    fn pad_backward(&self, spec: &PadSpec) -> Result<Self> {
        const OP: &str = "pad_backward";
        if self.low_precision().is_some() {
            return self.through_f32(OP, |dy| dy.pad_backward(spec));
        }
        Ok(float_kernel!(self, OP, T => pad::cpu::pad_backward::<T>(self.typed(OP)?, spec)?))
    }

    fn resize(&self, spec: &ResizeSpec) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32("resize", |x| x.resize(spec));
        }
        Ok(float_kernel!(self, "resize", T => resize::cpu::resize::<T>(self.typed("resize")?, spec)?))
    }

    fn resize_backward(&self, spec: &ResizeSpec) -> Result<Self> {
        const OP: &str = "resize_backward";
        if self.low_precision().is_some() {
            return self.through_f32(OP, |dy| dy.resize_backward(spec));
        }
        Ok(float_kernel!(self, OP, T => resize::cpu::resize_backward::<T>(self.typed(OP)?, spec)?))
    }
}
