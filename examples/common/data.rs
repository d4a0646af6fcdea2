//! Training and test batches as tensors: CIFAR files or generated images through the data
//! crate's loader, with one label per image (classification) or per pixel (segmentation).

use super::cli::CommonArgs;
use super::segmentation::SegmentationSet;
use super::AnyResult;
use tapegrad::data::{self, CifarKind, DataLoader, Dataset, LabelKind, LoaderConfig, Split};
use tapegrad::layers::training::{BatchIter, DataSource};
use tapegrad::{Device, Tensor};

/// One side of a task (training or test): a loader of images and, for segmentation, the
/// per-pixel class of every image.
pub struct Batches {
    loader: DataLoader,
    /// Per-pixel classes, `height * width` per image in dataset order; `None` when the
    /// dataset's labels (one per image) are the targets.
    masks: Option<Vec<u8>>,
    num_classes: usize,
}

impl Batches {
    /// Image classification: the dataset's labels are the targets.
    pub fn classification(dataset: Dataset, batch_size: usize, shuffle: Option<u64>) -> AnyResult<Self> {
        let num_classes = dataset.num_classes();
        Ok(Batches { loader: loader(dataset, batch_size, shuffle)?, masks: None, num_classes })
    }

    /// Segmentation: the targets are the masks. No augmentation is applied (a flip or crop
    /// of the image would need the same of its mask); the loader still shuffles, scales and
    /// prefetches, and its batches name the images they hold, which picks their masks.
    pub fn segmentation(set: SegmentationSet, batch_size: usize, shuffle: Option<u64>) -> AnyResult<Self> {
        let num_classes = set.num_classes();
        let (images, masks) = set.into_parts();
        Ok(Batches { loader: loader(images, batch_size, shuffle)?, masks: Some(masks), num_classes })
    }

    /// `[height, width, channels]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        self.loader.dataset().image_shape()
    }

    /// Whether the targets are per pixel.
    pub fn is_segmentation(&self) -> bool {
        self.masks.is_some()
    }

    /// The number of target classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
}

/// The batches of an epoch as `(images [b, h, w, c] f32, targets i64)`: targets `[b]` for
/// classification, `[b, h, w]` for segmentation; what `Trainer::fit` reads.
impl DataSource for Batches {
    fn num_batches(&self) -> usize {
        self.loader.num_batches()
    }

    fn batches(&self, epoch: u64, device: &Device) -> tapegrad::layers::Result<BatchIter<'_>> {
        let [h, w, _] = self.image_shape();
        let device = *device;
        Ok(Box::new(self.loader.epoch(epoch)?.map(move |batch| {
            let n = batch.len();
            match &self.masks {
                None => Ok(batch.into_tensors(&device)?),
                Some(masks) => {
                    let mut targets = Vec::with_capacity(n * h * w);
                    for &i in &batch.indices {
                        targets.extend(masks[i * h * w..(i + 1) * h * w].iter().map(|&c| c as i64));
                    }
                    let images = Tensor::from_vec(batch.images, [n, h, w, batch.image_shape[2]], &device)?;
                    Ok((images, Tensor::from_vec(targets, [n, h, w], &device)?))
                }
            }
        })))
    }
}

fn loader(dataset: Dataset, batch_size: usize, shuffle: Option<u64>) -> AnyResult<DataLoader> {
    let config = LoaderConfig::new(batch_size);
    let config = match shuffle {
        Some(seed) => config.shuffle(seed),
        None => config,
    };
    Ok(DataLoader::new(dataset, config)?)
}

/// The classification task of `--synthetic N` (N generated images, a fifth as many for the
/// test) or of the CIFAR files in `--data-dir`.
pub fn classification(args: &CommonArgs) -> AnyResult<(Batches, Batches)> {
    let classes = args.dataset.classes();
    let (train, test) = match (args.synthetic, &args.data_dir) {
        (Some(n), _) => {
            let test_n = (n / 5).max(args.batch_size.min(n));
            (data::synthetic(n, classes, args.seed)?, data::synthetic(test_n, classes, args.seed + 1)?)
        }
        (None, Some(_)) => (cifar(args, Split::Train)?, cifar(args, Split::Test)?),
        (None, None) => return Err("pass --data-dir DIR (CIFAR files) or --synthetic N (generated images)".into()),
    };
    Ok((
        Batches::classification(train, args.batch_size, Some(args.seed))?,
        Batches::classification(test, args.batch_size, None)?,
    ))
}

/// One split of the CIFAR dataset in `--data-dir` (fine labels for CIFAR-100).
pub fn cifar(args: &CommonArgs, split: Split) -> AnyResult<Dataset> {
    let dir = args.data_dir.as_ref().ok_or("no --data-dir given")?;
    let kind = match args.dataset {
        super::cli::DatasetKind::Cifar10 => CifarKind::Cifar10,
        super::cli::DatasetKind::Cifar100 => CifarKind::Cifar100,
    };
    data::load_cifar(dir, kind, split, LabelKind::Fine).map_err(|e| {
        format!("{e}\n(pass --data-dir DIR with the CIFAR files, or --synthetic N to train without them)").into()
    })
}
