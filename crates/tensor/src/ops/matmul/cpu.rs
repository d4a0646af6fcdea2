//! CPU matrix products through the `gemm` crate (runtime-dispatched SIMD kernels,
//! rayon-parallel), which reads transposed operands through strides.

use crate::backend::MatmulSpec;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::Result;

/// Below this many multiply-adds per product, a batch runs one product per thread
/// instead of splitting each product.
const SMALL_GEMM: usize = 1 << 18;

pub(crate) fn matmul<T: ZeroBits + Default + Send + Sync + 'static + num_traits::One + num_traits::Zero>(
    lhs: &[T],
    rhs: &[T],
    s: &MatmulSpec,
) -> Result<Vec<T>> {
    let (m, k, n) = (s.m, s.k, s.n);
    let mut out = try_zeros("matmul", s.batch.saturating_mul(m).saturating_mul(n))?;
    if m * n == 0 {
        return Ok(out);
    }
    // (row stride, column stride) of each operand as stored.
    let (l_rs, l_cs) = if s.lhs_transposed { (1, m) } else { (k, 1) };
    let (r_rs, r_cs) = if s.rhs_transposed { (1, k) } else { (n, 1) };
    let l_step = if s.lhs_batched { m * k } else { 0 };
    let r_step = if s.rhs_batched { k * n } else { 0 };
    let one_product = |b: usize, dst: &mut [T], par: Parallelism| {
        let l = &lhs[b * l_step..];
        let r = &rhs[b * r_step..];
        // SAFETY: the strides above describe `m x k`, `k x n` and `m x n` matrices that
        // lie within `l`, `r` and `dst` (their lengths are checked by the tensor layer).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                l.as_ptr(),
                l_cs as isize,
                l_rs as isize,
                r.as_ptr(),
                r_cs as isize,
                r_rs as isize,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                par,
            );
        }
    };
    let threads = rayon::current_num_threads();
    if s.batch > 1 && m * n * k < SMALL_GEMM {
        out.par_chunks_mut(m * n).enumerate().for_each(|(b, dst)| one_product(b, dst, Parallelism::None));
    } else {
        let par =
            if m * n * k < SMALL_GEMM / 4 || threads == 1 { Parallelism::None } else { Parallelism::Rayon(threads) };
        for (b, dst) in out.chunks_mut(m * n).enumerate() {
            one_product(b, dst, par);
        }
    }
    Ok(out)
}
