//! CUDA launch code of group (and layer) normalization; the kernels are in
//! `group_norm.cu`.
//!
//! The forward pass is two launches (statistics with a block per `(outer, group)`, then
//! the elementwise affine map), the backward pass three (the `d_x` coefficients per
//! statistic, `d_x` with per-block partial parameter gradients, the per-channel merge),
//! all queued on the stream without host synchronisation.

use crate::backend::GroupNormSpec;
use crate::cuda_backend::kernels::{
    block_per_task_config, dtype_suffix, elementwise_config, threads_for_row, KernelSource,
};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The group-norm kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "group_norm", source: include_str!("group_norm.cu") };

/// Rows per partial block of the parameter gradients (`GN_BLOCK_ROWS` in group_norm.cu).
const BLOCK_ROWS: usize = 256;

const KINDS: [&str; 5] = ["gn_moments", "gn_apply", "gn_backward_sums", "gn_backward_apply", "gn_param_merge"];

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

/// The spec's sizes as the kernels take them: `(outer, spatial, groups, cpg)`.
fn dims64(s: &GroupNormSpec) -> (u64, u64, u64, u64) {
    (s.outer as u64, s.spatial as u64, s.groups as u64, s.channels_per_group as u64)
}

pub(crate) fn group_norm(
    x: &CudaStorage,
    gamma: Option<&CudaStorage>,
    beta: Option<&CudaStorage>,
    s: &GroupNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "group_norm";
    let (len, c, stats) = (s.outer * s.spatial * s.channels(), s.channels(), s.stat_count());
    let dtype = check(OP, x, &[(Some(x), len), (gamma, c), (beta, c)])?;
    let device = x.cuda_device();
    if len == 0 {
        let zeros = |len| CudaStorage::zeros(device, len, dtype);
        return Ok((zeros(len)?, zeros(stats)?, zeros(stats)?));
    }
    let y = CudaStorage::alloc(device, len, dtype)?;
    let mean = CudaStorage::alloc(device, stats, dtype)?;
    let rstd = CudaStorage::alloc(device, stats, dtype)?;
    let (px, pmean, prstd, py, pg, pb) =
        (x.ptr(), mean.ptr(), rstd.ptr(), y.ptr(), optional_ptr(gamma), optional_ptr(beta));
    let (outer, spatial, groups, cpg) = dims64(s);
    let eps = s.epsilon;
    // Kernel signatures: (const T* x, T* mean, T* rstd, u64 outer, u64 spatial, u64 groups, u64 cpg, f64 eps);
    // (const T* x, const T* mean, const T* rstd, const T* gamma, const T* beta, T* y, u64 outer, u64 spatial,
    //  u64 groups, u64 cpg).
    launch!(device, KERNELS, kernel("gn_moments", dtype), block_per_task_config(stats, threads_for_row(s.group_size()));
        px, pmean, prstd, outer, spatial, groups, cpg, eps);
    launch!(device, KERNELS, kernel("gn_apply", dtype), elementwise_config(len);
        px, pmean, prstd, pg, pb, py, outer, spatial, groups, cpg);
    Ok((y, mean, rstd))
}

pub(crate) fn group_norm_backward(
    x: &CudaStorage,
    dy: &CudaStorage,
    gamma: Option<&CudaStorage>,
    mean: &CudaStorage,
    rstd: &CudaStorage,
    s: &GroupNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "group_norm_backward";
    let (len, c, stats) = (s.outer * s.spatial * s.channels(), s.channels(), s.stat_count());
    let dtype = check(OP, x, &[(Some(x), len), (Some(dy), len), (gamma, c), (Some(mean), stats), (Some(rstd), stats)])?;
    let device = x.cuda_device();
    if len == 0 {
        let zeros = |len| CudaStorage::zeros(device, len, dtype);
        return Ok((zeros(len)?, zeros(c)?, zeros(c)?));
    }
    let dx = CudaStorage::alloc(device, len, dtype)?;
    let d_gamma = CudaStorage::alloc(device, c, dtype)?;
    let d_beta = CudaStorage::alloc(device, c, dtype)?;
    let k_x = CudaStorage::alloc(device, stats, dtype)?;
    let k_0 = CudaStorage::alloc(device, stats, dtype)?;
    let rows = s.outer * s.spatial;
    let tasks = rows.div_ceil(BLOCK_ROWS) * c;
    let partial = CudaStorage::alloc(device, tasks * 2, DType::F64)?;
    let (px, pdy, pg, pmean, prstd) = (x.ptr(), dy.ptr(), optional_ptr(gamma), mean.ptr(), rstd.ptr());
    let (pkx, pk0, pdx, pp, pdg, pdb) = (k_x.ptr(), k_0.ptr(), dx.ptr(), partial.ptr(), d_gamma.ptr(), d_beta.ptr());
    let (outer, spatial, groups, cpg) = dims64(s);
    let (rows64, c64) = (rows as u64, c as u64);
    // Kernel signatures: (const T* x, const T* dy, const T* gamma, const T* mean, const T* rstd, T* k_x, T* k_0,
    //  u64 outer, u64 spatial, u64 groups, u64 cpg);
    // (const T* x, const T* dy, const T* gamma, const T* mean, const T* rstd, const T* k_x, const T* k_0, T* dx,
    //  f64* partial, u64 outer, u64 spatial, u64 groups, u64 cpg);
    // (const f64* partial, T* d_gamma, T* d_beta, u64 rows, u64 c).
    launch!(device, KERNELS, kernel("gn_backward_sums", dtype),
        block_per_task_config(stats, threads_for_row(s.group_size()));
        px, pdy, pg, pmean, prstd, pkx, pk0, outer, spatial, groups, cpg);
    launch!(device, KERNELS, kernel("gn_backward_apply", dtype), elementwise_config(tasks);
        px, pdy, pg, pmean, prstd, pkx, pk0, pdx, pp, outer, spatial, groups, cpg);
    launch!(device, KERNELS, kernel("gn_param_merge", dtype), elementwise_config(c); pp, pdg, pdb, rows64, c64);
    Ok((dx, d_gamma, d_beta))
}
