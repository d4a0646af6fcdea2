//! CUDA devices: per ordinal one context, one stream, a caching allocator, the loaded
//! kernels, a cuBLAS handle and a cuDNN handle with its convolution plans, created on first
//! use and kept for the life of the process.
//!
//! cudarc panics when a CUDA library cannot be loaded, so every path into it starts with
//! `is_culib_present()` for the library it needs (driver here, NVRTC in `kernels`, cuBLAS
//! in `blas`, cuDNN in `cudnn`) and turns a missing library into [`Error::DeviceUnavailable`].

use super::allocator::{Block, CachingAllocator};
use super::blas::BlasHandle;
use super::cudnn::Dnn;
use super::kernels::{self, KernelSource};
use super::staging;
use crate::cuda::MemoryStats;
use crate::{Device, Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

const DRIVER_HELP: &str = "install an NVIDIA driver (R580 or newer for CUDA 13), or put the folder holding \
     libcuda.so.1 on LD_LIBRARY_PATH";

/// Locks a mutex whose data stays consistent even if a holder panicked (caches only).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the driver library can be loaded (checked once per process).
fn driver_loadable() -> bool {
    static LOADABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen libcuda under its known names; calls nothing in it.
    *LOADABLE.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// The number of CUDA devices, or why there are none to use.
pub(crate) fn device_count() -> std::result::Result<usize, String> {
    if !driver_loadable() {
        return Err(format!("the CUDA driver library (libcuda.so) could not be loaded: {DRIVER_HELP}"));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err("the CUDA driver reports no device (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)".into()),
        Err(e) => {
            Err(format!("the CUDA driver found no usable device ({e}); check `nvidia-smi` and CUDA_VISIBLE_DEVICES"))
        }
    }
}

/// One GPU as the backend uses it.
pub(crate) struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    allocator: CachingAllocator,
    /// What the kernels are compiled for (`sm_90`, or `compute_XY` for PTX).
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    blas: Mutex<Option<BlasHandle>>,
    dnn: Mutex<Option<Dnn>>,
    /// Pinned buffers that uploads are staged through.
    staging: Mutex<staging::Ring>,
    /// Whether the stream is capturing a CUDA graph (`graph.rs`).
    capturing: AtomicBool,
    /// How many times the host waited for the stream ([`Self::synchronize`]: every
    /// read-back and every explicit wait), for [`crate::cuda::host_waits`].
    waits: AtomicU64,
    /// Set when work another library queued on the stream failed ([`super::raw::fail_stream`]):
    /// makes the error every later wait for the device reports.
    failed: OnceLock<StreamFailure>,
}

/// Makes the error a failed stream reports (a fresh value for each wait).
pub(crate) type StreamFailure = Box<dyn Fn() -> Error + Send + Sync>;

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {})", self.ordinal, self.arch)
    }
}

impl CudaDevice {
    /// The device with this ordinal, opened on first use.
    pub(crate) fn get(ordinal: usize) -> Result<Arc<CudaDevice>> {
        static DEVICES: Mutex<Vec<Option<Arc<CudaDevice>>>> = Mutex::new(Vec::new());
        let mut devices = lock(&DEVICES);
        if let Some(Some(d)) = devices.get(ordinal) {
            return Ok(d.clone());
        }
        let device = Arc::new(Self::open(ordinal)?);
        if devices.len() <= ordinal {
            devices.resize(ordinal + 1, None);
        }
        devices[ordinal] = Some(device.clone());
        Ok(device)
    }

    fn open(ordinal: usize) -> Result<CudaDevice> {
        let device = Device::Cuda(ordinal);
        let unavailable = |msg: String| Error::DeviceUnavailable { device, msg };
        let count = device_count().map_err(unavailable)?;
        if ordinal >= count {
            return Err(unavailable(format!("there are {count} CUDA device(s), with ordinals 0..{count}")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda(device, "creating the CUDA context", e))?;
        // SAFETY: from here on cudarc records no read/write events per buffer. That is
        // sound because all work on this device goes to the one stream created below (so it
        // runs in order), and our allocator, not cudarc, owns every buffer. It must happen
        // before any allocation, which it does: the context was just created.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| Error::cuda(device, "creating the CUDA stream", e))?;
        let capability = ctx.compute_capability().map_err(|e| Error::cuda(device, "cuDeviceGetAttribute", e))?;
        let arch = kernels::target_arch(device, capability)?;
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            allocator: CachingAllocator::default(),
            arch,
            modules: Mutex::default(),
            functions: Mutex::default(),
            blas: Mutex::default(),
            dnn: Mutex::default(),
            staging: Mutex::default(),
            capturing: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            failed: OnceLock::new(),
        })
    }

    /// The device's ordinal.
    pub(crate) fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The public name of this device.
    pub(crate) fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// The one stream every operation on this device is queued on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Makes this device's context current on the calling thread (needed before raw
    /// driver, cuBLAS calls; cudarc's safe calls do it themselves).
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| Error::cuda(self.device(), "cuCtxSetCurrent", e))
    }

    /// A block of at least `bytes` bytes from the caching allocator.
    pub(crate) fn allocate(&self, bytes: usize) -> Result<Block> {
        self.allocator.allocate(&self.ctx, &self.stream, bytes)
    }

    /// Returns a block to the allocator's cache.
    pub(crate) fn release(&self, block: &Block) {
        self.allocator.release(block)
    }

    /// The allocator's statistics.
    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.allocator.stats()
    }

    /// Restarts the peak-memory statistic.
    pub(crate) fn reset_peak_memory(&self) {
        self.allocator.reset_peak()
    }

    /// Returns cached blocks to the driver (waits for queued work first).
    pub(crate) fn empty_cache(&self) -> Result<()> {
        self.refuse_while_capturing("returning cached memory to the driver (empty_cache)")?;
        self.allocator.empty_cache(&self.ctx, &self.stream)
    }

    /// Waits until all queued work on this device is done. Fails after the wait when the
    /// stream was marked failed ([`Self::fail`]): what it computed is not to be read.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.refuse_while_capturing("waiting for the device (synchronize)")?;
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.stream.synchronize().map_err(|e| Error::cuda(self.device(), "cuStreamSynchronize", e))?;
        match self.failed.get() {
            Some(error) => Err(error()),
            None => Ok(()),
        }
    }

    /// How many times the host has waited for this device's stream (see `waits`).
    pub(crate) fn host_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Marks the stream failed; the first mark stays ([`super::raw::fail_stream`]).
    pub(crate) fn fail(&self, error: StreamFailure) {
        let _ = self.failed.set(error);
    }

    /// The caching allocator (graph capture gives it a private pool).
    pub(crate) fn allocator(&self) -> &CachingAllocator {
        &self.allocator
    }

    /// Marks the stream as capturing a graph, or not.
    pub(crate) fn set_capturing(&self, capturing: bool) {
        self.capturing.store(capturing, Ordering::SeqCst);
    }

    /// Whether the stream is capturing a graph.
    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::SeqCst)
    }

    /// Fails, naming `what`, while the stream captures a graph: the driver forbids waiting
    /// for the device and allocating then, and a copy from host memory would be replayed
    /// from that memory long after the caller has reused it. The error ends up as the
    /// reason a training step falls back to eager execution.
    pub(crate) fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        if !self.is_capturing() {
            return Ok(());
        }
        Err(Error::invalid(
            "cuda graph capture",
            format!("{what} on {} needs the host during the step, which a CUDA graph cannot replay", self.device()),
        ))
    }

    /// A kernel entry point of one of our sources, compiled and loaded on first use.
    pub(crate) fn function(&self, source: &KernelSource, name: &str) -> Result<CudaFunction> {
        if let Some(f) = lock(&self.functions).get(name) {
            return Ok(f.clone());
        }
        let module = self.module(source)?;
        let f = module.load_function(name).map_err(|e| Error::Cuda {
            device: self.device(),
            op: "cuModuleGetFunction",
            msg: format!("kernel {name} of {}.cu: {e}", source.name),
        })?;
        lock(&self.functions).insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn module(&self, source: &KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = lock(&self.modules);
        if let Some(m) = modules.get(source.name) {
            return Ok(m.clone());
        }
        let image = kernels::compiled(source, &self.arch)?;
        let module = self.ctx.load_module(Ptx::from_binary(image.as_ref().clone())).map_err(|e| Error::Cuda {
            device: self.device(),
            op: "cuModuleLoadData",
            msg: format!("{}.cu compiled for {}: {e}", source.name, self.arch),
        })?;
        modules.insert(source.name, module.clone());
        Ok(module)
    }

    /// Runs `f` with this device's cuBLAS handle (created on first use; the lock keeps
    /// calls from several threads apart, as a handle requires).
    pub(crate) fn with_blas<R>(&self, f: impl FnOnce(&BlasHandle) -> Result<R>) -> Result<R> {
        let mut slot = lock(&self.blas);
        let handle = match slot.take() {
            Some(h) => h,
            None => BlasHandle::new(self)?,
        };
        let result = f(&handle);
        *slot = Some(handle);
        result
    }

    /// Runs `f` with this device's cuDNN state (handle and convolution plans, created on
    /// first use; the lock keeps calls from several threads apart, as a handle requires).
    pub(crate) fn with_dnn<R>(&self, f: impl FnOnce(&Dnn) -> Result<R>) -> Result<R> {
        let mut slot = lock(&self.dnn);
        let dnn = match slot.take() {
            Some(d) => d,
            None => Dnn::new(self)?,
        };
        let result = f(&dnn);
        *slot = Some(dnn);
        result
    }

    /// Queues a copy of `src` to device address `dst`, through a pinned staging buffer for
    /// mid-sized uploads (see `staging`); `src` may be dropped when this returns.
    pub(crate) fn upload(&self, src: &[u8], dst: u64) -> Result<()> {
        self.refuse_while_capturing(&format!("copying {} bytes from host memory", src.len()))?;
        self.bind()?;
        if staging::stages(src.len()) {
            return staging::upload(self, &mut lock(&self.staging), src, dst);
        }
        // SAFETY: the caller's block at `dst` holds at least `src.len()` bytes. The copy is
        // queued on the stream; from pageable host memory the driver has copied the source
        // into its own staging memory when the call returns, so `src` may be dropped then.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| Error::cuda(self.device(), "cuMemcpyHtoDAsync", e))
    }
}
