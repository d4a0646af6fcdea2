//! A synthetic CIFAR-like dataset with learnable structure, for runs without the real
//! data (the flagship's `--synthetic N`) and for tests.

use crate::cifar::{CIFAR_CHANNELS, CIFAR_SIDE};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::shuffle::{rng_for, STREAM_PROTOTYPE, STREAM_SAMPLE};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

/// The half-width of the per-pixel noise added to every sample.
const NOISE: i32 = 24;

/// What every image of one class shares: a background colour and a blob (a disc or a
/// square) of another colour at a class-specific place and size.
struct Prototype {
    background: [i32; 3],
    foreground: [i32; 3],
    center: (i32, i32),
    radius: i32,
    square: bool,
}

impl Prototype {
    /// The prototype of `class`. It depends on the class only, not on the sample seed,
    /// so a train set and a test set made with different seeds share their classes.
    fn of(class: usize) -> Self {
        let mut rng = rng_for(0, STREAM_PROTOTYPE, class as u64, 0);
        let mut colour = || [0; 3].map(|_: i32| rng.random_range(0..=255));
        let background = colour();
        let foreground = colour();
        Self {
            background,
            foreground,
            center: (rng.random_range(9..=22), rng.random_range(9..=22)),
            radius: rng.random_range(4..=9),
            square: rng.random_bool(0.5),
        }
    }
}

/// `n` synthetic 32x32x3 images (NHWC) in `num_classes` balanced classes, deterministic
/// for `seed`.
///
/// Each class has a background colour and a coloured disc or square at its own place
/// and size (fixed per class, whatever the seed); each sample moves the blob by up to
/// 3 pixels, scales its brightness by 0.85..1.15 and adds per-pixel noise of up to
/// +/-24. A small CNN learns it quickly; different seeds give different samples of the
/// same classes, so `synthetic(n, k, 1)` and `synthetic(m, k, 2)` make a train/test pair.
///
/// Fails when `num_classes` is zero.
pub fn synthetic(n: usize, num_classes: usize, seed: u64) -> Result<Dataset> {
    if num_classes == 0 {
        return Err(DataError::InvalidArgument("synthetic: num_classes must be at least 1".into()));
    }
    let prototypes: Vec<Prototype> = (0..num_classes).map(Prototype::of).collect();
    let mut rng = rng_for(seed, STREAM_SAMPLE, 0, 0);
    let what = format!("synthetic: {n} images");
    let mut labels = crate::alloc::try_with_capacity(&what, n)?;
    labels.extend((0..n).map(|i| (i % num_classes) as i64));
    labels.shuffle(&mut rng);

    let pixels = CIFAR_SIDE * CIFAR_SIDE;
    let mut images = crate::alloc::try_vec(&what, n.saturating_mul(pixels * CIFAR_CHANNELS), 0u8)?;
    let mut noise = vec![0u8; pixels * CIFAR_CHANNELS];
    for (image, &label) in images.chunks_exact_mut(pixels * CIFAR_CHANNELS).zip(&labels) {
        let p = &prototypes[label as usize];
        let cy = p.center.0 + rng.random_range(-3..=3);
        let cx = p.center.1 + rng.random_range(-3..=3);
        let gain: f32 = rng.random_range(0.85..1.15);
        rng.fill_bytes(&mut noise);
        for (i, (out, &r)) in image.iter_mut().zip(&noise).enumerate() {
            let (pixel, c) = (i / CIFAR_CHANNELS, i % CIFAR_CHANNELS);
            let (dy, dx) = ((pixel / CIFAR_SIDE) as i32 - cy, (pixel % CIFAR_SIDE) as i32 - cx);
            let inside = if p.square {
                dy.abs() <= p.radius && dx.abs() <= p.radius
            } else {
                dy * dy + dx * dx <= p.radius * p.radius
            };
            let base = if inside { p.foreground[c] } else { p.background[c] };
            let value = (base as f32 * gain) as i32 + (r as i32 % (2 * NOISE + 1)) - NOISE;
            *out = value.clamp(0, 255) as u8;
        }
    }
    Dataset::new(images, labels, [CIFAR_SIDE, CIFAR_SIDE, CIFAR_CHANNELS], num_classes)
}
