//! [`UpSampling2D`]: repeats or interpolates NHWC images by integer factors.

use super::nhwc::check_image_input;
use super::pair::IntoPair;
use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::{Interpolation, Tensor};

/// Upsamples NHWC images by integer factors (Keras' `layers.UpSampling2D`): `size` is one
/// number or `(rows, columns)` (Keras' default 2), `interpolation` nearest (Keras' default)
/// or bilinear with TF's half-pixel centres (PyTorch's `align_corners=False`).
///
/// ```
/// use tapegrad_layers::{Interpolation, Layer, Mode, UpSampling2D};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let up = UpSampling2D::new(2).interpolation(Interpolation::Bilinear);
/// let y = up.call(&Tensor::ones([2, 8, 8, 3], DType::F32, &Device::Cpu)?, Mode::Infer)?;
/// assert_eq!(y.dims(), &[2, 16, 16, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct UpSampling2D {
    name: String,
    size: (usize, usize),
    interpolation: Interpolation,
}

impl UpSampling2D {
    /// Upsampling by `size` (one number or `(rows, columns)`), nearest-neighbour.
    pub fn new(size: impl IntoPair) -> Self {
        UpSampling2D {
            name: unique_name("up_sampling2d"),
            size: size.into_pair(),
            interpolation: Interpolation::Nearest,
        }
    }

    /// Nearest (default) or bilinear.
    pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The factors (rows, columns).
    pub fn size(&self) -> (usize, usize) {
        self.size
    }
}

impl Default for UpSampling2D {
    fn default() -> Self {
        Self::new(2)
    }
}

impl Layer for UpSampling2D {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        if self.size.0 == 0 || self.size.1 == 0 {
            return Err(Error::layer(
                &self.name,
                format!("size must be at least 1 along each axis, got {:?}", self.size),
            ));
        }
        check_image_input(&self.name, input.shape(), None)?;
        input.resize(self.size, self.interpolation).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
