//! `--distributed`: joining the ranks that `mpirun` started, and the per-rank and global
//! speed lines.

use crate::cli::DistributedKind;
use crate::AnyResult;
use std::sync::Arc;
use tapegrad::distributed::{Communicator, ReduceOp};
use tapegrad::{Device, Tensor};

/// The communicator `--distributed` asks for: the process's world (one rank without
/// the option), or an error saying how to get the backend.
pub fn communicator(kind: Option<DistributedKind>) -> AnyResult<Arc<Communicator>> {
    match kind {
        None => Ok(Arc::new(Communicator::local()?)),
        Some(DistributedKind::Mpi) => mpi(),
        Some(DistributedKind::Nccl) => nccl(),
    }
}

/// One rank per `mpirun` process, on the GPU of its local rank, reducing there with NCCL.
#[cfg(all(feature = "mpi", feature = "nccl"))]
fn nccl() -> AnyResult<Arc<Communicator>> {
    Ok(Arc::new(Communicator::nccl_from_mpi()?))
}

#[cfg(not(all(feature = "mpi", feature = "nccl")))]
fn nccl() -> AnyResult<Arc<Communicator>> {
    Err("--distributed nccl: this program was built without NCCL and MPI; rebuild with `--features mpi,nccl` \
         (MPI starts the ranks and hands out NCCL's id; libnccl.so is loaded at run time) and start it with \
         `mpirun -np <GPUs>`, or use --distributed mpi (gradients averaged on the host)"
        .into())
}

#[cfg(feature = "mpi")]
fn mpi() -> AnyResult<Arc<Communicator>> {
    Ok(Arc::new(Communicator::mpi()?))
}

#[cfg(not(feature = "mpi"))]
fn mpi() -> AnyResult<Arc<Communicator>> {
    Err("--distributed mpi: this program was built without MPI; rebuild with `--features mpi` (needs Open MPI: \
         apt-get install libopenmpi-dev openmpi-bin libclang-dev) and start it with `mpirun -np N`"
        .into())
}

/// Every rank's images/s, gathered on every rank: `(per rank, their sum)`.
pub fn images_per_second(comm: &Communicator, mine: f64) -> AnyResult<(Vec<f64>, f64)> {
    let all = comm.all_gather(&Tensor::from_vec(vec![mine], [1], &Device::Cpu)?)?.to_vec::<f64>()?;
    let total = all.iter().sum();
    Ok((all, total))
}

/// The epoch's training sums (loss, correct, seen) over every rank.
pub fn global_sums(comm: &Communicator, loss: f64, correct: usize, seen: usize) -> AnyResult<(f64, usize, usize)> {
    let local = Tensor::from_vec(vec![loss, correct as f64, seen as f64], [3], &Device::Cpu)?;
    let v = comm.all_reduce(&local, ReduceOp::Sum)?.to_vec::<f64>()?;
    Ok((v[0], v[1] as usize, v[2] as usize))
}
