//! An in-memory image classification dataset: `u8` pixels in NHWC order and `i64` labels.

use crate::error::{DataError, Result};
use std::path::PathBuf;

/// Images as `u8` pixels in NHWC order (`[n, height, width, channels]`, row-major) with
/// one `i64` label in `0..num_classes` per image.
///
/// Pixels stay `u8` (a quarter of the memory of `f32`); the pipeline scales them to
/// `f32` batch by batch (see [`crate::Scaling`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<i64>,
    image_shape: [usize; 3],
    num_classes: usize,
}

impl Dataset {
    /// A dataset from NHWC pixels, labels, the shape `[height, width, channels]` of one
    /// image and the number of classes.
    ///
    /// Fails when the pixel count is not `labels.len() * height * width * channels`,
    /// when a dimension or `num_classes` is zero, or when a label is outside
    /// `0..num_classes` (the error names the record).
    pub fn new(images: Vec<u8>, labels: Vec<i64>, image_shape: [usize; 3], num_classes: usize) -> Result<Self> {
        if image_shape.contains(&0) {
            return Err(DataError::InvalidArgument(format!(
                "dataset: image shape {image_shape:?} has a zero dimension"
            )));
        }
        if num_classes == 0 {
            return Err(DataError::InvalidArgument("dataset: num_classes must be at least 1".into()));
        }
        let per_image: usize = image_shape.iter().product();
        if labels.len().checked_mul(per_image) != Some(images.len()) {
            return Err(DataError::InvalidArgument(format!(
                "dataset: {} pixel bytes do not hold {} images of shape {image_shape:?} ({per_image} bytes each)",
                images.len(),
                labels.len()
            )));
        }
        check_labels(&labels, num_classes, "in-memory dataset", "class")?;
        Ok(Self { images, labels, image_shape, num_classes })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape `[height, width, channels]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// The number of bytes of one image (`height * width * channels`).
    pub fn image_len(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// The number of classes; every label is in `0..num_classes`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All pixels, NHWC.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The pixels (HWC) of image `index`, or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let n = self.image_len();
        self.images.get(index * n..(index + 1) * n)
    }

    /// The label of image `index`, or `None` past the end.
    pub fn label(&self, index: usize) -> Option<i64> {
        self.labels.get(index).copied()
    }

    /// The first `n` images (all of them when `n >= len()`), e.g. for a quick run.
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * self.image_len());
        self.labels.truncate(n);
        self
    }

    /// The pixels and labels, consuming the dataset.
    pub fn into_parts(self) -> (Vec<u8>, Vec<i64>) {
        (self.images, self.labels)
    }
}

/// Checks that every label is in `0..num_classes`; the error names `source` and the record.
pub(crate) fn check_labels(labels: &[i64], num_classes: usize, source: &str, which: &'static str) -> Result<()> {
    match labels.iter().position(|&l| l < 0 || l as u64 >= num_classes as u64) {
        None => Ok(()),
        Some(record) => Err(DataError::LabelOutOfRange {
            path: PathBuf::from(source),
            record,
            which,
            label: labels[record],
            num_classes,
        }),
    }
}
