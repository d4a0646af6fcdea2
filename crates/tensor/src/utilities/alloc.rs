//! Fallible host allocation for kernel outputs, workspaces and scratch buffers.
//!
//! `vec![x; n]` aborts the process when the allocator refuses (`memory allocation of N
//! bytes failed`), and no caller can catch that. Every host buffer whose size a user's
//! shapes decide is allocated through these functions instead, so an impossible size is
//! [`Error::OutOfMemory`] naming the op and the bytes. The first call also tells glibc's
//! malloc to keep freed buffers for reuse (`malloc_tuning`), before the first large one.

use super::malloc_tuning::keep_freed_memory;
use crate::{Device, Error, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Element types whose all-zero bit pattern is the value zero (so a zeroed allocation is a
/// buffer of zeros, and the allocator may hand out fresh zero pages without writing them).
///
/// # Safety
/// Implement only for types for which every byte being 0 is a valid value.
pub(crate) unsafe trait ZeroBits: Copy {}
// SAFETY: all-zero bits are 0 for these integer and IEEE float types, and `false` for bool.
unsafe impl ZeroBits for f32 {}
unsafe impl ZeroBits for f64 {}
unsafe impl ZeroBits for i64 {}
// SAFETY: all-zero bits are +0 in bf16 and f16 too (IEEE-style sign, exponent, mantissa).
unsafe impl ZeroBits for half::bf16 {}
unsafe impl ZeroBits for half::f16 {}
unsafe impl ZeroBits for u8 {}
unsafe impl ZeroBits for u32 {}
unsafe impl ZeroBits for usize {}
unsafe impl ZeroBits for bool {}

/// The error for a host buffer of `len` elements of `T` that cannot be allocated.
pub(crate) fn host_oom<T>(op: &'static str, len: usize) -> Error {
    let requested = len.saturating_mul(std::mem::size_of::<T>());
    Error::OutOfMemory {
        device: Device::Cpu,
        op,
        requested,
        detail: format!(" ({len} elements of {} bytes)", std::mem::size_of::<T>()),
    }
}

/// An empty vector with room for `len` elements, or [`Error::OutOfMemory`].
pub(crate) fn try_with_capacity<T>(op: &'static str, len: usize) -> Result<Vec<T>> {
    keep_freed_memory();
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| host_oom::<T>(op, len))?;
    Ok(v)
}

/// `len` copies of `fill`, or [`Error::OutOfMemory`].
pub(crate) fn try_vec<T: Clone>(op: &'static str, len: usize, fill: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(op, len)?;
    v.resize(len, fill);
    Ok(v)
}

/// `len` zeros, or [`Error::OutOfMemory`]. Like `vec![0; len]`, the memory comes zeroed
/// from the allocator (large buffers as untouched zero pages, not written here).
pub(crate) fn try_zeros<T: ZeroBits>(op: &'static str, len: usize) -> Result<Vec<T>> {
    keep_freed_memory();
    let size = std::mem::size_of::<T>();
    if len == 0 || size == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| host_oom::<T>(op, len))?;
    // SAFETY: the layout has a non-zero size (len > 0, size > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(host_oom::<T>(op, len));
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `[T; len]`;
    // every element is initialised, since all-zero bits are a valid `T` (ZeroBits).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// A vector of `len` elements cut into chunks of `chunk` elements (the last may be
/// shorter), each written by `fill(scratch, index, chunk)` in parallel (tasks of at least
/// `min_chunks` chunks, each task with its own `scratch` from `init`), without zeroing the
/// vector first: a pass over memory fewer than [`try_zeros`] for outputs that a kernel
/// writes in full. An error from `fill` is returned (and the vector dropped unread).
///
/// # Safety
/// `fill` must write every element of each chunk it is given before returning `Ok`.
pub(crate) unsafe fn try_par_fill<T: Send, S>(
    op: &'static str,
    len: usize,
    chunk: usize,
    min_chunks: usize,
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [MaybeUninit<T>]) -> Result<()> + Sync + Send,
) -> Result<Vec<T>> {
    let mut out = try_with_capacity::<T>(op, len)?;
    if len == 0 {
        return Ok(out);
    }
    let chunks = out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).with_min_len(min_chunks.max(1));
    chunks.enumerate().try_for_each_init(init, |scratch, (i, dst)| fill(scratch, i, dst))?;
    // SAFETY: the capacity is at least `len` (reserved above), the chunks cover `0..len`,
    // and `fill` wrote each of them in full (the caller's promise); an error returns above.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// `slice` as initialised values.
///
/// # Safety
/// Every element of `slice` must have been written.
#[inline(always)]
pub(crate) unsafe fn assume_init_mut<T>(slice: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller promises that every
    // element is initialised.
    unsafe { &mut *(slice as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        let err = try_zeros::<f32>("test_op", usize::MAX / 8).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { op: "test_op", .. }), "{err}");
        assert!(try_vec("test_op", 1usize << 60, 0u8).is_err());
        assert!(try_with_capacity::<f64>("test_op", 1usize << 60).is_err());
    }

    #[test]
    fn buffers_hold_what_was_asked() {
        assert_eq!(try_zeros::<f64>("t", 3).unwrap(), vec![0.0; 3]);
        assert_eq!(try_vec("t", 2, 7i64).unwrap(), vec![7, 7]);
        assert!(try_zeros::<f32>("t", 0).unwrap().is_empty());
        assert!(try_with_capacity::<f32>("t", 5).unwrap().capacity() >= 5);
    }

    #[test]
    fn par_fill_writes_each_chunk_once_and_reports_errors() {
        let fill = |_: &mut (), i: usize, dst: &mut [MaybeUninit<u32>]| {
            for (j, d) in dst.iter_mut().enumerate() {
                d.write((i * 10 + j) as u32);
            }
            Ok(())
        };
        // SAFETY: `fill` writes every element of its chunk.
        let v = unsafe { try_par_fill("t", 25, 10, 1, || (), fill) }.unwrap();
        let expected: Vec<u32> = (0..25).map(|k| (k / 10 * 10 + k % 10) as u32).collect();
        assert_eq!(v, expected);
        // SAFETY: no chunk is written, and the error is returned instead of the vector.
        let err = unsafe { try_par_fill::<f32, _>("t", 25, 10, 1, || (), |_, _, _| Err(host_oom::<f32>("t", 1))) };
        assert!(err.is_err());
        assert!(unsafe { try_par_fill::<f32, _>("t", usize::MAX / 8, 10, 1, || (), |_, _, _| Ok(())) }.is_err());
    }
}
