//! The small header every rank contributes before a collective: which collective, the
//! dtype, the shape and the root. Gathered on every rank and compared, so ranks that
//! disagree all get the same error instead of a hang or a mixed-up result.

use crate::{Error, HostBuffer, Result};
use tapegrad_tensor::{DType, Shape};

/// Dimensions stored verbatim; a higher rank is compared through its element count and
/// a hash of all dimensions.
const MAX_DIMS: usize = 10;
/// Words in a header.
pub(crate) const WORDS: usize = 6 + MAX_DIMS;

/// The root word of a rank that refuses its own call (an NCCL rank given a tensor on
/// another GPU): it still exchanges headers, so the others fail instead of waiting for it.
pub(crate) const REFUSED: i64 = -1;
/// The `root` that encodes as [`REFUSED`].
#[cfg(feature = "nccl")]
pub(crate) const REFUSED_ROOT: usize = usize::MAX;

/// What one rank is about to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub collective: Collective,
    pub dtype: DType,
    pub dims: Vec<usize>,
    pub root: usize,
}

/// The collectives, with the names messages use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collective {
    AllReduceSum,
    AllReduceMean,
    Broadcast,
    AllGather,
    Barrier,
}

impl Collective {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Collective::AllReduceSum => "all_reduce(sum)",
            Collective::AllReduceMean => "all_reduce(mean)",
            Collective::Broadcast => "broadcast",
            Collective::AllGather => "all_gather",
            Collective::Barrier => "barrier",
        }
    }
    fn code(self) -> i64 {
        self as i64 + 1
    }
    fn from_code(code: i64) -> Option<Collective> {
        [
            Collective::AllReduceSum,
            Collective::AllReduceMean,
            Collective::Broadcast,
            Collective::AllGather,
            Collective::Barrier,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

fn dtype_code(d: DType) -> i64 {
    match d {
        DType::F32 => 1,
        DType::F64 => 2,
        DType::I64 => 3,
        DType::BF16 => 4,
        DType::F16 => 5,
    }
}

fn dtype_from_code(code: i64) -> Option<DType> {
    [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16].into_iter().find(|d| dtype_code(*d) == code)
}

/// FNV-1a over the dimensions: ranks above `MAX_DIMS` still compare every dimension.
fn dims_hash(dims: &[usize]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &d in dims {
        for b in (d as u64).to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h as i64
}

impl Header {
    fn encode(&self) -> Vec<i64> {
        let mut w = vec![0i64; WORDS];
        w[0] = self.collective.code();
        w[1] = dtype_code(self.dtype);
        w[2] = self.root as i64;
        w[3] = self.dims.len() as i64;
        w[4] = self.dims.iter().product::<usize>() as i64;
        w[5] = dims_hash(&self.dims);
        for (slot, &d) in w[6..].iter_mut().zip(&self.dims) {
            *slot = d as i64;
        }
        w
    }

    /// The collective, dtype and shape another rank announced, in words.
    fn describe(words: &[i64]) -> String {
        let collective = Collective::from_code(words[0]).map_or("an unknown collective", |c| c.name());
        let dtype = dtype_from_code(words[1]).map_or("an unknown dtype".to_string(), |d| d.to_string());
        let ndims = words[3].max(0) as usize;
        let shape = if ndims <= MAX_DIMS {
            let dims: Vec<usize> = words[6..6 + ndims].iter().map(|&d| d as usize).collect();
            Shape::from(dims).to_string()
        } else {
            format!("rank {ndims}, {} elements", words[4])
        };
        if words[2] == REFUSED {
            return format!(
                "{collective} of a {dtype} tensor of shape {shape}, which it refused (see its error: a tensor not on \
                 its GPU, or its NCCL communicator failed)"
            );
        }
        format!("{collective} of a {dtype} tensor of shape {shape} (root {})", words[2])
    }

    /// Gathers every rank's header through `gather` and checks that they agree with this
    /// one; the error names the first rank that differs and both descriptions.
    pub(crate) fn check_agreement(
        &self,
        rank: usize,
        gather: impl FnOnce(&HostBuffer) -> Result<HostBuffer>,
    ) -> Result<()> {
        let mine = self.encode();
        let all = match gather(&HostBuffer::I64(mine.clone()))? {
            HostBuffer::I64(v) if v.len() % WORDS == 0 => v,
            other => {
                return Err(Error::Backend {
                    backend: "header",
                    msg: format!("internal: gathered {} {} header words", other.len(), other.dtype()),
                })
            }
        };
        for (other_rank, words) in all.chunks(WORDS).enumerate() {
            // Headers are compared against rank 0's on every rank, so all ranks report the
            // same disagreement (and nobody proceeds into a collective the others skip).
            let reference = &all[..WORDS];
            if words != reference {
                let detail = format!(
                    "the ranks disagree: rank 0 called {}, rank {other_rank} called {} (this is rank {rank})",
                    Header::describe(reference),
                    Header::describe(words),
                );
                return Err(Error::Mismatch { rank, collective: self.collective.name(), detail });
            }
        }
        debug_assert_eq!(&all[rank * WORDS..(rank + 1) * WORDS], &mine[..]);
        Ok(())
    }
}
