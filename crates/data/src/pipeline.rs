//! The input pipeline: per-epoch shuffling, batching, augmentation, scaling and
//! prefetching over a [`Dataset`].

use crate::augment::Augment;
use crate::batch::Batch;
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::prefetch::Prefetcher;
use crate::scaling::{map_pixels, Scaling};
use crate::shard::Shard;
use crate::shuffle::{epoch_permutation, rng_for, STREAM_AUGMENT};
use std::sync::Arc;

/// How a [`DataLoader`] makes batches. Build it with [`LoaderConfig::new`] and the
/// chained setters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (at least 1).
    pub batch_size: usize,
    /// Whether each epoch visits the examples in a fresh random order.
    pub shuffle: bool,
    /// The seed of the shuffles and augmentations: the same seed gives the same batches.
    pub seed: u64,
    /// Whether to drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// How pixels become `f32` values.
    pub scaling: Scaling,
    /// Which augmentations to apply.
    pub augment: Augment,
    /// How many batches a background thread prepares ahead; 0 makes batches on the
    /// caller's thread.
    pub prefetch: usize,
    /// The data-parallel rank's share of each epoch (`None`: the whole epoch). With
    /// `drop_last`, the epoch's last `n % world_size` examples are left out too.
    pub shard: Option<Shard>,
}

impl LoaderConfig {
    /// Batches of `batch_size` in dataset order, the last partial batch kept, the seed's
    /// [-1, 1] scaling, no augmentation, 2 batches prefetched.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            scaling: Scaling::Symmetric,
            augment: Augment::default(),
            prefetch: 2,
            shard: None,
        }
    }

    /// Shuffles every epoch with `seed` (which also seeds the augmentations).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Sets the seed without turning shuffling on (it still seeds the augmentations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Drops (`true`) or keeps (`false`) the last partial batch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the pixel scaling.
    pub fn scaling(mut self, scaling: Scaling) -> Self {
        self.scaling = scaling;
        self
    }

    /// Sets the augmentation.
    pub fn augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Makes only `shard`'s batches: its share of each epoch's permutation, which every
    /// rank draws alike from the seed and the epoch (see [`Shard::select_with`]). Every
    /// rank gets the same number of batches; augmentations differ between ranks.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Prefetches `depth` batches on a background thread (0: none).
    pub fn prefetch(mut self, depth: usize) -> Self {
        self.prefetch = depth;
        self
    }
}

/// Makes the batches of a dataset, epoch after epoch. Batch `b` of epoch `e` depends
/// only on the dataset, the configuration, `e` and `b`: the same with or without
/// prefetching, on any thread.
#[derive(Debug, Clone)]
pub struct DataLoader {
    plan: Arc<Plan>,
}

/// What every epoch shares: the data, the configuration and the scaling tables.
#[derive(Debug)]
struct Plan {
    data: Arc<Dataset>,
    config: LoaderConfig,
    tables: Vec<[f32; 256]>,
}

impl Plan {
    /// The examples one epoch visits on this rank.
    fn examples_per_epoch(&self) -> usize {
        let n = self.data.len();
        self.config.shard.map_or(n, |s| s.len(n, self.config.drop_last))
    }
}

impl DataLoader {
    /// A loader over `dataset` (owned or shared through an `Arc`).
    ///
    /// Fails when the batch size is zero or the scaling does not fit the images'
    /// channels (see [`Scaling::tables`]).
    pub fn new(dataset: impl Into<Arc<Dataset>>, config: LoaderConfig) -> Result<Self> {
        let data = dataset.into();
        if config.batch_size == 0 {
            return Err(DataError::InvalidArgument("data loader: batch size must be at least 1".into()));
        }
        let tables = config.scaling.tables(data.image_shape()[2])?;
        Ok(Self { plan: Arc::new(Plan { data, config, tables }) })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.plan.data
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.plan.config
    }

    /// The number of batches in one epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.plan.examples_per_epoch(), self.plan.config.batch_size);
        if self.plan.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The batches of epoch `epoch` (from 0), prefetched on a background thread when the
    /// configuration asks for it. Dropping the iterator stops that thread.
    ///
    /// Fails when the prefetching thread cannot be started.
    pub fn epoch(&self, epoch: u64) -> Result<Batches> {
        let producer = EpochBatches::new(self.plan.clone(), epoch);
        let remaining = producer.len();
        let source = match self.plan.config.prefetch {
            0 => Source::Inline(producer),
            depth => Source::Prefetch(Prefetcher::spawn(producer, depth)?),
        };
        Ok(Batches { source, remaining })
    }
}

/// The batches of one epoch, made in order on the calling thread.
#[derive(Debug)]
pub(crate) struct EpochBatches {
    plan: Arc<Plan>,
    epoch: u64,
    order: Vec<usize>,
    next: usize,
    count: usize,
}

impl EpochBatches {
    fn new(plan: Arc<Plan>, epoch: u64) -> Self {
        let n = plan.data.len();
        let order = if plan.config.shuffle { epoch_permutation(n, plan.config.seed, epoch) } else { (0..n).collect() };
        let order = match plan.config.shard {
            Some(shard) => shard.select_with(&order, plan.config.drop_last),
            None => order,
        };
        let n = order.len();
        let b = plan.config.batch_size;
        let count = if plan.config.drop_last { n / b } else { n.div_ceil(b) };
        Self { plan, epoch, order, next: 0, count }
    }

    /// Makes batch `index` of the epoch (which must be below `count`).
    fn make(&self, index: usize) -> Batch {
        let Plan { data, config, tables } = &*self.plan;
        let start = index * config.batch_size;
        let end = (start + config.batch_size).min(self.order.len());
        let indices = self.order[start..end].to_vec();
        let shape = data.image_shape();
        let image_len = data.image_len();
        let mut images = Vec::with_capacity(indices.len() * image_len);
        let mut labels = Vec::with_capacity(indices.len());
        // Batch `index` of rank r is the epoch's global batch `index * world + r`: ranks
        // draw different augmentations, and one rank draws what it always did.
        let global = config.shard.map_or(index, |s| index * s.world_size() + s.rank());
        let mut rng = rng_for(config.seed, STREAM_AUGMENT, self.epoch, global as u64);
        let mut scratch = vec![0u8; image_len];
        for &i in &indices {
            let pixels = &data.images()[i * image_len..(i + 1) * image_len];
            if config.augment.is_identity() {
                map_pixels(pixels, tables, &mut images);
            } else {
                // Dataset::new checked that every image holds image_len bytes.
                config.augment.draw(&mut rng).write(pixels, shape, &mut scratch);
                map_pixels(&scratch, tables, &mut images);
            }
            labels.push(data.labels()[i]);
        }
        Batch { images, labels, indices, image_shape: shape }
    }
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.count {
            return None;
        }
        let batch = self.make(self.next);
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

#[derive(Debug)]
enum Source {
    Inline(EpochBatches),
    Prefetch(Prefetcher),
}

/// The batches of one epoch, from [`DataLoader::epoch`].
#[derive(Debug)]
pub struct Batches {
    source: Source,
    remaining: usize,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = match &mut self.source {
            Source::Inline(producer) => producer.next(),
            Source::Prefetch(prefetcher) => prefetcher.next(),
        };
        if batch.is_some() {
            self.remaining -= 1;
        }
        batch
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}
