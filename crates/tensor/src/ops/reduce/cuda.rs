//! CUDA launch code of the reductions; the kernels are in `reduce.cu`.
//!
//! A reduction runs as the same `[outer, r, inner]` passes as on the CPU
//! ([`reduce_passes`]). A pass whose output is too small to keep the GPU busy (a long row,
//! a column sum) is split: the first launch reduces chunks of `r` into partial results,
//! a second launch reduces those.

use super::{reduce_passes, ReducePass};
use crate::backend::{ArgReduceOp, ReduceOp};
use crate::cuda_backend::kernels::{
    block_per_task_config, dtype_suffix, elementwise_config, threads_for_row, KernelSource, BLOCK,
};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result, Shape};

/// The reduction kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "reduce", source: include_str!("reduce.cu") };

/// Blocks worth launching before splitting rows further (a few per SM on large GPUs).
const ROW_TASKS: usize = 2048;
/// Fewest elements a row chunk gets (several per thread of a block).
const MIN_ROW_CHUNK: usize = 2048;
/// Threads worth launching before splitting columns further: about what an H100 keeps
/// resident (132 SMs x 2,048 threads), so a column sum fills the GPU rather than a quarter
/// of an A100. The split depends only on the shape, so results stay deterministic.
const COLUMN_THREADS: usize = 1 << 18;
/// Fewest rows a column chunk gets.
const MIN_COLUMN_CHUNK: usize = 64;

fn op_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
    }
}

fn reduce_kernel(kind: &str, op: ReduceOp, dtype: DType) -> String {
    format!("reduce_{kind}_{}_{}", op_name(op), dtype_suffix(dtype))
}

fn arg_kernel(op: ArgReduceOp, dtype: DType) -> String {
    let name = match op {
        ArgReduceOp::ArgMax => "argmax",
        ArgReduceOp::ArgMin => "argmin",
    };
    format!("{name}_{}", dtype_suffix(dtype))
}

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            names.push(reduce_kernel("rows", op, dtype));
            names.push(reduce_kernel("cols", op, dtype));
        }
        names.push(arg_kernel(ArgReduceOp::ArgMax, dtype));
        names.push(arg_kernel(ArgReduceOp::ArgMin, dtype));
    }
    names
}

/// Into how many chunks to split `r` so that `outputs` results make about `target`
/// parallel tasks, with chunks of at least `min_chunk`: (chunk length, number of chunks).
fn split(outputs: usize, r: usize, target: usize, min_chunk: usize) -> (usize, usize) {
    let wanted = target.div_ceil(outputs.max(1)).min(r.div_ceil(min_chunk)).max(1);
    let chunk = r.div_ceil(wanted);
    (chunk, r.div_ceil(chunk))
}

pub(crate) fn reduce(x: &CudaStorage, op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<CudaStorage> {
    if x.len() != shape.elem_count() {
        return Err(Error::ElementCount { op: "reduce", len: x.len(), shape: shape.clone() });
    }
    let passes = reduce_passes(shape, axes);
    if passes.is_empty() {
        // Every reduced axis has size 1 (a copy), or the input is empty (sums of nothing).
        let out_len = shape.keepdims(axes).elem_count();
        return if x.is_empty() { CudaStorage::zeros(x.cuda_device(), out_len, x.dtype()) } else { x.copy() };
    }
    let mut current: Option<CudaStorage> = None;
    for pass in passes {
        let next = reduce_pass(current.as_ref().unwrap_or(x), op, pass)?;
        current = Some(next);
    }
    current.ok_or_else(|| Error::invalid("reduce", "no reduction pass ran"))
}

/// `[outer, r, inner] -> [outer, inner]`.
fn reduce_pass(x: &CudaStorage, op: ReduceOp, p: ReducePass) -> Result<CudaStorage> {
    let (device, dtype) = (x.cuda_device(), x.dtype());
    let outputs = p.outer * p.inner;
    if outputs == 0 || p.r == 0 {
        // No outputs, or sums over an empty axis (max/min of nothing is rejected earlier).
        return CudaStorage::zeros(device, outputs, dtype);
    }
    let out = CudaStorage::alloc(device, outputs, dtype)?;
    let (outer, r, inner) = (p.outer as u64, p.r as u64, p.inner as u64);
    if p.inner == 1 {
        let rows_kernel = reduce_kernel("rows", op, dtype);
        let (chunk, chunks) =
            if p.outer >= ROW_TASKS { (p.r, 1) } else { split(p.outer, p.r, ROW_TASKS, MIN_ROW_CHUNK) };
        let (src, dst, rows) = (x.ptr(), out.ptr(), outer);
        // Kernel signature: (const T* x, T* out, u64 rows, u64 r, u64 chunk, u64 chunks).
        if chunks == 1 {
            let (chunk64, one) = (r, 1u64);
            let cfg = block_per_task_config(p.outer, threads_for_row(p.r));
            launch!(device, KERNELS, rows_kernel, cfg; src, dst, rows, r, chunk64, one);
        } else {
            let partial = CudaStorage::alloc(device, p.outer * chunks, dtype)?;
            let (tmp, chunk64, chunks64, one) = (partial.ptr(), chunk as u64, chunks as u64, 1u64);
            let cfg = block_per_task_config(p.outer * chunks, BLOCK);
            launch!(device, KERNELS, rows_kernel, cfg; src, tmp, rows, r, chunk64, chunks64);
            let cfg = block_per_task_config(p.outer, threads_for_row(chunks));
            launch!(device, KERNELS, rows_kernel, cfg; tmp, dst, rows, chunks64, chunks64, one);
        }
    } else {
        let cols_kernel = reduce_kernel("cols", op, dtype);
        let (chunk, chunks) = if outputs >= COLUMN_THREADS || p.r < 2 * MIN_COLUMN_CHUNK {
            (p.r, 1)
        } else {
            split(outputs, p.r, COLUMN_THREADS, MIN_COLUMN_CHUNK)
        };
        let (src, dst) = (x.ptr(), out.ptr());
        // Kernel signature: (const T* x, T* out, u64 outer, u64 r, u64 inner, u64 chunk, u64 chunks).
        if chunks == 1 {
            let (chunk64, one) = (r, 1u64);
            launch!(device, KERNELS, cols_kernel, elementwise_config(outputs); src, dst, outer, r, inner, chunk64, one);
        } else {
            let partial = CudaStorage::alloc(device, outputs * chunks, dtype)?;
            let (tmp, chunk64, chunks64, one) = (partial.ptr(), chunk as u64, chunks as u64, 1u64);
            let cfg = elementwise_config(outputs * chunks);
            launch!(device, KERNELS, cols_kernel, cfg; src, tmp, outer, r, inner, chunk64, chunks64);
            let cfg = elementwise_config(outputs);
            launch!(device, KERNELS, cols_kernel, cfg; tmp, dst, outer, chunks64, inner, chunks64, one);
        }
    }
    Ok(out)
}

pub(crate) fn arg_reduce(x: &CudaStorage, op: ArgReduceOp, shape: &Shape, axis: usize) -> Result<CudaStorage> {
    let dims = shape.dims();
    if axis >= dims.len() || x.len() != shape.elem_count() {
        return Err(Error::AxisOutOfRange { op: "arg_reduce", axis: axis as isize, shape: shape.clone() });
    }
    let (outer, r, inner) =
        (dims[..axis].iter().product::<usize>(), dims[axis], dims[axis + 1..].iter().product::<usize>());
    if r == 0 {
        return Err(Error::invalid("arg_reduce", format!("axis {axis} of shape {shape} is empty")));
    }
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, outer * inner, DType::I64)?;
    if outer * inner == 0 {
        return Ok(out);
    }
    let (src, dst, outer64, r64, inner64) = (x.ptr(), out.ptr(), outer as u64, r as u64, inner as u64);
    // Kernel signature: (const T* x, i64* out, u64 outer, u64 r, u64 inner).
    launch!(device, KERNELS, arg_kernel(op, x.dtype()), elementwise_config(outer * inner); src, dst, outer64, r64, inner64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_cover_the_axis_without_empty_chunks() {
        for (outputs, r) in [(1, 10_000_000), (3, 5000), (1, 2049), (100, 1 << 20)] {
            let (chunk, chunks) = split(outputs, r, 2048, 2048);
            assert!(chunk * chunks >= r && chunk * (chunks - 1) < r, "{outputs} {r}: {chunk} x {chunks}");
        }
        assert_eq!(split(1, 100, 2048, 2048), (100, 1));
    }
}
