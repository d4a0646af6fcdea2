//! CUDA launch code of batch normalization; the kernels are in `norm.cu`.
//!
//! Each pass is three launches queued on the stream, with no host synchronisation and no
//! allocation outside the caching allocator (capture-safe): block partial statistics, a
//! per-channel merge (a block per channel; it also folds gamma and beta into a scale and
//! shift, or the backward pass into three coefficients), and an elementwise pass that also
//! applies the epilogue (ReLU, residual add).

use crate::backend::{BatchNormEpilogue, BatchNormGrads, BatchNormSpec};
use crate::cuda_backend::kernels::{
    block_per_task_config, dtype_suffix, elementwise_config, index_width, KernelSource,
};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The batch-norm kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "norm", source: include_str!("norm.cu") };

/// Rows per partial block (`BN_BLOCK_ROWS` in norm.cu).
const BLOCK_ROWS: usize = 256;
/// Threads of a per-channel merge block (`BN_MERGE_THREADS` in norm.cu).
const MERGE_THREADS: u32 = 128;

const KINDS: [&str; 4] = ["bn_partial_moments", "bn_merge_moments", "bn_backward_partial", "bn_backward_merge"];
/// The elementwise passes, each in a 32- and a 64-bit index variant.
const INDEXED_KINDS: [&str; 2] = ["bn_scale_shift", "bn_backward_apply"];

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    [DType::F32, DType::F64]
        .iter()
        .flat_map(|&d| {
            let plain = KINDS.iter().map(move |k| kernel(k, d));
            let indexed = INDEXED_KINDS
                .iter()
                .flat_map(move |k| ["u32", "u64"].map(|index| format!("{k}_{index}_{}", dtype_suffix(d))));
            plain.chain(indexed)
        })
        .collect()
}

fn kernel(kind: &str, dtype: DType) -> String {
    format!("{kind}_{}", dtype_suffix(dtype))
}

/// The variant of an elementwise pass over `n` elements.
fn indexed_kernel(kind: &str, n: usize, dtype: DType) -> String {
    format!("{kind}_{}_{}", index_width(n), dtype_suffix(dtype))
}

/// The epilogue's code in norm.cu.
fn epilogue_code(e: BatchNormEpilogue) -> u32 {
    match e {
        BatchNormEpilogue::Identity => 0,
        BatchNormEpilogue::Relu => 1,
        BatchNormEpilogue::AddRelu => 2,
    }
}

/// Checks the dtype (a float), devices, and each buffer's length.
fn check(op: &'static str, x: &CudaStorage, buffers: &[(Option<&CudaStorage>, usize)]) -> Result<DType> {
    let dtype = x.dtype();
    // bf16 and f16 are refused as on the CPU (statistics and variables stay in f32).
    crate::cuda_backend::float_only(op, dtype)?;
    for (b, len) in buffers {
        let Some(b) = b else { continue };
        x.check_device(b, op)?;
        x.check_dtype(b, op)?;
        if b.len() != *len {
            return Err(Error::invalid(op, format!("an operand of {} elements where {len} are needed", b.len())));
        }
    }
    Ok(dtype)
}

/// Pointer of an optional operand (0, which the kernels read as "absent", for none).
fn optional_ptr(s: Option<&CudaStorage>) -> u64 {
    s.map_or(0, CudaStorage::ptr)
}

pub(crate) fn batch_norm_train(
    x: &CudaStorage,
    gamma: Option<&CudaStorage>,
    beta: Option<&CudaStorage>,
    residual: Option<&CudaStorage>,
    s: &BatchNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "batch_norm_train";
    let (rows, c) = (s.rows, s.channels);
    if residual.is_some() != (s.epilogue == BatchNormEpilogue::AddRelu) {
        return Err(Error::invalid(
            OP,
            format!("internal error: epilogue {:?} with residual {}", s.epilogue, residual.is_some()),
        ));
    }
    let dtype = check(OP, x, &[(Some(x), rows * c), (gamma, c), (beta, c), (residual, rows * c)])?;
    let device = x.cuda_device();
    if rows == 0 || c == 0 {
        // Nothing to normalise (the op's checks reject zero rows; be safe anyway).
        let zeros = |len| CudaStorage::zeros(device, len, dtype);
        return Ok((zeros(rows * c)?, zeros(c)?, zeros(c)?));
    }
    let y = CudaStorage::alloc(device, rows * c, dtype)?;
    let mean = CudaStorage::alloc(device, c, dtype)?;
    let var = CudaStorage::alloc(device, c, dtype)?;
    let tasks = rows.div_ceil(BLOCK_ROWS) * c;
    let partial = CudaStorage::alloc(device, tasks * 2, DType::F64)?;
    let affine = CudaStorage::alloc(device, 2 * c, dtype)?;
    let (px, pp, pg, pb) = (x.ptr(), partial.ptr(), optional_ptr(gamma), optional_ptr(beta));
    let (pmean, pvar, paff, py, pres) = (mean.ptr(), var.ptr(), affine.ptr(), y.ptr(), optional_ptr(residual));
    let (rows64, c64, n64, eps, epilogue) =
        (rows as u64, c as u64, (rows * c) as u64, s.epsilon, epilogue_code(s.epilogue));
    // Kernel signatures: (const T* x, f64* partial, u64 rows, u64 c);
    // (const f64* partial, const T* gamma, const T* beta, T* mean, T* var, T* affine, u64 rows, u64 c, f64 eps);
    // (const T* x, const T* mean, const T* affine, const T* residual, T* y, u64 n, u64 c, u32 epilogue).
    launch!(device, KERNELS, kernel("bn_partial_moments", dtype), elementwise_config(tasks); px, pp, rows64, c64);
    launch!(device, KERNELS, kernel("bn_merge_moments", dtype), block_per_task_config(c, MERGE_THREADS);
        pp, pg, pb, pmean, pvar, paff, rows64, c64, eps);
    launch!(device, KERNELS, indexed_kernel("bn_scale_shift", rows * c, dtype), elementwise_config(rows * c);
        px, pmean, paff, pres, py, n64, c64, epilogue);
    Ok((y, mean, var))
}

pub(crate) fn batch_norm_backward(
    x: &CudaStorage,
    dy: &CudaStorage,
    gamma: Option<&CudaStorage>,
    mean: &CudaStorage,
    var: &CudaStorage,
    output: Option<&CudaStorage>,
    s: &BatchNormSpec,
) -> Result<BatchNormGrads<CudaStorage>> {
    const OP: &str = "batch_norm_backward";
    let (rows, c) = (s.rows, s.channels);
    if output.is_some() == (s.epilogue == BatchNormEpilogue::Identity) {
        return Err(Error::invalid(
            OP,
            format!("internal error: epilogue {:?} with output {}", s.epilogue, output.is_some()),
        ));
    }
    let n = rows * c;
    let dtype = check(OP, x, &[(Some(x), n), (Some(dy), n), (gamma, c), (Some(mean), c), (Some(var), c), (output, n)])?;
    let device = x.cuda_device();
    let with_residual = s.epilogue == BatchNormEpilogue::AddRelu;
    if rows == 0 || c == 0 {
        let zeros = |len| CudaStorage::zeros(device, len, dtype);
        return Ok((zeros(n)?, zeros(c)?, zeros(c)?, with_residual.then(|| zeros(n)).transpose()?));
    }
    let d_residual = with_residual.then(|| CudaStorage::alloc(device, n, dtype)).transpose()?;
    let dx = CudaStorage::alloc(device, rows * c, dtype)?;
    let d_gamma = CudaStorage::alloc(device, c, dtype)?;
    let d_beta = CudaStorage::alloc(device, c, dtype)?;
    let tasks = rows.div_ceil(BLOCK_ROWS) * c;
    let partial = CudaStorage::alloc(device, tasks * 2, DType::F64)?;
    let coef = CudaStorage::alloc(device, 3 * c, dtype)?;
    let (px, pdy, pmean, pvar, pg) = (x.ptr(), dy.ptr(), mean.ptr(), var.ptr(), optional_ptr(gamma));
    let (pp, pcoef, pdx, pdg, pdb) = (partial.ptr(), coef.ptr(), dx.ptr(), d_gamma.ptr(), d_beta.ptr());
    let (py, pdres) = (optional_ptr(output), optional_ptr(d_residual.as_ref()));
    let (rows64, c64, n64, eps) = (rows as u64, c as u64, n as u64, s.epsilon);
    // Kernel signatures: (const T* x, const T* dy, const T* mean, const T* y, f64* partial, u64 rows, u64 c);
    // (const f64* partial, const T* gamma, const T* var, T* d_gamma, T* d_beta, T* coef, u64 rows, u64 c, f64 eps);
    // (const T* x, const T* dy, const T* mean, const T* coef, const T* y, T* dx, T* d_residual, u64 n, u64 c).
    launch!(device, KERNELS, kernel("bn_backward_partial", dtype), elementwise_config(tasks);
        px, pdy, pmean, py, pp, rows64, c64);
    launch!(device, KERNELS, kernel("bn_backward_merge", dtype), block_per_task_config(c, MERGE_THREADS);
        pp, pg, pvar, pdg, pdb, pcoef, rows64, c64, eps);
    launch!(device, KERNELS, indexed_kernel("bn_backward_apply", n, dtype), elementwise_config(n);
        px, pdy, pmean, pcoef, py, pdx, pdres, n64, c64);
    Ok((dx, d_gamma, d_beta, d_residual))
}
