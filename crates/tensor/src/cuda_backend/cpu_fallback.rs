//! Convolutions on CUDA devices computed by the CPU kernels, for the configurations cuDNN
//! has no algorithm for (`ops/conv/cuda.rs`): the operands are copied to the host, the CPU
//! backend computes, the results are copied back. Correct (the same numbers as the CPU)
//! but slow, and each call waits for the device. (Pooling and batch norm have their own
//! kernels in `ops/pool/cuda.rs` and `ops/norm/cuda.rs`.)

use super::CudaStorage;
use crate::backend::{BackendStorage, Conv2dSpec};
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
