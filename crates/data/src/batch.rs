//! A batch of examples as plain host data, and its conversion to tensors.

use crate::error::Result;
use tapegrad_tensor::{Device, Tensor};

/// A batch: `f32` images in NHWC order and `i64` labels, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The images, NHWC: `len() * height * width * channels` values, scaled and augmented.
    pub images: Vec<f32>,
    /// One label per image, in `0..num_classes`.
    pub labels: Vec<i64>,
    /// The dataset index of each image, in batch order.
    pub indices: Vec<usize>,
    /// The shape `[height, width, channels]` of one image.
    pub image_shape: [usize; 3],
}

impl Batch {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The NHWC shape of [`Batch::images`]: `[n, height, width, channels]`.
    pub fn shape(&self) -> [usize; 4] {
        let [h, w, c] = self.image_shape;
        [self.len(), h, w, c]
    }

    /// The images as an `f32` tensor of shape `[n, height, width, channels]` and the
    /// labels as an `i64` tensor of shape `[n]`, on `device`.
    ///
    /// Fails when the device cannot hold them (e.g. no CUDA driver).
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let images = Tensor::from_slice(&self.images, self.shape().to_vec(), device)?;
        let labels = Tensor::from_slice(&self.labels, vec![self.len()], device)?;
        Ok((images, labels))
    }

    /// Like [`Batch::to_tensors`], but moves the data instead of copying it on the host.
    ///
    /// Fails as [`Batch::to_tensors`] does.
    pub fn into_tensors(self, device: &Device) -> Result<(Tensor, Tensor)> {
        let shape = self.shape().to_vec();
        let n = self.len();
        let images = Tensor::from_vec(self.images, shape, device)?;
        let labels = Tensor::from_vec(self.labels, vec![n], device)?;
        Ok((images, labels))
    }
}
