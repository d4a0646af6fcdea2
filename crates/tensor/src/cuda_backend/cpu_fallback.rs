//! Convolutions on CUDA devices computed by the CPU kernels, for the configurations cuDNN
//! has no algorithm for (`ops/conv/cuda.rs`): the operands are copied to the host, the CPU
//! backend computes, the results are copied back. Correct (the same numbers as the CPU)
//! but slow, and each call waits for the device. (Pooling and batch norm have their own
//! kernels in `ops/pool/cuda.rs` and `ops/norm/cuda.rs`.)
//!
//! f64 takes this path quietly (cuDNN supports few f64 NHWC configurations, and f64 is for
//! checking, not speed). An f32 (or bf16, f16) convolution on the CPU is a surprise that can eat a
//! training run: it prints one warning per geometry and direction on stderr, and with
//! `TAPEGRAD_CUDA_NO_CPU_FALLBACK=1` in the environment it is an error instead (what
//! scripts/gpu-check.sh sets, so a missing algorithm fails loudly on a lent GPU).

use super::CudaStorage;
use crate::backend::{BackendStorage, Conv2dSpec, ConvActivation};
use crate::cpu_backend::CpuStorage;
use crate::{DType, Error, Result};
use std::collections::HashSet;
use std::sync::Mutex;

/// The environment switch that turns an f32 fallback into an error.
pub(crate) const NO_FALLBACK_VAR: &str = "TAPEGRAD_CUDA_NO_CPU_FALLBACK";

/// The convolution in words, for the warning and the error.
fn describe(s: &Conv2dSpec) -> String {
    format!(
        "input [{}, {}, {}, {}], kernel [{}, {}, {}, {}], stride {}x{}, dilation {}x{}, padding top/bottom/left/right \
         {}/{}/{}/{}, groups {}",
        s.batch,
        s.in_h,
        s.in_w,
        s.in_channels,
        s.out_channels,
        s.kernel_h,
        s.kernel_w,
        s.in_channels / s.groups.max(1),
        s.stride_h,
        s.stride_w,
        s.dilation_h,
        s.dilation_w,
        s.pad_top,
        s.pad_bottom,
        s.pad_left,
        s.pad_right,
        s.groups
    )
}

/// Whether the switch is on (read on every fallback: it is rare, and tests flip it).
fn forbidden() -> bool {
    std::env::var(NO_FALLBACK_VAR).is_ok_and(|v| v == "1")
}

/// The warning for an f32, bf16 or f16 fallback the first time a geometry and direction
/// falls back in this process; `None` afterwards, and always for f64.
fn first_warning(op: &'static str, spec: &Conv2dSpec, dtype: DType) -> Option<String> {
    static WARNED: Mutex<Option<HashSet<(&'static str, Conv2dSpec)>>> = Mutex::new(None);
    if dtype == DType::F64 {
        return None;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    warned.get_or_insert_with(HashSet::new).insert((op, *spec)).then(|| {
        format!(
            "tapegrad warning: {op}: cuDNN offers no algorithm for this {dtype} convolution ({}); it runs on the CPU, \
             slowly and synchronously (set {NO_FALLBACK_VAR}=1 to make this an error)",
            describe(spec)
        )
    })
}

/// Allows a fallback of `op` (a direction: `conv2d`, `conv2d_backward_input`,
/// `conv2d_backward_filter`) or refuses it: f64 passes, f32/bf16/f16 warn once per geometry
/// and direction, or fail while the switch is on.
fn permit(op: &'static str, like: &CudaStorage, spec: &Conv2dSpec) -> Result<()> {
    let dtype = like.dtype();
    if dtype != DType::F64 && forbidden() {
        return Err(Error::Cuda {
            device: like.device(),
            op,
            msg: format!(
                "cuDNN offers no algorithm for this {dtype} convolution ({}), and {NO_FALLBACK_VAR}=1 forbids running it \
                 on the CPU",
                describe(spec)
            ),
        });
    }
    if let Some(warning) = first_warning(op, spec, dtype) {
        eprintln!("{warning}");
    }
    Ok(())
}

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
    activation: ConvActivation,
) -> Result<CudaStorage> {
    permit("conv2d", x, spec)?;
    let host = download("conv2d", x, &[x, k])?;
    let bias = download_optional("conv2d", x, b)?;
    upload(host[0].conv2d(&host[1], bias.as_ref(), spec, activation)?, x)
}

pub(crate) fn conv2d_backward_input(dy: &CudaStorage, k: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    permit("conv2d_backward_input", dy, spec)?;
    let host = download("conv2d_backward_input", dy, &[dy, k])?;
    upload(host[0].conv2d_backward_input(&host[1], spec)?, dy)
}

pub(crate) fn conv2d_backward_filter(x: &CudaStorage, dy: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    permit("conv2d_backward_filter", x, spec)?;
    let host = download("conv2d_backward_filter", x, &[x, dy])?;
    upload(host[0].conv2d_backward_filter(&host[1], spec)?, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(in_channels: usize) -> Conv2dSpec {
        Conv2dSpec {
            batch: 2,
            in_h: 9,
            in_w: 8,
            in_channels,
            out_channels: 4,
            groups: 1,
            kernel_h: 3,
            kernel_w: 1,
            stride_h: 2,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 1,
            pad_bottom: 0,
            pad_left: 0,
            pad_right: 0,
            out_h: 4,
            out_w: 8,
        }
    }

    #[test]
    fn an_f32_fallback_warns_once_per_geometry_and_direction() {
        // Channel counts no other test uses: the set of warned geometries is process-wide.
        let (a, b) = (spec(101), spec(102));
        let first = first_warning("conv2d", &a, DType::F32).expect("the first fallback warns");
        for needle in ["conv2d", "f32", "[2, 9, 8, 101]", "[4, 3, 1, 101]", "stride 2x1", "1/0/0/0", NO_FALLBACK_VAR] {
            assert!(first.contains(needle), "{needle:?} missing from: {first}");
        }
        assert_eq!(first_warning("conv2d", &a, DType::F32), None, "the same geometry and direction warns once");
        assert!(first_warning("conv2d_backward_filter", &a, DType::F32).is_some(), "another direction warns");
        assert!(first_warning("conv2d", &b, DType::F32).is_some(), "another geometry warns");
        assert_eq!(first_warning("conv2d", &spec(103), DType::F64), None, "f64 falls back quietly");
    }
}
