//! Convolution, pooling and batch normalization on CUDA devices, computed by the CPU
//! kernels: the operands are copied to the host, the CPU backend computes, the results
//! are copied back. Correct (the same numbers as the CPU) but slow, and each call waits
//! for the device: a bridge until the cuDNN versions (issue #7) replace these functions,
//! so that models with convolutions already run with `--features cuda`.

use super::CudaStorage;
use crate::backend::{BackendStorage, BatchNormSpec, Conv2dSpec, Pool2dSpec};
use crate::cpu_backend::CpuStorage;
use crate::Result;

/// Host copies of operands that must all live on `first`'s device.
fn download(op: &'static str, first: &CudaStorage, operands: &[&CudaStorage]) -> Result<Vec<CpuStorage>> {
    operands
        .iter()
        .map(|o| {
            first.check_device(o, op)?;
            o.to_cpu()
        })
        .collect()
}

fn download_optional(
    op: &'static str,
    first: &CudaStorage,
    operand: Option<&CudaStorage>,
) -> Result<Option<CpuStorage>> {
    operand.map(|o| download(op, first, &[o]).map(|mut v| v.remove(0))).transpose()
}

fn upload(result: CpuStorage, like: &CudaStorage) -> Result<CudaStorage> {
    CudaStorage::from_cpu(&result, like.cuda_device().ordinal())
}

pub(crate) fn conv2d(
    x: &CudaStorage,
    k: &CudaStorage,
    b: Option<&CudaStorage>,
    spec: &Conv2dSpec,
) -> Result<CudaStorage> {
    let host = download("conv2d", x, &[x, k])?;
    let bias = download_optional("conv2d", x, b)?;
    upload(host[0].conv2d(&host[1], bias.as_ref(), spec)?, x)
}

pub(crate) fn conv2d_backward_input(dy: &CudaStorage, k: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    let host = download("conv2d_backward_input", dy, &[dy, k])?;
    upload(host[0].conv2d_backward_input(&host[1], spec)?, dy)
}

pub(crate) fn conv2d_backward_filter(x: &CudaStorage, dy: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    let host = download("conv2d_backward_filter", x, &[x, dy])?;
    upload(host[0].conv2d_backward_filter(&host[1], spec)?, x)
}

pub(crate) fn max_pool2d(x: &CudaStorage, spec: &Pool2dSpec) -> Result<CudaStorage> {
    upload(x.to_cpu()?.max_pool2d(spec)?, x)
}

pub(crate) fn max_pool2d_backward(
    x: &CudaStorage,
    y: &CudaStorage,
    dy: &CudaStorage,
    spec: &Pool2dSpec,
) -> Result<CudaStorage> {
    let host = download("max_pool2d_backward", x, &[x, y, dy])?;
    upload(host[0].max_pool2d_backward(&host[1], &host[2], spec)?, x)
}

pub(crate) fn avg_pool2d(x: &CudaStorage, spec: &Pool2dSpec) -> Result<CudaStorage> {
    upload(x.to_cpu()?.avg_pool2d(spec)?, x)
}

pub(crate) fn avg_pool2d_backward(dy: &CudaStorage, spec: &Pool2dSpec) -> Result<CudaStorage> {
    upload(dy.to_cpu()?.avg_pool2d_backward(spec)?, dy)
}

/// Three host results back to the device.
fn upload3(
    r: (CpuStorage, CpuStorage, CpuStorage),
    like: &CudaStorage,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    Ok((upload(r.0, like)?, upload(r.1, like)?, upload(r.2, like)?))
}

pub(crate) fn batch_norm_train(
    x: &CudaStorage,
    gamma: Option<&CudaStorage>,
    beta: Option<&CudaStorage>,
    spec: &BatchNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "batch_norm_train";
    let (gamma, beta) = (download_optional(OP, x, gamma)?, download_optional(OP, x, beta)?);
    upload3(x.to_cpu()?.batch_norm_train(gamma.as_ref(), beta.as_ref(), spec)?, x)
}

pub(crate) fn batch_norm_backward(
    x: &CudaStorage,
    dy: &CudaStorage,
    gamma: Option<&CudaStorage>,
    mean: &CudaStorage,
    var: &CudaStorage,
    spec: &BatchNormSpec,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "batch_norm_backward";
    let host = download(OP, x, &[x, dy, mean, var])?;
    let gamma = download_optional(OP, x, gamma)?;
    upload3(host[0].batch_norm_backward(&host[1], gamma.as_ref(), &host[2], &host[3], spec)?, x)
}
