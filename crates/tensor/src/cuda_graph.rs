//! CUDA graphs: a sequence of device work captured once and replayed with one launch.
//!
//! A training step of a small model on a fast GPU is bound by the host (tape bookkeeping,
//! a few hundred kernel launches), not by the GPU. [`CudaGraph::capture`] runs a closure
//! while the device's stream records instead of executing; [`CudaGraph::replay`] then runs
//! everything it queued, at the same addresses, for the cost of one launch.
//!
//! What a replay reads and writes is fixed at capture:
//! - Tensors created inside the closure (its outputs included) are the graph's buffers:
//!   every replay overwrites them. Their memory belongs to the graph until it is dropped.
//! - Tensors created before the capture and read inside it (static inputs, variable
//!   values) are read at their addresses at every replay: keep them alive while the graph
//!   lives, and change what they hold with [`copy_into`], never by replacing them.
//! - Host scalars passed to kernels (learning rates, step counts) are frozen.
//!
//! During the capture nothing may need the host: reading a tensor back (`to_vec`), an
//! upload, waiting for the device, or an allocation the caching allocator cannot serve
//! from its cache (run the work once eagerly first) fails with an error naming it, and the
//! capture is dropped. `tapegrad_layers::training::GraphedStep` builds a training step on
//! this, with eager fallback.
//!
//! ```no_run
//! use tapegrad_tensor::cuda_graph::{copy_into, CudaGraph};
//! use tapegrad_tensor::{DType, Device, Tensor};
//! # fn main() -> tapegrad_tensor::Result<()> {
//! let gpu = Device::Cuda(0);
//! let x = Tensor::zeros([1024], DType::F32, &gpu)?; // the static input
//! x.exp()?; // once eagerly: kernels compiled, allocator warm
//! let (graph, y) = CudaGraph::capture(&gpu, || x.exp())?;
//! for batch in [1.0f32, 2.0] {
//!     copy_into(&x, &Tensor::full(batch as f64, [1024], DType::F32, &gpu)?)?;
//!     graph.replay()?;
//!     println!("{}", y.to_vec::<f32>()?[0]); // e^batch
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cuda")]
use crate::Storage;
use crate::{Device, Error, Result, Tensor};

/// A captured sequence of work on one CUDA device, replayable (see the module docs).
/// Dropping it frees the graph; its buffers return to the allocator's shared cache.
pub struct CudaGraph {
    #[cfg(feature = "cuda")]
    inner: crate::cuda_backend::graph::Graph,
    device: Device,
}

impl std::fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaGraph({})", self.device)
    }
}

impl CudaGraph {
    /// Runs `f` while `device`'s stream captures the work it queues, and returns the
    /// instantiated graph with `f`'s result. Nothing `f` queues has run when this returns:
    /// call [`CudaGraph::replay`] to run it. Fails, with `f`'s error or one naming what
    /// cannot be captured, when `f` needs the host or the driver rejects the capture;
    /// tensors `f` created are then garbage (never computed), and values `f` stored
    /// elsewhere (variables) must be restored by the caller.
    pub fn capture<R>(device: &Device, f: impl FnOnce() -> Result<R>) -> Result<(CudaGraph, R)> {
        let ordinal = cuda_ordinal(device, "CudaGraph::capture")?;
        #[cfg(feature = "cuda")]
        {
            let cuda = crate::cuda_backend::device::CudaDevice::get(ordinal)?;
            let (inner, r) = crate::cuda_backend::graph::Graph::capture(&cuda, f)?;
            Ok((CudaGraph { inner, device: *device }, r))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = f;
            Err(not_built(ordinal))
        }
    }

    /// Queues one run of the captured work on the device's stream (does not wait).
    pub fn replay(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            self.inner.replay()
        }
        #[cfg(not(feature = "cuda"))]
        Err(not_built(0))
    }

    /// The device the graph runs on.
    pub fn device(&self) -> Device {
        self.device
    }
}

/// Whether `device`'s stream is capturing a graph now (false for the CPU).
pub fn is_capturing(device: &Device) -> bool {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(n) = device {
        return crate::cuda_backend::device::CudaDevice::get(*n).is_ok_and(|d| d.is_capturing());
    }
    let _ = device;
    false
}

/// Writes `src`'s values into `dst`'s buffer **in place** (queued on the device; during a
/// capture, a node of the graph). `dst` must be on a CUDA device; `src` on the same device
/// or the host (refused during a capture), with the same shape and dtype.
///
/// Tensors are otherwise immutable: every clone of `dst`, and every tensor sharing its
/// buffer, sees the new values. It is meant for a graph's static buffers.
pub fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    const OP: &str = "copy_into";
    if dst.shape() != src.shape() {
        return Err(Error::ShapeMismatch { op: OP, lhs: dst.shape().clone(), rhs: src.shape().clone() });
    }
    if dst.dtype() != src.dtype() {
        return Err(Error::DTypeMismatch { op: OP, lhs: dst.dtype(), rhs: src.dtype() });
    }
    match (dst.storage(), src.storage()) {
        #[cfg(feature = "cuda")]
        (Storage::Cuda(d), Storage::Cuda(s)) => {
            d.check_device(s, OP)?;
            crate::cuda_backend::graph::copy_device(d, s)
        }
        #[cfg(feature = "cuda")]
        (Storage::Cuda(d), Storage::Cpu(s)) => crate::cuda_backend::graph::copy_host(d, s),
        _ => Err(Error::invalid(
            OP,
            format!("the destination must be a CUDA tensor (got one on {}; host tensors are immutable)", dst.device()),
        )),
    }
}

/// Whether two tensors share one buffer (a copy between them would do nothing).
pub fn shares_buffer(a: &Tensor, b: &Tensor) -> bool {
    std::sync::Arc::ptr_eq(a.storage_arc(), b.storage_arc())
}

/// The ordinal of a CUDA device, or an error naming `op` and the device.
fn cuda_ordinal(device: &Device, op: &'static str) -> Result<usize> {
    match device {
        Device::Cuda(n) => Ok(*n),
        Device::Cpu => Err(Error::invalid(op, "CUDA graphs need a CUDA device, got cpu")),
    }
}

#[cfg(not(feature = "cuda"))]
fn not_built(ordinal: usize) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        msg: "tapegrad was built without the `cuda` feature; rebuild with `--features cuda`".into(),
    }
}
