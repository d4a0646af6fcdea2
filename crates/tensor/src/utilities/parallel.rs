//! Small rayon helpers shared by the CPU kernels: run serially below a size where
//! threading costs more than it saves.

/// Below this many elements, loops run on the calling thread.
pub(crate) const PAR_MIN_LEN: usize = 1 << 15;
