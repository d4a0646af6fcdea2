//! What `fit`, `evaluate` and `predict` read: any [`DataSource`] of `(inputs, targets)`
//! batches. The data crate's [`DataLoader`] is one; [`TensorDataset`] holds tensors in
//! memory; a program with targets of its own (segmentation masks) implements the trait.

use crate::{Error, Result};
use tapegrad_data::{epoch_permutation, Augment, DataLoader, Dataset};
use tapegrad_tensor::{Device, Tensor};

/// The batches of one epoch: `(inputs, targets)` on the device asked for.
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a>;

/// A source of `(inputs, targets)` batches, epoch after epoch.
///
/// `batches(epoch, device)` must give the same batches for the same epoch (the shuffle and
/// augmentation of an epoch are functions of its index), so that `fit` with
/// `initial_epoch` resumes an interrupted run on the batches it would have seen.
pub trait DataSource {
    /// The number of batches in one epoch.
    fn num_batches(&self) -> usize;

    /// The batches of epoch `epoch` (from 0) on `device`.
    fn batches(&self, epoch: u64, device: &Device) -> Result<BatchIter<'_>>;

    /// Splits off the last `fraction` of the examples for validation (Keras'
    /// `validation_split`: taken before any shuffling, so the two parts are disjoint and
    /// the same at every epoch). Returns `(training, validation)`. The default fails:
    /// only in-memory sources can be split.
    fn split(&self, fraction: f64) -> Result<(Box<dyn DataSource>, Box<dyn DataSource>)> {
        let _ = fraction;
        Err(Error::Invalid(
            "fit: validation_split needs an in-memory dataset (a DataLoader or a TensorDataset); \
             pass validation_data instead"
                .into(),
        ))
    }
}

impl<T: DataSource + ?Sized> DataSource for &T {
    fn num_batches(&self) -> usize {
        (**self).num_batches()
    }

    fn batches(&self, epoch: u64, device: &Device) -> Result<BatchIter<'_>> {
        (**self).batches(epoch, device)
    }

    fn split(&self, fraction: f64) -> Result<(Box<dyn DataSource>, Box<dyn DataSource>)> {
        (**self).split(fraction)
    }
}

/// Checks a `validation_split` fraction and returns the number of examples held out of
/// `n`: at least one, and at least one left for training.
pub(crate) fn held_out(fraction: f64, n: usize) -> Result<usize> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Invalid(format!("fit: validation_split must be in (0, 1), got {fraction}")));
    }
    let held = ((n as f64) * fraction).floor() as usize;
    if held == 0 || held >= n {
        return Err(Error::Invalid(format!(
            "fit: validation_split {fraction} of {n} examples leaves {held} for validation and {} for training; \
             both need at least one",
            n - held.min(n)
        )));
    }
    Ok(held)
}

/// Images and labels from the data crate's loader; the labels become `i64` `[n]`
/// targets.
impl DataSource for DataLoader {
    fn num_batches(&self) -> usize {
        DataLoader::num_batches(self)
    }

    fn batches(&self, epoch: u64, device: &Device) -> Result<BatchIter<'_>> {
        let device = *device;
        Ok(Box::new(self.epoch(epoch)?.map(move |batch| Ok(batch.into_tensors(&device)?))))
    }

    /// The first `1 - fraction` of the dataset keeps this loader's configuration; the last
    /// `fraction` is read in order, without augmentation, at the same batch size and scaling.
    fn split(&self, fraction: f64) -> Result<(Box<dyn DataSource>, Box<dyn DataSource>)> {
        let (train, val) = split_loader(self, fraction)?;
        Ok((Box::new(train), Box::new(val)))
    }
}

/// Splits a loader's dataset into its first `1 - fraction` (with the loader's
/// configuration) and its last `fraction` (in order, no augmentation), as `fit`'s
/// `validation_split` does.
pub fn split_loader(loader: &DataLoader, fraction: f64) -> Result<(DataLoader, DataLoader)> {
    let data = loader.dataset();
    let held = held_out(fraction, data.len())?;
    let cut = data.len() - held;
    let part = |range: std::ops::Range<usize>| -> Result<Dataset> {
        let len = data.image_len();
        Ok(Dataset::new(
            data.images()[range.start * len..range.end * len].to_vec(),
            data.labels()[range.clone()].to_vec(),
            data.image_shape(),
            data.num_classes(),
        )?)
    };
    let config = loader.config().clone();
    let mut val_config = config.clone();
    val_config.shuffle = false;
    val_config.augment = Augment::default();
    Ok((DataLoader::new(part(0..cut)?, config)?, DataLoader::new(part(cut..data.len())?, val_config)?))
}

/// Inputs and targets held as tensors (the first axis indexes the examples), cut into
/// batches, optionally shuffled every epoch with a seed (the data crate's permutation, so
/// the same seed gives the same order). The tensors may live anywhere; batches are moved
/// to the device `fit` asks for.
#[derive(Clone, Debug)]
pub struct TensorDataset {
    inputs: Tensor,
    targets: Tensor,
    batch_size: usize,
    shuffle: Option<u64>,
}

impl TensorDataset {
    /// Batches of `batch_size` examples in order (the last one may be smaller). Fails when
    /// the batch size is 0, when either tensor is a scalar, or when the two tensors hold
    /// different numbers of examples.
    pub fn new(inputs: Tensor, targets: Tensor, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Invalid("TensorDataset: batch_size must be at least 1, got 0".into()));
        }
        let (n, m) = (inputs.dims().first().copied(), targets.dims().first().copied());
        if n.is_none() || n != m {
            return Err(Error::Invalid(format!(
                "TensorDataset: inputs {} and targets {} must have the same first (example) axis",
                inputs.shape(),
                targets.shape()
            )));
        }
        Ok(TensorDataset { inputs, targets, batch_size, shuffle: None })
    }

    /// Visits the examples in a new order every epoch, drawn from `seed` and the epoch.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.inputs.dims()[0]
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs.
    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    /// The targets.
    pub fn targets(&self) -> &Tensor {
        &self.targets
    }

    fn rows(t: &Tensor, rows: &[usize]) -> Result<Tensor> {
        let picked: Vec<Tensor> = rows.iter().map(|&i| t.narrow(0, i, 1)).collect::<tapegrad_tensor::Result<_>>()?;
        let refs: Vec<&Tensor> = picked.iter().collect();
        Ok(Tensor::concat(&refs, 0)?)
    }

    fn batch(&self, order: Option<&[usize]>, index: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let start = index * self.batch_size;
        let len = self.batch_size.min(self.len() - start);
        let (x, y) = match order {
            None => (self.inputs.narrow(0, start, len)?, self.targets.narrow(0, start, len)?),
            Some(order) => {
                let rows = &order[start..start + len];
                (Self::rows(&self.inputs, rows)?, Self::rows(&self.targets, rows)?)
            }
        };
        Ok((x.to_device(device)?, y.to_device(device)?))
    }
}

impl DataSource for TensorDataset {
    fn num_batches(&self) -> usize {
        self.len().div_ceil(self.batch_size)
    }

    fn batches(&self, epoch: u64, device: &Device) -> Result<BatchIter<'_>> {
        let order = self.shuffle.map(|seed| epoch_permutation(self.len(), seed, epoch));
        let device = *device;
        Ok(Box::new((0..self.num_batches()).map(move |i| self.batch(order.as_deref(), i, &device))))
    }

    /// The first `1 - fraction` of the examples (shuffled as this dataset is) and the last
    /// `fraction` (in order).
    fn split(&self, fraction: f64) -> Result<(Box<dyn DataSource>, Box<dyn DataSource>)> {
        let n = self.len();
        let held = held_out(fraction, n)?;
        let cut = n - held;
        let part = |start, len| -> Result<TensorDataset> {
            TensorDataset::new(self.inputs.narrow(0, start, len)?, self.targets.narrow(0, start, len)?, self.batch_size)
        };
        let mut train = part(0, cut)?;
        train.shuffle = self.shuffle;
        Ok((Box::new(train), Box::new(part(cut, held)?)))
    }
}
