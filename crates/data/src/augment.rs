//! Seeded data augmentation on HWC images: random crop with zero padding, and
//! horizontal flip.

use crate::error::{DataError, Result};
use rand::Rng;

/// Which augmentations to apply. `Augment::default()` applies none (the identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Random crop: pad the image with this many zero pixels on every side, then crop a
    /// window of the original size at a random place. 0 turns it off. Padding happens on
    /// the `u8` pixels, before scaling, so padded pixels are black (as in torchvision's
    /// `RandomCrop(32, padding=4)`).
    pub crop_padding: usize,
    /// Flip each image left-right with probability 1/2.
    pub horizontal_flip: bool,
}

/// One drawn augmentation: a shift of the crop window and whether to flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    /// The window's row offset relative to the original image, in `-padding..=padding`.
    pub dy: isize,
    /// The window's column offset relative to the original image, in `-padding..=padding`.
    pub dx: isize,
    /// Whether the cropped image is flipped left-right.
    pub flip: bool,
}

impl Augment {
    /// The standard CIFAR augmentation: 4-pixel padding with a random 32x32 crop, and a
    /// random horizontal flip.
    pub fn standard() -> Self {
        Self { crop_padding: 4, horizontal_flip: true }
    }

    /// Whether this augmentation leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }

    /// Draws one image's transform. Draws nothing from `rng` for a disabled augmentation.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Transform {
        let p = self.crop_padding as i64;
        let (dy, dx) =
            if p > 0 { (rng.random_range(-p..=p) as isize, rng.random_range(-p..=p) as isize) } else { (0, 0) };
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        Transform { dy, dx, flip }
    }

    /// Augments one HWC image of shape `[height, width, channels]` into `out` (same size),
    /// drawing its transform from `rng`.
    ///
    /// Fails when `image` or `out` does not hold `height * width * channels` bytes.
    pub fn apply<R: Rng + ?Sized>(&self, image: &[u8], shape: [usize; 3], rng: &mut R, out: &mut [u8]) -> Result<()> {
        let t = self.draw(rng);
        t.apply(image, shape, out)
    }
}

impl Transform {
    /// Applies this transform to one HWC image of shape `[height, width, channels]`,
    /// writing `out` (same size): `out[y][x] = image[y + dy][x' + dx]` with
    /// `x' = width - 1 - x` when flipped, and zero outside the image.
    ///
    /// Fails when `image` or `out` does not hold `height * width * channels` bytes.
    pub fn apply(&self, image: &[u8], shape: [usize; 3], out: &mut [u8]) -> Result<()> {
        let [h, w, c] = shape;
        let len = h * w * c;
        if image.len() != len || out.len() != len {
            return Err(DataError::InvalidArgument(format!(
                "augment: image of {} bytes and output of {} bytes for shape {shape:?} ({len} bytes)",
                image.len(),
                out.len()
            )));
        }
        self.write(image, shape, out);
        Ok(())
    }

    /// [`Transform::apply`] without the size check: `image` and `out` must hold
    /// `height * width * channels` bytes.
    pub(crate) fn write(&self, image: &[u8], shape: [usize; 3], out: &mut [u8]) {
        let [h, w, c] = shape;
        let row = w * c;
        for (y, out_row) in out.chunks_exact_mut(row).enumerate() {
            let sy = y as isize + self.dy;
            if sy < 0 || sy >= h as isize {
                out_row.fill(0);
                continue;
            }
            let src_row = &image[sy as usize * row..(sy as usize + 1) * row];
            for (x, out_px) in out_row.chunks_exact_mut(c).enumerate() {
                let xx = if self.flip { w - 1 - x } else { x };
                let sx = xx as isize + self.dx;
                if sx < 0 || sx >= w as isize {
                    out_px.fill(0);
                } else {
                    out_px.copy_from_slice(&src_row[sx as usize * c..(sx as usize + 1) * c]);
                }
            }
        }
    }
}
