//! The output buffers of the forward pass, filled by parallel tasks without a zero pass
//! over the whole buffer first.
//!
//! A zeroed allocation (`calloc`) writes every byte once, out of cache, before the kernels
//! write it again: 8-12% of the forward pass's samples. Zeroing each task's slice just
//! before its kernel overwrote it (in cache) still cost 18% of a forward pass at 32x32
//! maps (a `memset` of every element, then the kernel's stores). So the buffer is reserved
//! uninitialised (fallibly), the kernels that write every element of their slice (the 3x3
//! stride-1 rows) get it uninitialised, and only the others zero it first ([`zeroed`]);
//! the buffer's length is set only once every task has returned.

use crate::utilities::alloc::try_with_capacity;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `len` elements, cut into tasks of `chunk` elements (the last one shorter) that run in
/// parallel: `fill(task, slice)` gets task `task`'s slice, uninitialised.
///
/// # Safety
///
/// `fill` must write every element of its slice (it may first zero it with [`zeroed`]).
pub(super) unsafe fn par_filled<T: FloatElement>(
    op: &'static str,
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Result<Vec<T>> {
    let mut out = try_with_capacity::<T>(op, len)?;
    if len == 0 {
        return Ok(out);
    }
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(task, part)| fill(task, part));
    // SAFETY: the capacity is at least `len` (reserved above), and the tasks initialised
    // every element of `0..len` (their chunks cover it; the caller's promise); a task that
    // panicked would have unwound through `for_each` before this line.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// `part`, zeroed, as initialised values.
pub(super) fn zeroed<T: FloatElement>(part: &mut [MaybeUninit<T>]) -> &mut [T] {
    for v in part.iter_mut() {
        v.write(T::zero());
    }
    // SAFETY: every element of `part` was initialised just above, and `MaybeUninit<T>`
    // has the layout of `T`.
    unsafe { std::slice::from_raw_parts_mut(part.as_mut_ptr().cast::<T>(), part.len()) }
}

/// Initialised values as slots, for a kernel that writes uninitialised slots.
///
/// # Safety
///
/// The slots may only be written with values (`MaybeUninit::new`), never `uninit()`.
pub(super) unsafe fn as_slots<T>(part: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, every slot starts initialised, and
    // the caller writes only values into them.
    unsafe { std::slice::from_raw_parts_mut(part.as_mut_ptr().cast::<MaybeUninit<T>>(), part.len()) }
}
