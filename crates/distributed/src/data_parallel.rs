//! [`DataParallel`]: every rank runs the same model on its own shard of the batch;
//! gradients are averaged over the ranks before the optimizer applies them, so weights
//! and optimizer state stay identical on every rank (PyTorch's DDP, Horovod).

use crate::{Communicator, Error, HostBuffer, PendingCollective, ReduceOp, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tapegrad_tensor::{DType, Device, GradientSource, GradientTape, Shape, Tensor, Variable};

/// PyTorch DDP's default bucket size: large enough that per-collective latency is
/// small against the transfer, small enough that the first bucket starts early in the
/// backward pass.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// What the last [`DataParallel::gradient`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// All-reduces run (buckets).
    pub buckets: usize,
    /// Buckets whose all-reduce was started before the backward walk ended: the ones that
    /// overlap the backward pass.
    pub started_during_backward: usize,
    /// Gradient bytes averaged.
    pub bytes: usize,
    /// The backward walk, hooks included.
    pub backward: Duration,
    /// Waiting for the all-reduces after the walk ended (communication not hidden).
    pub exposed_communication: Duration,
}

/// Data-parallel gradient averaging over a [`Communicator`].
///
/// ```
/// use std::sync::Arc;
/// use tapegrad_distributed::{Communicator, DataParallel};
/// use tapegrad_tensor::{Device, GradientTape, Tensor, Variable};
/// # fn main() -> tapegrad_distributed::Result<()> {
/// let dp = DataParallel::new(Arc::new(Communicator::local()?));
/// let w = Variable::new("w", Tensor::from_vec(vec![3.0f32], [1], &Device::Cpu)?, true);
/// dp.broadcast_variables(&[w.clone()])?; // rank 0's initial weights everywhere
/// let tape = GradientTape::new();
/// let loss = tape.record(|| w.value().square()?.sum_all())?;
/// let grads = dp.gradient(&tape, &loss, &[&w])?; // averaged over the ranks
/// assert_eq!(grads[0].as_ref().unwrap().to_vec::<f32>()?, vec![6.0]);
/// # Ok(())
/// # }
/// ```
pub struct DataParallel {
    comm: Arc<Communicator>,
    bucket_bytes: usize,
    last: Mutex<StepReport>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataParallel({:?}, buckets of {} bytes)", self.comm, self.bucket_bytes)
    }
}

/// Where a gradient sits in a bucket.
struct Slot {
    source: usize,
    offset: usize,
    len: usize,
    shape: Shape,
    device: Device,
}

/// Gradients gathered until the bucket is full.
struct Bucket {
    data: BucketData,
    slots: Vec<Slot>,
}

/// A bucket's elements: host copies for host backends; for an NCCL rank, the flattened
/// gradients on its GPU, concatenated there when the bucket is sent (no host round trip).
enum BucketData {
    Host(HostBuffer),
    Device { parts: Vec<Tensor>, len: usize, dtype: DType },
}

impl BucketData {
    fn len(&self) -> usize {
        match self {
            BucketData::Host(b) => b.len(),
            BucketData::Device { len, .. } => *len,
        }
    }
    fn dtype(&self) -> DType {
        match self {
            BucketData::Host(b) => b.dtype(),
            BucketData::Device { dtype, .. } => *dtype,
        }
    }
    fn on_device(&self) -> bool {
        matches!(self, BucketData::Device { .. })
    }
}

impl DataParallel {
    /// Averages over `comm`'s ranks in buckets of [`DEFAULT_BUCKET_BYTES`].
    pub fn new(comm: Arc<Communicator>) -> DataParallel {
        DataParallel { comm, bucket_bytes: DEFAULT_BUCKET_BYTES, last: Mutex::new(StepReport::default()) }
    }

    /// Sets the bucket size in bytes (at least 1; a gradient larger than a bucket is a
    /// bucket of its own). Smaller buckets start communicating earlier in the backward
    /// pass and pay more per-collective latency.
    pub fn with_bucket_bytes(mut self, bytes: usize) -> Result<DataParallel> {
        if bytes == 0 {
            return Err(Error::Invalid {
                rank: self.comm.rank(),
                collective: "DataParallel::with_bucket_bytes",
                msg: "the bucket size must be at least 1 byte".into(),
            });
        }
        self.bucket_bytes = bytes;
        Ok(self)
    }

    /// The communicator.
    pub fn communicator(&self) -> &Communicator {
        &self.comm
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// Whether this rank writes files (checkpoints, metrics): rank 0 only.
    pub fn is_writer(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Copies rank 0's values of `variables` (every rank lists the same variables in the
    /// same order) into every rank's: the replicas start from the same weights.
    pub fn broadcast_variables(&self, variables: &[Variable]) -> Result<()> {
        for v in variables {
            let value = v.value_untracked();
            let root = self.comm.broadcast(&value, 0)?;
            v.assign(root)?;
        }
        Ok(())
    }

    /// The gradients of `loss` with respect to `sources`, averaged over the ranks. Each
    /// gradient is copied into a bucket when the tape's walk finishes it; a full bucket's
    /// all-reduce starts at once on the communicator's thread while the walk continues.
    /// A source without a gradient stays `None` (it must be `None` on every rank).
    pub fn gradient<S: GradientSource>(
        &self,
        tape: &GradientTape,
        loss: &Tensor,
        sources: &[S],
    ) -> Result<Vec<Option<Tensor>>> {
        let started = Instant::now();
        let mut report = StepReport::default();
        let mut in_flight: Vec<(PendingCollective, Vec<Slot>, bool)> = Vec::new();
        let mut bucket: Option<Bucket> = None;
        let reduction_device = self.comm.reduction_device();
        let mut flush =
            |bucket: &mut Option<Bucket>, in_flight: &mut Vec<(PendingCollective, Vec<Slot>, bool)>| -> Result<()> {
                if let Some(b) = bucket.take() {
                    report.bytes += b.data.len() * elem_bytes(b.data.dtype());
                    let (pending, on_device) = match b.data {
                        BucketData::Host(buf) => (self.comm.all_reduce_buffer_start(buf, ReduceOp::Mean)?, false),
                        BucketData::Device { parts, .. } => {
                            let flat = match parts.as_slice() {
                                [one] => one.clone(),
                                _ => Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?,
                            };
                            (self.comm.all_reduce_start(&flat, ReduceOp::Mean)?, true)
                        }
                    };
                    in_flight.push((pending, b.slots, on_device));
                }
                Ok(())
            };
        let grads = {
            let mut on_ready = |source: usize, g: &Tensor| -> tapegrad_tensor::Result<()> {
                let on_device = reduction_device == Some(g.device());
                if bucket.as_ref().is_some_and(|b| b.data.dtype() != g.dtype() || b.data.on_device() != on_device) {
                    flush(&mut bucket, &mut in_flight)?;
                }
                if bucket.is_none() {
                    let data = if on_device {
                        BucketData::Device { parts: Vec::new(), len: 0, dtype: g.dtype() }
                    } else {
                        let capacity = self.bucket_bytes / elem_bytes(g.dtype()) + 1;
                        BucketData::Host(HostBuffer::with_capacity(g.dtype(), capacity)?)
                    };
                    bucket = Some(Bucket { data, slots: Vec::new() });
                }
                let b = bucket.as_mut().ok_or_else(|| tapegrad_tensor::Error::invalid("data_parallel", "no bucket"))?;
                let n = g.shape().elem_count();
                b.slots.push(Slot {
                    source,
                    offset: b.data.len(),
                    len: n,
                    shape: g.shape().clone(),
                    device: g.device(),
                });
                match &mut b.data {
                    BucketData::Host(buf) => buf.extend(&HostBuffer::from_tensor(g)?)?,
                    BucketData::Device { parts, len, .. } => {
                        parts.push(g.reshape([n])?);
                        *len += n;
                    }
                }
                if b.data.len() * elem_bytes(b.data.dtype()) >= self.bucket_bytes {
                    flush(&mut bucket, &mut in_flight)?;
                }
                Ok(())
            };
            tape.gradient_with_ready_hook(loss, sources, &mut on_ready)?
        };
        let started_during_backward = in_flight.len();
        flush(&mut bucket, &mut in_flight)?;
        let backward = started.elapsed();
        let mut grads = grads;
        let buckets = in_flight.len();
        for (pending, slots, on_device) in in_flight {
            if on_device {
                let averaged = pending.wait()?;
                for s in slots {
                    grads[s.source] = Some(averaged.narrow(0, s.offset, s.len)?.reshape(s.shape)?);
                }
            } else {
                let averaged = pending.wait_buffer()?;
                for s in slots {
                    grads[s.source] = Some(averaged.slice(s.offset, s.len).into_tensor(s.shape, &s.device)?);
                }
            }
        }
        report.buckets = buckets;
        report.started_during_backward = started_during_backward;
        report.backward = backward;
        report.exposed_communication = started.elapsed() - backward;
        if let Ok(mut last) = self.last.lock() {
            *last = report;
        }
        Ok(grads)
    }

    /// What the last [`gradient`](Self::gradient) did: buckets, overlap, times.
    pub fn last_step(&self) -> StepReport {
        self.last.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn elem_bytes(dtype: DType) -> usize {
    dtype.size_in_bytes()
}
