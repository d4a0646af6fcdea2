//! CPU kernels of batch normalization over a `[rows, channels]` view (NHWC flattened).
//!
//! Per-channel statistics are column reductions: blocks of `BLOCK_ROWS` rows are reduced
//! into per-block partial results (in the element type, so f32 rounding stays small),
//! which are combined in f64. The forward statistics are two-pass within each
//! cache-resident block (its mean, then squared deviations from it), merged across blocks
//! by Chan's formula: accurate, and `x` is read from memory once for them and once for the
//! output. The backward pass is one reduction pass for `d_beta` and `d_gamma` and one
//! elementwise pass for `d_x`.
//!
//! Reproducibility: a parallel task reduces a fixed run of `BLOCKS_PER_TASK` blocks in
//! order, and the tasks' results are combined in task order, so the statistics and
//! gradients are bit-identical whatever rayon's scheduling and whatever the thread count
//! (a `fold`/`reduce` would combine in the order threads happen to finish).

use crate::backend::{BatchNormEpilogue, BatchNormGrads, BatchNormSpec};
use crate::utilities::alloc::{try_vec, try_with_capacity, try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Rows per block of a reduction or elementwise pass.
const BLOCK_ROWS: usize = 256;
/// Blocks per parallel task of a reduction: fixed (not derived from the thread count), so
/// the partial results, and so their rounding, are the same on any machine.
const BLOCKS_PER_TASK: usize = 8;

fn to_t<T: FloatElement>(v: f64) -> T {
    <T as num_traits::NumCast>::from(v).expect("f64 converts to a float type")
}

/// Reduces `rows` rows in fixed tasks of `BLOCKS_PER_TASK * BLOCK_ROWS` rows, where
/// `task(lo_block, hi_block)` reduces blocks `lo_block..hi_block` in order, and returns
/// the task results in task order (for the caller to combine in that order).
fn per_task<R: Send>(rows: usize, task: impl Fn(usize, usize) -> Result<R> + Sync) -> Result<Vec<R>> {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let tasks = blocks.div_ceil(BLOCKS_PER_TASK);
    (0..tasks).into_par_iter().map(|t| task(t * BLOCKS_PER_TASK, ((t + 1) * BLOCKS_PER_TASK).min(blocks))).collect()
}

/// The rows `lo..hi` of block `block`.
fn block_rows(block: usize, rows: usize) -> (usize, usize) {
    (block * BLOCK_ROWS, ((block + 1) * BLOCK_ROWS).min(rows))
}

/// Column sums of `width` values per row, where `add_row(r, acc)` adds row `r`'s values
/// to `acc`; the result is in f64.
fn column_sums<T: FloatElement + ZeroBits>(
    op: &'static str,
    rows: usize,
    width: usize,
    add_row: impl Fn(usize, &mut [T]) + Sync,
) -> Result<Vec<f64>> {
    let partials = per_task(rows, |lo, hi| {
        let mut total = try_zeros::<f64>(op, width)?;
        let mut acc = try_zeros::<T>(op, width)?;
        for block in lo..hi {
            acc.fill(T::zero());
            let (r0, r1) = block_rows(block, rows);
            for r in r0..r1 {
                add_row(r, &mut acc);
            }
            for (t, &a) in total.iter_mut().zip(&acc) {
                *t += a.to_f64();
            }
        }
        Ok(total)
    })?;
    let mut total = try_zeros::<f64>(op, width)?;
    for p in &partials {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    Ok(total)
}

/// `out[r, c] = f(r, c)` over all rows in parallel blocks, where `f(r, out_row)` fills a row.
fn map_rows<T: FloatElement + ZeroBits>(
    op: &'static str,
    rows: usize,
    width: usize,
    fill_row: impl Fn(usize, &mut [T]) + Sync,
) -> Result<Vec<T>> {
    let mut out = try_zeros::<T>(op, rows.saturating_mul(width))?;
    if out.is_empty() {
        return Ok(out);
    }
    let min_blocks = (1usize << 15).div_ceil(BLOCK_ROWS * width);
    out.par_chunks_mut(BLOCK_ROWS * width).with_min_len(min_blocks).enumerate().for_each(|(block, dst)| {
        for (i, row) in dst.chunks_exact_mut(width).enumerate() {
            fill_row(block * BLOCK_ROWS + i, row);
        }
    });
    Ok(out)
}

/// Per-block statistics of one channel: rows, mean, and sum of squared deviations.
#[derive(Clone, Copy, Default)]
struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Chan et al.'s pairwise combination: exact, and stable for any block sizes.
    fn merge(self, o: Moments) -> Moments {
        let count = self.count + o.count;
        if count == 0.0 {
            return self;
        }
        let delta = o.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * o.count / count,
            m2: self.m2 + o.m2 + delta * delta * self.count * o.count / count,
        }
    }
}

/// Per-channel mean and biased variance of `x` (`[rows, c]`), reading `x` from memory
/// once: each block of rows is reduced two-pass (its mean, then squared deviations from
/// it) while it sits in cache, and the blocks are merged in f64, in block order.
fn column_mean_var<T: FloatElement + ZeroBits>(x: &[T], rows: usize, c: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    const OP: &str = "batch_norm_train";
    let partials = per_task(rows, |lo, hi| {
        let mut acc = try_vec(OP, c, Moments::default())?;
        let mut sum = try_zeros::<T>(OP, c)?;
        let mut block_mean = try_zeros::<T>(OP, c)?;
        for block in lo..hi {
            let (r0, r1) = block_rows(block, rows);
            let rows_of_block = &x[r0 * c..r1 * c];
            sum.fill(T::zero());
            for row in rows_of_block.chunks_exact(c) {
                for (a, &v) in sum.iter_mut().zip(row) {
                    *a = *a + v;
                }
            }
            let n = to_t::<T>((r1 - r0) as f64);
            for (m, &v) in block_mean.iter_mut().zip(&sum) {
                *m = v / n;
            }
            sum.fill(T::zero());
            for row in rows_of_block.chunks_exact(c) {
                for ((a, &v), &m) in sum.iter_mut().zip(row).zip(&block_mean) {
                    let d = v - m;
                    *a = *a + d * d;
                }
            }
            for ((total, &m), &m2) in acc.iter_mut().zip(&block_mean).zip(&sum) {
                *total = total.merge(Moments { count: (r1 - r0) as f64, mean: m.to_f64(), m2: m2.to_f64() });
            }
        }
        Ok(acc)
    })?;
    let mut total = try_vec(OP, c, Moments::default())?;
    for p in partials {
        for (m, o) in total.iter_mut().zip(p) {
            *m = m.merge(o);
        }
    }
    Ok(total.iter().map(|m| (m.mean, m.m2 / m.count)).unzip())
}

/// ReLU as the elementwise `relu` computes it: `v < 0` rather than `v > 0`, so NaN passes.
fn relu<T: FloatElement>(v: T) -> T {
    if v < T::zero() {
        T::zero()
    } else {
        v
    }
}

/// ReLU's gradient as the elementwise `relu`'s rule computes it, `dy * (y > 0)` with the
/// mask a 1 or 0 of the element type, so the fused and unfused paths agree bit for bit.
fn relu_grad<T: FloatElement>(dy: T, y: T) -> T {
    dy * if y > T::zero() { T::one() } else { T::zero() }
}

/// A backend call whose operands do not fit its epilogue (the ops never make one).
fn internal(op: &'static str, msg: &str) -> crate::Error {
    crate::Error::invalid(op, format!("internal error: {msg}"))
}

/// The training forward pass: `(y, mean, biased var)`, the spec's epilogue applied to `y`.
pub(crate) fn batch_norm_train<T: FloatElement + ZeroBits>(
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    residual: Option<&[T]>,
    s: &BatchNormSpec,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    const OP: &str = "batch_norm_train";
    let (rows, c) = (s.rows, s.channels);
    let row = |r: usize| &x[r * c..(r + 1) * c];
    let (mean, var) = column_mean_var(x, rows, c)?;
    let mean_t: Vec<T> = mean.iter().map(|&m| to_t(m)).collect();
    // y = (x - mean) * scale + beta, with scale = gamma / sqrt(var + eps); subtracting the
    // mean first avoids cancellation when |mean| is large against the spread.
    let scale: Vec<T> =
        (0..c).map(|ch| to_t(gamma.map_or(1.0, |g| g[ch].to_f64()) / (var[ch] + s.epsilon).sqrt())).collect();
    let shift: Vec<T> = (0..c).map(|ch| beta.map_or(T::zero(), |b| b[ch])).collect();
    let affine = mean_t.iter().zip(&scale).zip(&shift);
    // One loop per epilogue, so each inner loop is branch-free.
    let y = match (s.epilogue, residual) {
        (BatchNormEpilogue::Identity, None) => map_rows(OP, rows, c, |r, out| {
            for ((o, &v), ((&m, &sc), &sh)) in out.iter_mut().zip(row(r)).zip(affine.clone()) {
                *o = (v - m) * sc + sh;
            }
        })?,
        (BatchNormEpilogue::Relu, None) => map_rows(OP, rows, c, |r, out| {
            for ((o, &v), ((&m, &sc), &sh)) in out.iter_mut().zip(row(r)).zip(affine.clone()) {
                *o = relu((v - m) * sc + sh);
            }
        })?,
        (BatchNormEpilogue::AddRelu, Some(res)) if res.len() == x.len() => map_rows(OP, rows, c, |r, out| {
            let res_row = &res[r * c..(r + 1) * c];
            for (((o, &v), &rv), ((&m, &sc), &sh)) in out.iter_mut().zip(row(r)).zip(res_row).zip(affine.clone()) {
                // residual + bn(x), the order in which the unfused `Add` layer sums them.
                *o = relu(rv + ((v - m) * sc + sh));
            }
        })?,
        (epilogue, residual) => {
            return Err(internal(
                OP,
                &format!("epilogue {epilogue:?} with a residual of {:?} elements", residual.map(<[T]>::len)),
            ))
        }
    };
    Ok((y, mean_t, var.into_iter().map(to_t).collect()))
}

/// The fused backward pass: `(d_x, d_gamma, d_beta, d_residual)`. With `xhat = (x - mean) *
/// inv_std` and `g` the output gradient masked by the ReLU (`dy * (y > 0)`, or `dy` for the
/// identity epilogue), `d_beta = sum(g)`, `d_gamma = sum(g * xhat)`,
/// `d_x = gamma * inv_std * (g - d_beta / rows - xhat * d_gamma / rows)`, and for
/// `AddRelu` `d_residual = g`.
pub(crate) fn batch_norm_backward<T: FloatElement + ZeroBits>(
    x: &[T],
    dy: &[T],
    gamma: Option<&[T]>,
    mean: &[T],
    var: &[T],
    output: Option<&[T]>,
    s: &BatchNormSpec,
) -> Result<BatchNormGrads<Vec<T>>> {
    const OP: &str = "batch_norm_backward";
    let (rows, c) = (s.rows, s.channels);
    let relu_output = match (s.epilogue, output) {
        (BatchNormEpilogue::Identity, None) => None,
        (BatchNormEpilogue::Relu | BatchNormEpilogue::AddRelu, Some(y)) if y.len() == x.len() => Some(y),
        (epilogue, output) => {
            return Err(internal(
                OP,
                &format!("epilogue {epilogue:?} with an output of {:?} elements", output.map(<[T]>::len)),
            ))
        }
    };
    let f = |v: T| v.to_f64();
    // One pass for both sums: acc[..c] += g, acc[c..] += g * (x - mean).
    let sums = column_sums::<T>(OP, rows, 2 * c, |r, acc| {
        let (sum_dy, sum_dy_xc) = acc.split_at_mut(c);
        let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        let sums = sum_dy.iter_mut().zip(sum_dy_xc.iter_mut());
        match relu_output {
            None => {
                for (((a, b), &d), (&v, &m)) in sums.zip(dyr).zip(xr.iter().zip(mean)) {
                    *a = *a + d;
                    *b = *b + d * (v - m);
                }
            }
            Some(y) => {
                let yr = &y[r * c..(r + 1) * c];
                for (((a, b), (&d, &yv)), (&v, &m)) in sums.zip(dyr.iter().zip(yr)).zip(xr.iter().zip(mean)) {
                    let d = relu_grad(d, yv);
                    *a = *a + d;
                    *b = *b + d * (v - m);
                }
            }
        }
    })?;
    let inv_std: Vec<f64> = var.iter().map(|&v| 1.0 / (f(v) + s.epsilon).sqrt()).collect();
    let d_beta: Vec<f64> = sums[..c].to_vec();
    let d_gamma: Vec<f64> = (0..c).map(|ch| sums[c + ch] * inv_std[ch]).collect();
    // d_x = k_dy * g + k_x * (x - mean) + k_0, per channel.
    let inv_rows = 1.0 / rows as f64;
    let mut k_dy = try_with_capacity(OP, c)?;
    let mut k_x = try_with_capacity(OP, c)?;
    let mut k_0 = try_with_capacity(OP, c)?;
    for ch in 0..c {
        let g = gamma.map_or(1.0, |g| f(g[ch])) * inv_std[ch];
        let kx = -g * d_gamma[ch] * inv_std[ch] * inv_rows;
        k_dy.push(to_t::<T>(g));
        k_x.push(to_t::<T>(kx));
        k_0.push(to_t::<T>(-g * d_beta[ch] * inv_rows));
    }
    let per_channel = || k_dy.iter().zip(&k_x).zip(&k_0).zip(mean);
    let dx = map_rows(OP, rows, c, |r, out| {
        let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        match relu_output {
            None => {
                for (((o, &d), &v), (((&kd, &kx), &k0), &m)) in out.iter_mut().zip(dyr).zip(xr).zip(per_channel()) {
                    *o = kd * d + kx * (v - m) + k0;
                }
            }
            Some(y) => {
                let yr = &y[r * c..(r + 1) * c];
                let inputs = dyr.iter().zip(yr).zip(xr);
                for ((o, ((&d, &yv), &v)), (((&kd, &kx), &k0), &m)) in out.iter_mut().zip(inputs).zip(per_channel()) {
                    *o = kd * relu_grad(d, yv) + kx * (v - m) + k0;
                }
            }
        }
    })?;
    let d_residual = match (s.epilogue, relu_output) {
        (BatchNormEpilogue::AddRelu, Some(y)) => Some(map_rows(OP, rows, c, |r, out| {
            let (dyr, yr) = (&dy[r * c..(r + 1) * c], &y[r * c..(r + 1) * c]);
            for ((o, &d), &yv) in out.iter_mut().zip(dyr).zip(yr) {
                *o = relu_grad(d, yv);
            }
        })?),
        _ => None,
    };
    Ok((dx, d_gamma.into_iter().map(to_t).collect(), d_beta.into_iter().map(to_t).collect(), d_residual))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_gradients_do_not_depend_on_the_thread_count() {
        // 40 tasks of 8 blocks of 256 rows, with values whose sums depend on the association.
        let (rows, c) = (40 * BLOCKS_PER_TASK * BLOCK_ROWS + 77, 3);
        let x: Vec<f32> = (0..rows * c).map(|i| ((i * 7919) % 1009) as f32 * 1.1e-3 + 30.0).collect();
        let dy: Vec<f32> = (0..rows * c).map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5).collect();
        let gamma = [0.5f32, 1.5, -2.0];
        let spec = BatchNormSpec { rows, channels: c, epsilon: 1e-3, epilogue: BatchNormEpilogue::Identity };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (y, mean, var) = batch_norm_train(&x, Some(&gamma), None, None, &spec).unwrap();
                let (dx, dg, db, _) = batch_norm_backward(&x, &dy, Some(&gamma), &mean, &var, None, &spec).unwrap();
                [y, mean, var, dx, dg, db].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            })
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert!(run(threads) == one, "{threads} threads differ from 1");
        }
    }
}
