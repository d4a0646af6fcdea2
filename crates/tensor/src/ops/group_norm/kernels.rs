//! The inner loops of the group/layer-norm CPU kernels (cpu.rs) as [`IsaKernel`]s,
//! compiled for AVX-512, AVX2 and any CPU and chosen at run time (the default x86-64
//! target has only SSE2). Sums are in f64 with `LANES` interleaved accumulators or one
//! accumulator per channel: a fixed association, which the wider instruction sets run as
//! vector adds. Outputs are written once each, never zeroed first. No fused multiply-adds,
//! so every version gives the same bits.
//!
//! Two layouts: rows whose groups are contiguous runs (`spatial == 1`: layer norm, and
//! group norm of `[N, C]`), handled row by row while the row sits in L1 ([`RowsForward`],
//! [`RowsBackward`]); and samples of many positions (NHWC group norm), whose statistics are
//! per-channel column sums ([`ChannelSums`], [`ChannelGradSums`]) and whose outputs are
//! per-channel affine maps (batch norm's `Normalize` and `GradInput`).

use crate::utilities::isa::IsaKernel;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// Interleaved accumulators of a row sum.
const LANES: usize = 8;

/// `sum(f(v))` over `values` in f64: `LANES` accumulators over the full chunks, added up in
/// lane order, plus the tail's sum.
#[inline(always)]
fn lane_sum<T: FloatElement>(values: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    let tail_sum: f64 = tail.iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail_sum
}

/// `sum(f(x, dy * gamma))` over a group's run in f64 (`gamma` given in f64): `LANES`
/// accumulators over the full chunks, added up in lane order, plus the tail's sum.
/// One sum per loop: two sums in one loop are vectorised across the pair (two lanes
/// wide) instead of across the lanes.
#[inline(always)]
fn grad_sum<T: FloatElement>(x: &[T], dy: &[T], gamma: &[f64], f: impl Fn(T, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let head = x.len() - x.len() % LANES;
    let chunks =
        x[..head].chunks_exact(LANES).zip(dy[..head].chunks_exact(LANES)).zip(gamma[..head].chunks_exact(LANES));
    for ((xc, dc), gc) in chunks {
        for (a, ((&v, &d), &g)) in acc.iter_mut().zip(xc.iter().zip(dc).zip(gc)) {
            *a += f(v, d.to_f64() * g);
        }
    }
    let tail = x[head..].iter().zip(&dy[head..]).zip(&gamma[head..]);
    let tail_sum: f64 = tail.map(|((&v, &d), &g)| f(v, d.to_f64() * g)).sum();
    acc.iter().sum::<f64>() + tail_sum
}

/// `(sum(dy * gamma), sum(dy * gamma * (x - mu)))` over a group's run ([`grad_sum`]; the
/// second pass reads the run from L1).
#[inline(always)]
fn grad_dots<T: FloatElement>(x: &[T], dy: &[T], gamma: &[f64], mu: f64) -> (f64, f64) {
    let a = grad_sum(x, dy, gamma, |_, w| w);
    let b = grad_sum(x, dy, gamma, |v, w| w * (v.to_f64() - mu));
    (a, b)
}

/// The forward pass over a block of rows of `gamma.len()` channels in groups of
/// `channels_per_group` contiguous values: per group its mean and `1 / sqrt(var +
/// epsilon)` (two passes over the cache-resident run), written to `mean` and `rstd` (one
/// per row and group), then `y = (x - mean) * (rstd * gamma) + beta` into `dst`.
pub(super) struct RowsForward<'a, T> {
    pub(super) x: &'a [T],
    pub(super) gamma: &'a [T],
    pub(super) beta: &'a [T],
    pub(super) channels_per_group: usize,
    pub(super) epsilon: f64,
    pub(super) mean: &'a mut [T],
    pub(super) rstd: &'a mut [T],
    pub(super) dst: &'a mut [MaybeUninit<T>],
}

impl<T: FloatElement> IsaKernel for RowsForward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (c, cpg) = (self.gamma.len(), self.channels_per_group);
        let size = cpg as f64;
        let groups = c / cpg;
        let rows = self.x.chunks_exact(c).zip(self.dst.chunks_exact_mut(c));
        let row_stats = self.mean.chunks_exact_mut(groups).zip(self.rstd.chunks_exact_mut(groups));
        for ((xr, yr), (ms, rs)) in rows.zip(row_stats) {
            let runs = xr.chunks_exact(cpg).zip(yr.chunks_exact_mut(cpg));
            let params = self.gamma.chunks_exact(cpg).zip(self.beta.chunks_exact(cpg));
            for (((xs, out), (gs, bs)), (m, r)) in runs.zip(params).zip(ms.iter_mut().zip(rs.iter_mut())) {
                let mu = lane_sum(xs, |v| v.to_f64()) / size;
                let m2 = lane_sum(xs, |v| {
                    let d = v.to_f64() - mu;
                    d * d
                });
                (*m, *r) = (T::from_f64(mu), T::from_f64(1.0 / (m2 / size + self.epsilon).sqrt()));
                let (m, r) = (*m, *r);
                for ((o, &v), (&g, &b)) in out.iter_mut().zip(xs).zip(gs.iter().zip(bs)) {
                    // Subtracting the mean first avoids cancellation when |mean| is large.
                    o.write((v - m) * (r * g) + b);
                }
            }
        }
    }
}

/// The backward pass over a block of rows laid out as for [`RowsForward`]: per group
/// `a = sum(dy * gamma)` and `b = sum(dy * gamma * (x - mean))`, then
/// `d_x = (rstd * gamma) * dy + k_x * (x - mean) + k_0` with `k_x = -rstd^3 * b / M` and
/// `k_0 = -rstd * a / M` (`M` values per group) into `dst`, and the block's parameter
/// gradients, from zero: `partial[..c] = sum(dy)`, `partial[c..] = sum(dy * (x - mean) *
/// rstd)` over its rows.
pub(super) struct RowsBackward<'a, T> {
    pub(super) x: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) gamma: &'a [T],
    pub(super) gamma_f64: &'a [f64],
    pub(super) channels_per_group: usize,
    pub(super) mean: &'a [T],
    pub(super) rstd: &'a [T],
    pub(super) dst: &'a mut [MaybeUninit<T>],
    pub(super) partial: &'a mut [f64],
}

impl<T: FloatElement> IsaKernel for RowsBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (c, cpg) = (self.gamma.len(), self.channels_per_group);
        let size = cpg as f64;
        let groups = c / cpg;
        self.partial.fill(0.0);
        let (d_beta, d_gamma) = self.partial.split_at_mut(c);
        let rows = self.x.chunks_exact(c).zip(self.dy.chunks_exact(c)).zip(self.dst.chunks_exact_mut(c));
        let row_stats = self.mean.chunks_exact(groups).zip(self.rstd.chunks_exact(groups));
        for (((xr, dr), outr), (ms, rs)) in rows.zip(row_stats) {
            let runs = xr.chunks_exact(cpg).zip(dr.chunks_exact(cpg)).zip(outr.chunks_exact_mut(cpg));
            let params = self.gamma.chunks_exact(cpg).zip(self.gamma_f64.chunks_exact(cpg));
            let sums = d_beta.chunks_exact_mut(cpg).zip(d_gamma.chunks_exact_mut(cpg));
            for ((((xs, ds), out), (gs, gfs)), ((sb, sg), (&m, &r))) in
                runs.zip(params).zip(sums.zip(ms.iter().zip(rs)))
            {
                let (mf, rf) = (m.to_f64(), r.to_f64());
                let (a, b) = grad_dots(xs, ds, gfs, mf);
                let k_x = T::from_f64(-rf * rf * rf * b / size);
                let k_0 = T::from_f64(-rf * a / size);
                let values = out.iter_mut().zip(xs.iter().zip(ds)).zip(gs);
                for (((o, (&v, &d)), &g), (sb, sg)) in values.zip(sb.iter_mut().zip(sg.iter_mut())) {
                    o.write((r * g) * d + k_x * (v - m) + k_0);
                    let df = d.to_f64();
                    *sb += df;
                    *sg += df * (v.to_f64() - mf) * rf;
                }
            }
        }
    }
}

/// Per-channel sums over rows of `sums.len()` channels, from zero: `sum(x)`, or
/// `sum((x - mean)^2)` with each channel's `mean` given.
pub(super) struct ChannelSums<'a, T> {
    pub(super) x: &'a [T],
    pub(super) mean: Option<&'a [f64]>,
    pub(super) sums: &'a mut [f64],
}

impl<T: FloatElement> IsaKernel for ChannelSums<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.sums.len();
        self.sums.fill(0.0);
        match self.mean {
            None => {
                for row in self.x.chunks_exact(c) {
                    for (a, &v) in self.sums.iter_mut().zip(row) {
                        *a += v.to_f64();
                    }
                }
            }
            Some(mean) => {
                for row in self.x.chunks_exact(c) {
                    for ((a, &v), &mu) in self.sums.iter_mut().zip(row).zip(mean) {
                        let d = v.to_f64() - mu;
                        *a += d * d;
                    }
                }
            }
        }
    }
}

/// Per-channel sums over rows of `mean.len()` channels, from zero: `sum_dy = sum(dy)` and
/// `sum_dy_xc = sum(dy * (x - mean))`, each channel's `mean` given.
pub(super) struct ChannelGradSums<'a, T> {
    pub(super) x: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) mean: &'a [f64],
    pub(super) sum_dy: &'a mut [f64],
    pub(super) sum_dy_xc: &'a mut [f64],
}

impl<T: FloatElement> IsaKernel for ChannelGradSums<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.mean.len();
        self.sum_dy.fill(0.0);
        self.sum_dy_xc.fill(0.0);
        for (xr, dr) in self.x.chunks_exact(c).zip(self.dy.chunks_exact(c)) {
            let sums = self.sum_dy.iter_mut().zip(self.sum_dy_xc.iter_mut());
            for ((a, b), ((&v, &d), &mu)) in sums.zip(xr.iter().zip(dr).zip(self.mean)) {
                let d = d.to_f64();
                *a += d;
                *b += d * (v.to_f64() - mu);
            }
        }
    }
}
