//! The CUDA device for a test: skipped with a printed reason where there is none, so the
//! suite passes on machines without a GPU, and a failure where one is required.

use crate::{cuda, Device};
use std::sync::{Mutex, MutexGuard};

/// Taken by [`cuda_or_skip`]: the tests of one binary take turns on the device.
static GPU_LOCK: Mutex<()> = Mutex::new(());

/// CUDA device 0 for the test named `test`, or `None` after printing
/// `SKIPPED <test>: <why>` when no CUDA device is usable (no driver, no GPU, a library
/// missing). With `REQUIRE_GPU=1` in the environment (the GPU check sets it) a missing
/// device panics instead, naming the test and the reason, so a broken setup cannot pass
/// as a run of skips.
pub fn cuda_device_or_skip(test: &str) -> Option<Device> {
    match cuda::ensure_available(0) {
        Ok(()) => Some(Device::Cuda(0)),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("{test}: REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// [`cuda_device_or_skip`], holding a lock for the rest of the test so that the tests of a
/// binary run one at a time on the device (memory statistics, streams and captures of one
/// test are not mixed with another's). A test that panicked does not poison it for the
/// others.
pub fn cuda_or_skip(test: &str) -> Option<(MutexGuard<'static, ()>, Device)> {
    let guard = gpu_lock();
    cuda_device_or_skip(test).map(|device| (guard, device))
}

/// The lock [`cuda_or_skip`] holds, for a test that decides for itself what to do with or
/// without a device (one that checks the error raised where there is none).
pub fn gpu_lock() -> MutexGuard<'static, ()> {
    GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
