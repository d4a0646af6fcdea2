//! Host-to-device uploads through pinned (page-locked) staging buffers.
//!
//! From pageable memory the driver may wait for the stream before it copies, which would
//! stall the host behind every queued kernel at each batch upload and keep it from
//! preparing the next step while the GPU runs this one. So an upload of a mid-sized
//! buffer is copied on the host into one of a few pinned buffers, and the device copy is
//! queued from there without waiting. Each buffer records an event after its copy; a
//! buffer is reused only once that event has passed, i.e. once its previous copy is done.
//!
//! Uploads below [`MIN_BYTES`] (the driver copies those inline) and above [`MAX_BYTES`]
//! (whole datasets or weights, rare, where pinning that much host memory is not worth it)
//! go straight from the caller's memory.

use super::device::CudaDevice;
use crate::{Error, Result};
use cudarc::driver::result as driver;
use cudarc::driver::sys;

/// Smallest upload staged through pinned memory.
pub(crate) const MIN_BYTES: usize = 64 * 1024;
/// Largest upload staged through pinned memory.
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;
/// Pinned buffers per device: uploads in flight before the oldest must have finished.
const SLOTS: usize = 4;

/// One pinned buffer and the event that marks the end of its last copy.
struct Slot {
    host: *mut u8,
    capacity: usize,
    event: sys::CUevent,
    /// Whether `event` has been recorded (a copy from this buffer was queued).
    recorded: bool,
}

/// The pinned buffers of one device, used round-robin (the device keeps one ring).
#[derive(Default)]
pub(crate) struct Ring {
    slots: Vec<Slot>,
    next: usize,
}

// SAFETY: the raw pointers are a pinned host allocation and a CUDA event owned by the ring;
// the device keeps the ring behind a mutex, and the driver allows both to be used from any
// thread that has the context current.
unsafe impl Send for Ring {}

/// Whether an upload of `bytes` bytes goes through a staging buffer.
pub(crate) fn stages(bytes: usize) -> bool {
    (MIN_BYTES..=MAX_BYTES).contains(&bytes)
}

/// Queues a copy of `src` to device address `dst` on the device's stream through one of
/// `ring`'s pinned buffers; returns once `src` has been copied into that buffer (it may then
/// be dropped). The caller has made the device's context current and checked [`stages`].
pub(crate) fn upload(device: &CudaDevice, ring: &mut Ring, src: &[u8], dst: sys::CUdeviceptr) -> Result<()> {
    let fail = |op: &'static str| move |e| Error::cuda(device.device(), op, e);
    if ring.slots.len() < SLOTS {
        let event =
            driver::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(fail("cuEventCreate"))?;
        ring.slots.push(Slot { host: std::ptr::null_mut(), capacity: 0, event, recorded: false });
    }
    let slot_index = ring.next % ring.slots.len();
    ring.next = ring.next.wrapping_add(1);
    let slot = &mut ring.slots[slot_index];
    if slot.recorded {
        // SAFETY: the event was created on this device and recorded on its stream.
        unsafe { driver::event::synchronize(slot.event) }.map_err(fail("cuEventSynchronize"))?;
        slot.recorded = false;
    }
    if slot.capacity < src.len() {
        if !slot.host.is_null() {
            // SAFETY: allocated by cuMemHostAlloc below; its last copy has finished (the
            // event was waited for above), so nothing reads it any more.
            unsafe { driver::free_host(slot.host.cast()) }.map_err(fail("cuMemFreeHost"))?;
            slot.host = std::ptr::null_mut();
            slot.capacity = 0;
        }
        // Grow to the next power of two so that batches of slightly different sizes (the
        // last, partial batch) do not reallocate.
        let capacity = src.len().next_power_of_two();
        // SAFETY: plain page-locked allocation; the pointer is checked for errors.
        let host = unsafe { driver::malloc_host(capacity, 0) }.map_err(|e| Error::Cuda {
            device: device.device(),
            op: "cuMemHostAlloc",
            msg: format!("pinning {capacity} bytes of host memory for uploads: {e}"),
        })?;
        slot.host = host.cast();
        slot.capacity = capacity;
    }
    // SAFETY: the pinned buffer holds `capacity >= src.len()` bytes and no queued copy
    // reads it (its event has passed); `dst` has room for `src.len()` bytes (the caller's
    // block). The device copy reads the pinned buffer, which lives until the ring's next
    // use of this slot waits for the event recorded right after the copy.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), slot.host, src.len());
        let pinned = std::slice::from_raw_parts(slot.host as *const u8, src.len());
        driver::memcpy_htod_async(dst, pinned, device.stream().cu_stream()).map_err(fail("cuMemcpyHtoDAsync"))?;
        driver::event::record(slot.event, device.stream().cu_stream()).map_err(fail("cuEventRecord"))?;
    }
    slot.recorded = true;
    Ok(())
}

impl Ring {
    /// Frees the pinned buffers and events, after their last copies have finished. For a
    /// ring that is dropped (the device's own ring lives as long as the process). Leaks
    /// them instead while the stream captures, which forbids waiting for an event.
    pub(crate) fn release(&mut self, device: &CudaDevice) {
        if device.is_capturing() || device.bind().is_err() {
            return;
        }
        for slot in self.slots.drain(..) {
            // SAFETY: the event and the pinned buffer belong to this ring; the buffer is
            // freed only once the event recorded after its last copy has passed.
            unsafe {
                let done = !slot.recorded || driver::event::synchronize(slot.event).is_ok();
                if done && !slot.host.is_null() {
                    let _ = driver::free_host(slot.host.cast());
                }
                let _ = driver::event::destroy(slot.event);
            }
        }
    }
}
