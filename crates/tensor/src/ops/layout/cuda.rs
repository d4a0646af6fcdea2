//! CUDA launch code of the layout ops; the kernels are in `layout.cu`.

use crate::backend::StridedLayout;
use crate::cuda_backend::device::CudaDevice;
use crate::cuda_backend::kernels::{elementwise_config, index_width, KernelSource};
use crate::cuda_backend::{launch, CudaStorage, MAX_DIMS};
use crate::utilities::coalesce::coalesce;
use crate::{BackendStorage, DType, Error, Result};
use cudarc::driver::DeviceRepr;
use std::sync::Arc;

/// The layout kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "layout", source: include_str!("layout.cu") };

/// Layout kernels only move bits: one per element size.
fn width(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        2 => "b16",
        4 => "b32",
        _ => "b64",
    }
}

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    ["b16", "b32", "b64"]
        .iter()
        .flat_map(|w| {
            let indexed = ["u32", "u64"]
                .iter()
                .flat_map(move |i| [format!("strided_copy_{i}_{w}"), format!("concat_part_{i}_{w}")]);
            indexed.chain([format!("fill_{w}")])
        })
        .collect()
}

/// The strided view: dims and strides innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct StridedMeta {
    rank: u64,
    offset: u64,
    dims: [u64; MAX_DIMS],
    strides: [u64; MAX_DIMS],
}

// SAFETY: a #[repr(C)] struct of u64s, laid out as `StridedMeta` in layout.cu.
unsafe impl DeviceRepr for StridedMeta {}

pub(crate) fn strided_copy(x: &CudaStorage, l: &StridedLayout) -> Result<CudaStorage> {
    let n = l.shape.elem_count();
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, n, x.dtype())?;
    if n == 0 {
        return Ok(out);
    }
    let (dims, strides, _) = coalesce(l.shape.dims(), std::slice::from_ref(&l.strides));
    if dims.len() > MAX_DIMS {
        return Err(Error::invalid(
            "strided_copy",
            format!("a view of shape {} needs {} dimensions on CUDA (at most {MAX_DIMS})", l.shape, dims.len()),
        ));
    }
    // The furthest element read must lie inside the buffer (the CPU would panic instead).
    let last = l.offset + dims.iter().zip(&strides).map(|(d, s)| (d - 1) * s).sum::<usize>();
    if last >= x.len() {
        return Err(Error::invalid(
            "strided_copy",
            format!("view of shape {} reads element {last} of a buffer of {}", l.shape, x.len()),
        ));
    }
    let mut meta =
        StridedMeta { rank: dims.len() as u64, offset: l.offset as u64, dims: [1; MAX_DIMS], strides: [0; MAX_DIMS] };
    for (i, d) in (0..dims.len()).rev().enumerate() {
        meta.dims[i] = dims[d] as u64;
        meta.strides[i] = strides[d] as u64;
    }
    let (src, dst, n64) = (x.ptr(), out.ptr(), n as u64);
    // Kernel signature: (const T* x, T* y, u64 n, StridedMeta m).
    // Every index is below n (the output) or x.len() (the source buffer, checked above).
    let name = format!("strided_copy_{}_{}", index_width(n.max(x.len())), width(x.dtype()));
    launch!(device, KERNELS, name, elementwise_config(n); src, dst, n64, meta);
    Ok(out)
}

pub(crate) fn concat(parts: &[&CudaStorage], outer: usize, inners: &[usize]) -> Result<CudaStorage> {
    let first = *parts.first().ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
    if parts.len() != inners.len() {
        return Err(Error::invalid("concat", format!("{} buffers but {} sizes", parts.len(), inners.len())));
    }
    for (p, &inner) in parts.iter().zip(inners) {
        first.check_device(p, "concat")?;
        first.check_dtype(p, "concat")?;
        if p.len() != outer * inner {
            return Err(Error::invalid("concat", format!("a part of {} elements is not [{outer}, {inner}]", p.len())));
        }
    }
    let total: usize = inners.iter().sum();
    let device = first.cuda_device();
    let out = CudaStorage::alloc(device, outer * total, first.dtype())?;
    // Every index is below outer * total (the output).
    let name = format!("concat_part_{}_{}", index_width(outer * total), width(first.dtype()));
    let mut col = 0usize;
    for (p, &inner) in parts.iter().zip(inners) {
        if outer * inner > 0 {
            let (src, dst) = (p.ptr(), out.ptr());
            let (outer64, inner64, total64, col64) = (outer as u64, inner as u64, total as u64, col as u64);
            // Kernel signature: (const T* src, T* dst, u64 outer, u64 inner, u64 total, u64 col).
            launch!(device, KERNELS, name, elementwise_config(outer * inner); src, dst, outer64, inner64, total64, col64);
        }
        col += inner;
    }
    Ok(out)
}

/// A buffer of `len` copies of `value` converted to `dtype` (as `CpuStorage::full` converts).
pub(crate) fn fill(device: &Arc<CudaDevice>, len: usize, value: f64, dtype: DType) -> Result<CudaStorage> {
    let bits: u64 = match dtype {
        DType::F32 => (value as f32).to_bits() as u64,
        DType::F64 => value.to_bits(),
        DType::I64 => (value as i64) as u64,
        DType::BF16 => crate::dtype::bf16_from_f64(value).to_bits() as u64,
        DType::F16 => crate::dtype::f16_from_f64(value).to_bits() as u64,
    };
    if bits == 0 || len == 0 {
        return CudaStorage::zeros(device, len, dtype);
    }
    let out = CudaStorage::alloc(device, len, dtype)?;
    let (dst, n) = (out.ptr(), len as u64);
    let cfg = elementwise_config(len);
    // Kernel signature: (T* y, u64 n, T bits) with T = u16, u32 or u64.
    match dtype.size_in_bytes() {
        2 => {
            let bits = bits as u16;
            launch!(device, KERNELS, "fill_b16", cfg; dst, n, bits);
        }
        4 => {
            let bits = bits as u32;
            launch!(device, KERNELS, "fill_b32", cfg; dst, n, bits);
        }
        _ => launch!(device, KERNELS, "fill_b64", cfg; dst, n, bits),
    }
    Ok(out)
}
