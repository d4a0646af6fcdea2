//! CPU kernel of a strided convolution's input gradient (the forward pass of a strided
//! transposed convolution) as stride-1 "phase" convolutions (sub-pixel convolution).
//!
//! Input position `i = stride * q + r` along an axis receives `dy[o] * K[k]` only from the
//! taps `k` with `stride * o + k * dilation - pad == i`, that is the taps whose
//! `k * dilation` has the residue of `r + pad` modulo the stride, each from
//! `o = q + (r + pad - k * dilation) / stride`. So the input pixels of one residue pair
//! `(ry, rx)` (a phase) form a stride-1 correlation of `dy` with the sub-kernel of those
//! taps: a 3x3 stride-2 kernel splits into 2x2, 2x1, 1x2 and 1x1 sub-kernels. Each phase
//! is one im2col gather of `dy` and one GEMM `[pixels, taps * c_out] @ [taps * c_out, c_in]`
//! whose rows are copied into place. Unlike GEMM-then-col2im (cpu.rs), no patch buffer
//! `kh * kw` times the input's size is written and summed back: each input element is
//! written once, by one GEMM, with the inner dimension of all its taps together.
//!
//! The work is cut into runs of bands (`stride_h` input rows of one image, one row `q` of
//! every phase), by the shape alone, so that every output element's sum runs in the same
//! order whatever the thread count. The kernel gradient and the input gradient of the
//! transposed convolution (a strided convolution's kernel gradient and forward pass) read
//! no inserted zeros: they stay im2col + GEMM (cpu.rs).

#[cfg(test)]
mod tests;

use super::cpu::{ensure_len, gemm_into, MatRef};
use crate::backend::Conv2dSpec;
use crate::utilities::alloc::{try_with_capacity, try_zeros, ZeroBits};
use crate::{FloatElement, Result};
use gemm::Parallelism;
use rayon::prelude::*;

/// Elements of one run's gather buffer, at most (512 KiB of f32).
const RUN_BUDGET: usize = 1 << 17;

/// Runs the bands are split into at least (where there are that many and their GEMMs
/// keep [`MIN_PIXELS`] rows), enough to keep 16 threads busy.
const MIN_RUNS: usize = 16;

/// GEMM rows (input pixels of one phase) per run, at least, within the budget: below
/// this, packing the sub-kernel for each GEMM costs more than the extra runs save (at the
/// U-Net's 8x8 maps, 16 runs of 64 rows ran 12% slower on one thread than col2im).
const MIN_PIXELS: usize = 256;

/// Whether the input gradient of a convolution runs here: a dense (one group) strided
/// convolution whose input has enough channels to fill the GEMM's columns (below a SIMD
/// width, GEMM-then-col2im, whose columns are `kh * kw * c_in`, is faster).
pub(super) fn applies(s: &Conv2dSpec) -> bool {
    s.groups == 1 && (s.stride_h > 1 || s.stride_w > 1) && s.in_channels >= 8
}

/// The input positions `stride * q + residue` (`q < count`) along one axis, and the kernel
/// taps that reach them: `(tap, offset)`, reading `dy` at `q + offset`.
struct Phase {
    residue: usize,
    count: usize,
    taps: Vec<(usize, isize)>,
}

/// The phases of one axis: `stride` of them (fewer where the input is shorter than the
/// stride), each with its taps in ascending order.
fn axis_phases(stride: usize, pad: usize, dilation: usize, kernel: usize, input: usize) -> Vec<Phase> {
    (0..stride.min(input))
        .map(|residue| {
            let taps = (0..kernel)
                .filter_map(|k| {
                    let shift = (residue + pad) as isize - (k * dilation) as isize;
                    (shift.rem_euclid(stride as isize) == 0).then_some((k, shift / stride as isize))
                })
                .collect();
            Phase { residue, count: (input - residue).div_ceil(stride), taps }
        })
        .collect()
}

/// The geometry shared by the runs.
struct Phases {
    rows: Vec<Phase>,
    cols: Vec<Phase>,
    /// Bands of one image: `ceil(in_h / stride_h)`.
    bands: usize,
    /// Per phase pair `(ry, rx)` (row-major), the offset of its packed sub-kernel.
    kernel_offsets: Vec<usize>,
}

impl Phases {
    fn new(s: &Conv2dSpec) -> Self {
        let rows = axis_phases(s.stride_h, s.pad_top, s.dilation_h, s.kernel_h, s.in_h);
        let cols = axis_phases(s.stride_w, s.pad_left, s.dilation_w, s.kernel_w, s.in_w);
        let mut kernel_offsets = Vec::with_capacity(rows.len() * cols.len());
        let mut offset = 0;
        for py in &rows {
            for px in &cols {
                kernel_offsets.push(offset);
                offset += py.taps.len() * px.taps.len() * s.out_channels * s.in_channels;
            }
        }
        Phases { rows, cols, bands: s.in_h.div_ceil(s.stride_h), kernel_offsets }
    }

    /// `K[co, ky, kx, ci]` regrouped per phase as row-major `[(ty, tx, co), ci]` matrices.
    fn pack_kernel<T: FloatElement + ZeroBits>(&self, kernel: &[T], s: &Conv2dSpec) -> Result<Vec<T>> {
        let (co, ci) = (s.out_channels, s.in_channels);
        let mut packed = try_with_capacity("conv2d_backward_input", kernel.len())?;
        for py in &self.rows {
            for px in &self.cols {
                for &(ky, _) in &py.taps {
                    for &(kx, _) in &px.taps {
                        for o in 0..co {
                            packed.extend_from_slice(&kernel[((o * s.kernel_h + ky) * s.kernel_w + kx) * ci..][..ci]);
                        }
                    }
                }
            }
        }
        Ok(packed)
    }
}

/// Bands per run, from the elements of one band's gather and its pixels per phase:
/// within the budget, at least [`MIN_PIXELS`] GEMM rows, otherwise enough for
/// [`MIN_RUNS`] runs. Set by the shape alone: the GEMM's row count decides its blocking,
/// and with it the bits of the result.
fn run_bands(band: usize, pixels: usize, bands: usize) -> usize {
    let budget = (RUN_BUDGET / band.max(1)).max(1);
    bands.div_ceil(MIN_RUNS).max(MIN_PIXELS.div_ceil(pixels.max(1))).min(budget)
}

/// Gathers the `dy` pixels that phase `(py, px)` reads for row `q` of image `b`, one
/// patch `[(ty, tx, co)]` per column `q_x`, zeros where a tap falls outside `dy`.
fn gather<T: FloatElement>(
    dy: &[T],
    s: &Conv2dSpec,
    (py, px): (&Phase, &Phase),
    (b, q): (usize, usize),
    col: &mut [T],
) {
    let co = s.out_channels;
    let patch = py.taps.len() * px.taps.len() * co;
    let image = &dy[b * s.out_h * s.out_w * co..][..s.out_h * s.out_w * co];
    for (qx, dst) in col.chunks_exact_mut(patch).take(px.count).enumerate() {
        let mut parts = dst.chunks_exact_mut(co);
        for &(_, oy) in &py.taps {
            let oy = q as isize + oy;
            for &(_, ox) in &px.taps {
                let part = parts.next().expect("a patch holds every tap");
                let ox = qx as isize + ox;
                if (0..s.out_h as isize).contains(&oy) && (0..s.out_w as isize).contains(&ox) {
                    part.copy_from_slice(&image[(oy as usize * s.out_w + ox as usize) * co..][..co]);
                } else {
                    part.fill(T::zero());
                }
            }
        }
    }
}

/// The input gradient: `[batch, in_h, in_w, c_in]`.
pub(super) fn conv2d_backward_input<T: FloatElement + ZeroBits>(
    dy: &[T],
    kernel: &[T],
    s: &Conv2dSpec,
) -> Result<Vec<T>> {
    const OP: &str = "conv2d_backward_input";
    let (ci, co) = (s.in_channels, s.out_channels);
    let in_row = s.in_w * ci;
    let in_image = s.in_h * in_row;
    // Positions no tap reaches (rows 'valid' drops, strides above the kernel) stay zero.
    let mut dx = try_zeros(OP, s.batch * in_image)?;
    if dx.is_empty() || s.out_h * s.out_w == 0 {
        return Ok(dx);
    }
    let phases = Phases::new(s);
    let packed = phases.pack_kernel(kernel, s)?;
    // The input rows of each band, as disjoint slices (the last of an image may be short).
    let mut bands: Vec<&mut [T]> = try_with_capacity(OP, s.batch * phases.bands)?;
    for image in dx.chunks_exact_mut(in_image) {
        bands.extend(image.chunks_mut(s.stride_h * in_row));
    }
    let taps = |p: &[Phase]| p.iter().map(|p| p.taps.len()).max().unwrap_or(0);
    let pixels = s.in_w.div_ceil(s.stride_w);
    let run = run_bands(pixels * taps(&phases.rows) * taps(&phases.cols) * co, pixels, s.batch * phases.bands);
    bands.par_chunks_mut(run).enumerate().try_for_each_init(
        || (Vec::new(), Vec::new()),
        |(col, out), (i, bands)| {
            for (p, (py, px)) in
                phases.rows.iter().flat_map(|py| phases.cols.iter().map(move |px| (py, px))).enumerate()
            {
                let taps = py.taps.len() * px.taps.len();
                if taps == 0 {
                    continue;
                }
                let patch = taps * co;
                // The bands of the run that hold a row of this phase.
                let rows: Vec<usize> =
                    (i * run..i * run + bands.len()).filter(|r| r % phases.bands < py.count).collect();
                let pixels = rows.len() * px.count;
                if pixels == 0 {
                    continue;
                }
                ensure_len(OP, col, pixels * patch)?;
                ensure_len(OP, out, pixels * ci)?;
                for (j, &r) in rows.iter().enumerate() {
                    let dst = &mut col[j * px.count * patch..][..px.count * patch];
                    gather(dy, s, (py, px), (r / phases.bands, r % phases.bands), dst);
                }
                let lhs = MatRef::row_major(&col[..pixels * patch], patch);
                let rhs = MatRef::row_major(&packed[phases.kernel_offsets[p]..][..patch * ci], ci);
                gemm_into(out, ci, (pixels, ci, patch), lhs, rhs, false, Parallelism::None);
                let mut results = out[..pixels * ci].chunks_exact(ci);
                for &r in &rows {
                    let band = &mut bands[r - i * run][py.residue * in_row..];
                    for qx in 0..px.count {
                        let x = (qx * s.stride_w + px.residue) * ci;
                        band[x..x + ci].copy_from_slice(results.next().expect("one result per pixel"));
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(dx)
}
