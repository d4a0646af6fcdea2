//! CPU kernels of batch normalization over a `[rows, channels]` view (NHWC flattened).
//!
//! Per-channel statistics are column reductions: blocks of rows are reduced in parallel
//! into per-block partial results (in the element type, over at most `BLOCK_ROWS` rows,
//! so f32 rounding stays small), which are combined in f64. The forward statistics are
//! two-pass within each cache-resident block (its mean, then squared deviations from it),
//! merged across blocks by Chan's formula: accurate, and `x` is read from memory once for
//! them and once for the output. The backward pass is one reduction pass for `d_beta` and
//! `d_gamma` and one elementwise pass for `d_x`.

use crate::backend::BatchNormSpec;
use crate::FloatElement;
use rayon::prelude::*;

/// Rows per parallel block of a reduction or elementwise pass.
const BLOCK_ROWS: usize = 256;

fn to_t<T: FloatElement>(v: f64) -> T {
    <T as num_traits::NumCast>::from(v).expect("f64 converts to a float type")
}

/// Column sums of `width` values per row, where `add_row(r, acc)` adds row `r`'s values
/// to `acc`; the result is in f64.
fn column_sums<T: FloatElement>(rows: usize, width: usize, add_row: impl Fn(usize, &mut [T]) + Sync) -> Vec<f64> {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let min_blocks = (1usize << 15).div_ceil(BLOCK_ROWS * width.max(1));
    (0..blocks)
        .into_par_iter()
        .with_min_len(min_blocks)
        .fold(
            || (vec![0.0f64; width], vec![T::zero(); width]),
            |(mut total, mut acc), block| {
                acc.fill(T::zero());
                for r in block * BLOCK_ROWS..((block + 1) * BLOCK_ROWS).min(rows) {
                    add_row(r, &mut acc);
                }
                for (t, &a) in total.iter_mut().zip(&acc) {
                    *t += a.to_f64();
                }
                (total, acc)
            },
        )
        .map(|(total, _)| total)
        .reduce(
            || vec![0.0; width],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
}

/// `out[r, c] = f(r, c)` over all rows in parallel blocks, where `f(r, out_row)` fills a row.
fn map_rows<T: FloatElement>(rows: usize, width: usize, fill_row: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); rows * width];
    if out.is_empty() {
        return out;
    }
    let min_blocks = (1usize << 15).div_ceil(BLOCK_ROWS * width);
    out.par_chunks_mut(BLOCK_ROWS * width).with_min_len(min_blocks).enumerate().for_each(|(block, dst)| {
        for (i, row) in dst.chunks_exact_mut(width).enumerate() {
            fill_row(block * BLOCK_ROWS + i, row);
        }
    });
    out
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
/// it) while it sits in cache, and the blocks are merged in f64.
fn column_mean_var<T: FloatElement>(x: &[T], rows: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let min_blocks = (1usize << 15).div_ceil(BLOCK_ROWS * c.max(1));
    let merge_all = |mut a: Vec<Moments>, b: Vec<Moments>| {
        for (m, o) in a.iter_mut().zip(b) {
            *m = m.merge(o);
        }
        a
    };
    let total = (0..blocks)
        .into_par_iter()
        .with_min_len(min_blocks)
        .fold(
            || (vec![Moments::default(); c], vec![T::zero(); c], vec![T::zero(); c]),
            |(mut acc, mut sum, mut block_mean), block| {
                let (lo, hi) = (block * BLOCK_ROWS, ((block + 1) * BLOCK_ROWS).min(rows));
                let rows_of_block = &x[lo * c..hi * c];
                sum.fill(T::zero());
                for row in rows_of_block.chunks_exact(c) {
                    for (a, &v) in sum.iter_mut().zip(row) {
                        *a = *a + v;
                    }
                }
                let n = to_t::<T>((hi - lo) as f64);
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
                    *total = total.merge(Moments { count: (hi - lo) as f64, mean: m.to_f64(), m2: m2.to_f64() });
                }
                (acc, sum, block_mean)
            },
        )
        .map(|(acc, _, _)| acc)
        .reduce(|| vec![Moments::default(); c], merge_all);
    total.iter().map(|m| (m.mean, m.m2 / m.count)).unzip()
}

/// The training forward pass: `(y, mean, biased var)`.
pub(crate) fn batch_norm_train<T: FloatElement>(
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    s: &BatchNormSpec,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (rows, c) = (s.rows, s.channels);
    let row = |r: usize| &x[r * c..(r + 1) * c];
    let (mean, var) = column_mean_var(x, rows, c);
    let mean_t: Vec<T> = mean.iter().map(|&m| to_t(m)).collect();
    // y = (x - mean) * scale + beta, with scale = gamma / sqrt(var + eps); subtracting the
    // mean first avoids cancellation when |mean| is large against the spread.
    let scale: Vec<T> =
        (0..c).map(|ch| to_t(gamma.map_or(1.0, |g| g[ch].to_f64()) / (var[ch] + s.epsilon).sqrt())).collect();
    let shift: Vec<T> = (0..c).map(|ch| beta.map_or(T::zero(), |b| b[ch])).collect();
    let y = map_rows(rows, c, |r, out| {
        for ((((o, &v), &m), &sc), &sh) in out.iter_mut().zip(row(r)).zip(&mean_t).zip(&scale).zip(&shift) {
            *o = (v - m) * sc + sh;
        }
    });
    (y, mean_t, var.into_iter().map(to_t).collect())
}

/// The fused backward pass: `(d_x, d_gamma, d_beta)`. With `xhat = (x - mean) * inv_std`,
/// `d_beta = sum(dy)`, `d_gamma = sum(dy * xhat)` and
/// `d_x = gamma * inv_std * (dy - d_beta / rows - xhat * d_gamma / rows)`.
pub(crate) fn batch_norm_backward<T: FloatElement>(
    x: &[T],
    dy: &[T],
    gamma: Option<&[T]>,
    mean: &[T],
    var: &[T],
    s: &BatchNormSpec,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (rows, c) = (s.rows, s.channels);
    let f = |v: T| v.to_f64();
    // One pass for both sums: acc[..c] += dy, acc[c..] += dy * (x - mean).
    let sums = column_sums::<T>(rows, 2 * c, |r, acc| {
        let (sum_dy, sum_dy_xc) = acc.split_at_mut(c);
        let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        for ((((a, b), &d), &v), &m) in sum_dy.iter_mut().zip(sum_dy_xc.iter_mut()).zip(dyr).zip(xr).zip(mean) {
            *a = *a + d;
            *b = *b + d * (v - m);
        }
    });
    let inv_std: Vec<f64> = var.iter().map(|&v| 1.0 / (f(v) + s.epsilon).sqrt()).collect();
    let d_beta: Vec<f64> = sums[..c].to_vec();
    let d_gamma: Vec<f64> = (0..c).map(|ch| sums[c + ch] * inv_std[ch]).collect();
    // d_x = k_dy * dy + k_x * (x - mean) + k_0, per channel.
    let inv_rows = 1.0 / rows as f64;
    let mut k_dy = Vec::with_capacity(c);
    let mut k_x = Vec::with_capacity(c);
    let mut k_0 = Vec::with_capacity(c);
    for ch in 0..c {
        let g = gamma.map_or(1.0, |g| f(g[ch])) * inv_std[ch];
        let kx = -g * d_gamma[ch] * inv_std[ch] * inv_rows;
        k_dy.push(to_t::<T>(g));
        k_x.push(to_t::<T>(kx));
        k_0.push(to_t::<T>(-g * d_beta[ch] * inv_rows));
    }
    let dx = map_rows(rows, c, |r, out| {
        let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        let per_channel = k_dy.iter().zip(&k_x).zip(&k_0).zip(mean);
        for (((o, &d), &v), (((&kd, &kx), &k0), &m)) in out.iter_mut().zip(dyr).zip(xr).zip(per_channel) {
            *o = kd * d + kx * (v - m) + k0;
        }
    });
    (dx, d_gamma.into_iter().map(to_t).collect(), d_beta.into_iter().map(to_t).collect())
}
