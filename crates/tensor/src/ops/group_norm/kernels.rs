//! The inner loops of the group/layer-norm CPU kernels (cpu.rs) as [`IsaKernel`]s,
//! compiled for AVX-512, AVX2 and any CPU and chosen at run time (the default x86-64
//! target has only SSE2). Sums are in f64 with `LANES` interleaved accumulators or one
//! accumulator per channel, except in the row layout's backward pass, whose sums take short
//! runs in `T` (16 interleaved lanes along a row, 8 rows per channel) and add those in f64:
//! f32 vector arithmetic at twice the width, with no f32 sum longer than a row's lane
//! (`cols / 16` values) or 8 rows. Every association is fixed, and the wider instruction
//! sets run it as vector adds. Outputs are written once each, never zeroed first. No fused multiply-adds,
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

/// Interleaved accumulators (in `T`) of the backward pass's two row sums: a lane holds
/// `cols / 16` products at most, and the lanes are added in f64.
const DOT_LANES: usize = 16;

/// Rows whose `d_gamma`/`d_beta` terms a block sums per channel in `T` before adding the
/// sums to its f64 partial (a fixed association: the rows `SUB_ROWS * k ..` of a block).
const SUB_ROWS: usize = 8;

/// `sum(f(x, dy, gamma))` over a group's run: the terms in `T`, summed in `DOT_LANES`
/// interleaved `T` accumulators, which are added up in lane order in f64 with the tail's
/// f64 sum. One sum per loop: two sums in one loop are vectorised across the pair (two
/// lanes wide) instead of across the lanes.
#[inline(always)]
fn row_sum<T: FloatElement>(x: &[T], dy: &[T], gamma: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
    let mut acc = [T::zero(); DOT_LANES];
    let head = x.len() - x.len() % DOT_LANES;
    let chunks = x[..head]
        .chunks_exact(DOT_LANES)
        .zip(dy[..head].chunks_exact(DOT_LANES))
        .zip(gamma[..head].chunks_exact(DOT_LANES));
    for ((xc, dc), gc) in chunks {
        for (a, ((&v, &d), &g)) in acc.iter_mut().zip(xc.iter().zip(dc).zip(gc)) {
            *a = *a + f(v, d, g);
        }
    }
    let tail = x[head..].iter().zip(&dy[head..]).zip(&gamma[head..]);
    let tail_sum: f64 = tail.map(|((&v, &d), &g)| f(v, d, g).to_f64()).sum();
    acc.iter().map(|&v| v.to_f64()).sum::<f64>() + tail_sum
}

/// `(sum(dy * gamma), sum(dy * gamma * (x - m)))` over a group's run ([`row_sum`]), the
/// second pass reading the run from L1.
#[inline(always)]
fn grad_dots<T: FloatElement>(x: &[T], dy: &[T], gamma: &[T], m: T) -> (f64, f64) {
    let a = row_sum(x, dy, gamma, |_, d, g| d * g);
    let b = row_sum(x, dy, gamma, |v, d, g| d * g * (v - m));
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
/// `a = sum(dy * gamma)` and `b = sum(dy * gamma * (x - mean))` ([`grad_dots`]), then
/// `d_x = (rstd * gamma) * dy + k_x * (x - mean) + k_0` with `k_x = -rstd^3 * b / M` and
/// `k_0 = -rstd * a / M` (`M` values per group) into `dst`, and the block's parameter
/// gradients, from zero: `partial[..c] = sum(dy)`, `partial[c..] = sum(dy * (x - mean) *
/// rstd)` over its rows, summed per channel in `T` over `SUB_ROWS` rows at a time (in
/// `scratch`, `2 * c` values) and those sums in f64.
pub(super) struct RowsBackward<'a, T> {
    pub(super) x: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) gamma: &'a [T],
    pub(super) channels_per_group: usize,
    pub(super) mean: &'a [T],
    pub(super) rstd: &'a [T],
    pub(super) dst: &'a mut [MaybeUninit<T>],
    pub(super) scratch: &'a mut [T],
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
        self.scratch.fill(T::zero());
        let (sum_beta, sum_gamma) = self.scratch.split_at_mut(c);
        let row_count = self.x.len() / c;
        let rows = self.x.chunks_exact(c).zip(self.dy.chunks_exact(c)).zip(self.dst.chunks_exact_mut(c));
        let row_stats = self.mean.chunks_exact(groups).zip(self.rstd.chunks_exact(groups));
        for (i, (((xr, dr), outr), (ms, rs))) in rows.zip(row_stats).enumerate() {
            let runs = xr.chunks_exact(cpg).zip(dr.chunks_exact(cpg)).zip(outr.chunks_exact_mut(cpg));
            let sums = sum_beta.chunks_exact_mut(cpg).zip(sum_gamma.chunks_exact_mut(cpg));
            for ((((xs, ds), out), gs), ((sb, sg), (&m, &r))) in
                runs.zip(self.gamma.chunks_exact(cpg)).zip(sums.zip(ms.iter().zip(rs)))
            {
                let (a, b) = grad_dots(xs, ds, gs, m);
                let rf = r.to_f64();
                let k_x = T::from_f64(-rf * rf * rf * b / size);
                let k_0 = T::from_f64(-rf * a / size);
                let values = out.iter_mut().zip(xs.iter().zip(ds)).zip(gs);
                for (((o, (&v, &d)), &g), (sb, sg)) in values.zip(sb.iter_mut().zip(sg.iter_mut())) {
                    let xc = v - m;
                    o.write((r * g) * d + k_x * xc + k_0);
                    *sb = *sb + d;
                    *sg = *sg + d * (xc * r);
                }
            }
            if (i + 1) % SUB_ROWS == 0 || i + 1 == row_count {
                let (d_beta, d_gamma) = self.partial.split_at_mut(c);
                for (p, s) in d_beta.iter_mut().zip(sum_beta.iter_mut()) {
                    *p += (*s).to_f64();
                    *s = T::zero();
                }
                for (p, s) in d_gamma.iter_mut().zip(sum_gamma.iter_mut()) {
                    *p += (*s).to_f64();
                    *s = T::zero();
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
