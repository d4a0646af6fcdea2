//! CPU kernels of the reductions.
//!
//! Any set of axes reduces as a sequence of `[outer, r, inner] -> [outer, inner]`
//! passes, one per run of adjacent reduced axes (after dropping size-1 axes), so one
//! well-tuned kernel serves row sums (`inner == 1`), column sums (`outer == 1`, e.g. a
//! bias gradient) and everything between.

use crate::backend::{ArgReduceOp, ReduceOp};
use crate::cpu_backend::{is_nan, PAR_MIN_LEN};
use crate::Shape;
use rayon::prelude::*;

/// What a reduction needs of an element type.
pub(crate) trait ReduceElem:
    Copy + Send + Sync + PartialOrd + std::ops::Add<Output = Self> + num_traits::Zero
{
}
impl<T: Copy + Send + Sync + PartialOrd + std::ops::Add<Output = T> + num_traits::Zero> ReduceElem for T {}

#[derive(Clone, Copy)]
struct Combine(ReduceOp);

impl Combine {
    #[inline(always)]
    fn apply<T: ReduceElem>(self, acc: T, v: T) -> T {
        match self.0 {
            ReduceOp::Sum => acc + v,
            // `is_nan` keeps NaN: a reduction over a NaN is NaN (as NumPy and PyTorch).
            ReduceOp::Max => {
                if v > acc || is_nan(v) {
                    v
                } else {
                    acc
                }
            }
            ReduceOp::Min => {
                if v < acc || is_nan(v) {
                    v
                } else {
                    acc
                }
            }
        }
    }
}

/// Reduces the sorted `axes` of `x` (of `shape`); the result is laid out like the
/// keepdims shape.
pub(crate) fn reduce<T: ReduceElem>(x: &[T], op: ReduceOp, shape: &Shape, axes: &[usize]) -> Vec<T> {
    let mut data: Option<Vec<T>> = None;
    for pass in super::reduce_passes(shape, axes) {
        let src = data.as_deref().unwrap_or(x);
        data = Some(reduce_middle(src, op, pass.outer, pass.r, pass.inner));
    }
    match data {
        Some(d) => d,
        // Every reduced axis had size 1 (or there were none): a copy.
        None => {
            if shape.elem_count() == 0 {
                // Sums over empty axes are 0 (max/min over empty axes are rejected above).
                vec![T::zero(); shape.keepdims(axes).elem_count()]
            } else {
                x.to_vec()
            }
        }
    }
}

/// `[outer, r, inner] -> [outer, inner]`.
fn reduce_middle<T: ReduceElem>(x: &[T], op: ReduceOp, outer: usize, r: usize, inner: usize) -> Vec<T> {
    let c = Combine(op);
    let init = |row: &[T]| -> T {
        match op {
            ReduceOp::Sum => T::zero(),
            _ => row[0],
        }
    };
    if r == 0 {
        return vec![T::zero(); outer * inner];
    }
    let big = x.len() >= PAR_MIN_LEN;
    if inner == 1 {
        let row_reduce = |row: &[T]| -> T {
            if op == ReduceOp::Sum {
                // Eight partial sums: vectorises, and is more accurate than one chain.
                let mut acc = [T::zero(); 8];
                let chunks = row.chunks_exact(8);
                let rest = chunks.remainder();
                for ch in chunks {
                    for i in 0..8 {
                        acc[i] = acc[i] + ch[i];
                    }
                }
                let mut s = T::zero();
                for &v in rest {
                    s = s + v;
                }
                acc.iter().fold(s, |a, &b| a + b)
            } else {
                row.iter().fold(init(row), |a, &v| c.apply(a, v))
            }
        };
        if !big {
            return x.chunks(r).map(row_reduce).collect();
        }
        if outer >= rayon::current_num_threads() * 4 {
            return x.par_chunks(r).map(row_reduce).collect();
        }
        // Few long rows: split each row across threads.
        return x
            .chunks(r)
            .map(|row| {
                let parts: Vec<T> = row.par_chunks(PAR_MIN_LEN / 4).map(row_reduce).collect();
                parts.iter().skip(1).fold(parts[0], |a, &v| c.apply(a, v))
            })
            .collect();
    }
    // inner > 1: accumulate whole rows of `inner` contiguous elements.
    let block = |o: usize, lo: usize, hi: usize, acc: &mut [T]| {
        for j in lo..hi {
            let row = &x[(o * r + j) * inner..(o * r + j + 1) * inner];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = c.apply(*a, v);
            }
        }
    };
    let start_row = |o: usize, j: usize| -> Vec<T> {
        let row = &x[(o * r + j) * inner..(o * r + j + 1) * inner];
        match op {
            ReduceOp::Sum => vec![T::zero(); inner],
            _ => row.to_vec(),
        }
    };
    if !big || outer >= rayon::current_num_threads() * 2 {
        let per_outer = |o: usize| -> Vec<T> {
            let mut acc = start_row(o, 0);
            block(o, 0, r, &mut acc);
            acc
        };
        let rows: Vec<Vec<T>> =
            if big { (0..outer).into_par_iter().map(per_outer).collect() } else { (0..outer).map(per_outer).collect() };
        return rows.concat();
    }
    // Few outer blocks of many rows (a column sum): split the rows across threads and
    // combine the partial results.
    let threads = rayon::current_num_threads().max(1);
    let step = r.div_ceil(threads * 2);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let partials: Vec<Vec<T>> = (0..r)
            .step_by(step)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|lo| {
                let hi = (lo + step).min(r);
                let mut acc = start_row(o, lo);
                block(o, lo, hi, &mut acc);
                acc
            })
            .collect();
        let mut acc = partials[0].clone();
        for p in &partials[1..] {
            for (a, &v) in acc.iter_mut().zip(p) {
                *a = c.apply(*a, v);
            }
        }
        out.extend_from_slice(&acc);
    }
    out
}

/// Index of the extreme value along `axis` (first on ties; a NaN wins).
pub(crate) fn arg_reduce<T: Copy + PartialOrd + Send + Sync>(
    x: &[T],
    op: ArgReduceOp,
    shape: &Shape,
    axis: usize,
) -> Vec<i64> {
    let dims = shape.dims();
    let outer: usize = dims[..axis].iter().product();
    let r = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let better = |v: T, best: T| match op {
        ArgReduceOp::ArgMax => v > best || (is_nan(v) && !is_nan(best)),
        ArgReduceOp::ArgMin => v < best || (is_nan(v) && !is_nan(best)),
    };
    let one = |idx: usize| -> i64 {
        let (o, i) = (idx / inner, idx % inner);
        let base = o * r * inner + i;
        let mut best = x[base];
        let mut best_j = 0;
        for j in 1..r {
            let v = x[base + j * inner];
            if better(v, best) {
                best = v;
                best_j = j;
            }
        }
        best_j as i64
    };
    if x.len() < PAR_MIN_LEN {
        (0..outer * inner).map(one).collect()
    } else {
        (0..outer * inner).into_par_iter().map(one).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_middle_and_multiple_axes() {
        let x: Vec<f64> = (0..24).map(|v| v as f64).collect();
        let s = Shape::new(&[2, 3, 4]);
        assert_eq!(reduce(&x, ReduceOp::Sum, &s, &[1]), vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
        assert_eq!(reduce(&x, ReduceOp::Sum, &s, &[0, 2]), vec![60.0, 92.0, 124.0]);
        assert_eq!(reduce(&x, ReduceOp::Max, &s, &[0, 1, 2]), vec![23.0]);
        assert_eq!(arg_reduce(&x, ArgReduceOp::ArgMax, &s, 1), vec![2; 8]);
    }

    #[test]
    fn large_column_and_row_sums_match_serial() {
        let x: Vec<f64> = (0..(1 << 17)).map(|v| (v % 7) as f64).collect();
        let s = Shape::new(&[1 << 11, 64]);
        let cols = reduce(&x, ReduceOp::Sum, &s, &[0]);
        for (c, &v) in cols.iter().enumerate() {
            let expect: f64 = (0..1 << 11).map(|r| x[r * 64 + c]).sum();
            assert_eq!(v, expect);
        }
        let all = reduce(&x, ReduceOp::Sum, &s, &[0, 1]);
        assert_eq!(all[0], x.iter().sum::<f64>());
    }
}
