//! Reductions over axes (sum, mean, max, min), argmax/argmin, and their gradient rules.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{ArgReduceOp, ReduceOp};
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{DType, Error, Result, Shape, Tensor};

/// One pass of a reduction: `[outer, r, inner] -> [outer, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReducePass {
    pub(crate) outer: usize,
    pub(crate) r: usize,
    pub(crate) inner: usize,
}

/// Plans a reduction of the sorted `axes` of `shape` as passes over `[outer, r, inner]`
/// views, one per run of adjacent reduced axes (size-1 axes dropped), innermost run first;
/// each pass reads the previous pass's output. No passes: nothing to reduce (a copy, or
/// zeros for an empty input).
pub(crate) fn reduce_passes(shape: &Shape, axes: &[usize]) -> Vec<ReducePass> {
    // Runs of (size, reduced) with size-1 axes dropped and equal neighbours merged.
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (d, &size) in shape.dims().iter().enumerate() {
        if size == 1 {
            continue;
        }
        let red = axes.contains(&d);
        match groups.last_mut() {
            Some((s, r)) if *r == red => *s *= size,
            _ => groups.push((size, red)),
        }
    }
    let mut passes = Vec::new();
    while let Some(pos) = groups.iter().rposition(|g| g.1) {
        let outer = groups[..pos].iter().map(|g| g.0).product();
        let inner = groups[pos + 1..].iter().map(|g| g.0).product();
        passes.push(ReducePass { outer, r: groups[pos].0, inner });
        groups.remove(pos);
    }
    passes
}

impl Tensor {
    /// Reduces `axes` (resolved, sorted) and returns the keepdims-shaped result.
    fn reduce_keepdims(&self, op: ReduceOp, axes: &[usize]) -> Result<Tensor> {
        let shape = self.shape().keepdims(axes);
        let name = match op {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        };
        let storage = guarded(name, &[self], &[&shape], self.dtype(), &self.device(), || {
            self.storage().reduce(op, self.shape(), axes)
        })?;
        Ok(Tensor::from_storage(storage, shape))
    }

    fn reduce_op(&self, op: ReduceOp, name: &'static str, axes: &[isize], keepdims: bool) -> Result<Tensor> {
        let axes = self.shape().axes(axes, name)?;
        if op != ReduceOp::Sum && axes.iter().any(|&a| self.dims()[a] == 0) {
            return Err(Error::invalid(name, format!("cannot reduce an empty axis of shape {}", self.shape())));
        }
        let kept = self.reduce_keepdims(op, &axes)?;
        let (x, k) = (self.clone(), kept.clone());
        match op {
            ReduceOp::Sum => record_op(name, &[self], &kept, move |g| Ok(vec![Some(g.broadcast_to(x.shape())?)])),
            ReduceOp::Max | ReduceOp::Min => {
                let axes = axes.clone();
                // The gradient is shared equally among the tied extremes (as TF).
                record_op(name, &[self], &kept, move |g| {
                    let mask = x.equal(&k)?;
                    let count = mask.reduce_keepdims(ReduceOp::Sum, &axes)?;
                    Ok(vec![Some(g.div(&count)?.mul(&mask)?)])
                })
            }
        }
        if keepdims {
            Ok(kept)
        } else {
            kept.reshape(self.shape().remove_axes(&axes))
        }
    }

    /// Sum over `axes` (negative axes count from the end); `keepdims` keeps them as size 1.
    pub fn sum(&self, axes: &[isize], keepdims: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Sum, "sum", axes, keepdims)
    }

    /// Sum of all elements, as a scalar.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdims: bool) -> Result<Tensor> {
        self.check_float("mean")?;
        if self.dtype().is_low_precision() {
            // Sum and divide in f32, rounding once: dividing a rounded sum would round twice.
            return self.cast(DType::F32)?.mean(axes, keepdims)?.cast(self.dtype());
        }
        let resolved = self.shape().axes(axes, "mean")?;
        let count: usize = resolved.iter().map(|&a| self.dims()[a]).product();
        if count == 0 {
            return Err(Error::invalid("mean", format!("cannot average an empty axis of shape {}", self.shape())));
        }
        self.sum(axes, keepdims)?.affine(1.0 / count as f64, 0.0)
    }

    /// Mean of all elements, as a scalar.
    pub fn mean_all(&self) -> Result<Tensor> {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&axes, false)
    }

    /// Maximum over `axes`; the gradient is shared among tied maxima.
    pub fn max(&self, axes: &[isize], keepdims: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Max, "max", axes, keepdims)
    }

    /// Minimum over `axes`; the gradient is shared among tied minima.
    pub fn min(&self, axes: &[isize], keepdims: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Min, "min", axes, keepdims)
    }

    /// Index (i64) of the largest value along `axis`, the first on ties; the axis is
    /// removed. No gradient.
    pub fn argmax(&self, axis: isize) -> Result<Tensor> {
        self.arg_reduce(ArgReduceOp::ArgMax, "argmax", axis)
    }

    /// Index (i64) of the smallest value along `axis`, the first on ties. No gradient.
    pub fn argmin(&self, axis: isize) -> Result<Tensor> {
        self.arg_reduce(ArgReduceOp::ArgMin, "argmin", axis)
    }

    fn arg_reduce(&self, op: ArgReduceOp, name: &'static str, axis: isize) -> Result<Tensor> {
        let axis = self.shape().axis(axis, name)?;
        if self.dims()[axis] == 0 {
            return Err(Error::invalid(name, format!("axis {axis} of shape {} is empty", self.shape())));
        }
        let out_shape = self.shape().remove_axes(&[axis]);
        Ok(Tensor::from_storage(self.storage().arg_reduce(op, self.shape(), axis)?, out_shape))
    }

    /// Sums a broadcast gradient back to `shape` (the reverse of broadcasting): leading
    /// extra axes and axes where `shape` has 1 are summed.
    pub fn sum_to_shape(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.rank().checked_sub(shape.rank()).ok_or_else(|| Error::ShapeMismatch {
            op: "sum_to_shape",
            lhs: self.shape().clone(),
            rhs: shape.clone(),
        })?;
        let mut axes = Vec::new();
        for (i, &d) in self.dims().iter().enumerate() {
            if i < extra || (shape.dims()[i - extra] == 1 && d != 1) {
                axes.push(i as isize);
            } else if shape.dims()[i - extra] != d {
                return Err(Error::ShapeMismatch { op: "sum_to_shape", lhs: self.shape().clone(), rhs: shape.clone() });
            }
        }
        self.sum(&axes, true)?.reshape(shape.clone())
    }
}
