//! [`Communicator`]: a rank's handle on a group of processes (or threads), with the
//! collectives data-parallel training needs.
//!
//! Every collective runs on the communicator's own thread, in the order it was called.
//! That thread owns the backend (MPI is initialised, used and finalised on it), and the
//! caller only waits on a channel: a collective started with
//! [`Communicator::all_reduce_start`] runs while the caller keeps computing (the
//! backward pass of earlier layers), and a wait gives up after the communicator's
//! timeout, so a rank that died makes the others fail instead of hanging.

use crate::header::{Collective, Header};
use crate::transport::{LocalTransport, Transport, TransportFactory};
use crate::{Error, HostBuffer, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapegrad_tensor::{DType, Device, Shape, Tensor};

/// How an all-reduce combines the ranks' tensors.
///
/// bf16 and f16 tensors are never summed in their own precision. The host backends (MPI,
/// threads, local) widen them to f32, sum in rank order (MPI: its own f32 sum, the same
/// on every rank), divide a mean in f32, and round to the dtype once: the result has the
/// same bits on every rank and is the correctly rounded f32 result (so a mean of values near
/// the dtype's largest does not overflow as their sum would). NCCL reduces them on the
/// GPU (`ncclBfloat16`, `ncclFloat16`) in its own order, rounding after each step of its
/// ring or tree: every rank still gets the same bits (each element is reduced once and
/// then copied), but these may differ in the last place from the host backends' result,
/// and from one NCCL algorithm or world size to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The elementwise sum.
    Sum,
    /// The elementwise sum divided by the world size (integers divide toward zero).
    Mean,
}

/// The default limit on one collective: long enough for a first step that compiles
/// kernels or reads a dataset on some rank, short enough that a dead rank is noticed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One collective for the communicator's thread.
struct Job {
    header: Header,
    buf: HostBuffer,
    /// Only the header exchange (an NCCL rank's host side: its data goes over NCCL).
    header_only: bool,
    reply: mpsc::SyncSender<Result<HostBuffer>>,
}

/// A rank's handle on a group: [`Communicator::local`] (one process, world size 1),
/// [`crate::ThreadGroup`] (ranks as threads of one process) or, with the `mpi` feature,
/// `Communicator::mpi` (one rank per process, started by `mpirun`).
///
/// Collectives take tensors of any device and dtype (f32, f64, i64, bf16, f16; an
/// all-reduce of bf16 or f16 sums in f32 and rounds once, see [`ReduceOp`]). Every rank
/// must call the same collectives in the same order with tensors of the same shape and
/// dtype: a small header is exchanged first, and a disagreement is an [`Error::Mismatch`]
/// on every rank. Results are identical on every rank.
pub struct Communicator {
    rank: usize,
    world_size: usize,
    backend: &'static str,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Option<JoinHandle<()>>,
    broken: Arc<AtomicBool>,
    timeout: Duration,
    busy_nanos: Arc<AtomicU64>,
    /// The NCCL side of an NCCL rank: data goes there, headers through the host backend.
    #[cfg(feature = "nccl")]
    nccl: Option<crate::nccl_backend::NcclRank>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Communicator({} rank {} of {})", self.backend(), self.rank, self.world_size)
    }
}

impl Communicator {
    /// The single-process communicator: rank 0 of 1. Every collective returns (a copy of)
    /// its input, so code written for several ranks runs unchanged in one process.
    /// Fails only if the operating system refuses a thread.
    pub fn local() -> Result<Communicator> {
        Communicator::spawn(Box::new(|| Ok(Box::new(LocalTransport) as Box<dyn Transport>)))
    }

    /// Starts the communicator's thread with the transport `make` builds there.
    pub(crate) fn spawn(make: TransportFactory) -> Result<Communicator> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, usize, &'static str)>>();
        let busy_nanos = Arc::new(AtomicU64::new(0));
        let busy = busy_nanos.clone();
        let worker = std::thread::Builder::new()
            .name("tapegrad-collectives".into())
            .spawn(move || {
                let mut transport = match make() {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((transport.rank(), transport.world_size(), transport.name())));
                for job in jobs_rx {
                    let start = Instant::now();
                    let result = run(transport.as_mut(), &job.header, job.buf, job.header_only);
                    busy.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    let _ = job.reply.send(result);
                }
                // Dropping the transport here finalises MPI on the thread that initialised it.
            })
            .map_err(|e| Error::Backend { backend: "communicator", msg: format!("cannot start its thread: {e}") })?;
        let (rank, world_size, backend) = ready_rx.recv().map_err(|_| Error::Backend {
            backend: "communicator",
            msg: "its thread stopped while starting the backend".into(),
        })??;
        Ok(Communicator {
            rank,
            world_size,
            backend,
            jobs: Mutex::new(Some(jobs_tx)),
            worker: Some(worker),
            broken: Arc::new(AtomicBool::new(false)),
            timeout: timeout_from_env(),
            busy_nanos,
            #[cfg(feature = "nccl")]
            nccl: None,
        })
    }

    /// Makes this host communicator the header channel of an NCCL rank.
    #[cfg(feature = "nccl")]
    pub(crate) fn with_nccl(mut self, rank: crate::nccl_backend::NcclRank) -> Communicator {
        self.nccl = Some(rank);
        self
    }

    /// The GPU this rank's collectives reduce on: `Some(cuda:i)` for an NCCL rank, `None`
    /// for host backends (which copy device tensors through the host).
    pub fn reduction_device(&self) -> Option<Device> {
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            return Some(Device::Cuda(n.ordinal()));
        }
        None
    }

    /// This process's rank, `0..world_size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend's name (`local`, `threads`, `mpi`, `nccl`).
    pub fn backend(&self) -> &'static str {
        #[cfg(feature = "nccl")]
        if self.nccl.is_some() {
            return "nccl";
        }
        self.backend
    }

    /// The total time this rank's communicator thread has spent in collectives (headers
    /// included, waiting for slower ranks included): the time in all-reduce of a run.
    pub fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }

    /// The limit on one collective (default [`DEFAULT_TIMEOUT`], or the environment's
    /// `TAPEGRAD_COLLECTIVE_TIMEOUT_S`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the limit on one collective. Every rank should use the same. For an NCCL rank
    /// it also limits how long a collective queued on the GPU may take before the watchdog
    /// aborts the communicator.
    pub fn with_timeout(mut self, timeout: Duration) -> Communicator {
        self.timeout = timeout;
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            n.set_timeout(timeout);
        }
        self
    }

    /// Aborts this rank's NCCL communicator now, as PyTorch's `ProcessGroupNCCL::abort`
    /// does (`ncclCommAbort`): a collective blocked inside NCCL on another thread returns an
    /// error saying so, collectives queued on the GPU end without a result (reading what they
    /// computed fails, naming them), and every later collective fails. Use it to stop a rank
    /// whose peers are known to be gone without waiting for the timeout. Only NCCL ranks can
    /// be aborted: for the host backends it is an [`Error::Invalid`] (an MPI abort would end
    /// every process of the job).
    pub fn abort(&self) -> Result<()> {
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            n.abort(&Error::Backend {
                backend: "nccl",
                msg: format!("rank {}: aborted by Communicator::abort", self.rank),
            });
            return Ok(());
        }
        Err(Error::Invalid {
            rank: self.rank,
            collective: "abort",
            msg: format!("only NCCL communicators can be aborted; this one is `{}`", self.backend),
        })
    }

    /// The elementwise sum or mean of `tensor` over the ranks, as a new tensor on the
    /// tensor's device; identical on every rank.
    pub fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        self.all_reduce_start(tensor, op)?.wait()
    }

    /// [`all_reduce`](Self::all_reduce) in place: `tensor` becomes the sum or mean over the
    /// ranks (same shape, dtype and device). Tensors are values here, as in TensorFlow and
    /// candle, and may share storage with others (views, clones, a tape's saved copies), so
    /// the reduced values go into fresh storage that replaces the caller's tensor; the old
    /// storage is freed once nothing else holds it. On error `tensor` is left unchanged. To
    /// reduce a [`Variable`](tapegrad_tensor::Variable)'s value, `assign` the result of
    /// [`all_reduce`](Self::all_reduce).
    pub fn all_reduce_in_place(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        *tensor = self.all_reduce(tensor, op)?;
        Ok(())
    }

    /// Starts an all-reduce and returns at once; [`PendingCollective::wait`] gives the
    /// result. Collectives run in the order they were started.
    pub fn all_reduce_start(&self, tensor: &Tensor, op: ReduceOp) -> Result<PendingCollective> {
        let collective = match op {
            ReduceOp::Sum => Collective::AllReduceSum,
            ReduceOp::Mean => Collective::AllReduceMean,
        };
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            return self.nccl_collective(n, collective, tensor, 0);
        }
        self.start(collective, tensor.dims().to_vec(), tensor.device(), HostBuffer::from_tensor(tensor)?, 0)
    }

    /// Starts an all-reduce of a host buffer with the given logical shape (the data-parallel
    /// buckets, which are flat host copies of many gradients).
    pub fn all_reduce_buffer_start(&self, buf: HostBuffer, op: ReduceOp) -> Result<PendingCollective> {
        let collective = match op {
            ReduceOp::Sum => Collective::AllReduceSum,
            ReduceOp::Mean => Collective::AllReduceMean,
        };
        let dims = vec![buf.len()];
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            let t = buf.into_tensor(dims, &Device::Cuda(n.ordinal()))?;
            return self.nccl_collective(n, collective, &t, 0);
        }
        self.start(collective, dims, Device::Cpu, buf, 0)
    }

    /// Rank `root`'s `tensor` on every rank (the others' tensors give the shape and dtype
    /// and must agree with the root's).
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.world_size {
            return Err(Error::Invalid {
                rank: self.rank,
                collective: "broadcast",
                msg: format!("root {root} is outside the world of {} ranks", self.world_size),
            });
        }
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            return self.nccl_collective(n, Collective::Broadcast, tensor, root)?.wait();
        }
        self.start(
            Collective::Broadcast,
            tensor.dims().to_vec(),
            tensor.device(),
            HostBuffer::from_tensor(tensor)?,
            root,
        )?
        .wait()
    }

    /// Every rank's `tensor` (one shape on every rank), concatenated along a new leading
    /// axis: a tensor of shape `[world_size, ...shape]`, rank 0's first.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            return self.nccl_collective(n, Collective::AllGather, tensor, 0)?.wait();
        }
        self.start(Collective::AllGather, tensor.dims().to_vec(), tensor.device(), HostBuffer::from_tensor(tensor)?, 0)?
            .wait()
    }

    /// Returns once every rank has called it (for NCCL ranks: once every rank's host has;
    /// work queued on the GPUs before may still be running).
    pub fn barrier(&self) -> Result<()> {
        #[cfg(feature = "nccl")]
        if let Some(n) = &self.nccl {
            let shape = Shape::from(vec![0]);
            let what =
                crate::nccl_backend::What { rank: self.rank, collective: "barrier", dtype: DType::I64, shape: &shape };
            if let Err(failed) = n.check(&what) {
                // An aborted communicator (the watchdog fired) is reported here too, and
                // announced so that the other ranks do not wait for this one.
                let _ = self.exchange_header(Collective::Barrier, vec![0], DType::I64, crate::header::REFUSED_ROOT);
                return Err(failed);
            }
            return self.exchange_header(Collective::Barrier, vec![0], DType::I64, 0);
        }
        self.start(Collective::Barrier, vec![0], Device::Cpu, HostBuffer::I64(Vec::new()), 0)?.wait_buffer()?;
        Ok(())
    }

    fn start(
        &self,
        collective: Collective,
        dims: Vec<usize>,
        device: Device,
        buf: HostBuffer,
        root: usize,
    ) -> Result<PendingCollective> {
        let header = Header { collective, dtype: buf.dtype(), dims, root };
        self.send(header, buf, device, false)
    }

    /// Exchanges a header only (an NCCL rank's check before it queues the data).
    #[cfg(feature = "nccl")]
    fn exchange_header(&self, collective: Collective, dims: Vec<usize>, dtype: DType, root: usize) -> Result<()> {
        let header = Header { collective, dtype, dims, root };
        let result = self.send(header, HostBuffer::I64(Vec::new()), Device::Cpu, true).and_then(|p| p.wait_buffer());
        if let (Err(e @ Error::Timeout { .. }), Some(n)) = (&result, &self.nccl) {
            // A peer is gone: collectives already queued on the GPU would wait for it forever.
            n.abort(e);
        }
        result.map(|_| ())
    }

    /// An NCCL collective: the header over the host, then the data queued on the GPU.
    #[cfg(feature = "nccl")]
    fn nccl_collective(
        &self,
        n: &crate::nccl_backend::NcclRank,
        collective: Collective,
        tensor: &Tensor,
        root: usize,
    ) -> Result<PendingCollective> {
        let what = crate::nccl_backend::What {
            rank: self.rank,
            collective: collective.name(),
            dtype: tensor.dtype(),
            shape: tensor.shape(),
        };
        let out_dims = match collective {
            Collective::AllGather => std::iter::once(self.world_size).chain(tensor.dims().iter().copied()).collect(),
            _ => tensor.dims().to_vec(),
        };
        let prepared = match collective {
            Collective::Barrier => None,
            _ => match n.prepare(tensor, out_dims, &what) {
                Ok(p) => Some(p),
                Err(refused) => {
                    // The others are told in the header exchange, so none of them waits on
                    // its GPU for this rank's data.
                    let refused_root = crate::header::REFUSED_ROOT;
                    let _ = self.exchange_header(collective, tensor.dims().to_vec(), tensor.dtype(), refused_root);
                    return Err(refused);
                }
            },
        };
        self.exchange_header(collective, tensor.dims().to_vec(), tensor.dtype(), root)?;
        let out = match (collective, prepared) {
            (Collective::AllReduceSum, Some(p)) => n.all_reduce(p, false, &what)?,
            (Collective::AllReduceMean, Some(p)) => n.all_reduce(p, true, &what)?,
            (Collective::Broadcast, Some(p)) => n.broadcast(p, root, &what)?,
            (Collective::AllGather, Some(p)) => n.all_gather(p, &what)?,
            _ => tensor.clone(),
        };
        let (_, rx) = mpsc::sync_channel(1);
        Ok(PendingCollective {
            rx,
            ready: Some(out),
            rank: self.rank,
            world_size: self.world_size,
            collective,
            shape: tensor.shape().clone(),
            dtype: tensor.dtype(),
            device: tensor.device(),
            timeout: self.timeout,
            broken: self.broken.clone(),
        })
    }

    fn send(&self, header: Header, buf: HostBuffer, device: Device, header_only: bool) -> Result<PendingCollective> {
        let collective = header.collective;
        let shape = Shape::from(header.dims.clone());
        let pending = |rx| PendingCollective {
            rx,
            ready: None,
            rank: self.rank,
            world_size: self.world_size,
            collective,
            shape: shape.clone(),
            dtype: header.dtype,
            device,
            timeout: self.timeout,
            broken: self.broken.clone(),
        };
        if self.broken.load(Ordering::Acquire) {
            return Err(Error::Backend {
                backend: self.backend,
                msg: format!(
                    "rank {}: {} of shape {shape}: an earlier collective timed out, so this communicator \
                     can no longer be used",
                    self.rank,
                    collective.name()
                ),
            });
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self
            .jobs
            .lock()
            .map_err(|_| Error::Backend { backend: self.backend, msg: "the job queue's lock is poisoned".into() })?
            .as_ref()
            .map(|jobs| jobs.send(Job { header: header.clone(), buf, reply, header_only }).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(Error::Backend {
                backend: self.backend,
                msg: format!("rank {}: {}: the communicator's thread has stopped", self.rank, collective.name()),
            });
        }
        Ok(pending(rx))
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Closing the queue ends the thread once queued collectives are done; it then
        // finalises the backend. After a timeout the thread may be stuck in a collective a
        // dead peer never joins: leave it, the process is going down with an error.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if !self.broken.load(Ordering::Acquire) {
            if let Some(worker) = self.worker.take() {
                let _ = worker.join();
            }
        }
    }
}

/// A collective that was started and runs on the communicator's thread.
#[must_use = "a started collective must be waited for"]
pub struct PendingCollective {
    rx: mpsc::Receiver<Result<HostBuffer>>,
    /// An NCCL collective's result, already queued on the GPU.
    ready: Option<Tensor>,
    rank: usize,
    world_size: usize,
    collective: Collective,
    shape: Shape,
    dtype: DType,
    device: Device,
    timeout: Duration,
    broken: Arc<AtomicBool>,
}

impl PendingCollective {
    /// The result as a tensor on the input's device.
    pub fn wait(mut self) -> Result<Tensor> {
        if let Some(t) = self.ready.take() {
            return Ok(t);
        }
        let device = self.device;
        let shape = match self.collective {
            Collective::AllGather => {
                let mut dims = vec![self.world_size];
                dims.extend_from_slice(self.shape.dims());
                Shape::from(dims)
            }
            _ => self.shape.clone(),
        };
        self.wait_buffer()?.into_tensor(shape, &device)
    }

    /// The result as a host buffer.
    pub fn wait_buffer(mut self) -> Result<HostBuffer> {
        if let Some(t) = self.ready.take() {
            return HostBuffer::from_tensor(&t);
        }
        let timed_out = |timeout| {
            self.broken.store(true, Ordering::Release);
            Err(Error::Timeout {
                rank: self.rank,
                collective: self.collective.name(),
                shape: self.shape.to_string(),
                dtype: self.dtype.to_string(),
                timeout,
            })
        };
        match self.rx.recv_timeout(self.timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => timed_out(self.timeout),
            // A transport that timed out itself (a rendezvous a peer never joined) is the
            // same event as this wait timing out: one error, naming this collective.
            Ok(Err(Error::Timeout { timeout, .. })) => timed_out(timeout),
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Backend {
                backend: "communicator",
                msg: format!("rank {}: {}: the communicator's thread stopped", self.rank, self.collective.name()),
            }),
        }
    }
}

/// Runs one collective on the communicator's thread: headers first, then the data.
fn run(t: &mut dyn Transport, header: &Header, buf: HostBuffer, header_only: bool) -> Result<HostBuffer> {
    let rank = t.rank();
    header.check_agreement(rank, |h| t.all_gather(h))?;
    if header_only {
        return Ok(buf);
    }
    match header.collective {
        // bf16 and f16 are summed (and a mean divided) in f32 and rounded once at the end.
        Collective::AllReduceSum => t.all_reduce_sum(buf.widened())?.narrowed(header.dtype),
        Collective::AllReduceMean => {
            let mut sum = t.all_reduce_sum(buf.widened())?;
            sum.divide(t.world_size());
            sum.narrowed(header.dtype)
        }
        Collective::Broadcast => t.broadcast(buf, header.root),
        Collective::AllGather => t.all_gather(&buf),
        Collective::Barrier => t.barrier().map(|()| buf),
    }
}

/// `TAPEGRAD_COLLECTIVE_TIMEOUT_S` (seconds, may be fractional), else the default.
pub(crate) fn timeout_from_env() -> Duration {
    std::env::var("TAPEGRAD_COLLECTIVE_TIMEOUT_S")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

impl Communicator {
    /// [`all_reduce`](Self::all_reduce) that a recording [`GradientTape`] differentiates:
    /// the gradient of a cross-rank sum (or mean) is the same all-reduce of the output's
    /// gradients, run during the backward pass. Every rank must run the backward pass
    /// (for SyncBatchNormalization's statistics: every rank's loss depends on them).
    ///
    /// [`GradientTape`]: tapegrad_tensor::GradientTape
    pub fn all_reduce_differentiable(self: &Arc<Self>, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let out = self.all_reduce(&tensor.detach(), op)?;
        let comm = self.clone();
        tapegrad_tensor::custom_gradient("all_reduce", &[tensor], &out, move |g| {
            Ok(vec![Some(comm.all_reduce(g, op).map_err(tapegrad_tensor::Error::from)?)])
        });
        Ok(out)
    }
}
