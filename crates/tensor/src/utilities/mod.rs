//! Helpers that the kernels of every op and both backends share: fallible host allocation
//! (with glibc's malloc told to keep freed memory for reuse), the serial/parallel threshold
//! and the main thread's own thread pool, NaN tests, dimension merging and the run-time
//! choice of instruction set. This module sits below `ops/` and the backends and imports
//! neither.

pub(crate) mod alloc;
pub(crate) mod coalesce;
pub(crate) mod isa;
pub(crate) mod malloc_tuning;
mod parallel;

pub(crate) use parallel::{enter_pool_on_main_thread, PAR_MIN_LEN};

/// Whether a value is NaN, for generic element types (integers never are).
#[inline(always)]
pub(crate) fn is_nan<T: PartialOrd>(v: T) -> bool {
    v.partial_cmp(&v).is_none()
}
