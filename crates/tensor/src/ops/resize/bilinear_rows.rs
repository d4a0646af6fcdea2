//! The row functions of the bilinear CPU kernels (cpu.rs), compiled for AVX-512, AVX2 and
//! any CPU and chosen at run time ([`Isa`]): the default x86-64 target has only SSE2. They
//! only multiply and add, in the same order in every version (no fused multiply-add), so
//! every version gives the same bits.

use crate::utilities::isa::Isa;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// One output row of the forward resize: the two input rows `row0` and `row1` blended
/// (`w0 * row0 + w1 * row1`) into `blend`, or `row0` itself where `w1` is zero (then `w0`
/// is one exactly), then each output pixel blends two pixels of that row by `cols`
/// (element offsets and weights). Writes every element of `dst`.
pub(super) struct ForwardRow<'a, T> {
    pub(super) row0: &'a [T],
    pub(super) row1: &'a [T],
    pub(super) w: (T, T),
    pub(super) cols: &'a [(usize, usize, T, T)],
    pub(super) channels: usize,
}

#[inline(always)]
fn forward_row<T: FloatElement>(r: &ForwardRow<'_, T>, blend: &mut [T], dst: &mut [MaybeUninit<T>]) {
    let (w0, w1) = r.w;
    let v: &[T] = if w1 == T::zero() {
        r.row0
    } else {
        let blend = &mut blend[..r.row0.len()];
        for ((d, &a), &b) in blend.iter_mut().zip(r.row0).zip(r.row1) {
            *d = w0 * a + w1 * b;
        }
        blend
    };
    let c = r.channels;
    for (pixel, &(i0, i1, w0, w1)) in dst.chunks_exact_mut(c).zip(r.cols) {
        for ((d, &a), &b) in pixel.iter_mut().zip(&v[i0..i0 + c]).zip(&v[i1..i1 + c]) {
            d.write(w0 * a + w1 * b);
        }
    }
}

/// One input row of the adjoint: the output rows that read it (`first`, then `rest`: row
/// indices into `dy` and weights) summed, weighted, into `sum` (one output row long),
/// then each input pixel the sum of the pixels of `sum` that read it (`cols(ix)`: element
/// offsets and weights), each sum started from zero as the zeroed buffer it replaces.
/// Writes every element of `dst`.
pub(super) struct BackwardRow<'a, T> {
    pub(super) dy: &'a [T],
    pub(super) first: (usize, T),
    pub(super) rest: &'a [(usize, T)],
    pub(super) col_starts: &'a [usize],
    pub(super) col_entries: &'a [(usize, T)],
    pub(super) channels: usize,
}

#[inline(always)]
fn backward_row<T: FloatElement>(r: &BackwardRow<'_, T>, sum: &mut [T], dst: &mut [MaybeUninit<T>]) {
    let row_len = sum.len();
    let (oy, wy) = r.first;
    for (d, &v) in sum.iter_mut().zip(&r.dy[oy * row_len..][..row_len]) {
        *d = wy * v;
    }
    for &(oy, wy) in r.rest {
        for (d, &v) in sum.iter_mut().zip(&r.dy[oy * row_len..][..row_len]) {
            *d = *d + wy * v;
        }
    }
    let c = r.channels;
    for (ix, pixel) in dst.chunks_exact_mut(c).enumerate() {
        let readers = &r.col_entries[r.col_starts[ix]..r.col_starts[ix + 1]];
        // `0 + w * v`, not `w * v`: the same bits as the zeroed buffer summed into before
        // (a product of -0 gives +0).
        let zero = T::zero();
        match readers.split_first() {
            None => pixel.iter_mut().for_each(|d| {
                d.write(zero);
            }),
            Some((&(ox, wx), rest)) => {
                for (d, &v) in pixel.iter_mut().zip(&sum[ox * c..][..c]) {
                    d.write(zero + wx * v);
                }
                // SAFETY: every element of `pixel` was written just above, and
                // `MaybeUninit<T>` has the layout of `T`.
                let pixel = unsafe { &mut *(pixel as *mut [MaybeUninit<T>] as *mut [T]) };
                for &(ox, wx) in rest {
                    for (d, &v) in pixel.iter_mut().zip(&sum[ox * c..][..c]) {
                        *d = *d + wx * v;
                    }
                }
            }
        }
    }
}

/// [`forward_row`] compiled for `isa`.
pub(super) fn forward<T: FloatElement>(isa: Isa, r: &ForwardRow<'_, T>, blend: &mut [T], dst: &mut [MaybeUninit<T>]) {
    match isa {
        // SAFETY (both): `Isa::detect` (or the tests' `Isa::available`) saw these
        // features on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { simd::avx512::forward_row(r, blend, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::avx2::forward_row(r, blend, dst) },
        Isa::Portable => forward_row(r, blend, dst),
    }
}

/// [`backward_row`] compiled for `isa`.
pub(super) fn backward<T: FloatElement>(isa: Isa, r: &BackwardRow<'_, T>, sum: &mut [T], dst: &mut [MaybeUninit<T>]) {
    match isa {
        // SAFETY (both): as in `forward`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { simd::avx512::backward_row(r, sum, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::avx2::backward_row(r, sum, dst) },
        Isa::Portable => backward_row(r, sum, dst),
    }
}

/// The same row functions with the wider instruction sets enabled (functions, not
/// closures: a closure does not inherit `#[target_feature]`).
#[cfg(target_arch = "x86_64")]
mod simd {
    macro_rules! compiled_for {
        ($name:ident, $features:literal) => {
            pub(super) mod $name {
                use super::super::{BackwardRow, ForwardRow};
                use crate::FloatElement;
                use std::mem::MaybeUninit;

                #[target_feature(enable = $features)]
                pub(in super::super) fn forward_row<T: FloatElement>(
                    r: &ForwardRow<'_, T>,
                    blend: &mut [T],
                    dst: &mut [MaybeUninit<T>],
                ) {
                    super::super::forward_row(r, blend, dst)
                }

                #[target_feature(enable = $features)]
                pub(in super::super) fn backward_row<T: FloatElement>(
                    r: &BackwardRow<'_, T>,
                    sum: &mut [T],
                    dst: &mut [MaybeUninit<T>],
                ) {
                    super::super::backward_row(r, sum, dst)
                }
            }
        };
    }
    compiled_for!(avx512, "avx512f,avx2");
    compiled_for!(avx2, "avx2");
}
