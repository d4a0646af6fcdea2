//! Transposed 2-D convolution (Keras' `Conv2DTranspose`, PyTorch's `conv_transpose2d`).
//!
//! A transposed convolution of `x` is the input gradient of the convolution that maps the
//! transposed convolution's output back to `x`'s shape. So it is the
//! `conv2d_backward_input` primitive used as a forward op: its gradients are a convolution
//! (input) and `conv2d_backward_filter` (kernel), recorded with their own rules, so it is
//! differentiable to any order; on CUDA it runs as cuDNN's backward-data convolution.
//!
//! The output size follows Keras (`deconv_output_length`): without `output_padding`,
//! 'valid' gives `in * stride + max(k - stride, 0)` and 'same' gives `in * stride`; with
//! it, `(in - 1) * stride + k - 2 * pad + output_padding` (`pad` 0 for 'valid', `k / 2` for
//! 'same'), `k` being the dilated kernel extent. Where the rows of that output sit is then
//! TF's: the padding of the forward convolution from the output's size ('same' puts the
//! odd row at the bottom). Explicit padding is PyTorch's: `padding` crops the full output
//! on each side, `output_padding` adds rows at the bottom/right.

use super::padding::SpatialAxis;
use super::{backward_input_bias, check_nhwc, check_positive, conv2d_backward_input, Padding};
use crate::backend::Conv2dSpec;
use crate::{Error, Result, Tensor};

/// The options of [`Tensor::conv2d_transpose`]. The default is stride 1,
/// [`Padding::Valid`], no output padding, no dilation (Keras' defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dTransposeParams {
    /// Upsampling step, (rows, columns); each at least 1.
    pub strides: (usize, usize),
    /// 'valid', 'same' (Keras' output sizes) or explicit (PyTorch's `padding`).
    pub padding: Padding,
    /// Extra rows/columns at the bottom/right of the output (Keras' and PyTorch's
    /// `output_padding`); each must be smaller than its stride. `None` is Keras' default,
    /// which picks the output size from the padding alone.
    pub output_padding: Option<(usize, usize)>,
    /// Spacing between kernel taps, (rows, columns); 1 is a dense kernel.
    pub dilation: (usize, usize),
}

impl Default for Conv2dTransposeParams {
    fn default() -> Self {
        Conv2dTransposeParams { strides: (1, 1), padding: Padding::Valid, output_padding: None, dilation: (1, 1) }
    }
}

/// The output length along one axis (Keras' `deconv_output_length`, PyTorch's formula for
/// explicit padding), and the padding of the forward convolution that maps it back.
fn output_length(
    padding: Padding,
    axis: SpatialAxis,
    input: usize,
    extent: usize,
    stride: usize,
    output_padding: Option<usize>,
) -> Option<(usize, Padding)> {
    let explicit = |before: usize, after: usize| {
        let full = (input - 1).checked_mul(stride)?.checked_add(extent)?.checked_sub(before.checked_add(after)?)?;
        let op = output_padding.unwrap_or(0);
        // Rows that output_padding adds need no padding of the forward convolution.
        let after = after.saturating_sub(op);
        let pads = match axis {
            SpatialAxis::Height => Padding::Explicit { top: before, bottom: after, left: 0, right: 0 },
            SpatialAxis::Width => Padding::Explicit { top: 0, bottom: 0, left: before, right: after },
        };
        Some((full + op, pads))
    };
    // Checked: a stride or kernel near usize::MAX gives None (an error), not an overflow.
    match (padding, output_padding) {
        (Padding::Valid, None) => {
            Some((input.checked_mul(stride)?.checked_add(extent.saturating_sub(stride))?, Padding::Valid))
        }
        (Padding::Same, None) => Some((input.checked_mul(stride)?, Padding::Same)),
        (Padding::Valid, Some(op)) => {
            Some(((input - 1).checked_mul(stride)?.checked_add(extent)?.checked_add(op)?, Padding::Valid))
        }
        (Padding::Same, Some(op)) => {
            let pad = extent / 2;
            Some((
                (input - 1).checked_mul(stride)?.checked_add(extent)?.checked_add(op)?.checked_sub(2 * pad)?,
                Padding::Same,
            ))
        }
        (Padding::Explicit { top, bottom, left, right }, _) => match axis {
            SpatialAxis::Height => explicit(top, bottom),
            SpatialAxis::Width => explicit(left, right),
        },
    }
}

impl Tensor {
    /// Transposed 2-D convolution of an NHWC input `[n, h, w, c_in]` with a kernel
    /// `[c_in, kh, kw, filters]` and an optional bias `[filters]`: the result is
    /// `[n, out_h, out_w, filters]`, sized by Keras' rules (see
    /// [`Conv2dTransposeParams`]). The kernel is the one of the convolution this op
    /// transposes (which maps `filters` channels to `c_in`), in our `(out, kh, kw, in)`
    /// layout; Keras stores it `(kh, kw, filters, c_in)`, PyTorch `(c_in, filters, kh, kw)`.
    ///
    /// Differentiable with respect to input, kernel and bias, to any order.
    ///
    /// ```
    /// use tapegrad_tensor::{ops::conv::Conv2dTransposeParams, DType, Device, Padding, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::ones([1, 4, 4, 8], DType::F32, &Device::Cpu)?;
    /// let k = Tensor::ones([8, 3, 3, 16], DType::F32, &Device::Cpu)?;
    /// let params = Conv2dTransposeParams { strides: (2, 2), padding: Padding::Same, ..Default::default() };
    /// assert_eq!(x.conv2d_transpose(&k, None, &params)?.dims(), &[1, 8, 8, 16]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn conv2d_transpose(
        &self,
        kernel: &Tensor,
        bias: Option<&Tensor>,
        params: &Conv2dTransposeParams,
    ) -> Result<Tensor> {
        let spec = transpose_spec(self, kernel, bias, params)?;
        match bias {
            Some(b) => backward_input_bias(self, kernel, b, spec),
            None => conv2d_backward_input(self, kernel, spec),
        }
    }
}

/// Checks the operands of a transposed convolution and resolves the geometry of the
/// convolution it transposes.
fn transpose_spec(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv2dTransposeParams,
) -> Result<Conv2dSpec> {
    const OP: &str = "conv2d_transpose";
    check_nhwc(x, OP)?;
    x.check_same(kernel, OP)?;
    if kernel.rank() != 4 {
        return Err(Error::invalid(
            OP,
            format!("the kernel must be 4-D [in_channels, height, width, filters], got shape {}", kernel.shape()),
        ));
    }
    let &[batch, in_h, in_w, in_channels] = x.dims() else { unreachable!("rank checked") };
    let &[kernel_in, kernel_h, kernel_w, filters] = kernel.dims() else { unreachable!("rank checked") };
    if in_channels != kernel_in {
        return Err(Error::invalid(
            OP,
            format!(
                "the input of shape {} has {in_channels} channels but the kernel of shape {} (in_channels, height, \
                 width, filters) expects {kernel_in}",
                x.shape(),
                kernel.shape()
            ),
        ));
    }
    if kernel.elem_count() == 0 {
        return Err(Error::invalid(OP, format!("the kernel of shape {} is empty", kernel.shape())));
    }
    if in_h == 0 || in_w == 0 {
        return Err(Error::invalid(OP, format!("the input of shape {} has no pixels", x.shape())));
    }
    if let Some(b) = bias {
        x.check_same(b, OP)?;
        if b.dims() != [filters] {
            return Err(Error::invalid(
                OP,
                format!(
                    "the bias has shape {} but the kernel of shape {} has {filters} filters",
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
    if let Some((op_h, op_w)) = params.output_padding {
        if op_h >= stride_h || op_w >= stride_w {
            return Err(Error::invalid(
                OP,
                format!(
                    "output_padding {:?} must be smaller than the strides {:?} along each axis",
                    (op_h, op_w),
                    params.strides
                ),
            ));
        }
    }
    let extent = |k: usize, d: usize| (k - 1).saturating_mul(d).saturating_add(1);
    let (ext_h, ext_w) = (extent(kernel_h, dilation_h), extent(kernel_w, dilation_w));
    let ops = params.output_padding;
    let geometry = |axis, input, ext, stride, op| {
        output_length(params.padding, axis, input, ext, stride, op).ok_or_else(|| {
            Error::invalid(
                OP,
                format!(
                    "the {:?} padding crops more than the full output, or the output size overflows, along the {} \
                     axis (input {input}, kernel extent {ext}, stride {stride})",
                    params.padding,
                    if axis == SpatialAxis::Height { "height" } else { "width" }
                ),
            )
        })
    };
    let (out_h, pad_h) = geometry(SpatialAxis::Height, in_h, ext_h, stride_h, ops.map(|p| p.0))?;
    let (out_w, pad_w) = geometry(SpatialAxis::Width, in_w, ext_w, stride_w, ops.map(|p| p.1))?;
    let what = format!("kernel of shape {} (dilation {:?})", kernel.shape(), params.dilation);
    let rows = pad_h.resolve(OP, SpatialAxis::Height, out_h, ext_h, stride_h, &what)?;
    let cols = pad_w.resolve(OP, SpatialAxis::Width, out_w, ext_w, stride_w, &what)?;
    if (rows.out, cols.out) != (in_h, in_w) {
        return Err(Error::invalid(
            OP,
            format!(
                "an output of {out_h}x{out_w} does not map back to the input's {in_h}x{in_w} with {:?} padding, \
                 strides {:?} and a kernel extent of {ext_h}x{ext_w}; choose another output_padding",
                params.padding, params.strides
            ),
        ));
    }
    Ok(Conv2dSpec {
        batch,
        in_h: out_h,
        in_w: out_w,
        in_channels: filters,
        out_channels: in_channels,
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
        out_h: in_h,
        out_w: in_w,
        groups: 1,
    })
}
