//! Matrix products (2-D and batched) and their gradient rules.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::MatmulSpec;
use crate::ops::output_guard::guarded;
use crate::tape::{grad_if, record_op_masked};
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// The matrix product `self @ rhs`: `[m, k] @ [k, n] -> [m, n]`, or batched
    /// `[..., m, k] @ [..., k, n]` with equal batch dimensions; a 2-D operand is shared
    /// across the other's batch.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_transposed(rhs, false, false)
    }

    /// `op(self) @ op(rhs)` where `op` transposes the last two axes when asked, without
    /// copying (the GEMM reads the operand transposed).
    pub fn matmul_transposed(&self, rhs: &Tensor, lhs_transposed: bool, rhs_transposed: bool) -> Result<Tensor> {
        self.check_same(rhs, "matmul")?;
        self.check_float("matmul")?;
        let (ls, rs) = (self.shape(), rhs.shape());
        let err = || {
            Error::invalid(
                "matmul",
                format!(
                    "cannot multiply {ls}{} by {rs}{}",
                    if lhs_transposed { " (transposed)" } else { "" },
                    if rhs_transposed { " (transposed)" } else { "" }
                ),
            )
        };
        if ls.rank() < 2 || rs.rank() < 2 {
            return Err(err());
        }
        let (lr, rr) = (ls.rank(), rs.rank());
        let (m, k) = if lhs_transposed {
            (ls.dims()[lr - 1], ls.dims()[lr - 2])
        } else {
            (ls.dims()[lr - 2], ls.dims()[lr - 1])
        };
        let (k2, n) = if rhs_transposed {
            (rs.dims()[rr - 1], rs.dims()[rr - 2])
        } else {
            (rs.dims()[rr - 2], rs.dims()[rr - 1])
        };
        if k != k2 {
            return Err(err());
        }
        let (lb, rb) = (&ls.dims()[..lr - 2], &rs.dims()[..rr - 2]);
        let batch_dims = match (lb.is_empty(), rb.is_empty()) {
            (_, true) => lb,
            (true, false) => rb,
            (false, false) if lb == rb => lb,
            _ => return Err(err()),
        };
        let batch: usize = batch_dims.iter().product();
        let spec = MatmulSpec {
            batch,
            m,
            k,
            n,
            lhs_transposed,
            rhs_transposed,
            lhs_batched: !lb.is_empty(),
            rhs_batched: !rb.is_empty(),
        };
        let mut out_dims = batch_dims.to_vec();
        out_dims.extend([m, n]);
        // Empty operands can name an output too large to allocate ([m, 0] @ [0, n]).
        let shape = Shape::new(&out_dims);
        let storage = guarded("matmul", &[self, rhs], &[&shape], self.dtype(), &self.device(), || {
            self.storage().matmul(rhs.storage(), &spec)
        })?;
        let out = Tensor::from_storage(storage, shape);
        let (a, b) = (self.clone(), rhs.clone());
        record_op_masked("matmul", &[self, rhs], &out, move |g, needed| {
            // C = op(A) op(B). dA = g op(B)^T (transposed back if A was), dB likewise;
            // a shared 2-D operand sums its gradient over the batch.
            let da = grad_if(needed[0], || {
                let da = if lhs_transposed {
                    b.matmul_transposed(g, rhs_transposed, true)?
                } else {
                    g.matmul_transposed(&b, false, !rhs_transposed)?
                };
                da.sum_batch_to(a.shape())
            })?;
            let db = grad_if(needed[1], || {
                let db = if rhs_transposed {
                    g.matmul_transposed(&a, true, lhs_transposed)?
                } else {
                    a.matmul_transposed(g, !lhs_transposed, false)?
                };
                db.sum_batch_to(b.shape())
            })?;
            Ok(vec![da, db])
        });
        Ok(out)
    }

    /// Sums leading batch axes away when a 2-D operand was shared across a batch.
    fn sum_batch_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra: Vec<isize> = (0..(self.rank() - shape.rank()) as isize).collect();
        self.sum(&extra, false)
    }
}
