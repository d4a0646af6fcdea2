//! The NCCL watchdog, as PyTorch's ProcessGroupNCCL has one: a CUDA event is recorded on the
//! stream after every collective an NCCL rank queues, and a thread per communicator polls
//! those events and NCCL's asynchronous error.
//!
//! Why: the header exchange catches a rank that never reaches a collective, but a rank that
//! dies after it (its host passed the exchange, its GPU never joins) leaves the others' NCCL
//! kernels waiting for it, and the stream stuck behind them; a host read (`to_vec`) would
//! wait forever. When a queued collective has not completed within the communicator's
//! timeout, the watchdog records an [`Error::Timeout`] for the next call, marks the device's
//! stream failed (`tapegrad_tensor::cuda::raw::fail_stream`: the read that waits reports
//! the timeout instead of returning the garbage the aborted collective left), and only then
//! calls `ncclCommAbort`, which makes the stuck kernels return. Every abort (a failed call,
//! NCCL's asynchronous error, a header exchange that timed out) goes through the same steps,
//! under the communicator's lock, which the collectives hold while they queue: an abort never
//! overlaps a call on the communicator.

use crate::{Error, Result};
use cudarc::driver::{result as driver, sys as cuda};
use cudarc::nccl::{result as nccl, sys};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapegrad_tensor::cuda::raw;
use tapegrad_tensor::DType;

/// A collective, as messages name it.
#[derive(Clone, Debug)]
pub(crate) struct Described {
    pub rank: usize,
    pub collective: &'static str,
    pub dtype: DType,
    pub shape: String,
}

/// Why a communicator was aborted.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// A queued collective did not complete within the timeout (the watchdog's finding).
    Timeout { what: Described, timeout: Duration },
    /// Anything else, as its message: a failed NCCL call, NCCL's asynchronous error, a
    /// header exchange that timed out.
    Other(String),
}

impl Failure {
    /// The error every later call on the communicator reports.
    pub(crate) fn error(&self) -> Error {
        match self {
            Failure::Timeout { what, timeout } => Error::Timeout {
                rank: what.rank,
                collective: what.collective,
                shape: what.shape.clone(),
                dtype: what.dtype.to_string(),
                timeout: *timeout,
            },
            Failure::Other(msg) => Error::Backend { backend: "nccl", msg: msg.clone() },
        }
    }

    /// The error of a host read on `ordinal` whose stream held `queued` (the oldest
    /// collective not completed) when the communicator was aborted.
    fn read_error(&self, queued: &Described, ordinal: usize) -> Error {
        match self {
            // The watchdog aborts for the oldest collective: the one the read waited for.
            Failure::Timeout { .. } => self.error(),
            Failure::Other(cause) => Error::Backend {
                backend: "nccl",
                msg: format!(
                    "rank {}: {} of a {} tensor of shape {} was still queued on cuda:{ordinal} when the NCCL \
                     communicator was aborted ({cause}): its result, and what the stream computed from it, is garbage",
                    queued.rank, queued.collective, queued.dtype, queued.shape
                ),
            },
        }
    }
}

/// A communicator handle. NCCL lets any thread use it, one call at a time: the mutex
/// around the [`State`] holding it serialises the calls.
struct Handle(sys::ncclComm_t);
// SAFETY: an ncclComm_t is a pointer to NCCL's own state, usable from any thread as long
// as calls on it do not overlap, which the Mutex around every use guarantees.
unsafe impl Send for Handle {}

/// A CUDA event of the rank's device, destroyed when dropped (a real driver lets an event
/// go before it has passed).
struct Event(cuda::CUevent);
// SAFETY: an event handle may be used from any thread; the Mutex around it serialises uses.
unsafe impl Send for Event {}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event was created by cuEventCreate and is destroyed once (here).
        let _ = unsafe { driver::event::destroy(self.0) };
    }
}

/// A collective queued on the stream, and the event recorded after it.
struct Queued {
    event: Event,
    what: Described,
    since: Instant,
}

/// One NCCL communicator's state, under its lock.
pub(crate) struct State {
    /// None once aborted or destroyed.
    comm: Option<Handle>,
    failure: Option<Failure>,
    /// Queued collectives whose events have not passed yet, oldest first.
    queued: VecDeque<Queued>,
    /// A collective queued with no event after it (creating or recording one failed): no
    /// event tells when it is done, so the abort that follows marks the stream for it.
    untracked: Option<Described>,
    /// Events that have passed, for reuse.
    spare: Vec<Event>,
    timeout: Duration,
    /// Tells the watchdog thread to end.
    stop: bool,
}

impl State {
    /// The live handle, or None once aborted (see [`State::failure`]) or destroyed.
    pub(crate) fn comm(&self) -> Option<sys::ncclComm_t> {
        self.comm.as_ref().map(|h| h.0)
    }

    /// Why the communicator was aborted, if it was.
    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Records an event on `stream` after the collective just queued there.
    pub(crate) fn track(&mut self, stream: cuda::CUstream, what: Described) -> std::result::Result<(), String> {
        match self.record(stream) {
            Ok(event) => {
                self.queued.push_back(Queued { event, what, since: Instant::now() });
                Ok(())
            }
            Err(msg) => {
                self.untracked = Some(what);
                Err(msg)
            }
        }
    }

    /// An event recorded on `stream` now.
    fn record(&mut self, stream: cuda::CUstream) -> std::result::Result<Event, String> {
        let event = match self.spare.pop() {
            Some(e) => e,
            None => Event(
                driver::event::create(cuda::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                    .map_err(|e| format!("cuEventCreate failed: {e}"))?,
            ),
        };
        // SAFETY: the event is live and of this device (created with its context current);
        // `stream` is the device's stream.
        unsafe { driver::event::record(event.0, stream) }.map_err(|e| format!("cuEventRecord failed: {e}"))?;
        Ok(event)
    }

    /// Forgets the collectives that have completed (their events passed); an error is a
    /// failed event query (the device's context failed).
    fn reap(&mut self) -> std::result::Result<(), String> {
        while let Some(q) = self.queued.front() {
            // SAFETY: the event is live and was recorded.
            match unsafe { driver::event::query(q.event.0) } {
                Ok(()) => {
                    let done = self.queued.pop_front().expect("the front exists");
                    self.spare.push(done.event);
                }
                Err(e) if e.0 == cuda::CUresult::CUDA_ERROR_NOT_READY => break,
                Err(e) => {
                    return Err(format!(
                        "rank {}: cuEventQuery after {} of a {} tensor of shape {} failed: {e}",
                        q.what.rank, q.what.collective, q.what.dtype, q.what.shape
                    ))
                }
            }
        }
        Ok(())
    }

    /// NCCL's asynchronous error (a failed peer or network), as a message.
    pub(crate) fn async_error(&self) -> Option<String> {
        let comm = self.comm()?;
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: the handle is live (not aborted or destroyed: `comm` is Some, and the
        // caller holds the lock) and `state` is writable.
        if let Err(e) = unsafe { sys::ncclCommGetAsyncError(comm, &mut state) }.result() {
            return Some(format!("ncclCommGetAsyncError failed: {:?}", e.0));
        }
        (state != sys::ncclResult_t::ncclSuccess)
            .then(|| format!("NCCL reports an asynchronous error: {state:?} (a peer or the network failed)"))
    }

    /// One look at the queued collectives: aborts the communicator when one failed or has
    /// waited longer than the timeout, or NCCL reports an error. Returns whether anything
    /// is left to watch.
    fn poll(&mut self, ordinal: usize) -> bool {
        if self.comm.is_none() {
            return false;
        }
        if let Err(msg) = self.reap() {
            self.abort(Failure::Other(msg), ordinal);
            return false;
        }
        let Some(oldest) = self.queued.front() else { return false };
        if let Some(msg) = self.async_error() {
            let w = &oldest.what;
            let msg = format!("rank {}: {} of a {} tensor of shape {}: {msg}", w.rank, w.collective, w.dtype, w.shape);
            self.abort(Failure::Other(msg), ordinal);
            return false;
        }
        if oldest.since.elapsed() > self.timeout {
            let failure = Failure::Timeout { what: oldest.what.clone(), timeout: self.timeout };
            self.abort(failure, ordinal);
            return false;
        }
        true
    }

    /// Aborts the communicator for `failure` (the first failure is the one kept): the
    /// stream is marked failed first when a collective is still queued on it, so a host
    /// read that waits for it reports the failure once `ncclCommAbort` lets it go on.
    pub(crate) fn abort(&mut self, failure: Failure, ordinal: usize) {
        let Some(handle) = self.comm.take() else { return };
        let failure = self.failure.get_or_insert(failure).clone();
        let _ = self.reap();
        let oldest = self.queued.front().map(|q| q.what.clone()).or_else(|| self.untracked.take());
        if let Some(queued) = oldest {
            let _ = raw::fail_stream(ordinal, move || failure.read_error(&queued, ordinal).into());
        }
        // SAFETY: the handle came from ncclCommInit* and is aborted once (it was taken).
        let _ = unsafe { nccl::comm_abort(handle.0) };
        self.queued.clear();
    }

    /// Destroys a communicator with nothing queued (`ncclCommDestroy` waits for queued
    /// collectives: the caller has waited for them, or aborted).
    fn destroy(&mut self) {
        if let Some(handle) = self.comm.take() {
            // SAFETY: the handle is live and nothing uses it after this (taken).
            let _ = unsafe { nccl::comm_destroy(handle.0) };
        }
    }
}

/// A communicator's state and the condvar its watchdog sleeps on.
pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    ordinal: usize,
}

impl Shared {
    /// The state of a new communicator on CUDA device `ordinal`.
    pub(crate) fn new(comm: sys::ncclComm_t, ordinal: usize, timeout: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                comm: Some(Handle(comm)),
                failure: None,
                queued: VecDeque::new(),
                untracked: None,
                spare: Vec::new(),
                timeout,
                stop: false,
            }),
            wake: Condvar::new(),
            ordinal,
        })
    }

    /// Locks the state. A panic while it was held cannot leave it inconsistent in a way
    /// that matters (at worst an event is not tracked), so a poisoned lock is taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the watchdog (a collective was queued, or it should stop).
    pub(crate) fn notify(&self) {
        self.wake.notify_all();
    }

    /// Changes the limit on a queued collective.
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        self.lock().timeout = timeout;
        self.notify();
    }

    /// Waits until nothing is queued, aborting the communicator when a collective fails or
    /// times out, then destroys it (unless it was aborted) and stops the watchdog.
    pub(crate) fn close(&self) {
        // The device's context, current for ncclCommDestroy and the events' destruction
        // (the last owner of this state drops them on this thread).
        let _ = raw::stream(self.ordinal);
        let mut st = self.lock();
        while st.poll(self.ordinal) {
            let interval = poll_interval(st.timeout);
            st = self.wake.wait_timeout(st, interval).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.destroy();
        st.stop = true;
        drop(st);
        self.notify();
    }
}

/// How often queued collectives are looked at: often enough that a timeout is noticed
/// within a tenth of it (at most 100 ms late), rarely enough to cost nothing.
fn poll_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// Starts the watchdog thread of a communicator; it ends after [`Shared::close`].
pub(crate) fn spawn(shared: Arc<Shared>, rank: usize) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("tapegrad-nccl-watchdog-{rank}"))
        .spawn(move || {
            // The device's context, current on this thread for the driver and NCCL calls.
            let _ = raw::stream(shared.ordinal);
            let mut st = shared.lock();
            while !st.stop {
                st = if st.poll(shared.ordinal) {
                    let interval = poll_interval(st.timeout);
                    shared.wake.wait_timeout(st, interval).unwrap_or_else(|e| e.into_inner()).0
                } else {
                    shared.wake.wait(st).unwrap_or_else(|e| e.into_inner())
                };
            }
        })
        .map_err(|e| Error::Backend {
            backend: "nccl",
            msg: format!("rank {rank}: cannot start the NCCL watchdog thread: {e}"),
        })
}
