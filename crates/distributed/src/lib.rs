//! Collective communication and data-parallel training for tapegrad.
//!
//! A [`Communicator`] is one rank's handle on a group: [`Communicator::local`] (a world
//! of one, so everything runs without features), [`ThreadGroup`] (ranks as threads of
//! one process) and, with the `mpi` feature, `Communicator::mpi` (one rank per process,
//! started with `mpirun`). It offers `all_reduce` (sum, mean), `broadcast`, `all_gather`
//! and `barrier` on f32, f64, i64, bf16 and f16 tensors (an all-reduce of bf16 or f16 sums
//! in f32 and rounds once; see [`ReduceOp`]). Ranks that disagree about a collective's
//! shape or dtype get an [`Error::Mismatch`] naming both; a collective that does not
//! complete within the communicator's timeout (a dead rank) is an [`Error::Timeout`].
//!
//! With the `nccl` feature (which implies `cuda`), `Communicator::nccl_group(&[0, 1])`
//! makes one communicator per GPU of this process and, with `mpi` too,
//! `Communicator::nccl_from_mpi()` one rank per `mpirun` process. Their collectives take
//! CUDA tensors on the rank's GPU and reduce them there with NCCL, queued on the tensor's
//! stream (no host copy, no wait for the GPU); headers are still compared on the host
//! first, and a timeout aborts the NCCL communicator; a watchdog thread aborts it too when
//! a queued collective does not complete in time (a rank died after the header exchange),
//! and a host read waiting on that GPU then fails instead of hanging. libnccl is loaded at run time
//! (`libnccl.so`: link it to the `libnccl.so.2` that NCCL packages and PyTorch's
//! nvidia-nccl wheels ship).
//!
//! [`DataParallel`] averages gradients over the ranks in buckets, starting each bucket's
//! all-reduce as the tape's backward walk finishes its gradients, so communication
//! overlaps the rest of the backward pass.
//!
//! ```
//! use tapegrad_distributed::{Communicator, ReduceOp};
//! use tapegrad_tensor::{Device, Tensor};
//! # fn main() -> tapegrad_distributed::Result<()> {
//! let comm = Communicator::local()?;
//! let g = Tensor::from_vec(vec![1.0f32, 2.0], [2], &Device::Cpu)?;
//! let mean = comm.all_reduce(&g, ReduceOp::Mean)?;
//! assert_eq!(mean.to_vec::<f32>()?, vec![1.0, 2.0]);
//! # Ok(())
//! # }
//! ```

mod buffer;
mod communicator;
mod data_parallel;
mod error;
mod header;
#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "nccl")]
mod nccl_backend;
#[cfg(feature = "nccl")]
mod nccl_watchdog;
mod threads;
mod transport;

pub use buffer::HostBuffer;
pub use communicator::{Communicator, PendingCollective, ReduceOp, DEFAULT_TIMEOUT};
pub use data_parallel::{DataParallel, StepReport};
pub use error::{Error, Result};
pub use threads::ThreadGroup;
