//! CUDA launch code of batch normalization; the kernels are in `norm.cu`.
//!
//! Each pass is three launches queued on the stream, with no host synchronisation: block
//! partial statistics, a per-channel merge (which also folds gamma and beta into a scale
//! and shift, or the backward pass into three coefficients), and an elementwise pass.

use crate::backend::BatchNormSpec;
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The batch-norm kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "norm", source: include_str!("norm.cu") };

/// Rows per partial block (`BN_BLOCK_ROWS` in norm.cu).
const BLOCK_ROWS: usize = 256;

const KINDS: [&str; 6] = [
    "bn_partial_moments",
    "bn_merge_moments",
    "bn_scale_shift",
    "bn_backward_partial",
    "bn_backward_merge",
    "bn_backward_apply",
];

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    [DType::F32, DType::F64].iter().flat_map(|&d| KINDS.iter().map(move |k| kernel(k, d))).collect()
}

fn kernel(kind: &str, dtype: DType) -> String {
    format!("{kind}_{}", dtype_suffix(dtype))
}

/// Checks the dtype (a float), devices, and each buffer's length.
fn check(op: &'static str, x: &CudaStorage, buffers: &[(Option<&CudaStorage>, usize)]) -> Result<DType> {
    let dtype = x.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64" });
    }
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
    s: &BatchNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "batch_norm_train";
    let (rows, c) = (s.rows, s.channels);
    let dtype = check(OP, x, &[(Some(x), rows * c), (gamma, c), (beta, c)])?;
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
    let (pmean, pvar, paff, py) = (mean.ptr(), var.ptr(), affine.ptr(), y.ptr());
    let (rows64, c64, eps) = (rows as u64, c as u64, s.epsilon);
    // Kernel signatures: (const T* x, f64* partial, u64 rows, u64 c);
    // (const f64* partial, const T* gamma, const T* beta, T* mean, T* var, T* affine, u64 rows, u64 c, f64 eps);
    // (const T* x, const T* mean, const T* affine, T* y, u64 rows, u64 c).
    launch!(device, KERNELS, kernel("bn_partial_moments", dtype), elementwise_config(tasks); px, pp, rows64, c64);
    launch!(device, KERNELS, kernel("bn_merge_moments", dtype), elementwise_config(c);
        pp, pg, pb, pmean, pvar, paff, rows64, c64, eps);
    launch!(device, KERNELS, kernel("bn_scale_shift", dtype), elementwise_config(rows * c);
        px, pmean, paff, py, rows64, c64);
    Ok((y, mean, var))
}

pub(crate) fn batch_norm_backward(
    x: &CudaStorage,
    dy: &CudaStorage,
    gamma: Option<&CudaStorage>,
    mean: &CudaStorage,
    var: &CudaStorage,
    s: &BatchNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "batch_norm_backward";
    let (rows, c) = (s.rows, s.channels);
    let dtype =
        check(OP, x, &[(Some(x), rows * c), (Some(dy), rows * c), (gamma, c), (Some(mean), c), (Some(var), c)])?;
    let device = x.cuda_device();
    if rows == 0 || c == 0 {
        let zeros = |len| CudaStorage::zeros(device, len, dtype);
        return Ok((zeros(rows * c)?, zeros(c)?, zeros(c)?));
    }
    let dx = CudaStorage::alloc(device, rows * c, dtype)?;
    let d_gamma = CudaStorage::alloc(device, c, dtype)?;
    let d_beta = CudaStorage::alloc(device, c, dtype)?;
    let tasks = rows.div_ceil(BLOCK_ROWS) * c;
    let partial = CudaStorage::alloc(device, tasks * 2, DType::F64)?;
    let coef = CudaStorage::alloc(device, 3 * c, dtype)?;
    let (px, pdy, pmean, pvar, pg) = (x.ptr(), dy.ptr(), mean.ptr(), var.ptr(), optional_ptr(gamma));
    let (pp, pcoef, pdx, pdg, pdb) = (partial.ptr(), coef.ptr(), dx.ptr(), d_gamma.ptr(), d_beta.ptr());
    let (rows64, c64, eps) = (rows as u64, c as u64, s.epsilon);
    // Kernel signatures: (const T* x, const T* dy, const T* mean, f64* partial, u64 rows, u64 c);
    // (const f64* partial, const T* gamma, const T* var, T* d_gamma, T* d_beta, T* coef, u64 rows, u64 c, f64 eps);
    // (const T* x, const T* dy, const T* mean, const T* coef, T* dx, u64 rows, u64 c).
    launch!(device, KERNELS, kernel("bn_backward_partial", dtype), elementwise_config(tasks);
        px, pdy, pmean, pp, rows64, c64);
    launch!(device, KERNELS, kernel("bn_backward_merge", dtype), elementwise_config(c);
        pp, pg, pvar, pdg, pdb, pcoef, rows64, c64, eps);
    launch!(device, KERNELS, kernel("bn_backward_apply", dtype), elementwise_config(rows * c);
        px, pdy, pmean, pcoef, pdx, rows64, c64);
    Ok((dx, d_gamma, d_beta))
}
