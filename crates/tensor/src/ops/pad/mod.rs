//! Padding a tensor along any of its axes: with a constant, or by reflection (TF's
//! `MirrorPad` in REFLECT mode, PyTorch's `F.pad(mode="reflect")`: the edge is not
//! repeated).
//!
//! Two primitives do the work: [`PadSpec`]'s forward pad and its adjoint, the backward pass
//! that gives every input element the sum of the output elements read from it (a gather,
//! so it is deterministic on every backend). Both are linear, and each is the other's
//! gradient (with a constant of 0, which does not enter the derivative): padding is
//! differentiable to any order.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

pub use crate::backend::pad_spec::{PadMode, PadSpec};
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// Pads every axis by `pads[axis] = (before, after)` elements, with a constant or by
    /// reflection ([`PadMode`]). `pads` has one entry per axis (rank of the tensor); float
    /// dtypes. Differentiable to any order (the gradient of a reflection sums the mirrored
    /// elements back into their sources).
    ///
    /// ```
    /// use tapegrad_tensor::{Device, ops::pad::PadMode, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [1, 3], &Device::Cpu)?;
    /// let y = x.pad(&[(0, 0), (2, 1)], PadMode::Reflect)?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
    /// let z = x.pad(&[(1, 0), (0, 1)], PadMode::Constant(0.0))?;
    /// assert_eq!(z.to_vec::<f32>()?, vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pad(&self, pads: &[(usize, usize)], mode: PadMode) -> Result<Tensor> {
        const OP: &str = "pad";
        self.check_float(OP)?;
        if pads.len() != self.rank() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} (before, after) pairs given for a tensor of shape {} (rank {})",
                    pads.len(),
                    self.shape(),
                    self.rank()
                ),
            ));
        }
        if let PadMode::Reflect = mode {
            for (axis, (&n, &(before, after))) in self.dims().iter().zip(pads).enumerate() {
                if before >= n.max(1) || after >= n.max(1) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "reflect padding ({before}, {after}) of axis {axis} must be smaller than the axis' size {n} \
                             (shape {})",
                            self.shape()
                        ),
                    ));
                }
            }
        }
        let spec = PadSpec { in_dims: self.dims().into(), pads: pads.to_vec(), mode };
        let out_dims = spec.out_dims();
        let out_shape = Shape::new(&out_dims);
        out_shape.checked_elem_count(OP)?;
        if pads.iter().all(|&p| p == (0, 0)) {
            return Ok(self.clone());
        }
        pad_with_spec(self, spec, out_shape)
    }
}

/// The forward pad, recorded with its gradient rule.
fn pad_with_spec(x: &Tensor, spec: PadSpec, out_shape: Shape) -> Result<Tensor> {
    let storage = guarded("pad", &[x], &[&out_shape], x.dtype(), &x.device(), || x.storage().pad(&spec.coalesced()))?;
    let out = Tensor::from_storage(storage, out_shape);
    let in_shape = x.shape().clone();
    record_op("pad", &[x], &out, move |g| Ok(vec![Some(pad_backward(g, spec.linear(), in_shape.clone())?)]));
    Ok(out)
}

/// The adjoint of a pad: `[out dims] -> [in dims]`, each input element the sum of the
/// output elements that read it. Its gradient is the (linear) pad again.
fn pad_backward(grad_out: &Tensor, spec: PadSpec, in_shape: Shape) -> Result<Tensor> {
    let storage = guarded("pad_backward", &[grad_out], &[&in_shape], grad_out.dtype(), &grad_out.device(), || {
        grad_out.storage().pad_backward(&spec.coalesced())
    })?;
    let dx = Tensor::from_storage(storage, in_shape);
    let out_shape = grad_out.shape().clone();
    record_op("pad_backward", &[grad_out], &dx, move |g| {
        Ok(vec![Some(pad_with_spec(g, spec.clone(), out_shape.clone())?)])
    });
    Ok(dx)
}
