//! Resizing NHWC images by integer factors (Keras' `UpSampling2D`), nearest-neighbour or
//! bilinear, and the gradient.
//!
//! Sampling follows TF's `tf.image.resize` (half-pixel centres), which for integer factors
//! is also PyTorch's `interpolate(..., align_corners=False)`: output pixel `o` along an axis
//! of `n` input pixels upsampled by `f` samples the input at `(o + 0.5) / f - 0.5`, clamped
//! to `[0, n - 1]`; nearest takes pixel `o / f`. Two primitives do the work, the forward
//! resize and its adjoint, which gives every input pixel the weighted sum of the output
//! gradients that read it (a gather, so it is deterministic on every backend, with no
//! atomics). Both are linear and each is the other's gradient: differentiable to any order.

mod bilinear_rows;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod nearest_cpu;

pub use crate::backend::resize_spec::{Interpolation, ResizeSpec};
use crate::ops::conv::check_nhwc;
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// What output pixel `o` reads along one axis: `w0 * x[i0] + w1 * x[i1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tap {
    pub(crate) i0: usize,
    pub(crate) i1: usize,
    pub(crate) w0: f64,
    pub(crate) w1: f64,
}

/// The tap of output pixel `o` along an axis of `n` (> 0) input pixels upsampled by
/// `factor`. resize.cu computes the same numbers in the same way.
pub(crate) fn tap(o: usize, factor: usize, n: usize, interpolation: Interpolation) -> Tap {
    match interpolation {
        Interpolation::Nearest => {
            let i = (o / factor).min(n - 1);
            Tap { i0: i, i1: i, w0: 1.0, w1: 0.0 }
        }
        Interpolation::Bilinear => {
            let src = ((o as f64 + 0.5) / factor as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n - 1);
            let w1 = src - i0 as f64;
            Tap { i0, i1: (i0 + 1).min(n - 1), w0: 1.0 - w1, w1 }
        }
    }
}

/// The output pixels (ascending) that can read input pixel `i` along an axis of `out`
/// pixels upsampled by `factor`: a superset, callers weigh each by [`tap`].
pub(crate) fn reader_range(i: usize, factor: usize, out: usize) -> std::ops::Range<usize> {
    i.saturating_sub(1) * factor..((i + 2) * factor).min(out)
}

/// The weight with which output pixel `o` (tap `t`) reads input pixel `i`, if it does.
pub(crate) fn weight_of(t: Tap, i: usize) -> Option<f64> {
    match (t.i0 == i, t.i1 == i) {
        (true, true) => Some(t.w0 + t.w1),
        (true, false) => Some(t.w0),
        (false, true) => Some(t.w1),
        (false, false) => None,
    }
}

impl Tensor {
    /// Upsamples an NHWC image `[n, h, w, c]` by integer `factors` (rows, columns) to
    /// `[n, h * factor_h, w * factor_w, c]`, as Keras' `UpSampling2D` (TF's half-pixel
    /// centres; PyTorch's `interpolate(scale_factor=f, align_corners=False)`). Float
    /// dtypes; differentiable to any order.
    ///
    /// ```
    /// use tapegrad_tensor::{Device, Interpolation, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::from_vec(vec![1.0f32, 3.0], [1, 1, 2, 1], &Device::Cpu)?;
    /// let near = x.resize((1, 2), Interpolation::Nearest)?;
    /// assert_eq!(near.to_vec::<f32>()?, vec![1.0, 1.0, 3.0, 3.0]);
    /// let lin = x.resize((1, 2), Interpolation::Bilinear)?;
    /// assert_eq!(lin.to_vec::<f32>()?, vec![1.0, 1.5, 2.5, 3.0]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resize(&self, factors: (usize, usize), interpolation: Interpolation) -> Result<Tensor> {
        const OP: &str = "resize";
        check_nhwc(self, OP)?;
        if factors.0 == 0 || factors.1 == 0 {
            return Err(Error::invalid(OP, format!("the factors (rows, columns) must be at least 1, got {factors:?}")));
        }
        let &[batch, in_h, in_w, channels] = self.dims() else { unreachable!("rank checked") };
        let spec = ResizeSpec { batch, in_h, in_w, channels, factor_h: factors.0, factor_w: factors.1, interpolation };
        let overflow = || {
            Error::invalid(OP, format!("upsampling shape {} by {factors:?} overflows the address space", self.shape()))
        };
        let out_h = in_h.checked_mul(factors.0).ok_or_else(overflow)?;
        let out_w = in_w.checked_mul(factors.1).ok_or_else(overflow)?;
        Shape::new(&[batch, out_h, out_w, channels]).checked_elem_count(OP)?;
        if factors == (1, 1) {
            return Ok(self.clone());
        }
        resize_with_spec(self, spec)
    }
}

fn input_shape(s: &ResizeSpec) -> Shape {
    Shape::new(&[s.batch, s.in_h, s.in_w, s.channels])
}

fn output_shape(s: &ResizeSpec) -> Shape {
    Shape::new(&[s.batch, s.out_h(), s.out_w(), s.channels])
}

/// The forward resize, recorded with its gradient rule (the adjoint).
fn resize_with_spec(x: &Tensor, spec: ResizeSpec) -> Result<Tensor> {
    let shape = output_shape(&spec);
    let storage = guarded("resize", &[x], &[&shape], x.dtype(), &x.device(), || x.storage().resize(&spec))?;
    let out = Tensor::from_storage(storage, shape);
    record_op("resize", &[x], &out, move |g| Ok(vec![Some(resize_backward(g, spec)?)]));
    Ok(out)
}

/// The adjoint of the resize: `[n, out_h, out_w, c] -> [n, h, w, c]`. Its gradient is the
/// resize.
fn resize_backward(grad_out: &Tensor, spec: ResizeSpec) -> Result<Tensor> {
    let shape = input_shape(&spec);
    let storage = guarded("resize_backward", &[grad_out], &[&shape], grad_out.dtype(), &grad_out.device(), || {
        grad_out.storage().resize_backward(&spec)
    })?;
    let dx = Tensor::from_storage(storage, shape);
    record_op("resize_backward", &[grad_out], &dx, move |g| Ok(vec![Some(resize_with_spec(g, spec)?)]));
    Ok(dx)
}
