//! Keeps freed host memory in the process for the next training step to reuse (glibc only).
//!
//! glibc's malloc serves an allocation above its mmap threshold (128 KiB at start, raised
//! on the fly to at most 32 MiB) with a fresh `mmap`, unmapped again by `free`, and hands
//! the top of its heap back to the kernel once more than the trim threshold (twice the mmap
//! threshold) lies free there. A training step allocates and frees the same large buffers
//! every step (activations, im2col columns, gradients, Adam's temporaries: hundreds of MiB),
//! so each step page-faulted its whole working set in again and the kernel zeroed every
//! page: on the seed ResNet18 at batch 64 (2 threads), the kernel's `clear_page_erms` alone
//! was 13% of the step's samples, and page faults made a read-then-written zeroed buffer
//! fault twice (zero page, then copy-on-write). With both thresholds raised, freed buffers
//! stay in malloc's heap and the next step reuses them; the price is that the process keeps
//! its peak heap instead of returning it, as PyTorch's caching allocators do.
//!
//! A user who tunes glibc's malloc (any `glibc.malloc.` entry in `GLIBC_TUNABLES`, or one of
//! the older `MALLOC_*_` variables) keeps those settings: nothing is changed then.

/// Allocations of at least this many bytes still get their own `mmap` (and are unmapped
/// when freed): 1 GiB, above any single buffer of the CIFAR-sized models.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 30;
/// Free memory at the top of the heap beyond this is returned to the kernel: the largest
/// value `mallopt` takes (2 GiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = i32::MAX;

/// Raises glibc's mmap and trim thresholds, once per process, unless the user set malloc
/// tunables of their own. Cheap to call again (one atomic load); a no-op off glibc.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if !user_tuned(std::env::vars_os()) {
                // SAFETY: mallopt only sets malloc parameters, under malloc's own lock; it
                // returns 0 for a value it refuses, which leaves glibc's defaults in place.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
                }
            }
        });
    }
}

/// Whether the environment already tunes glibc's malloc.
#[cfg(any(test, all(target_os = "linux", target_env = "gnu")))]
fn user_tuned(vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> bool {
    vars.into_iter().any(|(name, value)| {
        let (name, value) = (name.to_string_lossy(), value.to_string_lossy());
        (name == "GLIBC_TUNABLES" && value.contains("glibc.malloc."))
            || (name.starts_with("MALLOC_") && name.ends_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(n, v)| (OsString::from(n), OsString::from(v))).collect()
    }

    #[test]
    fn the_users_own_malloc_settings_are_left_alone() {
        assert!(!user_tuned(env(&[("PATH", "/bin"), ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")])));
        assert!(!user_tuned(env(&[("MALLOC_CONF", "x")])), "jemalloc's variable is not glibc's");
        assert!(user_tuned(env(&[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")])));
        assert!(user_tuned(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])));
    }

    /// A 48 MiB buffer comes from the heap, not from an `mmap` of its own (glibc's default
    /// would map it: 48 MiB is above the largest threshold glibc picks by itself, 32 MiB, and
    /// below the 64 MiB heaps of the arenas of threads other than the main one).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_buffers_come_from_the_heap() {
        if user_tuned(std::env::vars_os()) {
            return; // The user's settings decide; nothing of ours to check.
        }
        keep_freed_memory();
        // SAFETY: mallinfo2 only reads malloc's statistics.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let buffer = vec![1u8; 48 << 20];
        let during = mapped();
        assert_eq!(buffer.iter().map(|&b| b as usize).sum::<usize>(), 48 << 20);
        // Other tests running beside this one may free mapped blocks, never map 48 MiB ones.
        assert!(during < before + (48 << 20), "mmapped bytes went from {before} to {during}");
    }
}
