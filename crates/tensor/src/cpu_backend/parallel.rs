//! Small rayon helpers shared by the CPU kernels: run serially below a size where
//! threading costs more than it saves.

use rayon::prelude::*;

/// Below this many elements, loops run on the calling thread.
pub(crate) const PAR_MIN_LEN: usize = 1 << 15;

/// `x.iter().map(f).collect()`, in parallel for large inputs.
pub(crate) fn par_map<T: Copy + Send + Sync, U: Send>(x: &[T], f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    if x.len() < PAR_MIN_LEN {
        x.iter().map(|&v| f(v)).collect()
    } else {
        x.par_iter().with_min_len(PAR_MIN_LEN / 4).map(|&v| f(v)).collect()
    }
}
