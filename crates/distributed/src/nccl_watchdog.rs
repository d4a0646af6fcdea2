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
//! NCCL's asynchronous error, a header exchange that timed out, [`crate::Communicator::abort`])
//! goes through the same steps, under the state's lock.
//!
//! A call that blocks inside NCCL (its host side waits for a peer: connection setup, or a
//! library whose collectives wait at the call, as the fake libnccl's shared-memory cliques
//! do) is watched too. Calls are serialised by their own lock, not the state's: the state
//! records the call in flight and when it began, so the watchdog (or another thread) can
//! abort while it is blocked. `ncclCommAbort` is the one call NCCL means to overlap a stuck
//! one: it sets the communicator's abort flag, which NCCL's host-side waits poll, and the
//! blocked call returns. The blocked thread then finds the communicator aborted and reports
//! the abort's error (a timeout names its collective), never its own handle again; the
//! stream is marked failed for that collective like for a queued one. Dropping the
//! communicator cannot overlap a call: calls borrow it.

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

/// An NCCL call running on some thread (it may block there).
struct InCall {
    what: Described,
    since: Instant,
}

/// One NCCL communicator's state, under its lock.
pub(crate) struct State {
    /// None once aborted or destroyed.
    comm: Option<Handle>,
    failure: Option<Failure>,
    /// The NCCL call in flight, if any (calls are serialised by [`Shared::call_lock`]).
    in_call: Option<InCall>,
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

    /// Notes that a call of `what` is about to enter NCCL (the watchdog times it).
    pub(crate) fn enter_call(&mut self, what: Described) {
        self.in_call = Some(InCall { what, since: Instant::now() });
    }

    /// Notes that the call has returned.
    pub(crate) fn leave_call(&mut self) {
        self.in_call = None;
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
        if let Some(call) = &self.in_call {
            // A call blocked in NCCL: only its time is looked at (NCCL's asynchronous error
            // is read once the call has returned, not beside it).
            if call.since.elapsed() > self.timeout {
                let failure = Failure::Timeout { what: call.what.clone(), timeout: self.timeout };
                self.abort(failure, ordinal);
                return false;
            }
            return true;
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
        let oldest = self
            .queued
            .front()
            .map(|q| q.what.clone())
            .or_else(|| self.untracked.take())
            .or_else(|| self.in_call.as_ref().map(|c| c.what.clone()));
        if let Some(queued) = oldest {
            let _ = raw::fail_stream(ordinal, move || failure.read_error(&queued, ordinal).into());
        }
        // SAFETY: the handle came from ncclCommInit* and is aborted once (it was taken); a
        // call blocked in NCCL on another thread may still hold it, which is what
        // ncclCommAbort is for (see the module's notes): that thread never uses it again.
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
    /// Held across each NCCL call: NCCL allows one call at a time on a communicator (but
    /// `ncclCommAbort`, which takes only the state's lock).
    calls: Mutex<()>,
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
                in_call: None,
                queued: VecDeque::new(),
                untracked: None,
                spare: Vec::new(),
                timeout,
                stop: false,
            }),
            calls: Mutex::new(()),
            wake: Condvar::new(),
            ordinal,
        })
    }

    /// Serialises NCCL calls (hold the guard across one call). Poisoning is taken over as
    /// for the state: the guard protects no data.
    pub(crate) fn call_lock(&self) -> MutexGuard<'_, ()> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Waits until nothing is queued (or in a call), aborting the communicator when a
    /// collective fails or times out, then destroys it (unless it was aborted) and stops
    /// the watchdog.
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
