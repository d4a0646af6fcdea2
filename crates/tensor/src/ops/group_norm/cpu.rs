//! CPU kernels of group (and layer) normalization over a buffer viewed as
//! `[outer, spatial, groups, channels_per_group]`.
//!
//! Determinism: every sum is taken over a fixed range of values in a fixed order, and
//! parallel work is split into tasks whose boundaries depend only on the shapes (one task
//! per statistic or per sample, or one per block of `BLOCK_ROWS` rows), so the bits of
//! the result do not depend on rayon's scheduling or the thread count. Sums are in f64
//! (with `LANES` fixed interleaved accumulators, which vectorise); the statistics are
//! two-pass (the mean, then squared deviations from it), so a large mean against a small
//! spread loses nothing.

use crate::backend::GroupNormSpec;
use crate::utilities::alloc::{try_vec, try_zeros};
use crate::utilities::PAR_MIN_LEN;
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// Rows (of `channels` values) per block of the elementwise and parameter-gradient pass.
const BLOCK_ROWS: usize = 256;

/// Interleaved accumulators of a sum (a fixed association, so still deterministic).
const LANES: usize = 8;

fn to_t<T: FloatElement>(v: f64) -> T {
    T::from_f64(v)
}

/// `sum(f(i, v))` over a slice, in f64 with `LANES` accumulators added up in a fixed order.
fn lane_sum<T: FloatElement>(values: &[T], f: impl Fn(usize, T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (k, chunk) in chunks.enumerate() {
        for (lane, (a, &v)) in acc.iter_mut().zip(chunk).enumerate() {
            *a += f(k * LANES + lane, v);
        }
    }
    let head = values.len() - tail.len();
    let tail_sum: f64 = tail.iter().enumerate().map(|(i, &v)| f(head + i, v)).sum();
    acc.iter().sum::<f64>() + tail_sum
}

/// Statistics per parallel task: enough that one task handles about `PAR_MIN_LEN` values.
fn min_tasks(values_per_task: usize) -> usize {
    PAR_MIN_LEN.div_ceil(values_per_task.max(1))
}

/// The forward pass: `(y, mean, rstd)`, the statistics `[outer * groups]`.
pub(crate) fn group_norm<T: FloatElement>(
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    s: &GroupNormSpec,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    const OP: &str = "group_norm";
    let (c, cpg, size) = (s.channels(), s.channels_per_group, s.group_size() as f64);
    let mut mean = try_vec(OP, s.stat_count(), T::zero())?;
    let mut rstd = try_vec(OP, s.stat_count(), T::zero())?;
    let finish = |mu: f64, m2: f64| (to_t::<T>(mu), to_t::<T>(1.0 / (m2 / size + s.epsilon).sqrt()));
    if s.spatial == 1 {
        // Each statistic is one contiguous run of `cpg` values.
        mean.par_iter_mut().zip(rstd.par_iter_mut()).enumerate().with_min_len(min_tasks(cpg)).for_each(
            |(t, (m, r))| {
                let values = &x[t * cpg..(t + 1) * cpg];
                let mu = lane_sum(values, |_, v| v.to_f64()) / size;
                let m2 = lane_sum(values, |_, v| {
                    let d = v.to_f64() - mu;
                    d * d
                });
                (*m, *r) = finish(mu, m2);
            },
        );
    } else if !x.is_empty() {
        // A task per sample: per-channel sums over the positions (contiguous rows, which
        // vectorise), then per-group sums of those, in a fixed order.
        let slice = s.spatial * c;
        let tasks = mean.par_chunks_mut(s.groups).zip(rstd.par_chunks_mut(s.groups)).zip(x.par_chunks(slice));
        tasks.with_min_len(min_tasks(slice)).try_for_each(|((m, r), xs)| -> Result<()> {
            let mut sums = try_zeros::<f64>(OP, c)?;
            for row in xs.chunks_exact(c) {
                for (a, &v) in sums.iter_mut().zip(row) {
                    *a += v.to_f64();
                }
            }
            let group_mean: Vec<f64> = sums.chunks_exact(cpg).map(|g| g.iter().sum::<f64>() / size).collect();
            sums.fill(0.0);
            for row in xs.chunks_exact(c) {
                for ((acc, values), &mu) in sums.chunks_exact_mut(cpg).zip(row.chunks_exact(cpg)).zip(&group_mean) {
                    for (a, &v) in acc.iter_mut().zip(values) {
                        let d = v.to_f64() - mu;
                        *a += d * d;
                    }
                }
            }
            for (g, (m, r)) in m.iter_mut().zip(r.iter_mut()).enumerate() {
                let m2: f64 = sums[g * cpg..(g + 1) * cpg].iter().sum();
                (*m, *r) = finish(group_mean[g], m2);
            }
            Ok(())
        })?;
    }
    let mut y = try_vec(OP, x.len(), T::zero())?;
    if y.is_empty() {
        return Ok((y, mean, rstd));
    }
    let rows_per_task = min_tasks(c);
    y.par_chunks_mut(c).zip(x.par_chunks(c)).enumerate().with_min_len(rows_per_task).for_each(|(row, (out, xr))| {
        let n = row / s.spatial;
        for (g, (out, xr)) in out.chunks_exact_mut(cpg).zip(xr.chunks_exact(cpg)).enumerate() {
            let t = n * s.groups + g;
            let (m, r) = (mean[t], rstd[t]);
            for (j, (o, &v)) in out.iter_mut().zip(xr).enumerate() {
                let ch = g * cpg + j;
                let scale = gamma.map_or(r, |gm| r * gm[ch]);
                let shift = beta.map_or(T::zero(), |b| b[ch]);
                // Subtracting the mean first avoids cancellation when |mean| is large.
                *o = (v - m) * scale + shift;
            }
        }
    });
    Ok((y, mean, rstd))
}

/// The fused backward pass: `(d_x, d_gamma, d_beta)`.
///
/// With `xhat = (x - mean) * rstd` and `M` values per group, per `(outer, group)`:
/// `a = sum(dy * gamma)`, `b = sum(dy * gamma * (x - mean))`, and
/// `d_x = rstd * gamma * dy - rstd * a / M - (x - mean) * rstd^3 * b / M`; per channel
/// `d_beta = sum(dy)` and `d_gamma = sum(dy * xhat)` over outer and spatial. The first pass
/// takes `a` and `b`; the second writes `d_x` block by block and sums each block's
/// `d_gamma` and `d_beta` into its own partial, and the partials are added in block order.
pub(crate) fn group_norm_backward<T: FloatElement>(
    x: &[T],
    dy: &[T],
    gamma: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    s: &GroupNormSpec,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    const OP: &str = "group_norm_backward";
    let (c, cpg, size) = (s.channels(), s.channels_per_group, s.group_size() as f64);
    let gamma_of = |ch: usize| gamma.map_or(1.0, |g| g[ch].to_f64());
    // Per statistic: the coefficients of d_x = r * gamma * dy + k_x * (x - mean) + k_0.
    let mut k_x = try_vec(OP, s.stat_count(), T::zero())?;
    let mut k_0 = try_vec(OP, s.stat_count(), T::zero())?;
    let coefficients = |a: f64, b: f64, r: f64| (to_t::<T>(-r * r * r * b / size), to_t::<T>(-r * a / size));
    if s.spatial == 1 {
        k_x.par_iter_mut().zip(k_0.par_iter_mut()).enumerate().with_min_len(min_tasks(cpg)).for_each(
            |(t, (kx, k0))| {
                let g = t % s.groups;
                let mu = mean[t].to_f64();
                let (xs, ds) = (&x[t * cpg..(t + 1) * cpg], &dy[t * cpg..(t + 1) * cpg]);
                let a = lane_sum(ds, |j, d| d.to_f64() * gamma_of(g * cpg + j));
                let b = lane_sum(ds, |j, d| d.to_f64() * gamma_of(g * cpg + j) * (xs[j].to_f64() - mu));
                (*kx, *k0) = coefficients(a, b, rstd[t].to_f64());
            },
        );
    } else if !x.is_empty() {
        // A task per sample: per-channel sums of dy and dy * (x - mean) over the positions,
        // then per-group sums weighted by gamma, in a fixed order.
        let slice = s.spatial * c;
        let tasks = k_x.par_chunks_mut(s.groups).zip(k_0.par_chunks_mut(s.groups)).enumerate();
        tasks.with_min_len(min_tasks(slice)).try_for_each(|(n, (kx, k0))| -> Result<()> {
            let (xs, ds) = (&x[n * slice..(n + 1) * slice], &dy[n * slice..(n + 1) * slice]);
            let group_mean: Vec<f64> = mean[n * s.groups..(n + 1) * s.groups].iter().map(|&m| m.to_f64()).collect();
            let mut sum_dy = try_zeros::<f64>(OP, c)?;
            let mut sum_dy_xc = try_zeros::<f64>(OP, c)?;
            for (xr, dr) in xs.chunks_exact(c).zip(ds.chunks_exact(c)) {
                let per_group = sum_dy.chunks_exact_mut(cpg).zip(sum_dy_xc.chunks_exact_mut(cpg));
                for (((a, b), (xg, dg)), &mu) in
                    per_group.zip(xr.chunks_exact(cpg).zip(dr.chunks_exact(cpg))).zip(&group_mean)
                {
                    for (((a, b), &v), &d) in a.iter_mut().zip(b.iter_mut()).zip(xg).zip(dg) {
                        let d = d.to_f64();
                        *a += d;
                        *b += d * (v.to_f64() - mu);
                    }
                }
            }
            for (g, (kx, k0)) in kx.iter_mut().zip(k0.iter_mut()).enumerate() {
                let channels = g * cpg..(g + 1) * cpg;
                let a: f64 = channels.clone().map(|ch| sum_dy[ch] * gamma_of(ch)).sum();
                let b: f64 = channels.map(|ch| sum_dy_xc[ch] * gamma_of(ch)).sum();
                (*kx, *k0) = coefficients(a, b, rstd[n * s.groups + g].to_f64());
            }
            Ok(())
        })?;
    }
    let rows = s.outer * s.spatial;
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let mut dx = try_vec(OP, x.len(), T::zero())?;
    let mut partials = try_zeros::<f64>(OP, blocks * 2 * c)?;
    if !dx.is_empty() {
        let min_blocks = min_tasks(BLOCK_ROWS * c);
        dx.par_chunks_mut(BLOCK_ROWS * c)
            .zip(partials.par_chunks_mut(2 * c))
            .enumerate()
            .with_min_len(min_blocks)
            .for_each(|(block, (dx_block, partial))| {
                let (d_beta, d_gamma) = partial.split_at_mut(c);
                for (i, out) in dx_block.chunks_exact_mut(c).enumerate() {
                    let row = block * BLOCK_ROWS + i;
                    let n = row / s.spatial;
                    let (xr, dr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
                    for g in 0..s.groups {
                        let t = n * s.groups + g;
                        let (m, r, kx, k0) = (mean[t], rstd[t], k_x[t], k_0[t]);
                        let (rf, mf) = (r.to_f64(), m.to_f64());
                        for ch in g * cpg..(g + 1) * cpg {
                            let (v, d) = (xr[ch], dr[ch]);
                            let scale = gamma.map_or(r, |gm| r * gm[ch]);
                            out[ch] = scale * d + kx * (v - m) + k0;
                            let df = d.to_f64();
                            d_beta[ch] += df;
                            d_gamma[ch] += df * (v.to_f64() - mf) * rf;
                        }
                    }
                }
            });
    }
    let mut d_gamma = try_vec(OP, c, T::zero())?;
    let mut d_beta = try_vec(OP, c, T::zero())?;
    for ch in 0..c {
        let (mut sum_beta, mut sum_gamma) = (0.0, 0.0);
        for partial in partials.chunks_exact(2 * c) {
            sum_beta += partial[ch];
            sum_gamma += partial[c + ch];
        }
        d_beta[ch] = to_t(sum_beta);
        d_gamma[ch] = to_t(sum_gamma);
    }
    Ok((dx, d_gamma, d_beta))
}
