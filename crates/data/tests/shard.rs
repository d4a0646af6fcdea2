//! Sharded epochs (PyTorch's DistributedSampler): disjoint shards that cover the epoch,
//! the same batch count on every rank, deterministic from (seed, epoch, rank, world size),
//! and a loader made again (a resumed run) gives the same batches.

use std::collections::BTreeSet;
use tapegrad_data::{epoch_permutation, Augment, DataLoader, Dataset, LoaderConfig, Shard};

/// A tiny dataset whose label is the example's index, so batches show which examples
/// they hold.
fn indexed(n: usize) -> Dataset {
    Dataset::new(vec![0u8; n * 4 * 4 * 3], (0..n as i64).collect(), [4, 4, 3], n.max(1)).unwrap()
}

fn shard_indices(n: usize, seed: u64, epoch: u64, world: usize, batch: usize, drop_last: bool) -> Vec<Vec<usize>> {
    let data = std::sync::Arc::new(indexed(n));
    (0..world)
        .map(|rank| {
            let config = LoaderConfig::new(batch)
                .shuffle(seed)
                .drop_last(drop_last)
                .prefetch(0)
                .shard(Shard::new(rank, world).unwrap());
            let loader = DataLoader::new(data.clone(), config).unwrap();
            let batches: Vec<_> = loader.epoch(epoch).unwrap().collect();
            assert_eq!(batches.len(), loader.num_batches());
            batches.into_iter().flat_map(|b| b.indices).collect()
        })
        .collect()
}

#[test]
fn shards_are_disjoint_and_cover_the_epoch() {
    for world in [1, 2, 3, 4] {
        let shards = shard_indices(24, 7, 3, world, 5, false);
        let mut all = BTreeSet::new();
        for s in &shards {
            assert_eq!(s.len(), 24 / world);
            for &i in s {
                assert!(all.insert(i), "example {i} is in two shards (world {world})");
            }
        }
        assert_eq!(all, (0..24).collect());
    }
}

#[test]
fn uneven_epochs_pad_with_the_first_examples_or_drop_the_tail() {
    // 10 examples on 3 ranks: shards of 4, the order's first two examples visited twice.
    let order = epoch_permutation(10, 5, 0);
    let shards = shard_indices(10, 5, 0, 3, 4, false);
    let counts: Vec<usize> = shards.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![4, 4, 4]);
    let mut seen: Vec<usize> = shards.concat();
    seen.sort();
    let mut expected: Vec<usize> = (0..10).chain(order[..2].iter().copied()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    // Strided like DistributedSampler: rank r takes positions r, r + 3, ...
    assert_eq!(shards[1], vec![order[1], order[4], order[7], order[0]]);
    // drop_last: shards of 3, the order's last example left out, whole batches only.
    let dropped = shard_indices(10, 5, 0, 3, 2, true);
    let mut seen: Vec<usize> = dropped.concat();
    assert!(dropped.iter().all(|s| s.len() == 2));
    seen.sort();
    let kept: BTreeSet<usize> = order[..9].iter().copied().collect();
    assert!(seen.iter().all(|i| kept.contains(i)) && seen.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn deterministic_from_seed_epoch_rank_world_and_resumes_exactly() {
    let a = shard_indices(50, 11, 2, 2, 8, false);
    assert_eq!(a, shard_indices(50, 11, 2, 2, 8, false));
    assert_ne!(a, shard_indices(50, 11, 3, 2, 8, false), "epochs must differ");
    assert_ne!(a, shard_indices(50, 12, 2, 2, 8, false), "seeds must differ");
    // Resuming at batch 3 of epoch 2 with a fresh loader (another process) gives the
    // batches an uninterrupted run saw, augmentations included.
    let data = std::sync::Arc::new(indexed(50));
    let config = LoaderConfig::new(8).shuffle(11).augment(Augment::standard()).shard(Shard::new(1, 2).unwrap());
    let first: Vec<_> = DataLoader::new(data.clone(), config.clone()).unwrap().epoch(2).unwrap().collect();
    let resumed: Vec<_> = DataLoader::new(data, config.prefetch(0)).unwrap().epoch(2).unwrap().skip(3).collect();
    assert_eq!(&first[3..], &resumed[..]);
}

#[test]
fn ranks_differ_and_a_world_of_one_is_the_plain_loader() {
    let data = std::sync::Arc::new(
        Dataset::new((0..8 * 48).map(|i| (i % 251) as u8).collect(), vec![0; 8], [4, 4, 3], 1).unwrap(),
    );
    let batch = |rank| {
        let config = LoaderConfig::new(4).augment(Augment::standard()).prefetch(0).shard(Shard::new(rank, 2).unwrap());
        DataLoader::new(data.clone(), config).unwrap().epoch(0).unwrap().next().unwrap()
    };
    let (a, b) = (batch(0), batch(1));
    assert_ne!(a.indices, b.indices);
    // Unsharded (world 1) batches are the ones the loader always made.
    let plain = DataLoader::new(data.clone(), LoaderConfig::new(4).augment(Augment::standard()).prefetch(0)).unwrap();
    let single = DataLoader::new(
        data.clone(),
        LoaderConfig::new(4).augment(Augment::standard()).prefetch(0).shard(Shard::new(0, 1).unwrap()),
    )
    .unwrap();
    assert_eq!(plain.epoch(1).unwrap().collect::<Vec<_>>(), single.epoch(1).unwrap().collect::<Vec<_>>());
}

#[test]
fn bad_shards_are_errors() {
    assert!(Shard::new(2, 2).unwrap_err().to_string().contains("rank 2"));
    assert!(Shard::new(0, 0).unwrap_err().to_string().contains("world of 0"));
}
