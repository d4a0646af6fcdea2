//! [`ResizeSpec`]: the geometry of an integer-factor resize as the backends receive it, and
//! [`Interpolation`]. The op and its gradient rule are in `ops::resize`, which re-exports
//! both.

/// How [`Tensor::resize`](crate::Tensor::resize) computes a new pixel (Keras' `interpolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// The nearest input pixel: each pixel repeated `factor` times (Keras' default).
    #[default]
    Nearest,
    /// Linear along each axis between the two nearest input pixels, with half-pixel
    /// centres.
    Bilinear,
}

impl Interpolation {
    /// Keras' name: "nearest" or "bilinear".
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
        }
    }
}

/// The geometry of a resize of an NHWC input `[batch, in_h, in_w, channels]` by integer
/// factors; the output is `[batch, in_h * factor_h, in_w * factor_w, channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResizeSpec {
    /// Images in the batch.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels (resized independently).
    pub channels: usize,
    /// Vertical factor (at least 1).
    pub factor_h: usize,
    /// Horizontal factor (at least 1).
    pub factor_w: usize,
    /// Nearest or bilinear.
    pub interpolation: Interpolation,
}

impl ResizeSpec {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.in_h * self.factor_h
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.in_w * self.factor_w
    }
}
