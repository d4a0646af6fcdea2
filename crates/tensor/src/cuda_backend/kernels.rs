//! Our CUDA C kernels: the list of sources, their NVRTC compilation (once per process and
//! target architecture, cached) and launch-size helpers.
//!
//! Each op family keeps its `.cu` file beside its launch code (`ops/<family>/`). Every
//! source is compiled with `prelude.cuh` in front of it, so kernels share a few helpers
//! without `#include`. For a device whose architecture this NVRTC knows, the kernels are
//! compiled to a CUBIN for exactly that architecture (`sm_XY`): a CUBIN loads on any driver
//! of the same CUDA major version, while PTX from a newer NVRTC than the driver would not.
//! For a newer device, PTX for the newest known architecture is JIT-compiled by the driver.
//! Compiled images are also kept on disk (`kernel_cache.rs`), so later processes skip NVRTC.

use super::kernel_cache::{self, CacheKey};
use crate::{Device, Error, Result};
use cudarc::driver::LaunchConfig;
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

/// The helpers every kernel source starts with.
pub(crate) const PRELUDE: &str = include_str!("prelude.cuh");

/// One CUDA C source of tapegrad's kernels, as NVRTC compiles it (prelude included).
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// A short name (the `.cu` file's stem), used in messages and as the cache key.
    pub name: &'static str,
    /// The full source.
    pub source: &'static str,
}

/// Every kernel source of the CUDA backend (the NVRTC CI test compiles each of them).
pub const ALL_SOURCES: &[KernelSource] = &[
    crate::ops::elementwise::cuda::KERNELS,
    crate::ops::layout::cuda::KERNELS,
    crate::ops::reduce::cuda::KERNELS,
    crate::ops::softmax::cuda::KERNELS,
    crate::ops::pool::cuda::KERNELS,
    crate::ops::norm::cuda::KERNELS,
    crate::ops::optim::cuda::KERNELS,
    crate::ops::pad::cuda::KERNELS,
    crate::ops::resize::cuda::KERNELS,
    crate::ops::gather::cuda::KERNELS,
    crate::ops::group_norm::cuda::KERNELS,
];

/// Every kernel entry point the launch code can ask for, with its source's name (a test
/// checks each against the compiled PTX, so a misspelt name fails in CI, not on a GPU).
pub fn all_kernel_names() -> Vec<(&'static str, String)> {
    let families = [
        ("elementwise", crate::ops::elementwise::cuda::kernel_names()),
        ("layout", crate::ops::layout::cuda::kernel_names()),
        ("reduce", crate::ops::reduce::cuda::kernel_names()),
        ("softmax", crate::ops::softmax::cuda::kernel_names()),
        ("pool", crate::ops::pool::cuda::kernel_names()),
        ("norm", crate::ops::norm::cuda::kernel_names()),
        ("optim", crate::ops::optim::cuda::kernel_names()),
        ("pad", crate::ops::pad::cuda::kernel_names()),
        ("resize", crate::ops::resize::cuda::kernel_names()),
        ("gather", crate::ops::gather::cuda::kernel_names()),
        ("group_norm", crate::ops::group_norm::cuda::kernel_names()),
    ];
    families.into_iter().flat_map(|(source, names)| names.into_iter().map(move |n| (source, n))).collect()
}

const NVRTC_HELP: &str = "install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc==13.0.*` and put its \
     nvidia/cu13/lib folder on LD_LIBRARY_PATH (scripts/nvrtc-check.sh shows how)";

/// Checks that NVRTC can be loaded; cudarc would panic on first use otherwise.
pub(crate) fn check_nvrtc(device: Device) -> Result<()> {
    static LOADABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen libnvrtc under its known names; calls nothing in it.
    if *LOADABLE.get_or_init(|| unsafe { nvrtc_sys::is_culib_present() }) {
        Ok(())
    } else {
        Err(Error::DeviceUnavailable {
            device,
            msg: format!("the NVRTC library (libnvrtc.so) could not be loaded: {NVRTC_HELP}"),
        })
    }
}

/// The version of the NVRTC library that was loaded.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let device = Device::Cuda(0);
    check_nvrtc(device)?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loadable (checked above); the pointers are to live locals.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::cuda(device, "nvrtcVersion", e))?;
    Ok((major, minor))
}

/// The real architectures (`75` for sm_75, ...) the loaded NVRTC compiles for.
fn supported_archs(device: Device) -> Result<Vec<i32>> {
    check_nvrtc(device)?;
    let mut count = 0;
    // SAFETY: NVRTC is loadable; `count` is a live local.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut count) }
        .result()
        .map_err(|e| Error::cuda(device, "nvrtcGetNumSupportedArchs", e))?;
    let mut archs = vec![0; count.max(0) as usize];
    // SAFETY: `archs` has room for the `count` values NVRTC writes.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| Error::cuda(device, "nvrtcGetSupportedArchs", e))?;
    Ok(archs)
}

/// What to compile for a device of compute capability `(major, minor)`: `sm_XY` (a CUBIN)
/// if NVRTC knows it, else `compute_XY` (PTX) for the newest older architecture it knows.
pub(crate) fn target_arch(device: Device, (major, minor): (i32, i32)) -> Result<String> {
    let wanted = major * 10 + minor;
    let archs = supported_archs(device)?;
    if archs.contains(&wanted) {
        return Ok(format!("sm_{wanted}"));
    }
    match archs.iter().filter(|&&a| a <= wanted).max() {
        Some(best) => Ok(format!("compute_{best}")),
        None => Err(Error::DeviceUnavailable {
            device,
            msg: format!("the loaded NVRTC cannot compile for compute capability {major}.{minor} (it knows {archs:?})"),
        }),
    }
}

/// Include folder for CUDA headers (none of our kernels needs one today; a kernel using
/// `cuda_fp16.h` would): `NVRTC_INCLUDE_PATH`, else `$CUDA_HOME/include` if it exists.
fn include_path() -> Option<String> {
    let candidates =
        [std::env::var("NVRTC_INCLUDE_PATH").ok(), std::env::var("CUDA_HOME").ok().map(|h| format!("{h}/include"))];
    candidates.into_iter().flatten().find(|p| std::path::Path::new(p).is_dir())
}

/// Deletes an NVRTC program when it goes out of scope.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is destroyed only here.
        // A failure to free it cannot be acted on.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The full text NVRTC compiles for a source.
fn full_text(source: &KernelSource) -> String {
    format!("{PRELUDE}\n{}", source.source)
}

/// The NVRTC options for `arch`.
fn compile_options(arch: &str) -> Vec<String> {
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    if let Some(dir) = include_path() {
        options.push(format!("--include-path={dir}"));
    }
    options
}

/// Compiles a kernel source with NVRTC for `arch`: `"compute_XY"` gives PTX (text ending
/// in a NUL byte), `"sm_XY"` a CUBIN. A compile error returns NVRTC's log in the message.
pub fn compile(source: &KernelSource, arch: &str) -> Result<Vec<u8>> {
    compile_text(source, &full_text(source), arch, &compile_options(arch))
}

fn compile_text(source: &KernelSource, text: &str, arch: &str, options: &[String]) -> Result<Vec<u8>> {
    let device = Device::Cuda(0);
    check_nvrtc(device)?;
    let fail = |op: &'static str, e: nvrtc::NvrtcError| Error::cuda(device, op, format!("{}.cu: {e}", source.name));
    let text =
        CString::new(text).map_err(|_| Error::invalid("nvrtc", format!("{}.cu contains a NUL byte", source.name)))?;
    let file = CString::new(format!("{}.cu", source.name))
        .map_err(|_| Error::invalid("nvrtc", format!("kernel name {:?} contains a NUL byte", source.name)))?;
    let program = Program(nvrtc::create_program(&text, Some(&file)).map_err(|e| fail("nvrtcCreateProgram", e))?);
    // SAFETY: the program is live (owned by `program`); `text` and `file` outlive it.
    let compiled = unsafe { nvrtc::compile_program(program.0, options) };
    if let Err(e) = compiled {
        // SAFETY: as above.
        let log = unsafe { nvrtc::get_program_log(program.0) }.map(|l| c_chars_to_string(&l)).unwrap_or_default();
        return Err(Error::Cuda {
            device,
            op: "nvrtcCompileProgram",
            msg: format!("{}.cu for {arch} ({}): {e}\n{log}", source.name, options.join(" ")),
        });
    }
    if arch.starts_with("sm_") {
        let mut size = 0usize;
        // SAFETY: the program compiled; `size` is a live local.
        unsafe { nvrtc_sys::nvrtcGetCUBINSize(program.0, &mut size) }
            .result()
            .map_err(|e| fail("nvrtcGetCUBINSize", e))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has the `size` bytes NVRTC writes.
        unsafe { nvrtc_sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| fail("nvrtcGetCUBIN", e))?;
        Ok(cubin)
    } else {
        // SAFETY: the program compiled.
        let ptx = unsafe { nvrtc::get_ptx(program.0) }.map_err(|e| fail("nvrtcGetPTX", e))?;
        Ok(ptx.into_iter().map(|c| c as u8).collect())
    }
}

/// Compiled images by (source name, architecture).
type ImageCache = HashMap<(&'static str, String), Arc<Vec<u8>>>;

/// [`compile`], once per process for each (source, architecture), through the disk cache.
pub(crate) fn compiled(source: &KernelSource, arch: &str) -> Result<Arc<Vec<u8>>> {
    static CACHE: LazyLock<Mutex<ImageCache>> = LazyLock::new(Default::default);
    // Holding the lock while compiling makes concurrent first uses wait for one compile.
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = cache.get(&(source.name, arch.to_string())) {
        return Ok(image.clone());
    }
    let (text, options) = (full_text(source), compile_options(arch));
    let key = CacheKey { name: source.name, arch, nvrtc: nvrtc_version()?, options: &options, text: &text };
    let (image, _) = kernel_cache::load_or_compile(kernel_cache::folder().as_deref(), &key, || {
        compile_text(source, &text, arch, &options)
    })?;
    let image = Arc::new(image);
    cache.insert((source.name, arch.to_string()), image.clone());
    Ok(image)
}

/// The kernel cache in one line: its folder (or that it is off) and how many images this
/// process read from it and compiled (for scripts/gpu-check.sh's preflight).
pub fn kernel_cache_report() -> String {
    let (hits, compiles) = kernel_cache::counts();
    match kernel_cache::folder() {
        Some(dir) => format!("kernel cache {}: {hits} images read, {compiles} compiled", dir.display()),
        None => format!("kernel cache off ({}=off or no HOME): {compiles} images compiled", kernel_cache::CACHE_VAR),
    }
}

/// Threads per block of the elementwise kernels.
pub(crate) const BLOCK: u32 = 256;
/// Enough blocks to fill any current GPU; the kernels' grid-stride loops cover the rest.
const MAX_GRID: usize = 1 << 16;

/// The index width of a kernel variant (its name's `_u32` / `_u64` part) for a launch whose
/// largest index, of any buffer it touches, is below `extent` (see
/// [`crate::cuda::set_index32_limit`]).
pub(crate) fn index_width(extent: usize) -> &'static str {
    if extent < crate::cuda::index32_limit() {
        "u32"
    } else {
        "u64"
    }
}

/// A 1-D launch of `n` (> 0) independent elements with grid-stride loops.
pub(crate) fn elementwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// A launch of one block per task (`tasks` > 0), `threads` (a multiple of 32) per block.
pub(crate) fn block_per_task_config(tasks: usize, threads: u32) -> LaunchConfig {
    let blocks = tasks.clamp(1, MAX_GRID) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Threads for a block that reduces rows of `len` elements: a multiple of 32, at most 256.
pub(crate) fn threads_for_row(len: usize) -> u32 {
    (len.next_power_of_two().clamp(32, BLOCK as usize)) as u32
}

/// The suffix kernels use for a dtype.
pub(crate) fn dtype_suffix(dtype: crate::DType) -> &'static str {
    dtype.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_sizes_cover_edge_cases() {
        assert_eq!(elementwise_config(1).grid_dim.0, 1);
        assert_eq!(elementwise_config(257).grid_dim.0, 2);
        assert_eq!(elementwise_config(usize::MAX / 2).grid_dim.0, 1 << 16);
        assert_eq!(threads_for_row(1), 32);
        assert_eq!(threads_for_row(100), 128);
        assert_eq!(threads_for_row(100_000), 256);
    }

    #[test]
    fn kernel_names_are_unique() {
        let mut names: Vec<String> = all_kernel_names().into_iter().map(|(_, n)| n).collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total);
    }
}
