//! [`Cropping2D`]: removes rows and columns at the borders of NHWC images.

use super::borders::IntoBorders;
use super::nhwc::check_image_input;
use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Error, Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// Crops NHWC images (Keras' `layers.Cropping2D`): `cropping` is one number,
/// `(rows, columns)` or `((top, bottom), (left, right))`. Cropping an axis to nothing or
/// less is an error naming the layer, the cropping and the input's shape.
///
/// ```
/// use tapegrad_layers::{Cropping2D, Layer, Mode};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let crop = Cropping2D::new(((1, 2), (0, 3)));
/// let y = crop.call(&Tensor::ones([2, 8, 8, 3], DType::F32, &Device::Cpu)?, Mode::Infer)?;
/// assert_eq!(y.dims(), &[2, 5, 5, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Cropping2D {
    name: String,
    cropping: ((usize, usize), (usize, usize)),
}

impl Cropping2D {
    /// Cropping of `cropping` rows/columns (see the type's docs for the forms).
    pub fn new(cropping: impl IntoBorders) -> Self {
        Cropping2D { name: unique_name("cropping2d"), cropping: cropping.into_borders() }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `((top, bottom), (left, right))`.
    pub fn cropping(&self) -> ((usize, usize), (usize, usize)) {
        self.cropping
    }
}

impl Layer for Cropping2D {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        check_image_input(&self.name, input.shape(), None)?;
        let ((top, bottom), (left, right)) = self.cropping;
        let (h, w) = (input.dims()[1], input.dims()[2]);
        // Checked sums: a cropping near usize::MAX is this error, not an overflow.
        let leaves_nothing = |a: usize, b: usize, size: usize| a.checked_add(b).is_none_or(|sum| sum >= size);
        if leaves_nothing(top, bottom, h) || leaves_nothing(left, right, w) {
            return Err(Error::layer(
                &self.name,
                format!(
                    "cropping {:?} leaves nothing of an input of shape {} (height {h}, width {w})",
                    self.cropping,
                    input.shape()
                ),
            ));
        }
        let y = input
            .narrow(1, top, h - top - bottom)
            .and_then(|y| y.narrow(2, left, w - left - right))
            .in_layer(&self.name)?;
        Ok(y)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
