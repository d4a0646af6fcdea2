//! The one error type of the distributed crate.

use std::time::Duration;

/// Everything a collective can report. Messages name this process's rank, the
/// collective, and the tensor's shape and dtype.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ranks called a collective with tensors (or collectives, or roots) that do not
    /// agree; every rank gets this error instead of a hang or a mixed-up result.
    #[error("rank {rank}: {collective}: {detail}")]
    Mismatch {
        /// This process's rank.
        rank: usize,
        /// The collective called here.
        collective: &'static str,
        /// What differs, naming the other rank and both shapes, dtypes or roots.
        detail: String,
    },
    /// A collective did not complete in time: another rank died, hangs, or never calls it.
    #[error(
        "rank {rank}: {collective} of a {dtype} tensor of shape {shape} did not complete within {timeout:?} \
         (another rank died, is stuck, or did not call it); this communicator is now unusable"
    )]
    Timeout {
        /// This process's rank.
        rank: usize,
        /// The collective.
        collective: &'static str,
        /// The tensor's shape, as printed.
        shape: String,
        /// The tensor's dtype, as printed.
        dtype: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// An argument that is wrong on this rank alone (a root outside the world, a bucket
    /// size of zero, ...).
    #[error("rank {rank}: {collective}: {msg}")]
    Invalid {
        /// This process's rank.
        rank: usize,
        /// The collective or function.
        collective: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// The communication backend failed or is unavailable (MPI not initialisable, a peer
    /// gone, the communication thread stopped).
    #[error("{backend}: {msg}")]
    Backend {
        /// The backend (`mpi`, `threads`, ...).
        backend: &'static str,
        /// What happened.
        msg: String,
    },
    /// A tensor operation failed (converting to or from host buffers, assigning a variable).
    #[error(transparent)]
    Tensor(#[from] tapegrad_tensor::Error),
}

/// The distributed crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tapegrad_tensor::Error {
    /// A collective's error inside tensor code (a gradient hook or rule) travels whole, as
    /// `External`, and can be downcast back.
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(t) => t,
            other => tapegrad_tensor::Error::External(Box::new(other)),
        }
    }
}
