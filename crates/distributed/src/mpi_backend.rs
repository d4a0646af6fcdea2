//! The MPI backend (feature `mpi`): one rank per process, started by `mpirun`, over the
//! system's Open MPI or MPICH through the `mpi` crate.

use crate::communicator::Communicator;
use crate::transport::Transport;
use crate::{Error, HostBuffer, Result};
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use tapegrad_tensor::half::{bf16, f16};

impl Communicator {
    /// Joins `MPI_COMM_WORLD`: rank and world size come from `mpirun`. MPI is initialised
    /// on the communicator's thread, which makes every MPI call and finalises MPI when the
    /// communicator is dropped; create one per process.
    ///
    /// A program started without `mpirun` is a world of one rank.
    pub fn mpi() -> Result<Communicator> {
        Communicator::spawn(Box::new(|| {
            let universe = mpi::initialize().ok_or_else(|| Error::Backend {
                backend: "mpi",
                msg: "MPI is already initialised in this process; create one MPI communicator per process".into(),
            })?;
            let world = universe.world();
            Ok(Box::new(MpiTransport { world, _universe: universe }) as Box<dyn Transport>)
        }))
    }
}

struct MpiTransport {
    world: SimpleCommunicator,
    // Dropped after `world`: finalises MPI.
    _universe: mpi::environment::Universe,
}

/// MPI counts are C ints.
fn check_count(len: usize, what: &str) -> Result<()> {
    if len > i32::MAX as usize {
        return Err(Error::Backend {
            backend: "mpi",
            msg: format!("{what}: {len} elements exceed MPI's count limit of {}", i32::MAX),
        });
    }
    Ok(())
}

impl Transport for MpiTransport {
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world_size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_gather(&mut self, local: &HostBuffer) -> Result<HostBuffer> {
        let n = self.world_size();
        check_count(local.len() * n, "all_gather")?;
        Ok(match local {
            HostBuffer::F32(v) => {
                let mut out = vec![0f32; v.len() * n];
                self.world.all_gather_into(&v[..], &mut out[..]);
                HostBuffer::F32(out)
            }
            HostBuffer::F64(v) => {
                let mut out = vec![0f64; v.len() * n];
                self.world.all_gather_into(&v[..], &mut out[..]);
                HostBuffer::F64(out)
            }
            HostBuffer::I64(v) => {
                let mut out = vec![0i64; v.len() * n];
                self.world.all_gather_into(&v[..], &mut out[..]);
                HostBuffer::I64(out)
            }
            // Two-byte values travel as their bits (MPI has no bf16 or f16 type).
            HostBuffer::BF16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                let mut out = vec![0u16; v.len() * n];
                self.world.all_gather_into(&bits[..], &mut out[..]);
                HostBuffer::BF16(out.into_iter().map(bf16::from_bits).collect())
            }
            HostBuffer::F16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                let mut out = vec![0u16; v.len() * n];
                self.world.all_gather_into(&bits[..], &mut out[..]);
                HostBuffer::F16(out.into_iter().map(f16::from_bits).collect())
            }
        })
    }
    fn all_reduce_sum(&mut self, local: HostBuffer) -> Result<HostBuffer> {
        check_count(local.len(), "all_reduce")?;
        Ok(match local {
            HostBuffer::F32(v) => {
                let mut out = vec![0f32; v.len()];
                self.world.all_reduce_into(&v[..], &mut out[..], SystemOperation::sum());
                HostBuffer::F32(out)
            }
            HostBuffer::F64(v) => {
                let mut out = vec![0f64; v.len()];
                self.world.all_reduce_into(&v[..], &mut out[..], SystemOperation::sum());
                HostBuffer::F64(out)
            }
            HostBuffer::I64(v) => {
                let mut out = vec![0i64; v.len()];
                self.world.all_reduce_into(&v[..], &mut out[..], SystemOperation::sum());
                HostBuffer::I64(out)
            }
            // The communicator widens them to f32 first (see `buffer`): never summed here.
            b @ (HostBuffer::BF16(_) | HostBuffer::F16(_)) => {
                return Err(Error::Backend {
                    backend: "mpi",
                    msg: format!("internal: an all-reduce of {} {} elements was not widened", b.len(), b.dtype()),
                })
            }
        })
    }
    fn broadcast(&mut self, mut local: HostBuffer, root: usize) -> Result<HostBuffer> {
        check_count(local.len(), "broadcast")?;
        let root = self.world.process_at_rank(root as i32);
        match &mut local {
            HostBuffer::F32(v) => root.broadcast_into(&mut v[..]),
            HostBuffer::F64(v) => root.broadcast_into(&mut v[..]),
            HostBuffer::I64(v) => root.broadcast_into(&mut v[..]),
            HostBuffer::BF16(v) => {
                let mut bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                root.broadcast_into(&mut bits[..]);
                *v = bits.into_iter().map(bf16::from_bits).collect();
            }
            HostBuffer::F16(v) => {
                let mut bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                root.broadcast_into(&mut bits[..]);
                *v = bits.into_iter().map(f16::from_bits).collect();
            }
        }
        Ok(local)
    }
    fn barrier(&mut self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
