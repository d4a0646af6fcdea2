//! The output buffers of the forward pass, filled by parallel tasks without a zero pass
//! over the whole buffer first.
//!
//! A zeroed allocation (`calloc`) writes every byte once, out of cache, before the kernels
//! write it again: 8-12% of the forward pass's samples. Here the buffer is reserved
//! uninitialised (fallibly), and each task zeroes its own slice just before its kernel
//! overwrites it, while the slice is in cache; the buffer's length is set only once every
//! task has returned, so it never exposes an uninitialised element.

use crate::utilities::alloc::try_with_capacity;
use crate::{FloatElement, Result};
use rayon::prelude::*;

/// `len` elements, cut into tasks of `chunk` elements (the last one shorter) that run in
/// parallel: `fill(task, slice)` gets task `task`'s slice, zeroed, to overwrite.
pub(super) fn par_filled<T: FloatElement>(
    op: &'static str,
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Result<Vec<T>> {
    let mut out = try_with_capacity::<T>(op, len)?;
    if len == 0 {
        return Ok(out);
    }
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(task, part)| {
        for v in part.iter_mut() {
            v.write(T::zero());
        }
        // SAFETY: every element of `part` was initialised just above, and `MaybeUninit<T>`
        // has the layout of `T`.
        let part = unsafe { std::slice::from_raw_parts_mut(part.as_mut_ptr().cast::<T>(), part.len()) };
        fill(task, part);
    });
    // SAFETY: the capacity is at least `len` (reserved above), and the tasks initialised
    // every element of `0..len` (their chunks cover it); a task that panicked would have
    // unwound through `for_each` before this line.
    unsafe { out.set_len(len) };
    Ok(out)
}
