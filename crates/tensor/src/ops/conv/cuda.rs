//! The convolution primitives on CUDA, through cuDNN (`cuda_backend/cudnn.rs` holds the
//! handle, the descriptors and the per-geometry plan cache).
//!
//! NHWC tensors and `(out, kh, kw, in)` kernels are cuDNN's NHWC tensor and KRSC filter
//! formats, so nothing is transposed. cuDNN pads symmetrically; TF's 'same' padding at
//! stride 2 on an even size is not (one more row/column at the bottom/right). Such a
//! convolution runs with the smaller padding in cuDNN on an input that is explicitly
//! padded by the difference (one launch of the pad kernel); the input gradient is
//! computed for that padded input and cropped (one strided-copy launch). bf16 and f16
//! convolutions run in cuDNN with 16-bit tensors and f32 accumulation.
//!
//! The bias, and the ReLU of [`ConvActivation::Relu`], are fused into the convolution by
//! `cudnnConvolutionBiasActivationForward` (`y = act(conv(x, w) + b)`): one call, and for
//! bf16 and f16 one rounding of the f32 sum, as on the CPU. Where cuDNN cannot run that
//! call for a geometry (no IMPLICIT_PRECOMP_GEMM for the identity, or NOT_SUPPORTED when
//! called), the plan remembers it and the next step down runs: a refused ReLU becomes the
//! identity call and our relu kernel; a refused identity becomes the convolution and a
//! separate bias, `cudnnAddTensor` for f32 and f64, our broadcast add kernel for bf16 and
//! f16 (which rounds the convolution, then the sum: twice).
//! Where cuDNN has no algorithm for a configuration (some f64 ones), that primitive runs
//! on the CPU instead (`cuda_backend/cpu_fallback.rs`), with the same results; for f32
//! that warns once per geometry and direction, or fails under
//! `TAPEGRAD_CUDA_NO_CPU_FALLBACK=1`.

use crate::backend::{BinaryOp, Conv2dSpec, ConvActivation, StridedLayout, UnaryOp};
use crate::cuda_backend::cudnn::Queued;
use crate::cuda_backend::{cpu_fallback, CudaStorage};
use crate::ops::pad::{PadMode, PadSpec};
use crate::{BackendStorage, Error, Result, Shape};

/// The padding cuDNN cannot express: how much each side exceeds the smaller of its pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ExtraPadding {
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
}

impl ExtraPadding {
    fn is_zero(&self) -> bool {
        self.top + self.bottom + self.left + self.right == 0
    }
}

/// The symmetric geometry cuDNN runs (on the explicitly padded input) and the explicit
/// padding. The output is the same: its windows read the same (zero or real) values.
fn symmetric(spec: &Conv2dSpec) -> (Conv2dSpec, ExtraPadding) {
    let (ph, pw) = (spec.pad_top.min(spec.pad_bottom), spec.pad_left.min(spec.pad_right));
    let extra = ExtraPadding {
        top: spec.pad_top - ph,
        bottom: spec.pad_bottom - ph,
        left: spec.pad_left - pw,
        right: spec.pad_right - pw,
    };
    let sym = Conv2dSpec {
        in_h: spec.in_h + extra.top + extra.bottom,
        in_w: spec.in_w + extra.left + extra.right,
        pad_top: ph,
        pad_bottom: ph,
        pad_left: pw,
        pad_right: pw,
        ..*spec
    };
    (sym, extra)
}

/// The input `[n, h, w, c]` with the extra zero rows and columns: one launch of the pad
/// kernel (`ops/pad`; N and C unpadded), capture-safe like every kernel launch.
fn pad_input(x: &CudaStorage, spec: &Conv2dSpec, e: ExtraPadding) -> Result<CudaStorage> {
    let (n, h, w, c) = (spec.batch, spec.in_h, spec.in_w, spec.in_channels);
    let pad_spec = PadSpec {
        in_dims: [n, h, w, c].into_iter().collect(),
        pads: vec![(0, 0), (e.top, e.bottom), (e.left, e.right), (0, 0)],
        mode: PadMode::Constant(0.0),
    };
    // Through the backend, which pads bf16 and f16 too.
    x.pad(&pad_spec)
}

/// The input cuDNN reads: `x` itself, or (`Some`) its copy with the extra padding.
fn padded_for_cudnn(x: &CudaStorage, spec: &Conv2dSpec, e: ExtraPadding) -> Result<Option<CudaStorage>> {
    if e.is_zero() {
        Ok(None)
    } else {
        pad_input(x, spec, e).map(Some)
    }
}

/// The inverse of [`pad_input`]: the `[n, h, w, c]` window of a padded input's gradient.
fn crop_input(dx: &CudaStorage, spec: &Conv2dSpec, padded: &Conv2dSpec, e: ExtraPadding) -> Result<CudaStorage> {
    let (hp, wp, c) = (padded.in_h, padded.in_w, spec.in_channels);
    dx.strided_copy(&StridedLayout {
        shape: Shape::new(&[spec.batch, spec.in_h, spec.in_w, c]),
        strides: [hp * wp * c, wp * c, c, 1].into_iter().collect(),
        offset: (e.top * wp + e.left) * c,
    })
}

/// Fails unless a buffer has the length the geometry gives it (cuDNN would read out of
/// bounds otherwise).
fn check_len(op: &'static str, what: &str, buffer: &CudaStorage, dims: [usize; 4]) -> Result<()> {
    let want: usize = dims.iter().product();
    if buffer.len() == want {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("the {what} buffer has {} elements but {dims:?} needs {want}", buffer.len())))
    }
}

fn input_dims(s: &Conv2dSpec) -> [usize; 4] {
    [s.batch, s.in_h, s.in_w, s.in_channels]
}

fn output_dims(s: &Conv2dSpec) -> [usize; 4] {
    [s.batch, s.out_h, s.out_w, s.out_channels]
}

fn kernel_dims(s: &Conv2dSpec) -> [usize; 4] {
    [s.out_channels, s.kernel_h, s.kernel_w, s.in_channels / s.groups]
}

/// Checks that both operands share a device and a dtype and have the geometry's sizes.
fn check_operands(
    op: &'static str,
    (a, a_what, a_dims): (&CudaStorage, &str, [usize; 4]),
    (b, b_what, b_dims): (&CudaStorage, &str, [usize; 4]),
) -> Result<()> {
    a.check_device(b, op)?;
    a.check_dtype(b, op)?;
    check_len(op, a_what, a, a_dims)?;
    check_len(op, b_what, b, b_dims)
}

/// What the forward convolution's cuDNN calls did, and so what is left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forward {
    /// Everything: bias and activation fused into the convolution.
    Fused,
    /// The convolution and its bias; the activation is left.
    Biased,
    /// The convolution only; the bias (if any) and the activation are left.
    Convolved,
    /// Nothing: cuDNN has no algorithm, the CPU computes it all.
    NotSupported,
}

/// Queues the forward convolution with as much of the bias and activation fused into it
/// as cuDNN allows for the plan: `activation(conv + b)` in one call; else (a refused
/// ReLU) the convolution with its bias in one identity call; else the convolution, then
/// the bias by `cudnnAddTensor` (f32, f64).
fn queue_forward(
    x: &CudaStorage,
    k: &CudaStorage,
    b: Option<&CudaStorage>,
    y: &CudaStorage,
    sym: &Conv2dSpec,
    activation: ConvActivation,
) -> Result<Forward> {
    let device = x.cuda_device();
    device.with_dnn(|dnn| {
        let plan = dnn.plan(device, sym, x.dtype())?;
        if let Some(b) = b {
            let operands = (x.ptr(), k.ptr(), b.ptr());
            if dnn.forward_fused(device, &plan, activation, operands, y.ptr())? == Queued::Done {
                return Ok(Forward::Fused);
            }
            if activation != ConvActivation::Identity
                && dnn.forward_fused(device, &plan, ConvActivation::Identity, operands, y.ptr())? == Queued::Done
            {
                return Ok(Forward::Biased);
            }
        }
        Ok(match dnn.forward(device, &plan, x.ptr(), k.ptr(), y.ptr())? {
            Queued::NotSupported => Forward::NotSupported,
            Queued::Done => match b {
                // cuDNN's AddTensor does not take every 16-bit configuration.
                Some(b) if !x.dtype().is_low_precision() => {
                    dnn.add_bias(device, &plan, b.ptr(), y.ptr())?;
                    Forward::Biased
                }
                _ => Forward::Convolved,
            },
        })
    })
}

/// The forward convolution (`x` NHWC, `k` `(out, kh, kw, in)`), plus the bias, then the
/// activation.
pub(crate) fn conv2d(
    x: &CudaStorage,
    k: &CudaStorage,
    b: Option<&CudaStorage>,
    spec: &Conv2dSpec,
    activation: ConvActivation,
) -> Result<CudaStorage> {
    const OP: &str = "conv2d";
    check_operands(OP, (x, "input", input_dims(spec)), (k, "kernel", kernel_dims(spec)))?;
    if let Some(b) = b {
        check_operands(OP, (x, "input", input_dims(spec)), (b, "bias", [spec.out_channels, 1, 1, 1]))?;
    }
    let device = x.cuda_device();
    let y = CudaStorage::alloc(device, output_dims(spec).iter().product(), x.dtype())?;
    if spec.batch == 0 {
        return Ok(y);
    }
    let (sym, extra) = symmetric(spec);
    let padded = padded_for_cudnn(x, spec, extra)?;
    let input = padded.as_ref().unwrap_or(x);
    let biased = match queue_forward(input, k, b, &y, &sym, activation)? {
        Forward::Fused => return Ok(y),
        Forward::NotSupported => return cpu_fallback::conv2d(x, k, b, spec, activation),
        Forward::Biased => y,
        Forward::Convolved => match b {
            // bf16 and f16: our broadcast add, in f32 with one rounding (of the sum of the
            // already rounded convolution and the bias: two roundings in all).
            Some(b) => {
                let rows = spec.batch * spec.out_h * spec.out_w;
                let (out, bias) = (Shape::new(&[rows, spec.out_channels]), Shape::new(&[spec.out_channels]));
                y.binary(b, BinaryOp::Add, &out, &bias, &out)?
            }
            None => y,
        },
    };
    match activation {
        ConvActivation::Identity => Ok(biased),
        ConvActivation::Relu => biased.unary(UnaryOp::Relu),
    }
}

/// The gradient with respect to the input, given the output gradient `dy`.
pub(crate) fn conv2d_backward_input(dy: &CudaStorage, k: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    const OP: &str = "conv2d_backward_input";
    check_operands(OP, (dy, "output gradient", output_dims(spec)), (k, "kernel", kernel_dims(spec)))?;
    let device = dy.cuda_device();
    let (sym, extra) = symmetric(spec);
    let dx = CudaStorage::alloc(device, input_dims(&sym).iter().product(), dy.dtype())?;
    if spec.batch == 0 {
        return Ok(dx);
    }
    let queued = device.with_dnn(|dnn| {
        let plan = dnn.plan(device, &sym, dy.dtype())?;
        dnn.backward_data(device, &plan, k.ptr(), dy.ptr(), dx.ptr())
    })?;
    match queued {
        Queued::Done if extra.is_zero() => Ok(dx),
        Queued::Done => crop_input(&dx, spec, &sym, extra),
        Queued::NotSupported => cpu_fallback::conv2d_backward_input(dy, k, spec),
    }
}

/// The gradient with respect to the kernel, given the input `x` and the output gradient.
pub(crate) fn conv2d_backward_filter(x: &CudaStorage, dy: &CudaStorage, spec: &Conv2dSpec) -> Result<CudaStorage> {
    const OP: &str = "conv2d_backward_filter";
    check_operands(OP, (x, "input", input_dims(spec)), (dy, "output gradient", output_dims(spec)))?;
    let device = x.cuda_device();
    let len = kernel_dims(spec).iter().product();
    if spec.batch == 0 {
        return CudaStorage::zeros(device, len, x.dtype());
    }
    let dk = CudaStorage::alloc(device, len, x.dtype())?;
    let (sym, extra) = symmetric(spec);
    let padded = padded_for_cudnn(x, spec, extra)?;
    let input = padded.as_ref().unwrap_or(x);
    let queued = device.with_dnn(|dnn| {
        let plan = dnn.plan(device, &sym, x.dtype())?;
        dnn.backward_filter(device, &plan, input.ptr(), dy.ptr(), dk.ptr())
    })?;
    match queued {
        Queued::Done => Ok(dk),
        Queued::NotSupported => cpu_fallback::conv2d_backward_filter(x, dy, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(in_h: usize, pads: [usize; 4]) -> Conv2dSpec {
        Conv2dSpec {
            batch: 2,
            in_h,
            in_w: in_h,
            in_channels: 3,
            out_channels: 4,
            groups: 1,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: pads[0],
            pad_bottom: pads[1],
            pad_left: pads[2],
            pad_right: pads[3],
            out_h: 4,
            out_w: 4,
        }
    }

    #[test]
    fn asymmetric_padding_moves_the_excess_into_the_input() {
        // TF 'same', 3x3 stride 2 on 8x8: one row below, one column right.
        let (sym, extra) = symmetric(&spec(8, [0, 1, 0, 1]));
        assert_eq!(extra, ExtraPadding { top: 0, bottom: 1, left: 0, right: 1 });
        assert_eq!((sym.in_h, sym.in_w, sym.pad_top, sym.pad_bottom, sym.pad_left), (9, 9, 0, 0, 0));
        let (sym, extra) = symmetric(&spec(8, [3, 1, 1, 1]));
        assert_eq!(extra, ExtraPadding { top: 2, bottom: 0, left: 0, right: 0 });
        assert_eq!((sym.in_h, sym.in_w, sym.pad_top, sym.pad_bottom, sym.pad_left), (10, 8, 1, 1, 1));
        assert!(symmetric(&spec(8, [1, 1, 1, 1])).1.is_zero());
    }
}
