//! gather (rows of a table picked by integer indices, as `tf.gather` on axis 0 and
//! `torch.nn.functional.embedding`) and its adjoint scatter_add, the gradient of each
//! other.
//!
//! The indices are read on the host once per op: that is where an index outside the table
//! becomes an error (naming the index and its position) on every backend, and where the
//! scatter's segments are built. The scatter-add is deterministic on every backend: a
//! stable counting sort groups the positions by target row (ascending position within a
//! row), and each output row sums its segment in that order (no atomics, the same sums at
//! every run and thread count).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::utilities::alloc::{try_vec, try_zeros};
use crate::{DType, Error, Result, Shape, Tensor};
use std::sync::Arc;

/// Indices read to the host and checked against a table of `rows` rows.
#[derive(Clone)]
struct HostIndices {
    values: Arc<Vec<i64>>,
    /// The indices as a flat i64 tensor on the device of the op.
    flat: Tensor,
    rows: usize,
}

impl HostIndices {
    fn read(op: &'static str, indices: &Tensor, rows: usize) -> Result<Self> {
        if indices.dtype() != DType::I64 {
            return Err(Error::UnsupportedDType { op, dtype: indices.dtype(), expected: "i64 indices" });
        }
        let values = indices.to_vec::<i64>()?;
        if let Some((i, &v)) = values.iter().enumerate().find(|(_, &v)| v < 0 || v as usize >= rows) {
            return Err(Error::invalid(
                op,
                format!("index {v} at position {i} of the indices {} is outside 0..{rows}", indices.shape()),
            ));
        }
        let flat = indices.detach().reshape([values.len()])?;
        Ok(HostIndices { values: Arc::new(values), flat, rows })
    }

    /// The positions grouped by the row they index (`order`, ascending within a row) and
    /// where each row's group starts (`offsets`, `rows + 1` entries), as i64 tensors on
    /// `device`.
    fn segments(&self, device: &crate::Device) -> Result<(Tensor, Tensor)> {
        const OP: &str = "scatter_add";
        let mut offsets = try_zeros::<i64>(OP, self.rows + 1)?;
        for &v in self.values.iter() {
            offsets[v as usize + 1] += 1;
        }
        for r in 0..self.rows {
            offsets[r + 1] += offsets[r];
        }
        let mut next: Vec<i64> = try_vec(OP, self.rows, 0)?;
        next.copy_from_slice(&offsets[..self.rows]);
        let mut order = try_zeros::<i64>(OP, self.values.len())?;
        for (position, &v) in self.values.iter().enumerate() {
            order[next[v as usize] as usize] = position as i64;
            next[v as usize] += 1;
        }
        let n = order.len();
        Ok((Tensor::from_vec(order, [n], device)?, Tensor::from_vec(offsets, [self.rows + 1], device)?))
    }
}

impl Tensor {
    /// The rows of this table (`[rows, ...]`) picked by `indices` (dtype i64, any shape):
    /// the result has shape `indices.shape ++ self.shape[1..]` (`tf.gather(params,
    /// indices)` on axis 0, PyTorch's `embedding`). An index outside `0..rows` is an
    /// error naming it. The gradient is [`Tensor::scatter_add`] (deterministic);
    /// differentiable to any order.
    ///
    /// ```
    /// use tapegrad_tensor::{Device, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let table = Tensor::from_vec(vec![0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0], [3, 2], &Device::Cpu)?;
    /// let ids = Tensor::from_vec(vec![2i64, 0, 2], [3], &Device::Cpu)?;
    /// assert_eq!(table.gather(&ids)?.to_vec::<f32>()?, vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    /// assert!(table.gather(&Tensor::from_vec(vec![3i64], [1], &Device::Cpu)?).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn gather(&self, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        self.check_float(OP)?;
        let Some((&rows, row_dims)) = self.dims().split_first() else {
            return Err(Error::invalid(OP, "the table must have a row axis, got a scalar"));
        };
        let idx = HostIndices::read(OP, indices, rows)?;
        let mut out_dims = indices.dims().to_vec();
        out_dims.extend_from_slice(row_dims);
        gather_with(self, idx, Shape::new(&out_dims))
    }

    /// The adjoint of [`Tensor::gather`]: a table of `rows` rows of zeros to which row `i`
    /// of `values` (`indices.shape ++ row_shape`) is added at row `indices[i]`; repeated
    /// indices add up, in ascending position order on every backend (deterministic).
    /// Differentiable to any order (its gradient is a gather).
    pub fn scatter_add(values: &Tensor, indices: &Tensor, rows: usize) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        values.check_float(OP)?;
        let lead = indices.rank();
        if values.rank() < lead || &values.dims()[..lead] != indices.dims() {
            return Err(Error::invalid(
                OP,
                format!("values of shape {} must start with the indices' shape {}", values.shape(), indices.shape()),
            ));
        }
        let idx = HostIndices::read(OP, indices, rows)?;
        let mut out_dims = vec![rows];
        out_dims.extend_from_slice(&values.dims()[lead..]);
        scatter_add_with(values, idx, Shape::new(&out_dims))
    }
}

fn gather_with(table: &Tensor, idx: HostIndices, out_shape: Shape) -> Result<Tensor> {
    out_shape.checked_elem_count("gather")?;
    let row_len = table.dims()[1..].iter().product::<usize>();
    let flat_indices = idx.flat.to_device(&table.device())?;
    let storage = guarded("gather", &[table], &[&out_shape], table.dtype(), &table.device(), || {
        table.storage().gather_rows(flat_indices.storage(), row_len)
    })?;
    let out = Tensor::from_storage(storage, out_shape);
    let table_shape = table.shape().clone();
    record_op("gather", &[table], &out, move |g| {
        Ok(vec![Some(scatter_add_with(g, idx.clone(), table_shape.clone())?)])
    });
    Ok(out)
}

fn scatter_add_with(values: &Tensor, idx: HostIndices, out_shape: Shape) -> Result<Tensor> {
    let row_len = out_shape.dims()[1..].iter().product::<usize>();
    let (order, offsets) = idx.segments(&values.device())?;
    let storage = guarded("scatter_add", &[values], &[&out_shape], values.dtype(), &values.device(), || {
        values.storage().segment_sum_rows(order.storage(), offsets.storage(), row_len)
    })?;
    let out = Tensor::from_storage(storage, out_shape);
    let values_shape = values.shape().clone();
    record_op("scatter_add", &[values], &out, move |g| {
        let picked = gather_with(g, idx.clone(), values_shape.clone())?;
        Ok(vec![Some(picked)])
    });
    Ok(out)
}
