//! CUDA launch code of gather and of the segmented row sum under scatter_add; the kernels
//! are in `gather.cu`.

use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The gather kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "gather", source: include_str!("gather.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    // bf16 and f16 load to f32, sum in f32 and round once (gather.cu).
    let dtypes = [DType::F32, DType::F64, DType::BF16, DType::F16];
    ["gather_rows", "segment_sum_rows"]
        .iter()
        .flat_map(|k| dtypes.map(|d| format!("{k}_{}", dtype_suffix(d))))
        .collect()
}

fn check_operands(op: &'static str, data: &CudaStorage, index_buffers: &[&CudaStorage]) -> Result<()> {
    if !data.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: data.dtype(), expected: "f32 or f64" });
    }
    for b in index_buffers {
        data.check_device(b, op)?;
        if b.dtype() != DType::I64 {
            return Err(Error::UnsupportedDType { op, dtype: b.dtype(), expected: "i64 indices" });
        }
    }
    Ok(())
}

pub(crate) fn gather_rows(table: &CudaStorage, indices: &CudaStorage, row_len: usize) -> Result<CudaStorage> {
    const OP: &str = "gather";
    check_operands(OP, table, &[indices])?;
    let len = indices.len().checked_mul(row_len).ok_or_else(|| Error::invalid(OP, "output size overflows"))?;
    let device = table.cuda_device();
    let out = CudaStorage::alloc(device, len, table.dtype())?;
    if len == 0 {
        return Ok(out);
    }
    let rows = (table.len() / row_len) as u64;
    let (src, idx, dst, n, row_len64) = (table.ptr(), indices.ptr(), out.ptr(), indices.len() as u64, row_len as u64);
    // Kernel signature: (const T* table, const i64* indices, T* out, u64 n, u64 rows, u64 row_len).
    launch!(device, KERNELS, format!("gather_rows_{}", dtype_suffix(table.dtype())), elementwise_config(len);
        src, idx, dst, n, rows, row_len64);
    Ok(out)
}

pub(crate) fn segment_sum_rows(
    values: &CudaStorage,
    order: &CudaStorage,
    offsets: &CudaStorage,
    row_len: usize,
) -> Result<CudaStorage> {
    const OP: &str = "scatter_add";
    check_operands(OP, values, &[order, offsets])?;
    let segments = offsets.len().saturating_sub(1);
    let len = segments.checked_mul(row_len).ok_or_else(|| Error::invalid(OP, "output size overflows"))?;
    let device = values.cuda_device();
    let out = CudaStorage::alloc(device, len, values.dtype())?;
    if len == 0 {
        return Ok(out);
    }
    let (src, ord, off, dst) = (values.ptr(), order.ptr(), offsets.ptr(), out.ptr());
    let (segments64, row_len64) = (segments as u64, row_len as u64);
    // Kernel signature: (const T* values, const i64* order, const i64* offsets, T* out,
    // u64 segments, u64 row_len).
    launch!(device, KERNELS, format!("segment_sum_rows_{}", dtype_suffix(values.dtype())), elementwise_config(len);
        src, ord, off, dst, segments64, row_len64);
    Ok(out)
}
