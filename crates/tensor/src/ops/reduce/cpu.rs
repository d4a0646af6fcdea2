//! CPU kernels of the reductions.
//!
//! Any set of axes reduces as a sequence of `[outer, r, inner] -> [outer, inner]`
//! passes, one per run of adjacent reduced axes (after dropping size-1 axes), so one
//! well-tuned kernel serves row sums (`inner == 1`), column sums (`outer == 1`, e.g. a
//! bias gradient) and everything between.
//!
//! Sums are evaluated in a fixed association that depends on the shape only (see
//! [`reduce`]), so CPU training is bit-reproducible whatever the thread count.

use crate::backend::{ArgReduceOp, ReduceOp};
use crate::utilities::alloc::{try_vec, try_with_capacity};
use crate::utilities::{is_nan, PAR_MIN_LEN};
use crate::{Result, Shape};
use rayon::prelude::*;

/// What a reduction needs of an element type.
pub(crate) trait ReduceElem: Copy + Send + Sync + PartialOrd + SumAdd + num_traits::Zero {}
impl<T: Copy + Send + Sync + PartialOrd + SumAdd + num_traits::Zero> ReduceElem for T {}

/// The addition of a sum: IEEE addition for floats, wrapping for i64 (as NumPy, PyTorch and
/// TF sum integers), so a sum of large integers cannot panic on overflow.
pub(crate) trait SumAdd: Copy {
    /// `self + rhs`.
    fn sum_add(self, rhs: Self) -> Self;
}
macro_rules! float_sum_add {
    ($($t:ty),*) => {$(
        impl SumAdd for $t {
            #[inline(always)]
            fn sum_add(self, rhs: Self) -> Self {
                self + rhs
            }
        }
    )*};
}
float_sum_add!(f32, f64, half::bf16, half::f16);
impl SumAdd for i64 {
    #[inline(always)]
    fn sum_add(self, rhs: Self) -> Self {
        self.wrapping_add(rhs)
    }
}

#[derive(Clone, Copy)]
struct Combine(ReduceOp);

impl Combine {
    #[inline(always)]
    fn apply<T: ReduceElem>(self, acc: T, v: T) -> T {
        match self.0 {
            ReduceOp::Sum => acc.sum_add(v),
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

/// Elements per chunk of a long row (`inner == 1`): a row is reduced chunk by chunk and
/// the chunks combined in order, whether they run in parallel or not.
const ROW_CHUNK: usize = PAR_MIN_LEN / 4;
/// Rows per chunk of a column reduction (`inner > 1`), summed into a fresh accumulator.
const CHUNK_ROWS: usize = 256;
/// Rows per task of a column reduction: its chunks are combined in order, then the tasks.
const TASK_ROWS: usize = CHUNK_ROWS * 16;

const OP: &str = "reduce";

/// Reduces the sorted `axes` of `x` (of `shape`); the result is laid out like the
/// keepdims shape.
///
/// Every sum is evaluated in one fixed association (fixed-size chunks combined in order),
/// whichever of the serial and parallel paths runs, so results are bit-identical for any
/// scheduling and any thread count.
pub(crate) fn reduce<T: ReduceElem>(x: &[T], op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<Vec<T>> {
    let mut data: Option<Vec<T>> = None;
    for pass in super::reduce_passes(shape, axes) {
        let src = data.as_deref().unwrap_or(x);
        data = Some(reduce_middle(src, op, pass.outer, pass.r, pass.inner)?);
    }
    match data {
        Some(d) => Ok(d),
        // Every reduced axis had size 1 (or there were none): a copy.
        None => {
            if shape.elem_count() == 0 {
                // Sums over empty axes are 0 (max/min over empty axes are rejected above).
                try_vec(OP, shape.keepdims(axes).elem_count(), T::zero())
            } else {
                let mut out = try_with_capacity(OP, x.len())?;
                out.extend_from_slice(x);
                Ok(out)
            }
        }
    }
}

/// `[outer, r, inner] -> [outer, inner]`.
fn reduce_middle<T: ReduceElem>(x: &[T], op: ReduceOp, outer: usize, r: usize, inner: usize) -> Result<Vec<T>> {
    if r == 0 {
        return try_vec(OP, outer * inner, T::zero());
    }
    if outer == 0 || inner == 0 {
        return Ok(Vec::new());
    }
    let big = x.len() >= PAR_MIN_LEN;
    if inner == 1 {
        return reduce_rows(x, op, outer, r, big);
    }
    let mut out = try_vec(OP, outer * inner, T::zero())?;
    let columns = Columns { x, c: Combine(op), r, inner };
    if !big || outer >= rayon::current_num_threads() * 2 {
        let per_outer = |(o, dst): (usize, &mut [T])| columns.reduce_outer(o, dst);
        if big {
            out.par_chunks_mut(inner).enumerate().try_for_each(per_outer)?;
        } else {
            out.chunks_mut(inner).enumerate().try_for_each(per_outer)?;
        }
    } else {
        // Few outer blocks of many rows (a column sum): the tasks of each run in parallel
        // and are combined in order, exactly as reduce_outer combines them.
        for (o, dst) in out.chunks_mut(inner).enumerate() {
            let tasks: Vec<Vec<T>> = (0..r.div_ceil(TASK_ROWS))
                .into_par_iter()
                .map(|t| {
                    let mut part = try_vec(OP, inner, T::zero())?;
                    columns.reduce_task(o, t, &mut part)?;
                    Ok(part)
                })
                .collect::<Result<_>>()?;
            columns.combine(dst, tasks.iter().map(Vec::as_slice));
        }
    }
    Ok(out)
}

/// `[outer, r] -> [outer]`: each row reduced in chunks of `ROW_CHUNK`, combined in order.
fn reduce_rows<T: ReduceElem>(x: &[T], op: ReduceOp, outer: usize, r: usize, big: bool) -> Result<Vec<T>> {
    let c = Combine(op);
    let run = |run: &[T]| -> T {
        if op == ReduceOp::Sum {
            // Eight partial sums: vectorises, and is more accurate than one chain.
            let mut acc = [T::zero(); 8];
            let chunks = run.chunks_exact(8);
            let rest = chunks.remainder();
            for ch in chunks {
                for i in 0..8 {
                    acc[i] = acc[i].sum_add(ch[i]);
                }
            }
            let mut s = T::zero();
            for &v in rest {
                s = s.sum_add(v);
            }
            acc.iter().fold(s, |a, &b| a.sum_add(b))
        } else {
            run.iter().skip(1).fold(run[0], |a, &v| c.apply(a, v))
        }
    };
    let in_order = |parts: &mut dyn Iterator<Item = T>| -> T {
        let first = parts.next().expect("a row of r > 0 elements has a chunk");
        parts.fold(first, |a, v| c.apply(a, v))
    };
    let row_reduce = |row: &[T]| -> T { in_order(&mut row.chunks(ROW_CHUNK).map(run)) };
    let mut out = try_with_capacity(OP, outer)?;
    if !big {
        out.extend(x.chunks(r).map(row_reduce));
    } else if outer >= rayon::current_num_threads() * 4 {
        x.par_chunks(r).map(row_reduce).collect_into_vec(&mut out);
    } else {
        // Few long rows: the chunks of each row run in parallel, combined in order.
        for row in x.chunks(r) {
            let parts: Vec<T> = row.par_chunks(ROW_CHUNK).map(run).collect();
            out.push(in_order(&mut parts.into_iter()));
        }
    }
    Ok(out)
}

/// A column reduction `[outer, r, inner] -> [outer, inner]` in its fixed association:
/// rows in chunks of `CHUNK_ROWS` (sums start each chunk from zero), chunks combined in
/// order within tasks of `TASK_ROWS` rows, tasks combined in order.
struct Columns<'a, T> {
    x: &'a [T],
    c: Combine,
    r: usize,
    inner: usize,
}

impl<T: ReduceElem> Columns<'_, T> {
    fn row(&self, o: usize, j: usize) -> &[T] {
        let start = (o * self.r + j) * self.inner;
        &self.x[start..start + self.inner]
    }

    /// Combines rows `lo..hi` of block `o` into `acc`.
    fn accumulate(&self, o: usize, lo: usize, hi: usize, acc: &mut [T]) {
        for j in lo..hi {
            for (a, &v) in acc.iter_mut().zip(self.row(o, j)) {
                *a = self.c.apply(*a, v);
            }
        }
    }

    /// Task `t` of block `o` into `out`.
    fn reduce_task(&self, o: usize, t: usize, out: &mut [T]) -> Result<()> {
        let (lo, hi) = (t * TASK_ROWS, ((t + 1) * TASK_ROWS).min(self.r));
        if self.c.0 != ReduceOp::Sum {
            out.copy_from_slice(self.row(o, lo));
            self.accumulate(o, lo + 1, hi, out);
            return Ok(());
        }
        out.fill(T::zero());
        if hi - lo <= CHUNK_ROWS {
            // One chunk: 0 + chunk is the chunk itself, bit for bit.
            self.accumulate(o, lo, hi, out);
            return Ok(());
        }
        let mut chunk = try_vec(OP, self.inner, T::zero())?;
        for c0 in (lo..hi).step_by(CHUNK_ROWS) {
            chunk.fill(T::zero());
            self.accumulate(o, c0, (c0 + CHUNK_ROWS).min(hi), &mut chunk);
            for (a, &v) in out.iter_mut().zip(&chunk) {
                *a = a.sum_add(v);
            }
        }
        Ok(())
    }

    /// Combines task results in order into `dst`, as `reduce_outer` does.
    fn combine<'p>(&self, dst: &mut [T], mut tasks: impl Iterator<Item = &'p [T]>)
    where
        T: 'p,
    {
        let Some(first) = tasks.next() else { return };
        dst.copy_from_slice(first);
        for part in tasks {
            for (a, &v) in dst.iter_mut().zip(part) {
                *a = self.c.apply(*a, v);
            }
        }
    }

    /// Block `o` into `dst`, task by task.
    fn reduce_outer(&self, o: usize, dst: &mut [T]) -> Result<()> {
        let tasks = self.r.div_ceil(TASK_ROWS);
        self.reduce_task(o, 0, dst)?;
        if tasks > 1 {
            let mut part = try_vec(OP, self.inner, T::zero())?;
            for t in 1..tasks {
                self.reduce_task(o, t, &mut part)?;
                for (a, &v) in dst.iter_mut().zip(&part) {
                    *a = self.c.apply(*a, v);
                }
            }
        }
        Ok(())
    }
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
        assert_eq!(reduce(&x, ReduceOp::Sum, &s, &[1]).unwrap(), vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
        assert_eq!(reduce(&x, ReduceOp::Sum, &s, &[0, 2]).unwrap(), vec![60.0, 92.0, 124.0]);
        assert_eq!(reduce(&x, ReduceOp::Max, &s, &[0, 1, 2]).unwrap(), vec![23.0]);
        assert_eq!(arg_reduce(&x, ArgReduceOp::ArgMax, &s, 1), vec![2; 8]);
    }

    #[test]
    fn large_column_and_row_sums_match_serial() {
        let x: Vec<f64> = (0..(1 << 17)).map(|v| (v % 7) as f64).collect();
        let s = Shape::new(&[1 << 11, 64]);
        let cols = reduce(&x, ReduceOp::Sum, &s, &[0]).unwrap();
        for (c, &v) in cols.iter().enumerate() {
            let expect: f64 = (0..1 << 11).map(|r| x[r * 64 + c]).sum();
            assert_eq!(v, expect);
        }
        let all = reduce(&x, ReduceOp::Sum, &s, &[0, 1]).unwrap();
        assert_eq!(all[0], x.iter().sum::<f64>());
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        // Values whose float sum depends on the association, in shapes that take every path.
        let x: Vec<f32> = (0..(1usize << 20)).map(|v| ((v * 7919) % 1000) as f32 * 1.37e-3 + 1e3).collect();
        let shapes: [&[usize]; 4] = [&[1 << 20], &[2, 1 << 19], &[1 << 14, 64], &[4, 1 << 12, 64]];
        let axes_of: [&[usize]; 4] = [&[0], &[1], &[0], &[1]];
        for (dims, axes) in shapes.iter().zip(axes_of) {
            let s = Shape::new(dims);
            let in_pool = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| reduce(&x, ReduceOp::Sum, &s, axes).unwrap())
            };
            let one: Vec<u32> = in_pool(1).iter().map(|v| v.to_bits()).collect();
            for threads in [2, 3, 8] {
                let many: Vec<u32> = in_pool(threads).iter().map(|v| v.to_bits()).collect();
                assert_eq!(one, many, "shape {dims:?}, {threads} threads");
            }
        }
    }
}
