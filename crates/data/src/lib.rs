//! tapegrad-data: the CIFAR-10/100 reader and downloader, and the input pipeline.
//!
//! - [`load_cifar`] reads the official binary files (images NHWC, fine or coarse labels)
//!   from a directory holding them or holding the extracted archive's folder.
//! - [`ensure_cifar`] / [`fetch_archive`] download an archive into a cache directory
//!   ([`default_cache_dir`]: `$TAPEGRAD_DATA` or `./data`), check its MD5 and extract it
//!   atomically.
//! - [`DataLoader`] makes [`Batch`]es: per-epoch seeded shuffling, batching, [`Augment`]
//!   (random crop with zero padding, horizontal flip), [`Scaling`] to `f32`, and
//!   prefetching on a background thread. Batch `b` of epoch `e` depends only on the seed,
//!   `e` and `b`.
//! - [`synthetic`] makes a learnable CIFAR-like dataset; [`write_synthetic_cifar`] writes
//!   one in the official layout, for tests.
//!
//! ```no_run
//! use tapegrad_data::{load_cifar, Augment, CifarKind, DataLoader, LabelKind, LoaderConfig, Split};
//! # fn main() -> tapegrad_data::Result<()> {
//! let train = load_cifar("data", CifarKind::Cifar100, Split::Train, LabelKind::Fine)?;
//! let loader = DataLoader::new(train, LoaderConfig::new(64).shuffle(42).augment(Augment::standard()))?;
//! for epoch in 0..20 {
//!     for batch in loader.epoch(epoch)? {
//!         let (x, y) = batch.to_tensors(&tapegrad_tensor::Device::Cpu)?;
//!         # let _ = (x, y);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod alloc;
mod augment;
mod batch;
mod cifar;
mod dataset;
mod download;
mod error;
mod manifest;
mod pipeline;
mod prefetch;
mod reader;
mod scaling;
mod shard;
mod shuffle;
mod synthetic;
mod writer;

pub use augment::{Augment, Transform};
pub use batch::Batch;
pub use cifar::{CifarKind, LabelKind, Split, CIFAR_CHANNELS, CIFAR_IMAGE_BYTES, CIFAR_SIDE};
pub use dataset::Dataset;
pub use download::{default_cache_dir, ensure_cifar, fetch_archive, manual_instructions, Archive, DATA_DIR_ENV};
pub use error::{DataError, Result};
pub use manifest::{write_manifest, MANIFEST_FILE};
pub use pipeline::{Batches, DataLoader, LoaderConfig};
pub use reader::{find_cifar_dir, load_cifar, read_cifar_file, record_count_warning};
pub use scaling::Scaling;
pub use shard::Shard;
pub use shuffle::epoch_permutation;
pub use synthetic::synthetic;
pub use writer::{encode_cifar, write_synthetic_cifar};
