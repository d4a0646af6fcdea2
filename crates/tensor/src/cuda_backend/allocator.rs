//! A caching device allocator: freed blocks are kept, keyed by their (rounded) size, and
//! handed out again, so a training step that repeats the same allocations makes no
//! `cuMemAlloc` call after its first iteration.
//!
//! Reuse needs no event or synchronisation because every device has exactly one stream:
//! a block freed on the host may still be read by kernels queued earlier, but whatever
//! reuses it is queued after them on the same stream. Only returning memory to the driver
//! (`empty_cache`, or the retry after an out-of-memory error) waits for the stream first.
//!
//! CUDA graphs (`graph.rs`): while a stream captures, blocks come only from the cache (a
//! miss is an error, never a `cuMemAlloc`), and every block handed out belongs to the
//! graph's private pool: freed, it goes back to that pool, which only the capture draws
//! from, so no later tensor can be given memory that a replay writes. The pool returns to
//! the shared cache when the graph is dropped.

use crate::cuda::MemoryStats;
use crate::{Device, Error, Result};
use cudarc::driver::{result as driver, sys, CudaContext, CudaStream};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A block of device memory owned by one buffer.
#[derive(Debug)]
pub(crate) struct Block {
    /// The device address.
    pub(crate) ptr: sys::CUdeviceptr,
    /// The block's (rounded) size in bytes.
    pub(crate) size: usize,
    /// The private pool of the CUDA graph whose capture allocated it (0: the shared cache).
    pub(crate) pool: u64,
}

/// Free blocks by size.
type FreeList = HashMap<usize, Vec<sys::CUdeviceptr>>;

#[derive(Default)]
struct Pool {
    /// The shared cache.
    free: FreeList,
    /// The private pools of live graphs, by id.
    private: HashMap<u64, FreeList>,
    /// The pool of the capture under way, if any.
    capturing: Option<u64>,
    next_pool: u64,
    stats: MemoryStats,
}

/// One device's cache of freed blocks and its statistics.
#[derive(Default)]
pub(crate) struct CachingAllocator {
    pool: Mutex<Pool>,
}

/// Rounds a request so that nearby sizes share blocks: to 512 bytes up to 1 MiB, then to a
/// sixteenth of the next power of two (at most 1/16 wasted).
pub(crate) fn round_size(bytes: usize) -> usize {
    const SMALL_STEP: usize = 512;
    if bytes <= 1 << 20 {
        return bytes.max(1).div_ceil(SMALL_STEP) * SMALL_STEP;
    }
    let step = bytes.next_power_of_two() / 16;
    bytes.div_ceil(step) * step
}

impl CachingAllocator {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool inconsistent (each update is
        // a single push/pop plus counters), so a poisoned lock is still usable.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A block of at least `bytes` (> 0) bytes: a cached one of the same rounded size if
    /// any, else a new one from the driver; on out-of-memory, the cache is returned to the
    /// driver and the allocation tried once more.
    pub(crate) fn allocate(&self, ctx: &CudaContext, stream: &CudaStream, bytes: usize) -> Result<Block> {
        let size = round_size(bytes);
        let device = Device::Cuda(ctx.ordinal());
        let mut pool = self.lock();
        if let Some(id) = pool.capturing {
            return pool.allocate_for_capture(device, id, size, bytes);
        }
        if let Some(ptr) = pool.free.get_mut(&size).and_then(Vec::pop) {
            pool.stats.cache_hits += 1;
            pool.note_in_use(size as isize);
            return Ok(Block { ptr, size, pool: 0 });
        }
        ctx.bind_to_thread().map_err(|e| Error::cuda(device, "cuCtxSetCurrent", e))?;
        // SAFETY: cuMemAlloc with the device's context current; the memory is uninitialised,
        // which is fine for the byte buffers handed out here (kernels write before reading).
        let mut result = unsafe { driver::malloc_sync(size) };
        if is_out_of_memory(&result) {
            pool.release_cached(ctx, stream)?;
            // SAFETY: as above.
            result = unsafe { driver::malloc_sync(size) };
        }
        match result {
            Ok(ptr) => {
                pool.stats.device_allocations += 1;
                pool.stats.reserved += size;
                pool.note_in_use(size as isize);
                Ok(Block { ptr, size, pool: 0 })
            }
            Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = ctx.mem_get_info().map(|(free, _)| free).unwrap_or(0);
                Err(Error::OutOfMemory {
                    device,
                    op: "allocate",
                    requested: bytes,
                    detail: format!(
                        " ({free} bytes free on the device, {} bytes held by live tensors)",
                        pool.stats.in_use
                    ),
                })
            }
            Err(e) => Err(Error::cuda(device, "cuMemAlloc", e)),
        }
    }

    /// Returns a block to the cache it came from: its graph's private pool while that graph
    /// lives, else the shared cache (no driver call).
    pub(crate) fn release(&self, block: &Block) {
        let mut pool = self.lock();
        let Pool { free, private, .. } = &mut *pool;
        let list = private.get_mut(&block.pool).unwrap_or(free);
        list.entry(block.size).or_default().push(block.ptr);
        pool.note_in_use(-(block.size as isize));
    }

    /// Starts serving allocations to a capture from a new private pool; returns its id.
    /// Fails if a capture is already under way on this device.
    pub(crate) fn begin_capture(&self, device: Device) -> Result<u64> {
        let mut pool = self.lock();
        if let Some(id) = pool.capturing {
            return Err(Error::invalid(
                "cuda graph capture",
                format!("{device} is already capturing graph pool {id}; captures do not nest"),
            ));
        }
        pool.next_pool += 1;
        let id = pool.next_pool;
        pool.private.insert(id, FreeList::new());
        pool.capturing = Some(id);
        Ok(id)
    }

    /// Ends the capture: allocations come from the shared cache again. The pool stays
    /// private until [`CachingAllocator::drop_pool`].
    pub(crate) fn end_capture(&self) {
        self.lock().capturing = None;
    }

    /// Returns a graph's private pool to the shared cache (the graph is gone, so nothing
    /// will write its blocks again); blocks still held by tensors go there when freed.
    pub(crate) fn drop_pool(&self, id: u64) {
        let mut pool = self.lock();
        if let Some(list) = pool.private.remove(&id) {
            for (size, ptrs) in list {
                pool.free.entry(size).or_default().extend(ptrs);
            }
        }
    }

    /// Waits for the stream, then returns every cached block to the driver.
    pub(crate) fn empty_cache(&self, ctx: &CudaContext, stream: &CudaStream) -> Result<()> {
        self.lock().release_cached(ctx, stream)
    }

    /// The current statistics.
    pub(crate) fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Restarts the peak at the current use.
    pub(crate) fn reset_peak(&self) {
        let mut pool = self.lock();
        pool.stats.peak_in_use = pool.stats.in_use;
    }
}

impl Pool {
    /// A block for a capture: from the graph's own pool, else from the shared cache (the
    /// block then belongs to the graph); never from the driver, which a capture forbids.
    fn allocate_for_capture(&mut self, device: Device, id: u64, size: usize, bytes: usize) -> Result<Block> {
        let own = self.private.get_mut(&id).and_then(|l| l.get_mut(&size)).and_then(Vec::pop);
        let Some(ptr) = own.or_else(|| self.free.get_mut(&size).and_then(Vec::pop)) else {
            return Err(Error::invalid(
                "cuda graph capture",
                format!(
                    "an allocation of {bytes} bytes on {device} found no cached block of {size} bytes, and \
                     cuMemAlloc is not allowed while capturing (run the step eagerly once first, to warm \
                     the allocator's cache)"
                ),
            ));
        };
        self.stats.cache_hits += 1;
        self.note_in_use(size as isize);
        Ok(Block { ptr, size, pool: id })
    }

    fn note_in_use(&mut self, delta: isize) {
        self.stats.in_use = self.stats.in_use.saturating_add_signed(delta);
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
    }

    fn release_cached(&mut self, ctx: &CudaContext, stream: &CudaStream) -> Result<()> {
        let device = Device::Cuda(ctx.ordinal());
        if self.free.values().all(Vec::is_empty) {
            return Ok(());
        }
        // Kernels queued before a block was freed may still use it.
        stream.synchronize().map_err(|e| Error::cuda(device, "cuStreamSynchronize", e))?;
        ctx.bind_to_thread().map_err(|e| Error::cuda(device, "cuCtxSetCurrent", e))?;
        for (size, ptrs) in self.free.drain() {
            for ptr in ptrs {
                // SAFETY: the block came from cuMemAlloc, is in no buffer (it was cached) and
                // no queued work uses it (the stream was synchronised above).
                unsafe { driver::free_sync(ptr) }.map_err(|e| Error::cuda(device, "cuMemFree", e))?;
                self.stats.reserved -= size;
            }
        }
        Ok(())
    }
}

fn is_out_of_memory<T>(r: &std::result::Result<T, driver::DriverError>) -> bool {
    matches!(r, Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY)
}

#[cfg(test)]
mod tests {
    use super::round_size;

    #[test]
    fn sizes_round_to_shared_buckets() {
        assert_eq!(round_size(1), 512);
        assert_eq!(round_size(512), 512);
        assert_eq!(round_size(513), 1024);
        assert_eq!(round_size(1 << 20), 1 << 20);
        // Above 1 MiB: steps of 1/16 of the next power of two.
        assert_eq!(round_size((1 << 20) + 1), (1 << 20) + (1 << 17));
        assert_eq!(round_size(96 << 20), 96 << 20);
        assert_eq!(round_size(100 << 20), 104 << 20);
        for bytes in [3usize << 20, (7 << 20) + 5, 1 << 30] {
            let r = round_size(bytes);
            assert!(r >= bytes && r - bytes <= bytes / 8, "{bytes} -> {r}");
        }
    }
}
