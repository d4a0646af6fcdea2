//! Sharding an epoch across data-parallel ranks, as PyTorch's `DistributedSampler`:
//! every rank draws the same epoch permutation from `(seed, epoch)` and takes every
//! `world_size`-th position starting at its rank.

use crate::error::{DataError, Result};

/// One rank's share of each epoch: rank `rank` of `world_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    rank: usize,
    world_size: usize,
}

impl Shard {
    /// Rank `rank` of `world_size` ranks. Fails when the world is empty or the rank is
    /// outside it.
    pub fn new(rank: usize, world_size: usize) -> Result<Shard> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::InvalidArgument(format!(
                "shard: rank {rank} is not in a world of {world_size} ranks (ranks are 0..world_size)"
            )));
        }
        Ok(Shard { rank, world_size })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Examples each rank visits per epoch when the epoch has `n`: `ceil(n / world)`, or
    /// `floor(n / world)` with `drop_last` (the same on every rank, so every rank makes
    /// the same number of batches and calls the same collectives).
    pub fn len(&self, n: usize, drop_last: bool) -> usize {
        if drop_last {
            n / self.world_size
        } else {
            n.div_ceil(self.world_size)
        }
    }

    /// Whether this rank's share of an epoch of `n` examples is empty.
    pub fn is_empty(&self, n: usize, drop_last: bool) -> bool {
        self.len(n, drop_last) == 0
    }

    /// This rank's examples, in order, from an epoch's `order` (a permutation that every
    /// rank computes alike). The shards of all ranks are disjoint and, without
    /// `drop_last`, cover the epoch: when `world` does not divide `n`, the order is padded
    /// with its own first `world - n % world` entries (which those examples' second
    /// visits), so every shard has the same length; with `drop_last` the last `n % world`
    /// entries of the order are left out instead.
    pub fn select(&self, order: &[usize]) -> Vec<usize> {
        self.select_with(order, false)
    }

    /// [`select`](Self::select) with `drop_last`.
    pub fn select_with(&self, order: &[usize], drop_last: bool) -> Vec<usize> {
        let per_rank = self.len(order.len(), drop_last);
        (0..per_rank)
            .map(|k| {
                let position = k * self.world_size + self.rank;
                order[position % order.len()]
            })
            .collect()
    }
}
