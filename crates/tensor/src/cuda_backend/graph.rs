//! CUDA-graph capture and replay on a device's one stream (the public side is
//! [`crate::cuda_graph`]).
//!
//! While a capture is under way the stream records instead of running, the allocator hands
//! out only cached blocks, all of which then belong to the graph's private pool (see
//! `allocator.rs`), and whatever needs the host (reading a tensor back, an upload, waiting
//! for the device) fails with an error that names it, before the driver would invalidate
//! the capture. A replay writes the same addresses every time; tensors created during the
//! capture are those addresses, and their blocks stay private until the graph is dropped.

use super::device::CudaDevice;
use super::CudaStorage;
use crate::cpu_backend::CpuStorage;
use crate::{Error, Result};
use cudarc::driver::sys;
use std::sync::Arc;

/// A captured, instantiated graph and the private pool its blocks come from.
pub(crate) struct Graph {
    device: Arc<CudaDevice>,
    graph: cudarc::driver::CudaGraph,
    pool: u64,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // A replay still running writes only blocks of this pool; whatever is given them
        // next is queued after it on the same stream.
        self.device.allocator().drop_pool(self.pool);
    }
}

/// Ends the capture state of a device however the capture ends (an error or a panic in
/// the closure included), so the device is never left refusing work.
struct CaptureState<'a> {
    device: &'a CudaDevice,
    pool: u64,
    stream_capturing: bool,
}

impl CaptureState<'_> {
    /// Ends the stream's capture; the graph, if the driver made one.
    fn end(&mut self) -> std::result::Result<Option<cudarc::driver::CudaGraph>, cudarc::driver::DriverError> {
        let graph = if self.stream_capturing {
            self.stream_capturing = false;
            self.device.stream().end_capture(sys::CUgraphInstantiate_flags(0))
        } else {
            Ok(None)
        };
        self.device.set_capturing(false);
        self.device.allocator().end_capture();
        graph
    }
}

impl Drop for CaptureState<'_> {
    fn drop(&mut self) {
        // Still capturing here only when the closure panicked.
        if self.device.is_capturing() {
            let _ = self.end();
            self.device.allocator().drop_pool(self.pool);
        }
    }
}

impl Graph {
    /// Runs `f` while the device's stream captures, and instantiates what it queued. On
    /// an error (of `f`, or the driver's) nothing is kept and the private pool is released.
    pub(crate) fn capture<R>(device: &Arc<CudaDevice>, f: impl FnOnce() -> Result<R>) -> Result<(Graph, R)> {
        let name = device.device();
        let pool = device.allocator().begin_capture(name)?;
        device.set_capturing(true);
        let mut state = CaptureState { device, pool, stream_capturing: false };
        let begun = device
            .stream()
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::cuda(name, "cuStreamBeginCapture", e));
        let result = begun.and_then(|()| {
            state.stream_capturing = true;
            f()
        });
        let ended = state.end();
        let fail = |e: Error| {
            device.allocator().drop_pool(pool);
            Err(e)
        };
        match (result, ended) {
            // The closure's own error names the cause; the driver's then only says that
            // the capture was invalidated.
            (Err(e), _) => fail(e),
            (Ok(_), Err(e)) => fail(Error::Cuda {
                device: name,
                op: "cuStreamEndCapture",
                msg: format!("the driver rejected the capture: {e}"),
            }),
            (Ok(_), Ok(None)) => fail(Error::invalid("cuda graph capture", "the driver returned no graph")),
            (Ok(r), Ok(Some(graph))) => Ok((Graph { device: device.clone(), graph, pool }, r)),
        }
    }

    /// Queues one run of the graph on the device's stream.
    pub(crate) fn replay(&self) -> Result<()> {
        self.device.refuse_while_capturing("replaying a CUDA graph")?;
        self.graph.launch().map_err(|e| Error::cuda(self.device.device(), "cuGraphLaunch", e))
    }
}

/// Queues a copy of `src`'s bytes into `dst`'s buffer (same length and dtype, same device;
/// checked by the caller). During a capture the copy becomes a node of the graph.
pub(crate) fn copy_device(dst: &CudaStorage, src: &CudaStorage) -> Result<()> {
    if dst.ptr() == src.ptr() || dst.bytes() == 0 {
        return Ok(());
    }
    let device = dst.cuda_device();
    device.bind()?;
    // SAFETY: both buffers are live and hold `bytes()` bytes (equal lengths and dtypes);
    // the copy is queued on the device's one stream, after every earlier write of `src`.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst.ptr(), src.ptr(), dst.bytes(), device.stream().cu_stream()) }
        .map_err(|e| Error::cuda(device.device(), "cuMemcpyDtoDAsync", e))
}

/// Queues a copy of a host buffer into `dst`'s buffer (same length and dtype; checked by
/// the caller); refused during a capture.
pub(crate) fn copy_host(dst: &CudaStorage, src: &CpuStorage) -> Result<()> {
    let bytes = super::cpu_bytes(src);
    if bytes.is_empty() {
        return Ok(());
    }
    dst.cuda_device().upload(bytes, dst.ptr())
}
