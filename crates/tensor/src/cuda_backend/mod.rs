//! The CUDA backend (feature `cuda`): device buffers from a caching allocator, our
//! kernels compiled by NVRTC, cuBLAS for matrix products, cuDNN for convolutions.
//!
//! This file holds [`CudaStorage`] and routes each primitive of [`BackendStorage`] to its
//! launch code, which lives beside its op (`ops/<family>/cuda.rs`, with the `.cu` source
//! next to it). Everything is queued on the device's one stream without waiting; only
//! reading a buffer back to the host ([`CudaStorage::to_cpu`]) synchronises.
//!
//! bf16 and f16 buffers compute in f32 and round once, as on the CPU: our kernels
//! (elementwise, reductions, arg-reductions, pooling, gather and segment sums, padding,
//! resizing, each forward and backward) load two-byte elements to f32, compute exactly as
//! their f32 versions do, and round when they store, so a result is bit for bit the f32
//! op's on the widened input, rounded, without a widened copy or extra launches; matrix
//! products run in cuBLAS and convolutions in cuDNN with f32 accumulation. Only
//! log_softmax widens its operand to f32 on the device, runs the f32 op, and rounds its
//! result back ([`CudaStorage::through_f32`]): the losses that use it cast to f32 first
//! under mixed precision, so it is off a training step's path.
//! Normalizations and optimizer updates refuse them, as on the CPU.

pub(crate) mod allocator;
pub(crate) mod blas;
pub(crate) mod cpu_fallback;
pub(crate) mod cudnn;
pub(crate) mod device;
pub(crate) mod graph;
pub(crate) mod kernel_cache;
pub(crate) mod kernels;
pub mod raw;
pub(crate) mod staging;

use crate::backend::BatchNormGrads;
use crate::backend::GroupNormSpec;
use crate::backend::{
    ArgReduceOp, BackendStorage, BatchNormSpec, BinaryOp, Conv2dSpec, ConvActivation, MatmulSpec, Pool2dSpec, ReduceOp,
    StridedLayout, UnaryOp,
};
use crate::cpu_backend::CpuStorage;
use crate::ops::group_norm;
use crate::ops::optim::{AdamStep, SgdStep};
use crate::ops::pad::{self, PadSpec};
use crate::ops::resize::{self, ResizeSpec};
use crate::ops::{conv, elementwise, gather, layout, matmul, norm, optim, pool, reduce, softmax};
use crate::{DType, Device, Error, Result, Shape};
use allocator::Block;
use cudarc::driver::result as driver;
use device::CudaDevice;
use half::slice::HalfFloatSliceExt;
use std::sync::Arc;

/// Most dimensions a strided kernel takes after merging contiguous ones (`MAX_DIMS` in
/// `prelude.cuh`).
pub(crate) const MAX_DIMS: usize = 12;

/// Queues a kernel launch on a device's stream. The arguments must be local variables
/// (they are passed by address and must outlive the call) whose types match the kernel's
/// parameters in order: `u64` for pointers and sizes, the element type for scalars,
/// `#[repr(C)]` structs for the structs of the `.cu` source.
macro_rules! launch {
    ($device:expr, $source:expr, $name:expr, $cfg:expr; $($arg:ident),+ $(,)?) => {{
        let device: &$crate::cuda_backend::device::CudaDevice = $device;
        let name: &str = &$name;
        let function = device.function(&$source, name)?;
        let mut builder = device.stream().launch_builder(&function);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, &$arg); )+
        // SAFETY: the macro's callers pass arguments that match the kernel's signature (the
        // launch code sits next to the .cu source it calls), pointers to live buffers of
        // this device with room for every element the kernel indexes, and sizes that
        // describe those buffers. Buffers stay allocated until the kernel has run because
        // a freed block is only reused by work queued later on the same stream.
        unsafe { builder.launch($cfg) }
            .map_err(|e| $crate::Error::Cuda { device: device.device(), op: "cuLaunchKernel", msg: format!("{name}: {e}") })?;
    }};
}
pub(crate) use launch;

/// The bytes of a host buffer.
fn cpu_bytes(cpu: &CpuStorage) -> &[u8] {
    fn bytes<T: Copy>(v: &[T]) -> &[u8] {
        // SAFETY: f32, f64 and i64 have no padding and every byte of them is initialised;
        // the slice covers exactly the vector's elements and borrows it.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
    }
    match cpu {
        CpuStorage::F32(v) => bytes(v),
        CpuStorage::F64(v) => bytes(v),
        CpuStorage::BF16(v) => bytes(v),
        CpuStorage::F16(v) => bytes(v),
        CpuStorage::I64(v) => bytes(v),
    }
}

/// Refuses every dtype but f32 and f64, with the CPU's error: normalizations and optimizer
/// updates keep their statistics and variables in f32 under mixed precision (as in Keras),
/// so on both devices they refuse bf16 and f16 rather than compute them.
pub(crate) fn float_only(op: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        DType::BF16 | DType::F16 => {
            Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64; cast bf16 and f16 to f32 first" })
        }
        DType::I64 => Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64" }),
    }
}

/// A contiguous buffer of one dtype on one CUDA device.
pub struct CudaStorage {
    /// None for an empty buffer (no device memory).
    block: Option<Block>,
    len: usize,
    dtype: DType,
    device: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({} x {}, cuda:{})", self.len, self.dtype, self.device.ordinal())
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        if let Some(block) = &self.block {
            self.device.release(block);
        }
    }
}

impl CudaStorage {
    /// An uninitialised buffer of `len` elements; kernels fill it.
    pub(crate) fn alloc(device: &Arc<CudaDevice>, len: usize, dtype: DType) -> Result<CudaStorage> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            Error::invalid("cuda alloc", format!("{len} elements of {dtype} overflow the address space"))
        })?;
        let block = if bytes == 0 { None } else { Some(device.allocate(bytes)?) };
        Ok(CudaStorage { block, len, dtype, device: device.clone() })
    }

    /// A buffer of `len` zeros (all-zero bits are 0 for every dtype).
    pub(crate) fn zeros(device: &Arc<CudaDevice>, len: usize, dtype: DType) -> Result<CudaStorage> {
        let out = Self::alloc(device, len, dtype)?;
        if let Some(block) = &out.block {
            device.bind()?;
            // SAFETY: the block is live and at least len * size bytes long; the memset is
            // queued on the device's stream like every use of the buffer.
            unsafe { driver::memset_d8_async(block.ptr, 0, out.bytes(), device.stream().cu_stream()) }
                .map_err(|e| Error::cuda(device.device(), "cuMemsetD8Async", e))?;
        }
        Ok(out)
    }

    /// `len` copies of `value` converted to `dtype`, filled on CUDA device `ordinal` (queued).
    pub fn full(len: usize, value: f64, dtype: DType, ordinal: usize) -> Result<CudaStorage> {
        layout::cuda::fill(&CudaDevice::get(ordinal)?, len, value, dtype)
    }

    /// Uploads a host buffer to CUDA device `ordinal` (queued; does not wait).
    pub fn from_cpu(cpu: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        let device = CudaDevice::get(ordinal)?;
        let out = Self::alloc(&device, cpu.len(), cpu.dtype())?;
        if let Some(block) = &out.block {
            device.upload(cpu_bytes(cpu), block.ptr)?;
        }
        Ok(out)
    }

    /// Copies the buffer to the host, waiting for all work queued before.
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        self.device.refuse_while_capturing(&format!("reading {} x {} back to the host", self.len, self.dtype))?;
        let mut cpu = CpuStorage::zeros_for("copy to host", self.len, self.dtype)?;
        if let Some(block) = &self.block {
            self.device.bind()?;
            let stream = self.device.stream().cu_stream();
            // SAFETY: the host vector has len elements of the buffer's dtype; the copy is
            // queued after every kernel that writes the buffer, and the stream is
            // synchronised below before the vector is read or dropped.
            let copied = unsafe {
                match &mut cpu {
                    CpuStorage::F32(v) => driver::memcpy_dtoh_async(v, block.ptr, stream),
                    CpuStorage::F64(v) => driver::memcpy_dtoh_async(v, block.ptr, stream),
                    CpuStorage::I64(v) => driver::memcpy_dtoh_async(v, block.ptr, stream),
                    CpuStorage::BF16(v) => driver::memcpy_dtoh_async(v.reinterpret_cast_mut(), block.ptr, stream),
                    CpuStorage::F16(v) => driver::memcpy_dtoh_async(v.reinterpret_cast_mut(), block.ptr, stream),
                }
            };
            copied.map_err(|e| Error::cuda(self.device.device(), "cuMemcpyDtoHAsync", e))?;
            self.device.synchronize()?;
        }
        Ok(cpu)
    }

    /// A copy of the buffer on the same device (queued).
    pub(crate) fn copy(&self) -> Result<CudaStorage> {
        let out = Self::alloc(&self.device, self.len, self.dtype)?;
        if let (Some(src), Some(dst)) = (&self.block, &out.block) {
            self.device.bind()?;
            // SAFETY: both blocks are live and hold `bytes()` bytes; queued on the stream.
            unsafe { driver::memcpy_dtod_async(dst.ptr, src.ptr, self.bytes(), self.device.stream().cu_stream()) }
                .map_err(|e| Error::cuda(self.device.device(), "cuMemcpyDtoDAsync", e))?;
        }
        Ok(out)
    }

    /// The device address of the first element (0 for an empty buffer, which no kernel
    /// is launched on).
    pub(crate) fn ptr(&self) -> u64 {
        self.block.as_ref().map_or(0, |b| b.ptr)
    }

    /// Bytes of data (not of the rounded block).
    pub(crate) fn bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// The device holding the buffer.
    pub(crate) fn cuda_device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// The public name of the device.
    pub fn device(&self) -> Device {
        self.device.device()
    }

    /// Fails unless `other` lives on the same device.
    pub(crate) fn check_device(&self, other: &CudaStorage, op: &'static str) -> Result<()> {
        if self.device.ordinal() == other.device.ordinal() {
            Ok(())
        } else {
            Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: other.device() })
        }
    }

    /// Runs `f32_op` on this bf16/f16 buffer widened to f32 (exactly, on the device) and
    /// rounds its f32 result back to this buffer's dtype once: one cast kernel and an f32
    /// copy each way, so only ops off the training step's path (log_softmax) use it; the
    /// others have native 16-bit kernels. The CPU computes these ops the same way, so both
    /// devices agree wherever their f32 ops do.
    pub(crate) fn through_f32(&self, f32_op: impl FnOnce(&CudaStorage) -> Result<CudaStorage>) -> Result<CudaStorage> {
        f32_op(&self.cast(DType::F32)?)?.cast(self.dtype)
    }

    /// The dtype if it is bf16 or f16 (the dtypes computed through f32).
    fn low_precision(&self) -> Option<DType> {
        self.dtype.is_low_precision().then_some(self.dtype)
    }

    /// Fails unless `other` has the same dtype.
    pub(crate) fn check_dtype(&self, other: &CudaStorage, op: &'static str) -> Result<()> {
        if self.dtype == other.dtype {
            Ok(())
        } else {
            Err(Error::DTypeMismatch { op, lhs: self.dtype, rhs: other.dtype })
        }
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        elementwise::cuda::unary(self, op)
    }

    fn binary(&self, rhs: &Self, op: BinaryOp, lhs: &Shape, rhs_shape: &Shape, out: &Shape) -> Result<Self> {
        elementwise::cuda::binary(self, rhs, op, lhs, rhs_shape, out)
    }

    fn reduce(&self, op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<Self> {
        reduce::cuda::reduce(self, op, shape, axes)
    }

    fn arg_reduce(&self, op: ArgReduceOp, shape: &Shape, axis: usize) -> Result<Self> {
        reduce::cuda::arg_reduce(self, op, shape, axis)
    }

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self> {
        matmul::cuda::matmul(self, rhs, spec)
    }

    fn strided_copy(&self, layout: &StridedLayout) -> Result<Self> {
        layout::cuda::strided_copy(self, layout)
    }

    fn concat(parts: &[&Self], outer: usize, inners: &[usize]) -> Result<Self> {
        layout::cuda::concat(parts, outer, inners)
    }

    fn cast(&self, dtype: DType) -> Result<Self> {
        elementwise::cuda::cast(self, dtype)
    }

    fn log_softmax(&self, rows: usize, cols: usize) -> Result<Self> {
        if self.low_precision().is_some() {
            return self.through_f32(|x| softmax::cuda::log_softmax(x, rows, cols));
        }
        softmax::cuda::log_softmax(self, rows, cols)
    }

    // bf16 and f16 convolutions run in cuDNN with f32 accumulation, the bias and the
    // activation fused into the same call where cuDNN allows it (ops/conv/cuda.rs).
    fn conv2d(
        &self,
        kernel: &Self,
        bias: Option<&Self>,
        spec: &Conv2dSpec,
        activation: ConvActivation,
    ) -> Result<Self> {
        conv::cuda::conv2d(self, kernel, bias, spec, activation)
    }

    fn conv2d_backward_input(&self, kernel: &Self, spec: &Conv2dSpec) -> Result<Self> {
        conv::cuda::conv2d_backward_input(self, kernel, spec)
    }

    fn conv2d_backward_filter(&self, grad_out: &Self, spec: &Conv2dSpec) -> Result<Self> {
        conv::cuda::conv2d_backward_filter(self, grad_out, spec)
    }

    fn max_pool2d(&self, spec: &Pool2dSpec) -> Result<Self> {
        pool::cuda::max_pool2d(self, spec)
    }

    fn max_pool2d_backward(&self, output: &Self, grad_out: &Self, spec: &Pool2dSpec) -> Result<Self> {
        pool::cuda::max_pool2d_backward(self, output, grad_out, spec)
    }

    fn avg_pool2d(&self, spec: &Pool2dSpec) -> Result<Self> {
        pool::cuda::avg_pool2d(self, spec)
    }

    fn avg_pool2d_backward(&self, spec: &Pool2dSpec) -> Result<Self> {
        pool::cuda::avg_pool2d_backward(self, spec)
    }

    fn batch_norm_train(
        &self,
        gamma: Option<&Self>,
        beta: Option<&Self>,
        residual: Option<&Self>,
        spec: &BatchNormSpec,
    ) -> Result<(Self, Self, Self)> {
        norm::cuda::batch_norm_train(self, gamma, beta, residual, spec)
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
        norm::cuda::batch_norm_backward(self, grad_out, gamma, mean, var, output, spec)
    }

    fn gather_rows(&self, indices: &Self, row_len: usize) -> Result<Self> {
        gather::cuda::gather_rows(self, indices, row_len)
    }

    fn segment_sum_rows(&self, order: &Self, offsets: &Self, row_len: usize) -> Result<Self> {
        gather::cuda::segment_sum_rows(self, order, offsets, row_len)
    }

    fn group_norm(
        &self,
        gamma: Option<&Self>,
        beta: Option<&Self>,
        spec: &GroupNormSpec,
    ) -> Result<(Self, Self, Self)> {
        group_norm::cuda::group_norm(self, gamma, beta, spec)
    }

    fn group_norm_backward(
        &self,
        grad_out: &Self,
        gamma: Option<&Self>,
        mean: &Self,
        rstd: &Self,
        spec: &GroupNormSpec,
    ) -> Result<(Self, Self, Self)> {
        group_norm::cuda::group_norm_backward(self, grad_out, gamma, mean, rstd, spec)
    }

    fn sgd_update(&self, grad: &Self, velocity: Option<&Self>, step: &SgdStep) -> Result<(Self, Option<Self>)> {
        optim::cuda::sgd_update(self, grad, velocity, step)
    }

    fn adam_update(
        &self,
        grad: &Self,
        m: Option<&Self>,
        v: Option<&Self>,
        step: &AdamStep,
    ) -> Result<(Self, Self, Self)> {
        optim::cuda::adam_update(self, grad, m, v, step)
    }

    fn pad(&self, spec: &PadSpec) -> Result<Self> {
        pad::cuda::pad(self, spec)
    }

    fn pad_backward(&self, spec: &PadSpec) -> Result<Self> {
        pad::cuda::pad_backward(self, spec)
    }

    fn resize(&self, spec: &ResizeSpec) -> Result<Self> {
        resize::cuda::resize(self, spec)
    }

    fn resize_backward(&self, spec: &ResizeSpec) -> Result<Self> {
        resize::cuda::resize_backward(self, spec)
    }
}
