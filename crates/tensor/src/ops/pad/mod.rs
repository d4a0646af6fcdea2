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

use crate::shape::Dims;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// What [`Tensor::pad`] puts in the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// Every padded element is this value (0 is Keras' `ZeroPadding2D`).
    Constant(f64),
    /// The input mirrored about its first and last element, which are not repeated:
    /// `[1, 2, 3]` padded by 2 on both sides is `[3, 2, 1, 2, 3, 2, 1]`. Each padding must
    /// be smaller than its axis.
    Reflect,
}

impl Default for PadMode {
    fn default() -> Self {
        PadMode::Constant(0.0)
    }
}

/// A resolved padding: the input's dims and, per axis, the elements added before and
/// after. Axes without padding next to each other are merged before a backend sees the
/// spec, so NHWC padding of H and W reaches the kernels as at most five axes.
#[derive(Clone, Debug, PartialEq)]
pub struct PadSpec {
    /// The input's dims.
    pub in_dims: Dims,
    /// `(before, after)` per axis.
    pub pads: Vec<(usize, usize)>,
    /// The border's contents.
    pub mode: PadMode,
}

impl PadSpec {
    /// The output's dims: each input dim plus its padding (saturating; the op checks the
    /// element count).
    pub fn out_dims(&self) -> Dims {
        self.in_dims.iter().zip(&self.pads).map(|(&n, &(b, a))| n.saturating_add(b).saturating_add(a)).collect()
    }

    /// Merges runs of adjacent unpadded axes into one axis (same memory order).
    fn coalesced(&self) -> PadSpec {
        let mut in_dims = Dims::new();
        let mut pads = Vec::new();
        for (&n, &p) in self.in_dims.iter().zip(&self.pads) {
            match (pads.last(), in_dims.last_mut()) {
                (Some(&(0, 0)), Some(last)) if p == (0, 0) => *last *= n,
                _ => {
                    in_dims.push(n);
                    pads.push(p);
                }
            }
        }
        PadSpec { in_dims, pads, mode: self.mode }
    }

    /// The spec of the gradient of the forward pad: a constant no longer matters.
    fn linear(&self) -> PadSpec {
        let mode = match self.mode {
            PadMode::Constant(_) => PadMode::Constant(0.0),
            PadMode::Reflect => PadMode::Reflect,
        };
        PadSpec { mode, ..self.clone() }
    }
}

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
    let out = Tensor::from_storage(x.storage().pad(&spec.coalesced())?, out_shape);
    let in_shape = x.shape().clone();
    record_op("pad", &[x], &out, move |g| Ok(vec![Some(pad_backward(g, spec.linear(), in_shape.clone())?)]));
    Ok(out)
}

/// The adjoint of a pad: `[out dims] -> [in dims]`, each input element the sum of the
/// output elements that read it. Its gradient is the (linear) pad again.
fn pad_backward(grad_out: &Tensor, spec: PadSpec, in_shape: Shape) -> Result<Tensor> {
    let dx = Tensor::from_storage(grad_out.storage().pad_backward(&spec.coalesced())?, in_shape);
    let out_shape = grad_out.shape().clone();
    record_op("pad_backward", &[grad_out], &dx, move |g| {
        Ok(vec![Some(pad_with_spec(g, spec.clone(), out_shape.clone())?)])
    });
    Ok(dx)
}
