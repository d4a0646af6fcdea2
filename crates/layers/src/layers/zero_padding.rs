//! [`ZeroPadding2D`]: zero rows and columns around NHWC images.

use super::borders::IntoBorders;
use super::nhwc::check_image_input;
use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Layer, Mode, Result};
use tapegrad_tensor::{PadMode, Tensor};

/// Pads NHWC images with zeros (Keras' `layers.ZeroPadding2D`): `padding` is one number,
/// `(rows, columns)` or `((top, bottom), (left, right))`; Keras' default is 1.
///
/// ```
/// use tapegrad_layers::{Layer, Mode, ZeroPadding2D};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let pad = ZeroPadding2D::new(((1, 2), (0, 3)));
/// let y = pad.call(&Tensor::ones([2, 4, 4, 3], DType::F32, &Device::Cpu)?, Mode::Infer)?;
/// assert_eq!(y.dims(), &[2, 7, 7, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ZeroPadding2D {
    name: String,
    padding: ((usize, usize), (usize, usize)),
}

impl ZeroPadding2D {
    /// Padding of `padding` rows/columns (see the type's docs for the forms).
    pub fn new(padding: impl IntoBorders) -> Self {
        ZeroPadding2D { name: unique_name("zero_padding2d"), padding: padding.into_borders() }
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `((top, bottom), (left, right))`.
    pub fn padding(&self) -> ((usize, usize), (usize, usize)) {
        self.padding
    }
}

impl Default for ZeroPadding2D {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Layer for ZeroPadding2D {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        check_image_input(&self.name, input.shape(), None)?;
        let (rows, cols) = self.padding;
        input.pad(&[(0, 0), rows, cols, (0, 0)], PadMode::Constant(0.0)).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
