//! Ops that move elements without arithmetic: reshape, permute, transpose,
//! broadcast_to, narrow (slicing), concat, stack, squeeze/unsqueeze; and their gradients.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::StridedLayout;
use crate::ops::output_guard::guarded;
use crate::shape::Dims;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Storage, Tensor};

impl Tensor {
    /// The same elements in a new shape with the same element count. Shares the buffer.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().clone(), rhs: shape });
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let out = Tensor::from_arc(self.storage_arc().clone(), shape);
        let from = self.shape().clone();
        record_op("reshape", &[self], &out, move |g| Ok(vec![Some(g.reshape(from.clone())?)]));
        Ok(out)
    }

    /// Inserts an axis of size 1 at `axis` (`-1` appends).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank + 1 } else { axis };
        if a < 0 || a > rank {
            return Err(Error::AxisOutOfRange { op: "unsqueeze", axis, shape: self.shape().clone() });
        }
        let mut dims = self.dims().to_vec();
        dims.insert(a as usize, 1);
        self.reshape(dims)
    }

    /// Removes an axis of size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = self.shape().axis(axis, "squeeze")?;
        if self.dims()[a] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!("axis {axis} of shape {} has size {}, not 1", self.shape(), self.dims()[a]),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(a);
        self.reshape(dims)
    }

    /// Flattens all axes after the first: `[n, ...] -> [n, prod(...)]`.
    pub fn flatten_from_1(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::invalid("flatten", "a scalar has no axes to flatten"));
        }
        let n = self.dims()[0];
        let rest: usize = self.dims()[1..].iter().product();
        self.reshape([n, rest])
    }

    fn strided(&self, layout: StridedLayout) -> Result<Tensor> {
        let shape = layout.shape.clone();
        let storage = guarded("strided_copy", &[self], &[&shape], self.dtype(), &self.device(), || {
            self.storage().strided_copy(&layout)
        })?;
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::invalid(
                "permute",
                format!("{perm:?} is not a permutation of the axes of {}", self.shape()),
            ));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let strides = self.shape().contiguous_strides();
        let layout = StridedLayout {
            shape: Shape::new(&perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>()),
            strides: perm.iter().map(|&p| strides[p]).collect(),
            offset: 0,
        };
        let out = self.strided(layout)?;
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        record_op("permute", &[self], &out, move |g| Ok(vec![Some(g.permute(&inverse)?)]));
        Ok(out)
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.shape().axis(a, "transpose")?, self.shape().axis(b, "transpose")?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Materialises this tensor broadcast to `shape` (NumPy rules).
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if self.shape().broadcast(&shape, "broadcast_to")? != shape {
            return Err(Error::Broadcast { op: "broadcast_to", lhs: self.shape().clone(), rhs: shape });
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        shape.checked_elem_count("broadcast_to")?;
        let layout = StridedLayout { strides: self.shape().broadcast_strides(&shape), shape, offset: 0 };
        let out = self.strided(layout)?;
        let from = self.shape().clone();
        record_op("broadcast_to", &[self], &out, move |g| Ok(vec![Some(g.sum_to_shape(&from)?)]));
        Ok(out)
    }

    /// The elements `start..start + len` along `axis` (a slice).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = self.shape().axis(axis, "narrow")?;
        let size = self.dims()[a];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} is out of bounds for axis {a} of shape {}",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        if start == 0 && len == size {
            return Ok(self.clone());
        }
        let strides = self.shape().contiguous_strides();
        let mut dims: Dims = self.dims().into();
        dims[a] = len;
        let layout = StridedLayout { shape: Shape::new(&dims), strides: strides.clone(), offset: start * strides[a] };
        let out = self.strided(layout)?;
        let full = self.shape().clone();
        record_op("narrow", &[self], &out, move |g| {
            // Zeros around the slice: concat(zeros_before, g, zeros_after).
            let mut parts = Vec::with_capacity(3);
            let mut pad_dims = full.dims().to_vec();
            if start > 0 {
                pad_dims[a] = start;
                parts.push(Tensor::zeros(pad_dims.clone(), g.dtype(), &g.device())?);
            }
            parts.push(g.clone());
            if start + len < size {
                pad_dims[a] = size - start - len;
                parts.push(Tensor::zeros(pad_dims, g.dtype(), &g.device())?);
            }
            Ok(vec![Some(Tensor::concat(&parts.iter().collect::<Vec<_>>(), a as isize)?)])
        });
        Ok(out)
    }

    /// Joins tensors along an existing axis; all other axes must agree.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = *tensors.first().ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let a = first.shape().axis(axis, "concat")?;
        for t in &tensors[1..] {
            first.check_same(t, "concat")?;
            let same_rank = t.rank() == first.rank();
            if !same_rank || t.dims().iter().zip(first.dims()).enumerate().any(|(i, (x, y))| i != a && x != y) {
                return Err(Error::ShapeMismatch { op: "concat", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
        }
        if tensors.len() == 1 {
            return Ok(first.clone());
        }
        let outer: usize = first.dims()[..a].iter().product();
        let inners: Vec<usize> = tensors.iter().map(|t| t.dims()[a..].iter().product()).collect();
        let storages: Vec<&Storage> = tensors.iter().map(|t| t.storage()).collect();
        let mut dims = first.dims().to_vec();
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[a]).collect();
        dims[a] = sizes.iter().try_fold(0usize, |n, &s| n.checked_add(s)).unwrap_or(usize::MAX);
        let shape = Shape::new(&dims);
        let storage = guarded("concat", tensors, &[&shape], first.dtype(), &first.device(), || {
            Storage::concat(&storages, outer, &inners)
        })?;
        let out = Tensor::from_storage(storage, shape);
        record_op("concat", tensors, &out, move |g| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&len| {
                    let part = g.narrow(a as isize, start, len);
                    start += len;
                    part.map(Some)
                })
                .collect()
        });
        Ok(out)
    }

    /// Joins tensors of one shape along a new axis.
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = *tensors.first().ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        for t in &tensors[1..] {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch { op: "stack", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
        }
        let expanded = tensors.iter().map(|t| t.unsqueeze(axis)).collect::<Result<Vec<_>>>()?;
        Tensor::concat(&expanded.iter().collect::<Vec<_>>(), axis)
    }
}
