//! CUDA launch code of max and average pooling; the kernels are in `pool.cu`.

use crate::backend::Pool2dSpec;
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, index_width, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};
use cudarc::driver::DeviceRepr;

/// The pooling kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "pool", source: include_str!("pool.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    // bf16 and f16 load to f32, compute in f32 and round once (pool.cu).
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        for kind in ["max_pool2d", "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward"] {
            for index in ["u32", "u64"] {
                names.push(format!("{kind}_{index}_{}", dtype_suffix(dtype)));
            }
        }
    }
    names
}

/// `PoolGeom` of pool.cu. The bottom and right padding are implied by the output size.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    batch: u64,
    in_h: u64,
    in_w: u64,
    channels: u64,
    window_h: u64,
    window_w: u64,
    stride_h: u64,
    stride_w: u64,
    pad_top: u64,
    pad_left: u64,
    out_h: u64,
    out_w: u64,
}

// SAFETY: a #[repr(C)] struct of u64s, laid out as `PoolGeom` in pool.cu.
unsafe impl DeviceRepr for PoolGeom {}

impl PoolGeom {
    fn new(s: &Pool2dSpec) -> Self {
        let u = |v: usize| v as u64;
        PoolGeom {
            batch: u(s.batch),
            in_h: u(s.in_h),
            in_w: u(s.in_w),
            channels: u(s.channels),
            window_h: u(s.window_h),
            window_w: u(s.window_w),
            stride_h: u(s.stride_h),
            stride_w: u(s.stride_w),
            pad_top: u(s.pad_top),
            pad_left: u(s.pad_left),
            out_h: u(s.out_h),
            out_w: u(s.out_w),
        }
    }
}

fn input_len(s: &Pool2dSpec) -> usize {
    s.batch * s.in_h * s.in_w * s.channels
}

fn output_len(s: &Pool2dSpec) -> usize {
    s.batch * s.out_h * s.out_w * s.channels
}

/// The name of kernel `kind` for `dtype`, in the index width the geometry allows (every
/// index of a pooling is below the input's or the output's length).
fn kernel(kind: &str, dtype: DType, s: &Pool2dSpec) -> String {
    format!("{kind}_{}_{}", index_width(input_len(s).max(output_len(s))), dtype_suffix(dtype))
}

/// Checks the dtype (a float) and that each buffer has the length the geometry implies.
fn check(op: &'static str, buffers: &[(&CudaStorage, usize)], s: &Pool2dSpec) -> Result<DType> {
    let dtype = buffers[0].0.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64" });
    }
    for (b, len) in buffers {
        buffers[0].0.check_device(b, op)?;
        buffers[0].0.check_dtype(b, op)?;
        if b.len() != *len {
            return Err(Error::invalid(op, format!("a buffer of {} elements where {s:?} needs {len}", b.len())));
        }
    }
    Ok(dtype)
}

/// Forward pooling: `kind` is "max_pool2d" or "avg_pool2d".
fn forward(kind: &'static str, x: &CudaStorage, s: &Pool2dSpec) -> Result<CudaStorage> {
    let dtype = check(kind, &[(x, input_len(s))], s)?;
    let device = x.cuda_device();
    let n = output_len(s);
    let out = CudaStorage::alloc(device, n, dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let (src, dst, geom) = (x.ptr(), out.ptr(), PoolGeom::new(s));
    // Kernel signature: (const T* x, T* y, PoolGeom g).
    launch!(device, KERNELS, kernel(kind, dtype, s), elementwise_config(n); src, dst, geom);
    Ok(out)
}

pub(crate) fn max_pool2d(x: &CudaStorage, s: &Pool2dSpec) -> Result<CudaStorage> {
    forward("max_pool2d", x, s)
}

pub(crate) fn avg_pool2d(x: &CudaStorage, s: &Pool2dSpec) -> Result<CudaStorage> {
    forward("avg_pool2d", x, s)
}

pub(crate) fn max_pool2d_backward(
    x: &CudaStorage,
    y: &CudaStorage,
    dy: &CudaStorage,
    s: &Pool2dSpec,
) -> Result<CudaStorage> {
    const OP: &str = "max_pool2d_backward";
    let dtype = check(OP, &[(x, input_len(s)), (y, output_len(s)), (dy, output_len(s))], s)?;
    let device = x.cuda_device();
    let n = input_len(s);
    let dx = CudaStorage::alloc(device, n, dtype)?;
    if n == 0 {
        return Ok(dx);
    }
    let (px, py, pdy, pdx, geom) = (x.ptr(), y.ptr(), dy.ptr(), dx.ptr(), PoolGeom::new(s));
    // Kernel signature: (const T* x, const T* y, const T* dy, T* dx, PoolGeom g).
    launch!(device, KERNELS, kernel(OP, dtype, s), elementwise_config(n); px, py, pdy, pdx, geom);
    Ok(dx)
}

pub(crate) fn avg_pool2d_backward(dy: &CudaStorage, s: &Pool2dSpec) -> Result<CudaStorage> {
    const OP: &str = "avg_pool2d_backward";
    let dtype = check(OP, &[(dy, output_len(s))], s)?;
    let device = dy.cuda_device();
    let n = input_len(s);
    if output_len(s) == 0 {
        // No window: nothing flows back (and no kernel would read the empty gradient).
        return CudaStorage::zeros(device, n, dtype);
    }
    let dx = CudaStorage::alloc(device, n, dtype)?;
    if n == 0 {
        return Ok(dx);
    }
    let (pdy, pdx, geom) = (dy.ptr(), dx.ptr(), PoolGeom::new(s));
    // Kernel signature: (const T* dy, T* dx, PoolGeom g).
    launch!(device, KERNELS, kernel(OP, dtype, s), elementwise_config(n); pdy, pdx, geom);
    Ok(dx)
}
