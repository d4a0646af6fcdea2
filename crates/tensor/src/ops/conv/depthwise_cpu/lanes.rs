//! Multiply-adds over channel blocks, the one arithmetic step of every depthwise kernel.
//!
//! `FUSED` picks a fused multiply-add (one rounding, one instruction) where the kernels run
//! compiled for a CPU with FMA, and a separate multiply and add elsewhere, where `mul_add`
//! would be a slow library call.

use crate::FloatElement;
use std::mem::MaybeUninit;

/// Channels per register block: 16 f32 are one AVX-512 register, or two AVX ones.
pub(super) const LANES: usize = 16;

/// `acc + a * b`.
#[inline(always)]
pub(super) fn madd<T: FloatElement, const FUSED: bool>(acc: T, a: T, b: T) -> T {
    if FUSED {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// A full block of [`LANES`] values. Fixed-size, so that its loads, stores and lane loops
/// compile to vector instructions: a block of run-time length became a `memcpy` call per
/// pixel and a scalar loop.
#[inline(always)]
pub(super) fn lanes<T>(s: &[T]) -> &[T; LANES] {
    s.first_chunk().expect("a full block holds LANES values")
}

#[inline(always)]
pub(super) fn lanes_mut<T>(s: &mut [T]) -> &mut [T; LANES] {
    s.first_chunk_mut().expect("a full block holds LANES values")
}

/// `acc[i] += a[i] * b[i]` over one full block.
#[inline(always)]
pub(super) fn mul_add_lanes<T: FloatElement, const FUSED: bool>(acc: &mut [T; LANES], a: &[T], b: &[T; LANES]) {
    mul_add::<T, FUSED, LANES>(acc, a, b)
}

/// A block of `W` values (a divisor of [`LANES`]), fixed-size as [`lanes`].
#[inline(always)]
pub(super) fn block<T, const W: usize>(s: &[T]) -> &[T; W] {
    s.first_chunk().expect("a full block holds W values")
}

/// The block of `W` values at `s[at..]`, without a bounds test (one compare and branch
/// per multiply-add, in the loops that checked their whole range once).
///
/// # Safety
///
/// `at + W <= s.len()`.
#[inline(always)]
pub(super) unsafe fn block_at<T, const W: usize>(s: &[T], at: usize) -> &[T; W] {
    debug_assert!(at + W <= s.len());
    // SAFETY: `at + W <= s.len()` (the caller's promise), and `[T; W]` has `T`'s alignment.
    unsafe { &*s.as_ptr().add(at).cast::<[T; W]>() }
}

/// Writes a block of `W` values into output slots that may be uninitialised.
#[inline(always)]
pub(super) fn store<T: Copy, const W: usize>(dst: &mut [MaybeUninit<T>], v: [T; W]) {
    let dst: &mut [MaybeUninit<T>; W] = dst.first_chunk_mut().expect("a full block holds W values");
    *dst = v.map(MaybeUninit::new);
}

/// `acc[i] += a[i] * b[i]` over a block of `W` values.
#[inline(always)]
pub(super) fn mul_add<T: FloatElement, const FUSED: bool, const W: usize>(acc: &mut [T; W], a: &[T], b: &[T; W]) {
    let a = block::<T, W>(a);
    for i in 0..W {
        acc[i] = madd::<T, FUSED>(acc[i], a[i], b[i]);
    }
}

/// `acc[i] += a[i] * b[i]` over slices of any length (the single-pixel paths): full blocks
/// through [`mul_add_lanes`], then the rest. Left to itself, the compiler ran the whole loop
/// with scalar instructions.
#[inline(always)]
pub(super) fn mul_add_block<T: FloatElement, const FUSED: bool>(acc: &mut [T], a: &[T], b: &[T]) {
    let n = acc.len().min(a.len()).min(b.len());
    let full = n / LANES * LANES;
    let (acc_full, acc_rest) = acc[..n].split_at_mut(full);
    for ((y, u), v) in acc_full.chunks_exact_mut(LANES).zip(a.chunks_exact(LANES)).zip(b.chunks_exact(LANES)) {
        mul_add_lanes::<T, FUSED>(lanes_mut(y), u, lanes(v));
    }
    for ((y, &u), &v) in acc_rest.iter_mut().zip(&a[full..n]).zip(&b[full..n]) {
        *y = madd::<T, FUSED>(*y, u, v);
    }
}

/// `acc[c * m + j] += x[c] * k[c * m + j]`: one tap of a multiplier-`m` depthwise kernel.
#[inline(always)]
pub(super) fn mul_add_spread<T: FloatElement, const FUSED: bool>(acc: &mut [T], x: &[T], k: &[T], m: usize) {
    for ((ys, &u), ks) in acc.chunks_exact_mut(m).zip(x).zip(k.chunks_exact(m)) {
        for (y, &v) in ys.iter_mut().zip(ks) {
            *y = madd::<T, FUSED>(*y, u, v);
        }
    }
}
