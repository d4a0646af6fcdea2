//! Mapping `u8` pixels to `f32` network inputs.

use crate::error::{DataError, Result};

/// How `u8` pixels `x` become `f32` inputs. Every variant is applied through a 256-entry
/// table per channel, so it costs one lookup per pixel.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Scaling {
    /// `x` unchanged, as `f32` (0..=255).
    Raw,
    /// `x / 255` (0..=1).
    Unit,
    /// `2 * x / 255 - 1` (-1..=1): the seed program's scaling, the default.
    #[default]
    Symmetric,
    /// Per-channel normalisation `(x / 255 - mean[c]) / std[c]`, as torchvision's
    /// `ToTensor` + `Normalize`. `mean` and `std` hold one value per channel.
    PerChannel {
        /// The per-channel means, on the 0..=1 scale.
        mean: Vec<f32>,
        /// The per-channel standard deviations, on the 0..=1 scale; all positive.
        std: Vec<f32>,
    },
}

impl Scaling {
    /// Per-channel normalisation with CIFAR-100's training-set mean and standard
    /// deviation (the values PyTorch CIFAR-100 recipes use).
    pub fn cifar100_normalize() -> Self {
        Scaling::PerChannel { mean: vec![0.5071, 0.4865, 0.4409], std: vec![0.2673, 0.2564, 0.2762] }
    }

    /// Per-channel normalisation with CIFAR-10's training-set mean and standard deviation.
    pub fn cifar10_normalize() -> Self {
        Scaling::PerChannel { mean: vec![0.4914, 0.4822, 0.4465], std: vec![0.2470, 0.2435, 0.2616] }
    }

    /// The value pixel `x` of channel `channel` maps to. `PerChannel` must hold that channel.
    fn map(&self, x: u8, channel: usize) -> f32 {
        let x = x as f32;
        match self {
            Scaling::Raw => x,
            Scaling::Unit => x / 255.0,
            Scaling::Symmetric => 2.0 * x / 255.0 - 1.0,
            Scaling::PerChannel { mean, std } => (x / 255.0 - mean[channel]) / std[channel],
        }
    }

    /// One 256-entry lookup table per channel, for images of `channels` channels.
    ///
    /// Fails when a `PerChannel` mean/std does not hold exactly `channels` values, or a
    /// standard deviation is not positive and finite, or a mean is not finite.
    pub fn tables(&self, channels: usize) -> Result<Vec<[f32; 256]>> {
        if let Scaling::PerChannel { mean, std } = self {
            if mean.len() != channels || std.len() != channels {
                return Err(DataError::InvalidArgument(format!(
                    "per-channel normalisation: {} means and {} standard deviations for {channels}-channel images",
                    mean.len(),
                    std.len()
                )));
            }
            if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(DataError::InvalidArgument(format!(
                    "per-channel normalisation: standard deviation {s} is not positive and finite"
                )));
            }
            if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
                return Err(DataError::InvalidArgument(format!("per-channel normalisation: mean {m} is not finite")));
            }
        }
        Ok((0..channels).map(|c| std::array::from_fn(|x| self.map(x as u8, c))).collect())
    }
}

/// Maps HWC pixels through per-channel `tables` (from [`Scaling::tables`]), appending to `out`.
pub(crate) fn map_pixels(pixels: &[u8], tables: &[[f32; 256]], out: &mut Vec<f32>) {
    let channels = tables.len();
    out.extend(pixels.iter().enumerate().map(|(i, &x)| tables[i % channels][x as usize]));
}
