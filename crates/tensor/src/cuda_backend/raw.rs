//! Raw access to CUDA tensors' device memory and to the devices' streams, for libraries
//! that queue their own work on tapegrad's streams (NCCL collectives in
//! `tapegrad-distributed`). Re-exported as [`crate::cuda::raw`].
//!
//! Every op on a device is queued on that device's one stream, so work another library
//! queues on [`stream`] runs after everything queued before it and before everything
//! queued after it: no synchronisation with the host is needed to read or fill a buffer.
//! When such work cannot complete as queued (an NCCL collective aborted while it waited
//! for a dead peer), [`fail_stream`] makes the device's host reads report it.

use super::device::CudaDevice;
use super::CudaStorage;
use crate::{DType, Error, Result, Shape, Storage, Tensor};

/// The driver's stream handle (`CUstream`), as libraries that take a `cudaStream_t` expect.
pub type RawStream = cudarc::driver::sys::CUstream;

/// A CUDA tensor's buffer as seen by a library: its device address, element count, dtype
/// and device. It holds the tensor, so the memory stays allocated (and is not handed to
/// another tensor) while this value lives; work queued on the device's stream before it
/// is dropped is ordered before any reuse of the memory, as the allocator's cache is
/// per stream.
#[derive(Clone, Debug)]
pub struct DeviceBuffer {
    tensor: Tensor,
    ptr: u64,
    ordinal: usize,
}

impl DeviceBuffer {
    /// The buffer of a CUDA tensor; an error names the op and the device of a tensor
    /// that is not on a CUDA device.
    pub fn of(tensor: &Tensor, op: &'static str) -> Result<DeviceBuffer> {
        match tensor.storage() {
            Storage::Cuda(s) => {
                Ok(DeviceBuffer { tensor: tensor.clone(), ptr: s.ptr(), ordinal: s.cuda_device().ordinal() })
            }
            _ => Err(Error::invalid(
                op,
                format!(
                    "needs a CUDA tensor, got a {} tensor of shape {} on {}",
                    tensor.dtype(),
                    tensor.shape(),
                    tensor.device()
                ),
            )),
        }
    }

    /// The device address of the first element (0 for an empty tensor).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.tensor.shape().elem_count()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' dtype.
    pub fn dtype(&self) -> DType {
        self.tensor.dtype()
    }

    /// The CUDA device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The tensor whose buffer this is.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The tensor, releasing the raw view.
    pub fn into_tensor(self) -> Tensor {
        self.tensor
    }
}

/// A new tensor of `shape` and `dtype` on CUDA device `ordinal` whose elements are not
/// initialised: the caller must queue work on [`stream`]`(ordinal)` that writes every
/// element before anything reads the tensor (reading it earlier gives arbitrary values,
/// which is not memory-unsafe: the memory is the device's). The allocation is fallible.
pub fn uninit(shape: impl Into<Shape>, dtype: DType, ordinal: usize) -> Result<DeviceBuffer> {
    let shape = shape.into();
    let len = shape.checked_elem_count("cuda::raw::uninit")?;
    let device = CudaDevice::get(ordinal)?;
    let storage = CudaStorage::alloc(&device, len, dtype)?;
    let ptr = storage.ptr();
    Ok(DeviceBuffer { tensor: Tensor::from_storage(Storage::Cuda(storage), shape), ptr, ordinal })
}

/// The stream every op on CUDA device `ordinal` is queued on (opening the device if
/// needed), with the device's context made current on the calling thread, as library
/// calls that take a stream expect.
pub fn stream(ordinal: usize) -> Result<RawStream> {
    let device = CudaDevice::get(ordinal)?;
    device.bind()?;
    Ok(device.stream().cu_stream())
}

/// Fails, naming `what`, while device `ordinal`'s stream captures a CUDA graph: for
/// library work that the graph's replay would not reproduce.
pub fn refuse_while_capturing(ordinal: usize, what: &str) -> Result<()> {
    CudaDevice::get(ordinal)?.refuse_while_capturing(what)
}

/// Marks CUDA device `ordinal`'s stream as failed: work another library queued on it did
/// not complete as queued (an NCCL collective aborted while it waited for a peer that died),
/// so what that work wrote, and everything the stream computed from it, is garbage. From
/// then on every wait for the device (`to_vec` and the other reads back to the host,
/// [`crate::cuda::synchronize`]) fails, after the wait, with the error `error` makes; a wait
/// already under way reports it too, so mark the stream before making the stuck work end.
/// The mark stays for the life of the process (later work may have read the garbage);
/// only the first mark counts. Queued work, uploads and allocations are not refused.
pub fn fail_stream(ordinal: usize, error: impl Fn() -> Error + Send + Sync + 'static) -> Result<()> {
    CudaDevice::get(ordinal)?.fail(Box::new(error));
    Ok(())
}
