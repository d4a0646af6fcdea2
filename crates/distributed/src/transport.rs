//! What a backend provides: four collectives over host buffers, run on the
//! communicator's own thread, so a backend never needs to be `Sync`.

use crate::{HostBuffer, Result};

/// The primitive collectives of one backend, for one rank. Every rank calls the same
/// sequence with buffers of one length and dtype (the communicator checks that first).
pub(crate) trait Transport {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// This process's rank.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;
    /// Every rank's `local`, concatenated in rank order, on every rank.
    fn all_gather(&mut self, local: &HostBuffer) -> Result<HostBuffer>;
    /// The elementwise sum over the ranks, identical on every rank.
    fn all_reduce_sum(&mut self, local: HostBuffer) -> Result<HostBuffer>;
    /// Rank `root`'s buffer, on every rank.
    fn broadcast(&mut self, local: HostBuffer, root: usize) -> Result<HostBuffer>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;
}

/// Makes a rank's transport on the communicator's thread (MPI must be initialised, used
/// and finalised on one thread).
pub(crate) type TransportFactory = Box<dyn FnOnce() -> Result<Box<dyn Transport>> + Send>;

/// The single-process world: every collective returns its input.
pub(crate) struct LocalTransport;

impl Transport for LocalTransport {
    fn name(&self) -> &'static str {
        "local"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_gather(&mut self, local: &HostBuffer) -> Result<HostBuffer> {
        Ok(local.clone())
    }
    fn all_reduce_sum(&mut self, local: HostBuffer) -> Result<HostBuffer> {
        Ok(local)
    }
    fn broadcast(&mut self, local: HostBuffer, _root: usize) -> Result<HostBuffer> {
        Ok(local)
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}
