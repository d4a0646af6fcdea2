//! CUDA launch code of log_softmax; the kernel is in `softmax.cu`.

use crate::cuda_backend::kernels::{block_per_task_config, dtype_suffix, threads_for_row, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The softmax kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "softmax", source: include_str!("softmax.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    vec!["log_softmax_f32".into(), "log_softmax_f64".into()]
}

pub(crate) fn log_softmax(x: &CudaStorage, rows: usize, cols: usize) -> Result<CudaStorage> {
    let dtype = x.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op: "log_softmax", dtype, expected: "f32 or f64" });
    }
    if rows * cols != x.len() {
        return Err(Error::invalid("log_softmax", format!("{} elements are not [{rows}, {cols}]", x.len())));
    }
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, x.len(), dtype)?;
    if x.is_empty() {
        return Ok(out);
    }
    let (src, dst, rows64, cols64) = (x.ptr(), out.ptr(), rows as u64, cols as u64);
    let cfg = block_per_task_config(rows, threads_for_row(cols));
    // Kernel signature: (const T* x, T* y, u64 rows, u64 cols).
    launch!(device, KERNELS, format!("log_softmax_{}", dtype_suffix(dtype)), cfg; src, dst, rows64, cols64);
    Ok(out)
}
