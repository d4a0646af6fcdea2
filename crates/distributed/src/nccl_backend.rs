//! The NCCL backend (feature `nccl`): collectives on CUDA tensors, reduced on the GPU by
//! NCCL on the tensor's stream, one GPU per rank. The ranks of one process come from
//! [`Communicator::nccl_group`] (`ncclCommInitAll`), ranks in several processes from
//! `Communicator::nccl_from_mpi` (rank 0's `ncclUniqueId` broadcast over MPI).
//!
//! An NCCL rank keeps a host communicator beside its NCCL one (the in-process rendezvous
//! of [`crate::ThreadGroup`], or MPI): every collective first exchanges its header there,
//! so ranks that disagree about a shape or dtype get [`Error::Mismatch`] before anything is
//! queued on a GPU, and a rank that never arrives (dead, stuck) makes the others'
//! header exchange time out; the NCCL communicator is then aborted (`ncclCommAbort`), so
//! collectives already queued on the GPU end rather than wait for it. What can fail on one
//! rank alone (uploading the input, allocating the output, a capture in progress, NCCL's
//! asynchronous error state) is done before the header exchange, and announced in it, so
//! no rank queues a collective that another will never join. The header exchange waits
//! for the other ranks' hosts, never for a GPU: the data's collective is only queued, and
//! the caller goes on queueing work (the backward pass of earlier layers) while it runs.
//!
//! Not guarded: a rank that dies after the header exchange of the last collective before
//! a host read (`to_vec`) leaves the others' read waiting on their GPU; no watchdog thread
//! polls the queued collectives yet.

use crate::communicator::Communicator;
use crate::{Error, Result};
use cudarc::nccl::{result as nccl, sys};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tapegrad_tensor::cuda::raw::{self, DeviceBuffer};
use tapegrad_tensor::{DType, Device, Shape, Tensor};

const MISSING: &str = "libnccl.so could not be loaded: install NCCL 2 (e.g. `apt-get install libnccl2`, or the \
     nvidia-nccl-cu12 wheel that PyTorch brings) and put the folder holding it on LD_LIBRARY_PATH; cudarc looks for \
     `libnccl.so` (and `.so.1`, `.so.9`..`.so.13`), not `libnccl.so.2`, so link `libnccl.so` to `libnccl.so.2` there";

/// Fails unless libnccl can be loaded (cudarc panics on a missing library).
pub(crate) fn ensure_loadable() -> Result<()> {
    // SAFETY: only tries to dlopen libnccl under its known names; calls nothing in it.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Backend { backend: "nccl", msg: MISSING.into() })
    }
}

/// An NCCL error as its name (`ncclInvalidUsage`, ...).
fn name(e: nccl::NcclError) -> String {
    format!("{:?}", e.0)
}

/// A communicator handle. NCCL lets any thread use it, one call at a time: the mutex
/// around it serialises the calls.
struct Handle(sys::ncclComm_t);
// SAFETY: an ncclComm_t is a pointer to NCCL's own state, usable from any thread as long
// as calls on it do not overlap, which the Mutex around every use guarantees.
unsafe impl Send for Handle {}

/// One rank's NCCL communicator and its GPU.
pub(crate) struct NcclRank {
    comm: Mutex<Handle>,
    ordinal: usize,
    aborted: AtomicBool,
}

impl std::fmt::Debug for NcclRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclRank(cuda:{})", self.ordinal)
    }
}

/// What one collective is, for messages.
pub(crate) struct What<'a> {
    pub rank: usize,
    pub collective: &'static str,
    pub dtype: DType,
    pub shape: &'a Shape,
}

impl What<'_> {
    fn fail(&self, call: &str, e: impl std::fmt::Display) -> Error {
        Error::Backend {
            backend: "nccl",
            msg: format!(
                "rank {}: {} of a {} tensor of shape {}: {call} failed: {e}",
                self.rank, self.collective, self.dtype, self.shape
            ),
        }
    }
}

fn nccl_dtype(dtype: DType) -> sys::ncclDataType_t {
    match dtype {
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::F64 => sys::ncclDataType_t::ncclFloat64,
        DType::I64 => sys::ncclDataType_t::ncclInt64,
    }
}

impl NcclRank {
    /// The GPU this rank's collectives run on.
    pub(crate) fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Aborts the NCCL communicator (a collective timed out or failed): collectives queued
    /// on the GPU that wait for a dead peer end instead of hanging the stream.
    pub(crate) fn abort(&self) {
        // The flag changes under the lock, so a collective that holds the lock never uses
        // a handle aborted meanwhile (`with_comm` checks the flag after locking).
        let Ok(h) = self.comm.lock() else { return };
        if self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: the handle came from ncclCommInit*, and is aborted once (the flag).
        let _ = unsafe { nccl::comm_abort(h.0) };
    }

    /// Runs `call` with the communicator, the stream and the device's context current,
    /// after checking NCCL's asynchronous error state (a failed peer, a network error). A
    /// failed call aborts the communicator: the other ranks may already have queued their
    /// part of the collective.
    fn with_comm(
        &self,
        what: &What<'_>,
        call: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> std::result::Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<()> {
        let stream = raw::stream(self.ordinal)? as sys::cudaStream_t;
        let h = self.comm.lock().map_err(|_| what.fail("NCCL", "the communicator's lock is poisoned"))?;
        if let Err(e) = self.check_usable(h.0, what) {
            drop(h);
            self.abort();
            return Err(e);
        }
        let result = call(h.0, stream).map(|_| ()).map_err(|e| what.fail("NCCL", name(e)));
        drop(h);
        if result.is_err() {
            self.abort();
        }
        result
    }

    /// Fails when the communicator was aborted or NCCL reports an asynchronous error.
    /// `comm` is the locked handle.
    fn check_usable(&self, comm: sys::ncclComm_t, what: &What<'_>) -> Result<()> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(aborted(what));
        }
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: the handle is live (not aborted, checked above under the caller's lock)
        // and `state` is writable.
        unsafe { sys::ncclCommGetAsyncError(comm, &mut state) }
            .result()
            .map_err(|e| what.fail("ncclCommGetAsyncError", name(e)))?;
        if state != sys::ncclResult_t::ncclSuccess {
            return Err(what.fail("an earlier NCCL collective", format!("{state:?} (the communicator is aborted)")));
        }
        Ok(())
    }

    /// Everything of a collective that can fail on this rank alone, done before the header
    /// exchange so that a failure is announced to the other ranks there instead of leaving
    /// them waiting on their GPUs for this rank's part: the device and capture checks,
    /// NCCL's error state, the input on this rank's GPU (a CPU tensor is uploaded) and the
    /// output buffer (`out_dims`).
    pub(crate) fn prepare(&self, t: &Tensor, out_dims: Vec<usize>, what: &What<'_>) -> Result<Prepared> {
        self.check_device(t, what)?;
        raw::refuse_while_capturing(self.ordinal, what.collective).map_err(Error::Tensor)?;
        {
            let h = self.comm.lock().map_err(|_| what.fail("NCCL", "the communicator's lock is poisoned"))?;
            if let Err(e) = self.check_usable(h.0, what) {
                drop(h);
                self.abort();
                return Err(e);
            }
        }
        let input = match t.device() {
            Device::Cpu => DeviceBuffer::of(&t.to_device(&Device::Cuda(self.ordinal))?, what.collective)?,
            _ => DeviceBuffer::of(t, what.collective)?,
        };
        let out = raw::uninit(out_dims, t.dtype(), self.ordinal)?;
        Ok(Prepared { input, out, dtype: t.dtype(), device: t.device() })
    }

    /// Fails for a tensor on another GPU than this rank's.
    pub(crate) fn check_device(&self, t: &Tensor, what: &What<'_>) -> Result<()> {
        match t.device() {
            Device::Cuda(o) if o != self.ordinal => Err(Error::Invalid {
                rank: what.rank,
                collective: what.collective,
                msg: format!(
                    "a {} tensor of shape {} on cuda:{o}, but this rank's NCCL communicator uses cuda:{} (one GPU per \
                     rank: move the tensor there first)",
                    what.dtype, what.shape, self.ordinal
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Sum (`mean: false`) or mean over the ranks, queued on the stream.
    pub(crate) fn all_reduce(&self, p: Prepared, mean: bool, what: &What<'_>) -> Result<Tensor> {
        if !p.input.is_empty() {
            let op = if mean { sys::ncclRedOp_t::ncclAvg } else { sys::ncclRedOp_t::ncclSum };
            self.with_comm(what, |comm, stream| {
                // SAFETY: both buffers are live device buffers of `len` elements of the
                // dtype on this rank's device; the collective is queued on the stream every
                // op on them uses, and `input`/`out` hold their memory until it is queued
                // (later reuse is ordered after it on the same stream).
                unsafe {
                    nccl::all_reduce(
                        p.input.ptr() as *const _,
                        p.out.ptr() as *mut _,
                        p.input.len(),
                        nccl_dtype(p.dtype),
                        op,
                        comm,
                        stream,
                    )
                }
            })?;
        }
        p.finish()
    }

    /// Rank `root`'s tensor on every rank.
    pub(crate) fn broadcast(&self, p: Prepared, root: usize, what: &What<'_>) -> Result<Tensor> {
        if !p.input.is_empty() {
            self.with_comm(what, |comm, stream| {
                // SAFETY: as in all_reduce.
                unsafe {
                    nccl::broadcast(
                        p.input.ptr() as *const _,
                        p.out.ptr() as *mut _,
                        p.input.len(),
                        nccl_dtype(p.dtype),
                        root as i32,
                        comm,
                        stream,
                    )
                }
            })?;
        }
        p.finish()
    }

    /// Every rank's tensor, stacked on a new leading axis (`out` was prepared with it).
    pub(crate) fn all_gather(&self, p: Prepared, what: &What<'_>) -> Result<Tensor> {
        if !p.input.is_empty() {
            self.with_comm(what, |comm, stream| {
                // SAFETY: as in all_reduce; `out` holds world_size * len elements.
                unsafe {
                    nccl::all_gather(
                        p.input.ptr() as *const _,
                        p.out.ptr() as *mut _,
                        p.input.len(),
                        nccl_dtype(p.dtype),
                        comm,
                        stream,
                    )
                }
            })?;
        }
        p.finish()
    }
}

/// A collective's input and output on this rank's GPU ([`NcclRank::prepare`]).
pub(crate) struct Prepared {
    input: DeviceBuffer,
    out: DeviceBuffer,
    dtype: DType,
    /// Where the caller's tensor was, and where the result goes back to.
    device: Device,
}

impl Prepared {
    /// The output, on the input's device.
    fn finish(self) -> Result<Tensor> {
        let out = self.out.into_tensor();
        if out.device() == self.device {
            Ok(out)
        } else {
            Ok(out.to_device(&self.device)?)
        }
    }
}

fn aborted(what: &What<'_>) -> Error {
    what.fail("NCCL", "the communicator was aborted after an earlier collective failed")
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        if self.aborted.load(Ordering::Acquire) {
            return;
        }
        if let Ok(h) = self.comm.lock() {
            // SAFETY: the handle is live and not aborted; nothing uses it after this.
            let _ = unsafe { nccl::comm_destroy(h.0) };
        }
    }
}

/// Opens tapegrad's CUDA device `ordinal` (its context becomes current on this thread).
fn open_device(ordinal: usize, collective: &'static str, rank: usize) -> Result<()> {
    raw::stream(ordinal).map(|_| ()).map_err(|e| Error::Invalid {
        rank,
        collective,
        msg: format!("cannot use cuda:{ordinal} for an NCCL rank: {e}"),
    })
}

impl Communicator {
    /// One NCCL communicator per device of `devices`, all in this process
    /// (`ncclCommInitAll`): rank `i` reduces on `cuda:devices[i]`. Give each communicator
    /// to the thread that drives its device; every rank's collectives are queued on its
    /// device's stream and reduced there (NVLink or PCIe between the GPUs).
    ///
    /// Tensors passed to a rank's collectives must be on its device (a CPU tensor is
    /// uploaded, and its result copied back). Headers are exchanged between the threads
    /// in host memory, so disagreements are [`Error::Mismatch`] and a thread that never
    /// calls is an [`Error::Timeout`] (default [`crate::DEFAULT_TIMEOUT`], or
    /// `TAPEGRAD_COLLECTIVE_TIMEOUT_S`; [`Communicator::with_timeout`] changes one rank's).
    ///
    /// Fails naming what is wrong: no devices, a device listed twice or absent, libnccl
    /// not loadable.
    pub fn nccl_group(devices: &[usize]) -> Result<Vec<Communicator>> {
        const WHAT: &str = "Communicator::nccl_group";
        if devices.is_empty() {
            return Err(Error::Invalid { rank: 0, collective: WHAT, msg: "no devices given".into() });
        }
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].contains(d) {
                return Err(Error::Invalid {
                    rank: i,
                    collective: WHAT,
                    msg: format!("cuda:{d} is listed twice in {devices:?}: NCCL needs one GPU per rank"),
                });
            }
        }
        ensure_loadable()?;
        for (rank, &d) in devices.iter().enumerate() {
            open_device(d, WHAT, rank)?;
        }
        let n = devices.len();
        let list: Vec<i32> = devices.iter().map(|&d| d as i32).collect();
        let mut comms: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); n];
        // SAFETY: `comms` has room for n handles and `list` holds n device ordinals.
        unsafe { nccl::comm_init_all(comms.as_mut_ptr(), n as i32, list.as_ptr()) }.map_err(|e| Error::Backend {
            backend: "nccl",
            msg: format!("ncclCommInitAll over cuda:{devices:?} failed: {}", name(e)),
        })?;
        let ranks: Vec<NcclRank> = comms
            .into_iter()
            .zip(devices)
            .map(|(c, &ordinal)| NcclRank { comm: Mutex::new(Handle(c)), ordinal, aborted: AtomicBool::new(false) })
            .collect();
        let hosts = crate::ThreadGroup::communicators(n, crate::communicator::timeout_from_env())?;
        Ok(hosts.into_iter().zip(ranks).map(|(host, rank)| host.with_nccl(rank)).collect())
    }
}

#[cfg(feature = "mpi")]
impl Communicator {
    /// One NCCL rank per MPI process (started by `mpirun`): rank and world size come
    /// from MPI, the GPU is the process's local rank (`OMPI_COMM_WORLD_LOCAL_RANK`,
    /// `MPI_LOCALRANKID`, `SLURM_LOCALID`, else the rank) modulo the visible devices, and
    /// rank 0's `ncclUniqueId` reaches the others over MPI. Headers are exchanged over MPI,
    /// as in [`Communicator::mpi`]; MPI is initialised here (one per process).
    ///
    /// Every rank reports whether its GPU and libnccl are usable before NCCL starts, so a
    /// rank that cannot join makes every rank fail with its reason instead of hanging.
    pub fn nccl_from_mpi() -> Result<Communicator> {
        const WHAT: &str = "Communicator::nccl_from_mpi";
        let host = Communicator::mpi()?;
        let rank = host.rank();
        let local = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(rank);
        let count = tapegrad_tensor::cuda::device_count();
        let ordinal = if count == 0 { 0 } else { local % count };
        let ready = ensure_loadable().and_then(|()| open_device(ordinal, WHAT, rank));
        // Everyone learns whether everyone can go on (a sum of failures).
        let failed = Tensor::from_vec(vec![i64::from(ready.is_err())], [1], &Device::Cpu)?;
        let failures = host.all_reduce(&failed, crate::ReduceOp::Sum)?.to_vec::<i64>()?[0];
        ready?;
        if failures > 0 {
            return Err(Error::Backend {
                backend: "nccl",
                msg: format!(
                    "rank {rank}: {failures} other rank(s) could not open their GPU or libnccl (see their errors)"
                ),
            });
        }
        // Rank 0's id, as 16 words (the others' words are ignored by the broadcast).
        let mut words = vec![0i64; 16];
        if rank == 0 {
            let id = nccl::get_uniqueid().map_err(|e| Error::Backend {
                backend: "nccl",
                msg: format!("rank 0: ncclGetUniqueId failed: {}", name(e)),
            })?;
            for (w, chunk) in words.iter_mut().zip(id.internal.chunks(8)) {
                let bytes: Vec<u8> = chunk.iter().map(|&c| c as u8).collect();
                *w = i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            }
        }
        let words = host.broadcast(&Tensor::from_vec(words, [16], &Device::Cpu)?, 0)?.to_vec::<i64>()?;
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        for (chunk, w) in id.internal.chunks_mut(8).zip(&words) {
            for (c, b) in chunk.iter_mut().zip(w.to_le_bytes()) {
                *c = b as std::ffi::c_char;
            }
        }
        raw::stream(ordinal)?;
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is writable; the id is rank 0's; this thread's current context is
        // the rank's device (raw::stream binds it).
        unsafe { nccl::comm_init_rank(&mut comm, host.world_size() as i32, id, rank as i32) }.map_err(|e| {
            Error::Backend {
                backend: "nccl",
                msg: format!("rank {rank}: ncclCommInitRank on cuda:{ordinal} failed: {}", name(e)),
            }
        })?;
        Ok(host.with_nccl(NcclRank { comm: Mutex::new(Handle(comm)), ordinal, aborted: AtomicBool::new(false) }))
    }
}
