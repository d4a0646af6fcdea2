//! CUDA launch code of resizing; the kernels are in `resize.cu`.

use super::{Interpolation, ResizeSpec};
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};
use cudarc::driver::DeviceRepr;

/// The resize kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "resize", source: include_str!("resize.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    ["resize", "resize_backward"]
        .iter()
        .flat_map(|k| [DType::F32, DType::F64, DType::BF16, DType::F16].map(|d| format!("{k}_{}", dtype_suffix(d))))
        .collect()
}

/// `ResizeGeom` of resize.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ResizeGeom {
    batch: u64,
    in_h: u64,
    in_w: u64,
    channels: u64,
    factor_h: u64,
    factor_w: u64,
    bilinear: u64,
}

// SAFETY: a #[repr(C)] struct of u64s, laid out as `ResizeGeom` in resize.cu.
unsafe impl DeviceRepr for ResizeGeom {}

impl ResizeGeom {
    fn new(s: &ResizeSpec) -> Self {
        let u = |v: usize| v as u64;
        ResizeGeom {
            batch: u(s.batch),
            in_h: u(s.in_h),
            in_w: u(s.in_w),
            channels: u(s.channels),
            factor_h: u(s.factor_h),
            factor_w: u(s.factor_w),
            bilinear: u64::from(s.interpolation == Interpolation::Bilinear),
        }
    }
}

fn input_len(s: &ResizeSpec) -> usize {
    s.batch * s.in_h * s.in_w * s.channels
}

fn output_len(s: &ResizeSpec) -> usize {
    s.batch * s.out_h() * s.out_w() * s.channels
}

/// One launch of `kind` ("resize" or "resize_backward") from a buffer of `from` elements
/// into a new one of `to` (a thread per element of the new one).
fn run(kind: &'static str, x: &CudaStorage, s: &ResizeSpec, from: usize, to: usize) -> Result<CudaStorage> {
    let dtype = x.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op: kind, dtype, expected: "f32 or f64" });
    }
    if x.len() != from {
        return Err(Error::invalid(kind, format!("a buffer of {} elements where {s:?} needs {from}", x.len())));
    }
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, to, dtype)?;
    if to == 0 {
        return Ok(out);
    }
    let (src, dst, geom) = (x.ptr(), out.ptr(), ResizeGeom::new(s));
    // Kernel signature: (const T* src, T* dst, ResizeGeom g).
    launch!(device, KERNELS, format!("{kind}_{}", dtype_suffix(dtype)), elementwise_config(to); src, dst, geom);
    Ok(out)
}

pub(crate) fn resize(x: &CudaStorage, s: &ResizeSpec) -> Result<CudaStorage> {
    run("resize", x, s, input_len(s), output_len(s))
}

pub(crate) fn resize_backward(dy: &CudaStorage, s: &ResizeSpec) -> Result<CudaStorage> {
    run("resize_backward", dy, s, output_len(s), input_len(s))
}
