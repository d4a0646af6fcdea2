//! CUDA matrix products through cuBLAS.
//!
//! Our buffers are row-major, cuBLAS is column-major. A row-major `[m, n]` matrix is the
//! column-major `[n, m]` matrix of its transpose, so `C = op(A) op(B)` is computed as
//! `C^T = op(B)^T op(A)^T`: cuBLAS gets B's buffer first, A's second, and the roles of
//! m and n swap. A row-major buffer read column-major is already transposed, so the
//! transpose flags pass through unchanged.

use crate::backend::MatmulSpec;
use crate::cuda_backend::blas::{gemm_strided_batched, Gemm};
use crate::cuda_backend::CudaStorage;
use crate::{BackendStorage, DType, Error, Result};

pub(crate) fn matmul(lhs: &CudaStorage, rhs: &CudaStorage, s: &MatmulSpec) -> Result<CudaStorage> {
    lhs.check_device(rhs, "matmul")?;
    lhs.check_dtype(rhs, "matmul")?;
    let dtype = lhs.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op: "matmul", dtype, expected: "f32 or f64" });
    }
    let lhs_len = if s.lhs_batched { s.batch * s.m * s.k } else { s.m * s.k };
    let rhs_len = if s.rhs_batched { s.batch * s.k * s.n } else { s.k * s.n };
    if lhs.len() != lhs_len || rhs.len() != rhs_len {
        return Err(Error::invalid(
            "matmul",
            format!("buffers of {} and {} elements do not match {s:?}", lhs.len(), rhs.len()),
        ));
    }
    let device = lhs.cuda_device();
    let out_len = s.batch * s.m * s.n;
    if out_len == 0 {
        return CudaStorage::alloc(device, 0, dtype);
    }
    if s.k == 0 {
        // Products over an empty inner dimension are zero.
        return CudaStorage::zeros(device, out_len, dtype);
    }
    let out = CudaStorage::alloc(device, out_len, dtype)?;
    // A batched, untransposed lhs times one shared rhs is a single product with
    // batch * m rows.
    let (m, batch) =
        if s.lhs_batched && !s.rhs_batched && !s.lhs_transposed { (s.batch * s.m, 1) } else { (s.m, s.batch) };
    let g = Gemm {
        transa: s.rhs_transposed,
        transb: s.lhs_transposed,
        m: s.n,
        n: m,
        k: s.k,
        lda: if s.rhs_transposed { s.k } else { s.n },
        ldb: if s.lhs_transposed { m } else { s.k },
        ldc: s.n,
        stride_a: if s.rhs_batched { s.k * s.n } else { 0 },
        stride_b: if s.lhs_batched { m * s.k } else { 0 },
        stride_c: m * s.n,
        batch,
    };
    gemm_strided_batched(device, dtype, &g, rhs.ptr(), lhs.ptr(), out.ptr())?;
    Ok(out)
}
