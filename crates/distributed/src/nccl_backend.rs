//! The NCCL backend (feature `nccl`): collectives on CUDA tensors, reduced on the GPU by
//! NCCL on the tensor's stream, one GPU per rank. The ranks of one process come from
//! [`Communicator::nccl_group`] (`ncclCommInitAll`), ranks in several processes from
//! `Communicator::nccl_from_mpi` (rank 0's `ncclUniqueId` broadcast over MPI).
//!
//! An NCCL rank keeps a host communicator beside its NCCL one (the in-process rendezvous
//! of [`crate::ThreadGroup`], or MPI): every collective first exchanges its header there,
//! so ranks that disagree about a shape or dtype get [`Error::Mismatch`] before anything is
//! queued on a GPU, and a rank that never arrives (dead, stuck) makes the others' header
//! exchange time out; the NCCL communicator is then aborted (`ncclCommAbort`), so
//! collectives already queued on the GPU end rather than wait for it. What can fail on one
//! rank alone (uploading the input, allocating the output, a capture in progress, NCCL's
//! asynchronous error state) is done before the header exchange, and announced in it, so
//! no rank queues a collective that another will never join. The header exchange waits
//! for the other ranks' hosts, never for a GPU: the data's collective is only queued, and
//! the caller goes on queueing work (the backward pass of earlier layers) while it runs.
//!
//! A rank that dies after the header exchange (its GPU never joins the collective) is the
//! watchdog's ([`crate::nccl_watchdog`]): every queued collective is followed by an event,
//! and one that has not passed within the timeout aborts the communicator, after marking
//! the stream failed so that a host read waiting behind it returns [`Error::Timeout`].
//! Dropping a rank waits (at most the timeout) for its queued collectives, then destroys
//! the communicator, or aborts it when they failed: `ncclCommDestroy` would wait for a
//! dead peer forever.

use crate::communicator::Communicator;
use crate::nccl_watchdog::{self as watchdog, Described, Failure, Shared, State};
use crate::{Error, Result};
use cudarc::nccl::{result as nccl, sys};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
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

/// One rank's NCCL communicator, its GPU and its watchdog.
pub(crate) struct NcclRank {
    shared: Arc<Shared>,
    ordinal: usize,
    watchdog: Option<JoinHandle<()>>,
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
    /// The collective, owned (for the watchdog).
    fn describe(&self) -> Described {
        Described { rank: self.rank, collective: self.collective, dtype: self.dtype, shape: self.shape.to_string() }
    }

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

/// NCCL's type for a dtype. bf16 and f16 are reduced by NCCL in its own order, rounding
/// after each step (see [`crate::ReduceOp`]); `ncclBfloat16` needs NCCL 2.10 or later.
fn nccl_dtype(dtype: DType) -> sys::ncclDataType_t {
    match dtype {
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::F64 => sys::ncclDataType_t::ncclFloat64,
        DType::I64 => sys::ncclDataType_t::ncclInt64,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
    }
}

impl NcclRank {
    /// Rank `rank`'s communicator `comm` on CUDA device `ordinal`, with its watchdog
    /// (collectives not completed within `timeout` abort it). The communicator is
    /// destroyed if the watchdog cannot start.
    fn new(comm: sys::ncclComm_t, rank: usize, ordinal: usize, timeout: Duration) -> Result<NcclRank> {
        let shared = Shared::new(comm, ordinal, timeout);
        match watchdog::spawn(shared.clone(), rank) {
            Ok(handle) => Ok(NcclRank { shared, ordinal, watchdog: Some(handle) }),
            Err(e) => {
                shared.close();
                Err(e)
            }
        }
    }

    /// The GPU this rank's collectives run on.
    pub(crate) fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Changes the limit on a queued collective (the communicator's timeout).
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        self.shared.set_timeout(timeout);
    }

    /// Aborts the NCCL communicator because of `cause` (a header exchange timed out: a peer
    /// is gone; or [`Communicator::abort`]): collectives queued on the GPU that wait for it
    /// end instead of hanging the stream, the stream is marked failed if one was still
    /// queued, and a call blocked in NCCL on another thread returns (see `with_comm`).
    pub(crate) fn abort(&self, cause: &Error) {
        // The device's context, current for ncclCommAbort and the events' destruction.
        let _ = raw::stream(self.ordinal);
        self.shared.lock().abort(Failure::Other(cause.to_string()), self.ordinal);
    }

    /// Fails when the communicator was aborted (with the reason) or NCCL reports an
    /// asynchronous error (which aborts it).
    pub(crate) fn check(&self, what: &What<'_>) -> Result<()> {
        self.usable(&mut self.shared.lock(), what).map(|_| ())
    }

    /// The live handle, or the error when the communicator was aborted or NCCL reports an
    /// asynchronous error (which aborts it). `st` is the locked state.
    fn usable(&self, st: &mut State, what: &What<'_>) -> Result<sys::ncclComm_t> {
        if let Some(failure) = st.failure() {
            return Err(failure.error());
        }
        let Some(comm) = st.comm() else { return Err(aborted(what)) };
        if let Some(msg) = st.async_error() {
            let e = what.fail("an earlier NCCL collective", format!("{msg}; the communicator is aborted"));
            st.abort(Failure::Other(e.to_string()), self.ordinal);
            return Err(e);
        }
        Ok(comm)
    }

    /// Runs `call` with the communicator, the stream and the device's context current,
    /// after checking NCCL's asynchronous error state (a failed peer, a network error),
    /// and has the watchdog track the queued collective. A failed call aborts the
    /// communicator: the other ranks may already have queued their part of the collective.
    ///
    /// The state's lock is not held during the call, so that the watchdog (or
    /// [`NcclRank::abort`] on another thread) can abort a call that blocks inside NCCL; the
    /// call then fails with the abort's error (a timeout names this collective).
    fn with_comm(
        &self,
        what: &What<'_>,
        call: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> std::result::Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<()> {
        let stream = raw::stream(self.ordinal)?;
        let _one_call = self.shared.call_lock();
        let comm = {
            let mut st = self.shared.lock();
            let comm = self.usable(&mut st, what)?;
            st.enter_call(what.describe());
            comm
        };
        self.shared.notify();
        let called = call(comm, stream as sys::cudaStream_t);
        let mut st = self.shared.lock();
        st.leave_call();
        if let Some(failure) = st.failure() {
            // Aborted while the call was in NCCL (it blocked past the timeout, or another
            // thread aborted): whatever the call returned, its collective did not happen.
            let e = match failure {
                Failure::Timeout { .. } => failure.error(),
                Failure::Other(cause) => {
                    what.fail("NCCL", format!("the communicator was aborted during the call ({cause})"))
                }
            };
            return Err(e);
        }
        let queued = called
            .map_err(|e| what.fail("NCCL", name(e)))
            .and_then(|_| st.track(stream, what.describe()).map_err(|msg| what.fail("the watchdog's event", msg)));
        if let Err(e) = &queued {
            st.abort(Failure::Other(e.to_string()), self.ordinal);
        }
        drop(st);
        self.shared.notify();
        queued
    }

    /// Everything of a collective that can fail on this rank alone, done before the header
    /// exchange so that a failure is announced to the other ranks there instead of leaving
    /// them waiting on their GPUs for this rank's part: the device and capture checks,
    /// NCCL's error state, the input on this rank's GPU (a CPU tensor is uploaded) and the
    /// output buffer (`out_dims`).
    pub(crate) fn prepare(&self, t: &Tensor, out_dims: Vec<usize>, what: &What<'_>) -> Result<Prepared> {
        self.check_device(t, what)?;
        raw::refuse_while_capturing(self.ordinal, what.collective).map_err(Error::Tensor)?;
        self.check(what)?;
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
            let nccl_type = nccl_dtype(p.dtype);
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
                        nccl_type,
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
            let nccl_type = nccl_dtype(p.dtype);
            self.with_comm(what, |comm, stream| {
                // SAFETY: as in all_reduce.
                unsafe {
                    nccl::broadcast(
                        p.input.ptr() as *const _,
                        p.out.ptr() as *mut _,
                        p.input.len(),
                        nccl_type,
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
            let nccl_type = nccl_dtype(p.dtype);
            self.with_comm(what, |comm, stream| {
                // SAFETY: as in all_reduce; `out` holds world_size * len elements.
                unsafe {
                    nccl::all_gather(
                        p.input.ptr() as *const _,
                        p.out.ptr() as *mut _,
                        p.input.len(),
                        nccl_type,
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

/// A call on a communicator that is gone (only a dropped rank has none, and none is used).
fn aborted(what: &What<'_>) -> Error {
    what.fail("NCCL", "the communicator is no longer usable")
}

impl Drop for NcclRank {
    /// Waits for the queued collectives (at most the timeout: the watchdog's rule), then
    /// destroys the communicator, or has aborted it when one failed or timed out
    /// (`ncclCommDestroy` would wait for a dead peer forever), and stops the watchdog.
    fn drop(&mut self) {
        self.shared.close();
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
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
        let timeout = crate::communicator::timeout_from_env();
        // Each communicator gets its rank (and watchdog) at once, so that an error below
        // drops (destroys) the ones made so far.
        let mut ranks = Vec::with_capacity(n);
        let mut comms = comms.into_iter();
        for (rank, &ordinal) in devices.iter().enumerate() {
            let comm = comms.next().expect("ncclCommInitAll made one communicator per device");
            match NcclRank::new(comm, rank, ordinal, timeout) {
                Ok(r) => ranks.push(r),
                Err(e) => {
                    for c in comms {
                        // SAFETY: made by ncclCommInitAll, unused, destroyed once.
                        let _ = unsafe { nccl::comm_destroy(c) };
                    }
                    return Err(e);
                }
            }
        }
        let hosts = crate::ThreadGroup::communicators(n, timeout)?;
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
        // Rank 0's status and id, as 1 + 16 words (the others' words are ignored by the
        // broadcast): a rank 0 that cannot make the id still broadcasts, so the others fail
        // naming its failure instead of waiting in the broadcast.
        let mut words = vec![0i64; 17];
        let made = if rank == 0 { Some(nccl::get_uniqueid()) } else { None };
        match &made {
            Some(Ok(id)) => {
                for (w, chunk) in words[1..].iter_mut().zip(id.internal.chunks(8)) {
                    let bytes: Vec<u8> = chunk.iter().map(|&c| c as u8).collect();
                    *w = i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
                }
            }
            Some(Err(e)) => words[0] = e.0 as i64,
            None => {}
        }
        let words = host.broadcast(&Tensor::from_vec(words, [17], &Device::Cpu)?, 0)?.to_vec::<i64>()?;
        if let Some(Err(e)) = made {
            return Err(Error::Backend {
                backend: "nccl",
                msg: format!("rank 0: ncclGetUniqueId failed: {}", name(e)),
            });
        }
        if words[0] != 0 {
            return Err(Error::Backend {
                backend: "nccl",
                msg: format!(
                    "rank {rank}: rank 0 could not make the NCCL id (ncclGetUniqueId failed there with NCCL result \
                     {}: {}; see rank 0's error)",
                    words[0],
                    result_name(words[0])
                ),
            });
        }
        let words = &words[1..];
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        for (chunk, w) in id.internal.chunks_mut(8).zip(words) {
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
        let timeout = host.timeout();
        Ok(host.with_nccl(NcclRank::new(comm, rank, ordinal, timeout)?))
    }
}

/// The name of an `ncclResult_t` value received as a number (from rank 0).
#[cfg(feature = "mpi")]
fn result_name(code: i64) -> &'static str {
    match code {
        1 => "ncclUnhandledCudaError",
        2 => "ncclSystemError",
        3 => "ncclInternalError",
        4 => "ncclInvalidArgument",
        5 => "ncclInvalidUsage",
        6 => "ncclRemoteError",
        7 => "ncclInProgress",
        _ => "an NCCL result this build does not know",
    }
}
