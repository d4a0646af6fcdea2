//! The CUDA backend's controls: availability, TF32, memory statistics.
//!
//! # Building
//!
//! The backend is behind the `cuda` feature (`cargo build --features cuda`). It uses
//! [cudarc](https://docs.rs/cudarc) with dynamic loading: nothing CUDA is needed to build,
//! and the driver, NVRTC and cuBLAS libraries are looked up when first used (through
//! `LD_LIBRARY_PATH` and the system's library paths). A missing library or GPU is an
//! [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable) naming what is missing and how to get it, never a panic.
//! Use [`Device::cuda_if_available`](crate::Device::cuda_if_available) to fall back to the
//! CPU.
//!
//! cudarc's bindings follow one CUDA version. By default it is CUDA 13.0 (the crate's
//! default feature `cuda-13000`), which runs on drivers R580 and newer and loads
//! `libnvrtc.so.13` / `libcublas.so.13` (falling back to the `.12` libraries). To build
//! against another CUDA version, turn tapegrad-tensor's default features off and choose
//! the version through cudarc's own feature, which Cargo merges into the same cudarc:
//!
//! ```toml
//! [dependencies]
//! tapegrad-tensor = { version = "0.1", default-features = false, features = ["cuda"] }
//! cudarc = { version = "0.19", default-features = false, features = ["cuda-12080"] }
//! ```
//!
//! (cudarc's features `cuda-11040` ... `cuda-13040` name the versions; exactly one must
//! be on, so `cuda-13000` must be off, which is what `default-features = false` does.)
//! Within this workspace, change the `cuda-13000` default in crates/tensor/Cargo.toml.
//!
//! # Running
//!
//! Each device gets one stream: ops are queued without waiting for the GPU, and only
//! reading values back (`to_vec`, `to_scalar`, `to_device(&Device::Cpu)`) waits. Kernels
//! are compiled by NVRTC the first time a family of ops runs in a process (about a
//! second) and cached, in memory and on disk (`$TAPEGRAD_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/tapegrad/kernels` or `~/.cache/tapegrad/kernels`; `off` disables it). Device memory comes from a caching allocator: freed buffers are
//! kept for reuse ([`memory_stats`], [`empty_cache`]).

use crate::{Device, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(feature = "cuda")]
pub use crate::cuda_backend::kernels::{
    all_kernel_names, compile as compile_kernel, kernel_cache_report, nvrtc_version, KernelSource, ALL_SOURCES,
};
/// Device addresses and streams for libraries that queue their own work (NCCL).
#[cfg(feature = "cuda")]
pub use crate::cuda_backend::raw;

/// Memory statistics of one device's allocator, in bytes of (rounded) blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held by live buffers (tensors).
    pub in_use: usize,
    /// Obtained from the driver: in use plus cached for reuse.
    pub reserved: usize,
    /// The largest `in_use` seen since the device was opened (or the last reset).
    pub peak_in_use: usize,
    /// Number of `cuMemAlloc` calls made (a reused block does not count).
    pub device_allocations: u64,
    /// Number of allocations served from the cache.
    pub cache_hits: u64,
}

static TF32: AtomicBool = AtomicBool::new(false);

/// Lets f32 matrix products and convolutions on CUDA use TF32 tensor cores (10-bit
/// mantissas in the products, f32 accumulation): several times faster on Ampere and newer
/// GPUs, with relative errors around 1e-3 instead of 1e-6. Off by default; it applies to every
/// device and to products queued after the call (PyTorch's `allow_tf32`).
pub fn set_tf32(enabled: bool) {
    TF32.store(enabled, Ordering::Relaxed);
}

/// Whether TF32 math is enabled for f32 matrix products and convolutions (see [`set_tf32`]).
pub fn tf32_enabled() -> bool {
    TF32.load(Ordering::Relaxed)
}

static CUDNN_BENCHMARK: AtomicBool = AtomicBool::new(false);

/// Lets cuDNN pick each convolution's algorithms by timing them (PyTorch's
/// `torch.backends.cudnn.benchmark`): the first convolution of each new geometry runs every
/// candidate algorithm once on scratch buffers and waits for them, and the fastest
/// deterministic one that fits is kept for that geometry. Worth it when the shapes repeat
/// (a training loop); off by default, when cuDNN's heuristics choose without running
/// anything. It applies to every device and to geometries first seen after the call; a
/// geometry first seen while a graph is being captured is ranked by the heuristics.
pub fn set_cudnn_benchmark(enabled: bool) {
    CUDNN_BENCHMARK.store(enabled, Ordering::Relaxed);
}

/// Whether convolution algorithms are chosen by measurement (see [`set_cudnn_benchmark`]).
pub fn cudnn_benchmark_enabled() -> bool {
    CUDNN_BENCHMARK.load(Ordering::Relaxed)
}

/// Kernels whose every index (elements of the output and of the buffers they read) is below
/// this use 32-bit index arithmetic: 2^31, so `index + grid stride` cannot wrap.
pub const DEFAULT_INDEX32_LIMIT: usize = 1 << 31;

static INDEX32_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_INDEX32_LIMIT);

/// Sets the size from which the index-heavy CUDA kernels (strided copies, concatenation,
/// broadcast binary ops, pooling, batch norm's elementwise passes) switch from 32-bit to
/// 64-bit index arithmetic, for every device and every launch after the call. The 32-bit
/// forms spend several times fewer instructions on the per-element `/` and `%`; the result
/// is the same bit for bit. Tests lower it (to 0: always 64-bit) to exercise the forms a
/// tensor of 2^31 elements would take; values above [`DEFAULT_INDEX32_LIMIT`] are capped
/// to it.
pub fn set_index32_limit(limit: usize) {
    INDEX32_LIMIT.store(limit.min(DEFAULT_INDEX32_LIMIT), Ordering::Relaxed);
}

/// The limit [`set_index32_limit`] set.
pub fn index32_limit() -> usize {
    INDEX32_LIMIT.load(Ordering::Relaxed)
}

/// Succeeds if CUDA device `ordinal` can run tapegrad's ops: the crate was built with the
/// `cuda` feature, the driver finds the device, and NVRTC and cuBLAS load. Otherwise the
/// error says what is missing and how to get it. Opens the device (its context and
/// stream) if it is not open yet.
pub fn ensure_available(ordinal: usize) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let device = crate::cuda_backend::device::CudaDevice::get(ordinal)?;
        crate::cuda_backend::kernels::check_nvrtc(Device::Cuda(ordinal))?;
        device.with_blas(|_| Ok(()))
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

/// Whether CUDA device 0 can run tapegrad's ops (see [`ensure_available`]).
pub fn is_available() -> bool {
    ensure_available(0).is_ok()
}

/// The number of CUDA devices the driver reports (0 without a driver, or without the
/// `cuda` feature).
pub fn device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_backend::device::device_count().unwrap_or(0)
    }
    #[cfg(not(feature = "cuda"))]
    0
}

/// Waits until all work queued on CUDA device `ordinal` has finished (for timing; reading
/// values back waits by itself).
pub fn synchronize(ordinal: usize) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_backend::device::CudaDevice::get(ordinal)?.synchronize()
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

/// How many times the host has waited for CUDA device `ordinal` since it was opened: each
/// read-back of a buffer (`to_vec`, `to_device(Cpu)`, `to_scalar`) and each [`synchronize`]
/// counts one. The difference across a stretch of code is how often it made the host wait
/// for the device, i.e. how often it stopped the host from queueing ahead; a training step
/// that reads nothing adds 0. (Waits for a staging buffer of an upload are not counted:
/// they wait for an earlier copy, not for the queued work.)
pub fn host_waits(ordinal: usize) -> Result<u64> {
    #[cfg(feature = "cuda")]
    {
        Ok(crate::cuda_backend::device::CudaDevice::get(ordinal)?.host_waits())
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

/// The caching allocator's statistics for CUDA device `ordinal`.
pub fn memory_stats(ordinal: usize) -> Result<MemoryStats> {
    #[cfg(feature = "cuda")]
    {
        Ok(crate::cuda_backend::device::CudaDevice::get(ordinal)?.memory_stats())
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

/// Restarts the peak statistic of CUDA device `ordinal` at the memory in use now.
pub fn reset_peak_memory(ordinal: usize) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_backend::device::CudaDevice::get(ordinal)?.reset_peak_memory();
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

/// Returns the cached (free) blocks of CUDA device `ordinal` to the driver, after waiting
/// for queued work. Memory held by live tensors stays.
pub fn empty_cache(ordinal: usize) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_backend::device::CudaDevice::get(ordinal)?.empty_cache()
    }
    #[cfg(not(feature = "cuda"))]
    Err(not_built(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn not_built(ordinal: usize) -> crate::Error {
    crate::Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        msg: "tapegrad was built without the `cuda` feature; rebuild with `--features cuda`".into(),
    }
}
