//! CUDA launch code of the reductions; the kernels are in `reduce.cu`.
//!
//! A reduction runs as the same `[outer, r, inner]` passes as on the CPU
//! ([`reduce_passes`]). A pass whose output is too small to keep the GPU busy (a long row,
//! a column sum) is split: the first launch reduces chunks of `r` into partial results,
//! a second launch reduces those.
//!
//! bf16 and f16 run natively: the kernels load two-byte elements to f32 and combine in
//! f32; every partial result between launches and passes is kept in f32 (as the f32
//! reduction keeps it) and only the last launch rounds, once. So a 16-bit reduction is
//! bit for bit the f32 reduction of the widened input, rounded, as on the CPU.

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

/// The kernel of `kind` ("rows" or "cols") reading `from` and writing `to`:
/// `reduce_<kind>_<op>_<from>`, or `..._<from>_<to>` where they differ.
fn reduce_kernel(kind: &str, op: ReduceOp, from: DType, to: DType) -> String {
    let types = if from == to {
        dtype_suffix(from).to_string()
    } else {
        format!("{}_{}", dtype_suffix(from), dtype_suffix(to))
    };
    format!("reduce_{kind}_{}_{types}", op_name(op))
}

/// The dtype a reduction of `dtype` keeps its partial results in (f32 for bf16 and f16).
fn work_dtype(dtype: DType) -> DType {
    if dtype.is_low_precision() {
        DType::F32
    } else {
        dtype
    }
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
    for dtype in [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16] {
        let work = work_dtype(dtype);
        // One launch; and for 16-bit dtypes, into and out of f32 partial results.
        let mut pairs = vec![(dtype, dtype)];
        if work != dtype {
            pairs.extend([(dtype, work), (work, dtype)]);
        }
        for (from, to) in pairs {
            for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                names.push(reduce_kernel("rows", op, from, to));
                names.push(reduce_kernel("cols", op, from, to));
            }
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
    let dtype = x.dtype();
    let passes = reduce_passes(shape, axes);
    if passes.is_empty() {
        // Every reduced axis has size 1 (a copy), or the input is empty (sums of nothing).
        let out_len = shape.keepdims(axes).elem_count();
        if x.is_empty() {
            return CudaStorage::zeros(x.cuda_device(), out_len, dtype);
        }
        if dtype.is_low_precision() {
            // A 16-bit "copy" widens and rounds each element as the CPU does (a signaling
            // NaN comes back quiet): a max over axes of size 1 (-inf identity, so -0 and
            // every other value pass unchanged).
            let pass = ReducePass { outer: 1, r: 1, inner: x.len() };
            return reduce_pass(x, ReduceOp::Max, pass, dtype);
        }
        return x.copy();
    }
    let last = passes.len() - 1;
    let mut current: Option<CudaStorage> = None;
    for (i, pass) in passes.into_iter().enumerate() {
        // Results between passes keep the work dtype (f32 for bf16 and f16); the last rounds.
        let to = if i == last { dtype } else { work_dtype(dtype) };
        let next = reduce_pass(current.as_ref().unwrap_or(x), op, pass, to)?;
        current = Some(next);
    }
    current.ok_or_else(|| Error::invalid("reduce", "no reduction pass ran"))
}

/// `[outer, r, inner] -> [outer, inner]`, from `x`'s dtype into a new buffer of `to`;
/// partial results of a split pass are kept in the work dtype.
fn reduce_pass(x: &CudaStorage, op: ReduceOp, p: ReducePass, to: DType) -> Result<CudaStorage> {
    let (device, from) = (x.cuda_device(), x.dtype());
    let work = work_dtype(from);
    let outputs = p.outer * p.inner;
    if outputs == 0 || p.r == 0 {
        // No outputs, or sums over an empty axis (max/min of nothing is rejected earlier).
        return CudaStorage::zeros(device, outputs, to);
    }
    let out = CudaStorage::alloc(device, outputs, to)?;
    let (outer, r, inner) = (p.outer as u64, p.r as u64, p.inner as u64);
    if p.inner == 1 {
        let kernel = |from, to| reduce_kernel("rows", op, from, to);
        let (chunk, chunks) =
            if p.outer >= ROW_TASKS { (p.r, 1) } else { split(p.outer, p.r, ROW_TASKS, MIN_ROW_CHUNK) };
        let (src, dst, rows) = (x.ptr(), out.ptr(), outer);
        // Kernel signature: (const T* x, T* out, u64 rows, u64 r, u64 chunk, u64 chunks).
        if chunks == 1 {
            let (chunk64, one) = (r, 1u64);
            let cfg = block_per_task_config(p.outer, threads_for_row(p.r));
            launch!(device, KERNELS, kernel(from, to), cfg; src, dst, rows, r, chunk64, one);
        } else {
            let partial = CudaStorage::alloc(device, p.outer * chunks, work)?;
            let (tmp, chunk64, chunks64, one) = (partial.ptr(), chunk as u64, chunks as u64, 1u64);
            let cfg = block_per_task_config(p.outer * chunks, BLOCK);
            launch!(device, KERNELS, kernel(from, work), cfg; src, tmp, rows, r, chunk64, chunks64);
            let cfg = block_per_task_config(p.outer, threads_for_row(chunks));
            launch!(device, KERNELS, kernel(work, to), cfg; tmp, dst, rows, chunks64, chunks64, one);
        }
    } else {
        let kernel = |from, to| reduce_kernel("cols", op, from, to);
        let (chunk, chunks) = if outputs >= COLUMN_THREADS || p.r < 2 * MIN_COLUMN_CHUNK {
            (p.r, 1)
        } else {
            split(outputs, p.r, COLUMN_THREADS, MIN_COLUMN_CHUNK)
        };
        let (src, dst) = (x.ptr(), out.ptr());
        // Kernel signature: (const T* x, T* out, u64 outer, u64 r, u64 inner, u64 chunk, u64 chunks).
        if chunks == 1 {
            let (chunk64, one) = (r, 1u64);
            let cfg = elementwise_config(outputs);
            launch!(device, KERNELS, kernel(from, to), cfg; src, dst, outer, r, inner, chunk64, one);
        } else {
            let partial = CudaStorage::alloc(device, outputs * chunks, work)?;
            let (tmp, chunk64, chunks64, one) = (partial.ptr(), chunk as u64, chunks as u64, 1u64);
            let cfg = elementwise_config(outputs * chunks);
            launch!(device, KERNELS, kernel(from, work), cfg; src, tmp, outer, r, inner, chunk64, chunks64);
            let cfg = elementwise_config(outputs);
            launch!(device, KERNELS, kernel(work, to), cfg; tmp, dst, outer, chunks64, inner, chunks64, one);
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
