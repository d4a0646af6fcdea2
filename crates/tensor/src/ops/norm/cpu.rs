//! CPU kernels of batch normalization over a `[rows, channels]` view (NHWC flattened).
//!
//! Per-channel statistics are column reductions: blocks of `BLOCK_ROWS` rows are reduced
//! into per-block partial results (in the element type, so f32 rounding stays small),
//! which are combined in f64. The forward statistics are two-pass within each
//! cache-resident block (its mean, then squared deviations from it), merged across blocks
//! by Chan's formula: accurate, and `x` is read from memory once for them and once for the
//! output. The backward pass is one reduction pass for `d_beta` and `d_gamma` and one
//! elementwise pass for `d_x`; with the add-ReLU epilogue the reduction pass also writes
//! the masked gradient (which is `d_residual`), and the `d_x` pass reads it instead of the
//! output gradient and the output. The loops over a block are in rows.rs, compiled for the
//! widest instruction set the CPU has; outputs are written once, never zeroed first.
//!
//! Reproducibility: a parallel task reduces a fixed run of `BLOCKS_PER_TASK` blocks in
//! order, and the tasks' results are combined in task order, so the statistics and
//! gradients are bit-identical whatever rayon's scheduling and whatever the thread count
//! (a `fold`/`reduce` would combine in the order threads happen to finish).

use super::rows::{BlockMoments, Epilogue, GradInput, GradSums, Normalize};
use crate::backend::{BatchNormEpilogue, BatchNormGrads, BatchNormSpec};
use crate::utilities::alloc::{try_par_fill, try_vec, try_with_capacity, try_zeros, ZeroBits};
use crate::utilities::isa::Isa;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// A new `[rows, width]` buffer written block by block in parallel: `fill(block, dst)`
/// runs one of rows.rs's kernels, which writes all of `dst` (the block's rows).
fn map_blocks<T: FloatElement>(
    op: &'static str,
    rows: usize,
    width: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Result<Vec<T>> {
    let min_blocks = (1usize << 15).div_ceil(BLOCK_ROWS * width);
    let fill = |_: &mut (), block: usize, dst: &mut [MaybeUninit<T>]| {
        fill(block, dst);
        Ok(())
    };
    // SAFETY: the callers' `fill` runs a rows.rs kernel, which writes every element of its
    // destination.
    unsafe { try_par_fill(op, rows.saturating_mul(width), BLOCK_ROWS * width, min_blocks, || (), fill) }
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
fn column_mean_var<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    rows: usize,
    c: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    const OP: &str = "batch_norm_train";
    let partials = per_task(rows, |lo, hi| {
        let mut acc = try_vec(OP, c, Moments::default())?;
        let mut m2 = try_zeros::<T>(OP, c)?;
        let mut mean = try_zeros::<T>(OP, c)?;
        for block in lo..hi {
            let (r0, r1) = block_rows(block, rows);
            isa.run(BlockMoments { x: &x[r0 * c..r1 * c], mean: &mut mean, m2: &mut m2 });
            for ((total, &m), &q) in acc.iter_mut().zip(&mean).zip(&m2) {
                *total = total.merge(Moments { count: (r1 - r0) as f64, mean: m.to_f64(), m2: q.to_f64() });
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
    batch_norm_train_with(Isa::detect(), x, gamma, beta, residual, s)
}

/// [`batch_norm_train`] with the given instruction set (the tests compare them).
fn batch_norm_train_with<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    residual: Option<&[T]>,
    s: &BatchNormSpec,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    const OP: &str = "batch_norm_train";
    let (rows, c) = (s.rows, s.channels);
    let epilogue = match (s.epilogue, residual) {
        (BatchNormEpilogue::Identity, None) => Epilogue::Identity,
        (BatchNormEpilogue::Relu, None) => Epilogue::Relu,
        (BatchNormEpilogue::AddRelu, Some(res)) if res.len() == x.len() => Epilogue::AddRelu(res),
        (epilogue, residual) => {
            return Err(internal(
                OP,
                &format!("epilogue {epilogue:?} with a residual of {:?} elements", residual.map(<[T]>::len)),
            ))
        }
    };
    let (mean, var) = column_mean_var(isa, x, rows, c)?;
    let mean_t: Vec<T> = mean.iter().map(|&m| to_t(m)).collect();
    // y = (x - mean) * scale + beta, with scale = gamma / sqrt(var + eps); subtracting the
    // mean first avoids cancellation when |mean| is large against the spread.
    let scale: Vec<T> =
        (0..c).map(|ch| to_t(gamma.map_or(1.0, |g| g[ch].to_f64()) / (var[ch] + s.epsilon).sqrt())).collect();
    let shift: Vec<T> = (0..c).map(|ch| beta.map_or(T::zero(), |b| b[ch])).collect();
    let y = map_blocks(OP, rows, c, |block, dst| {
        let (r0, r1) = block_rows(block, rows);
        let epilogue = match epilogue {
            Epilogue::AddRelu(res) => Epilogue::AddRelu(&res[r0 * c..r1 * c]),
            other => other,
        };
        isa.run(Normalize { x: &x[r0 * c..r1 * c], epilogue, mean: &mean_t, scale: &scale, shift: &shift, dst });
    })?;
    Ok((y, mean_t, var.into_iter().map(to_t).collect()))
}

/// The backward reduction: `[sum(g), sum(g * (x - mean))]` per channel in f64 (`2 * c`
/// values), `g` being `dy` masked by `y > 0` where the ReLU's output `y` is given; with
/// `g_out` (`rows * c` elements) `g` is written there too.
#[allow(clippy::too_many_arguments)]
fn grad_sums<T: FloatElement + ZeroBits>(
    isa: Isa,
    x: &[T],
    dy: &[T],
    y: Option<&[T]>,
    mean: &[T],
    rows: usize,
    c: usize,
    g_out: Option<&mut [MaybeUninit<T>]>,
) -> Result<Vec<f64>> {
    const OP: &str = "batch_norm_backward";
    let task_rows = BLOCKS_PER_TASK * BLOCK_ROWS;
    let tasks = rows.div_ceil(task_rows);
    // Each task's slice of `g_out`, so that the tasks write disjoint parts of it.
    let outs: Vec<Option<&mut [MaybeUninit<T>]>> = match g_out {
        Some(g) => g.chunks_mut(task_rows * c).map(Some).collect(),
        None => (0..tasks).map(|_| None).collect(),
    };
    let partials = outs
        .into_par_iter()
        .enumerate()
        .map(|(t, mut g_task)| -> Result<Vec<f64>> {
            let mut total = try_zeros::<f64>(OP, 2 * c)?;
            let mut acc = try_zeros::<T>(OP, 2 * c)?;
            let blocks = rows.div_ceil(BLOCK_ROWS);
            for block in t * BLOCKS_PER_TASK..((t + 1) * BLOCKS_PER_TASK).min(blocks) {
                let (r0, r1) = block_rows(block, rows);
                let local = (r0 - t * task_rows) * c..(r1 - t * task_rows) * c;
                let g_out = g_task.as_deref_mut().map(|g| &mut g[local]);
                let (x, dy, y) = (&x[r0 * c..r1 * c], &dy[r0 * c..r1 * c], y.map(|y| &y[r0 * c..r1 * c]));
                isa.run(GradSums { x, dy, y, mean, acc: &mut acc, g_out });
                for (sum, &a) in total.iter_mut().zip(&acc) {
                    *sum += a.to_f64();
                }
            }
            Ok(total)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut total = try_zeros::<f64>(OP, 2 * c)?;
    for p in &partials {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    Ok(total)
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
    batch_norm_backward_with(Isa::detect(), x, dy, gamma, mean, var, output, s)
}

/// [`batch_norm_backward`] with the given instruction set (the tests compare them).
#[allow(clippy::too_many_arguments)]
fn batch_norm_backward_with<T: FloatElement + ZeroBits>(
    isa: Isa,
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
    let len = rows.saturating_mul(c);
    // With add-ReLU the reduction pass writes g = d_residual, and the d_x pass reads it.
    let mut d_residual = match s.epilogue {
        BatchNormEpilogue::AddRelu => Some(try_with_capacity::<T>(OP, len)?),
        _ => None,
    };
    let g_out = d_residual.as_mut().map(|v| &mut v.spare_capacity_mut()[..len]);
    let sums = grad_sums(isa, x, dy, relu_output, mean, rows, c, g_out)?;
    if let Some(v) = d_residual.as_mut() {
        // SAFETY: the capacity is at least `len`, and `grad_sums` ran `GradSums` on every
        // block of rows with its slice of the buffer, which writes all of it.
        unsafe { v.set_len(len) };
    }
    let f = |v: T| v.to_f64();
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
    // The upstream gradient as the d_x pass reads it: already masked (d_residual), or dy
    // and the output whose mask it applies.
    let (g, mask) = match &d_residual {
        Some(g) => (g.as_slice(), None),
        None => (dy, relu_output),
    };
    let dx = map_blocks(OP, rows, c, |block, dst| {
        let (r0, r1) = block_rows(block, rows);
        let (x, dy, y) = (&x[r0 * c..r1 * c], &g[r0 * c..r1 * c], mask.map(|y| &y[r0 * c..r1 * c]));
        isa.run(GradInput { x, dy, y, mean, k_dy: &k_dy, k_x: &k_x, k_0: &k_0, dst });
    })?;
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

    /// Bits of each vector, for exact comparisons (NaN included).
    fn bits<T: FloatElement>(vs: &[&[T]]) -> Vec<Vec<u64>> {
        vs.iter().map(|v| v.iter().map(|&f| f.to_f64().to_bits()).collect()).collect()
    }

    fn every_isa_gives_the_same_bits<T: FloatElement + ZeroBits>() {
        // Channel counts with tails past every vector width, rows with a partial block and
        // a partial task; a NaN, negatives (the ReLU) and zeros of both signs among them.
        for (rows, c) in [(1, 1), (5, 3), (300, 17), (2 * BLOCKS_PER_TASK * BLOCK_ROWS + 3, 67), (40, 130)] {
            let n = rows * c;
            let val = |i: usize, m: usize, k: usize| {
                <T as num_traits::NumCast>::from(((i * m) % k) as f64 * 0.013 - 1.7).unwrap()
            };
            let mut x: Vec<T> = (0..n).map(|i| val(i, 7919, 1009)).collect();
            let mut dy: Vec<T> = (0..n).map(|i| val(i, 104729, 997)).collect();
            let res: Vec<T> = (0..n).map(|i| val(i, 31, 257)).collect();
            if n > 10 {
                x[n - 2] = T::nan();
                dy[3] = -T::zero();
            }
            let gamma: Vec<T> = (0..c).map(|i| val(i, 3, 11)).collect();
            let beta: Vec<T> = (0..c).map(|i| val(i, 5, 13)).collect();
            for epilogue in [BatchNormEpilogue::Identity, BatchNormEpilogue::Relu, BatchNormEpilogue::AddRelu] {
                let spec = BatchNormSpec { rows, channels: c, epsilon: 1e-3, epilogue };
                let residual = (epilogue == BatchNormEpilogue::AddRelu).then_some(res.as_slice());
                let run = |isa: Isa| {
                    let (y, mean, var) =
                        batch_norm_train_with(isa, &x, Some(&gamma), Some(&beta), residual, &spec).unwrap();
                    let out = (epilogue != BatchNormEpilogue::Identity).then_some(y.as_slice());
                    let (dx, dg, db, dr) =
                        batch_norm_backward_with(isa, &x, &dy, Some(&gamma), &mean, &var, out, &spec).unwrap();
                    assert_eq!(dr.is_some(), residual.is_some());
                    bits(&[&y, &mean, &var, &dx, &dg, &db, dr.as_deref().unwrap_or(&[])])
                };
                let portable = run(Isa::Portable);
                for isa in Isa::available() {
                    assert!(run(isa) == portable, "{isa:?} differs from portable: {rows}x{c} {epilogue:?}");
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        every_isa_gives_the_same_bits::<f32>();
        every_isa_gives_the_same_bits::<f64>();
    }

    /// The fused d_residual (written by the reduction pass and read back by the d_x pass)
    /// against the formulas evaluated directly, element by element, in the same order.
    #[test]
    fn add_relu_gradients_equal_the_direct_formulas() {
        let (rows, c) = (BLOCKS_PER_TASK * BLOCK_ROWS + 300, 5);
        let x: Vec<f64> = (0..rows * c).map(|i| ((i * 7919) % 1009) as f64 * 1e-3 - 0.5).collect();
        let dy: Vec<f64> = (0..rows * c).map(|i| ((i * 104729) % 997) as f64 * 1e-3 - 0.5).collect();
        let res: Vec<f64> = (0..rows * c).map(|i| ((i * 31) % 257) as f64 * 1e-3 - 0.1).collect();
        let gamma = [0.5, 1.5, -2.0, 1.0, 0.25];
        let spec = BatchNormSpec { rows, channels: c, epsilon: 1e-3, epilogue: BatchNormEpilogue::AddRelu };
        let (y, mean, var) = batch_norm_train(&x, Some(&gamma), None, Some(&res), &spec).unwrap();
        let (dx, _, db, dr) = batch_norm_backward(&x, &dy, Some(&gamma), &mean, &var, Some(&y), &spec).unwrap();
        let dr = dr.unwrap();
        for i in 0..rows * c {
            let g = dy[i] * if y[i] > 0.0 { 1.0 } else { 0.0 };
            assert_eq!(dr[i].to_bits(), g.to_bits(), "d_residual[{i}]");
        }
        for ch in 0..c {
            let sum: f64 = (0..rows).map(|r| dr[r * c + ch]).sum();
            assert!((db[ch] - sum).abs() < 1e-9, "d_beta[{ch}]: {} vs {sum}", db[ch]);
        }
        // d_x at a few elements, from the closed form with the kernel's coefficients.
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-3).sqrt()).collect();
        for i in [0, 7, rows * c / 2, rows * c - 1] {
            let ch = i % c;
            let d_gamma: f64 =
                (0..rows).map(|r| dr[r * c + ch] * (x[r * c + ch] - mean[ch])).sum::<f64>() * inv_std[ch];
            let xhat = (x[i] - mean[ch]) * inv_std[ch];
            let want = gamma[ch] * inv_std[ch] * (dr[i] - db[ch] / rows as f64 - xhat * d_gamma / rows as f64);
            assert!((dx[i] - want).abs() < 1e-9, "d_x[{i}]: {} vs {want}", dx[i]);
        }
    }
}
