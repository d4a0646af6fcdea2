//! 2-D convolution over NHWC images, and its gradients.
//!
//! Three primitives do the work: the forward convolution, its gradient with respect to
//! the input (a transposed convolution) and with respect to the kernel. Each is linear in
//! each of its two arguments, and the gradients of each are again these three, so the
//! gradient rules below record themselves on the tape: convolution gradients can be
//! differentiated again to any order. The bias gradient is a sum over N, H and W.
//! Grouped convolutions (`Conv2dParams::groups`) go through the same three primitives
//! with the group count in their [`Conv2dSpec`], so their gradients follow the same rules.
//! [`Tensor::conv2d_relu`] is the forward primitive with a ReLU applied before its output
//! is stored (one cuDNN call on CUDA); its rule masks the gradient and calls the same rules.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod depthwise_cpu;
mod padding;
mod patch_cpu;
pub(crate) mod shared_columns_cpu;
mod small_map_cpu;
mod strided_pointwise_cpu;
mod transpose;
mod winograd;

pub use padding::Padding;
pub(crate) use padding::SpatialAxis;
pub use transpose::Conv2dTransposeParams;

use crate::backend::{Conv2dSpec, ConvActivation};
use crate::ops::output_guard::guarded;
use crate::tape::{grad_if, record_op_masked};
use crate::{Error, Result, Shape, Tensor};

/// The options of [`Tensor::conv2d`]: strides, padding and dilation, each (vertical,
/// horizontal), and the channel groups. The default is stride 1, [`Padding::Valid`], no
/// dilation, one group (Keras' defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows, (rows, columns); each at least 1.
    pub strides: (usize, usize),
    /// Border handling.
    pub padding: Padding,
    /// Spacing between kernel taps, (rows, columns); 1 is a dense kernel.
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels split into this many equal runs, and
    /// each output run sees only its input run (1: a dense convolution; the input's
    /// channel count: depthwise). Divides both channel counts; the kernel's last axis is
    /// `in_channels / groups`.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { strides: (1, 1), padding: Padding::Valid, dilation: (1, 1), groups: 1 }
    }
}

/// Fails unless `x` is a 4-D NHWC float tensor; names the op and the shape.
pub(crate) fn check_nhwc(x: &Tensor, op: &'static str) -> Result<()> {
    x.check_float(op)?;
    if x.rank() != 4 {
        return Err(Error::invalid(
            op,
            format!("the input must be 4-D NHWC [batch, height, width, channels], got shape {}", x.shape()),
        ));
    }
    Ok(())
}

/// Fails if a stride-like pair has a zero.
pub(crate) fn check_positive(op: &'static str, what: &str, pair: (usize, usize)) -> Result<()> {
    if pair.0 == 0 || pair.1 == 0 {
        return Err(Error::invalid(op, format!("{what} must be at least 1, got {pair:?}")));
    }
    Ok(())
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as TF's `Conv2D`) of an NHWC input
    /// `[n, h, w, c_in]` with a kernel `[c_out, kh, kw, c_in / groups]` and an optional
    /// bias `[c_out]`; the result is `[n, out_h, out_w, c_out]`. With
    /// [`groups`](Conv2dParams::groups) > 1, output channels `g * c_out / groups ..` read
    /// only input channels `g * c_in / groups ..` (depthwise when `groups == c_in`).
    ///
    /// Differentiable with respect to input, kernel and bias, to any order (the gradient
    /// kernels are themselves recorded with their own gradient rules).
    ///
    /// ```
    /// use tapegrad_tensor::{Conv2dParams, DType, Device, Padding, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::ones([1, 5, 5, 3], DType::F32, &Device::Cpu)?;
    /// let k = Tensor::ones([8, 3, 3, 3], DType::F32, &Device::Cpu)?;
    /// let params = Conv2dParams { strides: (2, 2), padding: Padding::Same, ..Default::default() };
    /// assert_eq!(x.conv2d(&k, None, &params)?.dims(), &[1, 3, 3, 8]);
    /// // Depthwise: one 3x3 filter per channel, two per channel here (depth multiplier 2).
    /// let depthwise = Tensor::ones([6, 3, 3, 1], DType::F32, &Device::Cpu)?;
    /// let params = Conv2dParams { groups: 3, padding: Padding::Same, ..Default::default() };
    /// assert_eq!(x.conv2d(&depthwise, None, &params)?.dims(), &[1, 5, 5, 6]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn conv2d(&self, kernel: &Tensor, bias: Option<&Tensor>, params: &Conv2dParams) -> Result<Tensor> {
        let spec = conv2d_spec(self, kernel, bias, params)?;
        conv2d_with_spec(self, kernel, bias, spec)
    }

    /// `relu(conv2d(x, kernel, bias))` as one op: the convolution with the bias and the
    /// ReLU applied before the output is stored (a Keras `Conv2D` with
    /// `activation="relu"`). On the CPU the results are the bits of [`conv2d`](Self::conv2d)
    /// followed by [`relu`](Self::relu) (NaN passes through), in one pass less; on CUDA it
    /// is one `cudnnConvolutionBiasActivationForward` call where cuDNN supports it, which
    /// also rounds a bf16 or f16 result once rather than after the convolution and again
    /// after the bias (so closer to the CPU); results equal the unfused ops' within f32
    /// rounding.
    ///
    /// The gradient is the ReLU's (the upstream gradient where the output is positive,
    /// read from the saved output) followed by [`conv2d`](Self::conv2d)'s rules, so it too
    /// differentiates to any order.
    ///
    /// ```
    /// use tapegrad_tensor::{Conv2dParams, DType, Device, Padding, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::ones([1, 4, 4, 2], DType::F32, &Device::Cpu)?;
    /// let k = Tensor::ones([3, 3, 3, 2], DType::F32, &Device::Cpu)?.neg()?;
    /// let b = Tensor::from_vec(vec![1.0f32, 20.0, 0.0], [3], &Device::Cpu)?;
    /// let params = Conv2dParams { padding: Padding::Same, ..Default::default() };
    /// let fused = x.conv2d_relu(&k, Some(&b), &params)?;
    /// assert_eq!(fused.to_vec::<f32>()?, x.conv2d(&k, Some(&b), &params)?.relu()?.to_vec::<f32>()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn conv2d_relu(&self, kernel: &Tensor, bias: Option<&Tensor>, params: &Conv2dParams) -> Result<Tensor> {
        let spec = conv2d_spec(self, kernel, bias, params)?;
        let shape = output_shape(&spec);
        let storage = guarded("conv2d_relu", &[self, kernel], &[&shape], self.dtype(), &self.device(), || {
            self.storage().conv2d(kernel.storage(), bias.map(|b| b.storage()), &spec, ConvActivation::Relu)
        })?;
        let out = Tensor::from_storage(storage, shape);
        let mut inputs = vec![self, kernel];
        inputs.extend(bias);
        let (x, k, has_bias) = (self.clone(), kernel.clone(), bias.is_some());
        // The ReLU's mask is read from the output, which the next layer keeps alive anyway:
        // `y > 0` is false for NaN, as `relu`'s own mask (of its input) is.
        let y = out.clone();
        record_op_masked("conv2d_relu", &inputs, &out, move |g, needed| {
            let g = g.mul(&y.gt_scalar(0.0)?)?;
            conv2d_grads(&g, (&x, &k, has_bias), spec, needed)
        });
        Ok(out)
    }
}

/// Checks the operands of a convolution and resolves its geometry.
fn conv2d_spec(x: &Tensor, kernel: &Tensor, bias: Option<&Tensor>, params: &Conv2dParams) -> Result<Conv2dSpec> {
    const OP: &str = "conv2d";
    check_nhwc(x, OP)?;
    x.check_same(kernel, OP)?;
    if kernel.rank() != 4 {
        return Err(Error::invalid(
            OP,
            format!("the kernel must be 4-D [out_channels, height, width, in_channels], got shape {}", kernel.shape()),
        ));
    }
    let &[batch, in_h, in_w, in_channels] = x.dims() else { unreachable!("rank checked") };
    let &[out_channels, kernel_h, kernel_w, kernel_in] = kernel.dims() else { unreachable!("rank checked") };
    let groups = params.groups;
    if groups == 0 {
        return Err(Error::invalid(OP, "groups must be at least 1, got 0"));
    }
    if in_channels % groups != 0 || out_channels % groups != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "groups = {groups} must divide both the input channels ({in_channels}, input shape {}) and the \
                 output channels ({out_channels}, kernel shape {})",
                x.shape(),
                kernel.shape()
            ),
        ));
    }
    if in_channels / groups != kernel_in {
        let expected = if groups == 1 {
            format!("{kernel_in}")
        } else {
            format!("{} (kernel_in {kernel_in} x groups {groups})", kernel_in * groups)
        };
        return Err(Error::invalid(
            OP,
            format!(
                "the input of shape {} has {in_channels} channels but the kernel of shape {} expects {expected}",
                x.shape(),
                kernel.shape()
            ),
        ));
    }
    if kernel.elem_count() == 0 {
        return Err(Error::invalid(OP, format!("the kernel of shape {} is empty", kernel.shape())));
    }
    if let Some(b) = bias {
        x.check_same(b, OP)?;
        if b.dims() != [out_channels] {
            return Err(Error::invalid(
                OP,
                format!(
                    "the bias has shape {} but the kernel of shape {} has {out_channels} output channels (expected \
                     [{out_channels}])",
                    b.shape(),
                    kernel.shape()
                ),
            ));
        }
    }
    check_positive(OP, "strides", params.strides)?;
    check_positive(OP, "dilation", params.dilation)?;
    let (stride_h, stride_w) = params.strides;
    let (dilation_h, dilation_w) = params.dilation;
    // Saturating: an extent past usize::MAX is larger than any input, which `resolve` reports.
    let extent = |k: usize, d: usize| (k - 1).saturating_mul(d).saturating_add(1);
    let what = format!("kernel of shape {} (dilation {:?})", kernel.shape(), params.dilation);
    let rows = params.padding.resolve(OP, SpatialAxis::Height, in_h, extent(kernel_h, dilation_h), stride_h, &what)?;
    let cols = params.padding.resolve(OP, SpatialAxis::Width, in_w, extent(kernel_w, dilation_w), stride_w, &what)?;
    Ok(Conv2dSpec {
        batch,
        in_h,
        in_w,
        in_channels,
        out_channels,
        groups,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        dilation_h,
        dilation_w,
        pad_top: rows.pad_before,
        pad_bottom: rows.pad_after,
        pad_left: cols.pad_before,
        pad_right: cols.pad_after,
        out_h: rows.out,
        out_w: cols.out,
    })
}

fn input_shape(s: &Conv2dSpec) -> Shape {
    Shape::new(&[s.batch, s.in_h, s.in_w, s.in_channels])
}

fn output_shape(s: &Conv2dSpec) -> Shape {
    Shape::new(&[s.batch, s.out_h, s.out_w, s.out_channels])
}

fn kernel_shape(s: &Conv2dSpec) -> Shape {
    Shape::new(&[s.out_channels, s.kernel_h, s.kernel_w, s.in_channels / s.groups])
}

/// The forward convolution with a resolved geometry, recorded with its gradient rule.
fn conv2d_with_spec(x: &Tensor, kernel: &Tensor, bias: Option<&Tensor>, spec: Conv2dSpec) -> Result<Tensor> {
    let shape = output_shape(&spec);
    let storage = guarded("conv2d", &[x, kernel], &[&shape], x.dtype(), &x.device(), || {
        x.storage().conv2d(kernel.storage(), bias.map(|b| b.storage()), &spec, ConvActivation::Identity)
    })?;
    Ok(record_conv2d(Tensor::from_storage(storage, shape), x, kernel, bias, spec))
}

/// Records `out`, computed as `conv2d(x, kernel) (+ bias)`, with the convolution's
/// gradient rule.
fn record_conv2d(out: Tensor, x: &Tensor, kernel: &Tensor, bias: Option<&Tensor>, spec: Conv2dSpec) -> Tensor {
    let mut inputs = vec![x, kernel];
    inputs.extend(bias);
    let has_bias = bias.is_some();
    let (x, k) = (x.clone(), kernel.clone());
    record_op_masked("conv2d", &inputs, &out, move |g, needed| conv2d_grads(g, (&x, &k, has_bias), spec, needed));
    out
}

/// The gradients of a forward convolution `(x, k, bias if has_bias)` given its output
/// gradient `g`, each only where `needed`.
fn conv2d_grads(
    g: &Tensor,
    (x, k, has_bias): (&Tensor, &Tensor, bool),
    spec: Conv2dSpec,
    needed: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let mut grads = vec![
        grad_if(needed[0], || conv2d_backward_input(g, k, spec))?,
        grad_if(needed[1], || conv2d_backward_filter(x, g, spec))?,
    ];
    if has_bias {
        grads.push(grad_if(needed[2], || g.sum(&[0, 1, 2], false))?);
    }
    Ok(grads)
}

/// The input gradient `B(dy, K)` of a convolution. It is linear in `dy` and in `K`: for
/// an upstream gradient `G` (input-shaped), `d/d dy = conv2d(G, K)` and
/// `d/dK = conv2d_backward_filter(G, dy)`.
fn conv2d_backward_input(grad_out: &Tensor, kernel: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let shape = input_shape(&spec);
    let storage =
        guarded("conv2d_backward_input", &[grad_out, kernel], &[&shape], grad_out.dtype(), &grad_out.device(), || {
            grad_out.storage().conv2d_backward_input(kernel.storage(), &spec)
        })?;
    let dx = Tensor::from_storage(storage, shape);
    let (dy, k) = (grad_out.clone(), kernel.clone());
    record_op_masked("conv2d_backward_input", &[grad_out, kernel], &dx, move |g, needed| {
        let (d_dy, d_k) = backward_input_grads(g, &k, &dy, spec, (needed[0], needed[1]))?;
        Ok(vec![d_dy, d_k])
    });
    Ok(dx)
}

/// `B(dy, K) + bias`: a transposed convolution with its bias, the bias added in the pass
/// that writes the output where the device can (the CPU), else as an op of its own. Its
/// gradients are those of `B` and, for the bias, the sum of `g` over N, H and W.
fn backward_input_bias(grad_out: &Tensor, kernel: &Tensor, bias: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let shape = input_shape(&spec);
    let inputs = [grad_out, kernel, bias];
    let fused = guarded("conv2d_transpose", &inputs, &[&shape], grad_out.dtype(), &grad_out.device(), || {
        grad_out.storage().conv2d_backward_input_bias(kernel.storage(), bias.storage(), &spec)
    })?;
    let Some(storage) = fused else {
        return conv2d_backward_input(grad_out, kernel, spec)?.add(bias);
    };
    let y = Tensor::from_storage(storage, shape);
    let (dy, k) = (grad_out.clone(), kernel.clone());
    record_op_masked("conv2d_transpose", &inputs, &y, move |g, needed| {
        let (d_dy, d_k) = backward_input_grads(g, &k, &dy, spec, (needed[0], needed[1]))?;
        Ok(vec![d_dy, d_k, grad_if(needed[2], || g.sum(&[0, 1, 2], false))?])
    });
    Ok(y)
}

/// The gradients of `B(dy, K)` for the upstream gradient `g`, those `needed` of
/// (`dy`, `K`): `conv2d(g, K)` and `conv2d_backward_filter(g, dy)`. When both are needed
/// they read the same im2col of `g`, which the CPU builds once for both
/// (`shared_columns_cpu`); each result is still recorded with its own rule.
fn backward_input_grads(
    g: &Tensor,
    k: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
    needed: (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if needed == (true, true) {
        let shapes = [output_shape(&spec), kernel_shape(&spec)];
        let shared =
            guarded("conv2d_backward_filter", &[g, k, dy], &[&shapes[0], &shapes[1]], g.dtype(), &g.device(), || {
                g.storage().conv2d_and_filter_grad(k.storage(), dy.storage(), &spec)
            })?;
        if let Some((y, dk)) = shared {
            let [y_shape, k_shape] = shapes;
            let d_dy = record_conv2d(Tensor::from_storage(y, y_shape), g, k, None, spec);
            let d_k = record_conv2d_backward_filter(Tensor::from_storage(dk, k_shape), g, dy, spec);
            return Ok((Some(d_dy), Some(d_k)));
        }
    }
    Ok((
        grad_if(needed.0, || conv2d_with_spec(g, k, None, spec))?,
        grad_if(needed.1, || conv2d_backward_filter(g, dy, spec))?,
    ))
}

/// The kernel gradient `F(x, dy)` of a convolution. Linear in both: for an upstream
/// gradient `G` (kernel-shaped), `d/dx = conv2d_backward_input(dy, G)` and
/// `d/d dy = conv2d(x, G)`.
fn conv2d_backward_filter(input: &Tensor, grad_out: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let shape = kernel_shape(&spec);
    let storage =
        guarded("conv2d_backward_filter", &[input, grad_out], &[&shape], input.dtype(), &input.device(), || {
            input.storage().conv2d_backward_filter(grad_out.storage(), &spec)
        })?;
    Ok(record_conv2d_backward_filter(Tensor::from_storage(storage, shape), input, grad_out, spec))
}

/// Records `dk`, computed as `F(input, grad_out)`, with the kernel gradient's rule.
fn record_conv2d_backward_filter(dk: Tensor, input: &Tensor, grad_out: &Tensor, spec: Conv2dSpec) -> Tensor {
    let (x, dy) = (input.clone(), grad_out.clone());
    record_op_masked("conv2d_backward_filter", &[input, grad_out], &dk, move |g, needed| {
        Ok(vec![
            grad_if(needed[0], || conv2d_backward_input(&dy, g, spec))?,
            grad_if(needed[1], || conv2d_with_spec(&x, g, None, spec))?,
        ])
    });
    dk
}
