//! A generated segmentation task: 32x32 RGB images of rectangles, discs and triangles on
//! noisy backgrounds, with the class of every pixel. Deterministic for a seed.

use super::AnyResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapegrad::data::Dataset;

/// The classes of the masks, by index.
pub const CLASS_NAMES: [&str; 4] = ["background", "rectangle", "disc", "triangle"];

/// The images' side, as CIFAR's (so that CIFAR images can be the backgrounds).
pub const SIDE: usize = 32;

/// Half-width of the uniform per-channel noise added to every pixel.
const NOISE: i32 = 32;

/// The least L1 distance (over RGB) between a shape's colour and its background's mean
/// colour, so that every shape can be told from its background.
const MIN_CONTRAST: i32 = 150;

/// Images (a dataset whose labels are all 0) and their masks (`SIDE * SIDE` classes per
/// image, in `0..CLASS_NAMES.len()`).
pub struct SegmentationSet {
    images: Dataset,
    masks: Vec<u8>,
}

impl SegmentationSet {
    /// The number of mask classes (background included).
    pub fn num_classes(&self) -> usize {
        CLASS_NAMES.len()
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// The images and the masks.
    pub fn into_parts(self) -> (Dataset, Vec<u8>) {
        (self.images, self.masks)
    }

    /// The mask of image `index` (`SIDE * SIDE` classes, row-major).
    pub fn mask(&self, index: usize) -> &[u8] {
        &self.masks[index * SIDE * SIDE..(index + 1) * SIDE * SIDE]
    }
}

/// One shape: its class (an index into [`CLASS_NAMES`]) and whether a pixel is inside.
enum Shape {
    Rectangle { cy: f32, cx: f32, half_h: f32, half_w: f32 },
    Disc { cy: f32, cx: f32, radius: f32 },
    Triangle { corners: [(f32, f32); 3] },
}

impl Shape {
    fn random(rng: &mut StdRng) -> Shape {
        let (cy, cx) = (rng.random_range(6.0..26.0), rng.random_range(6.0..26.0));
        match rng.random_range(1..CLASS_NAMES.len()) {
            1 => Shape::Rectangle { cy, cx, half_h: rng.random_range(3.0..9.0), half_w: rng.random_range(3.0..9.0) },
            2 => Shape::Disc { cy, cx, radius: rng.random_range(3.5..9.0) },
            _ => {
                // A roughly equilateral triangle, turned by a random angle.
                let (radius, turn) = (rng.random_range(5.0..11.0), rng.random_range(0.0..std::f32::consts::TAU));
                let corners = [0.0f32, 1.0, 2.0].map(|k| {
                    let a = turn + k * std::f32::consts::TAU / 3.0 + rng.random_range(-0.3..0.3);
                    (cy + radius * a.sin(), cx + radius * a.cos())
                });
                Shape::Triangle { corners }
            }
        }
    }

    fn class(&self) -> u8 {
        match self {
            Shape::Rectangle { .. } => 1,
            Shape::Disc { .. } => 2,
            Shape::Triangle { .. } => 3,
        }
    }

    /// Whether the centre of pixel `(y, x)` is inside.
    fn contains(&self, y: f32, x: f32) -> bool {
        match *self {
            Shape::Rectangle { cy, cx, half_h, half_w } => (y - cy).abs() <= half_h && (x - cx).abs() <= half_w,
            Shape::Disc { cy, cx, radius } => (y - cy).powi(2) + (x - cx).powi(2) <= radius * radius,
            Shape::Triangle { corners: [a, b, c] } => {
                // Inside when the point is on the same side of all three edges.
                let side = |p: (f32, f32), q: (f32, f32)| (q.1 - p.1) * (y - p.0) - (q.0 - p.0) * (x - p.1);
                let (d1, d2, d3) = (side(a, b), side(b, c), side(c, a));
                (d1 >= 0.0 && d2 >= 0.0 && d3 >= 0.0) || (d1 <= 0.0 && d2 <= 0.0 && d3 <= 0.0)
            }
        }
    }
}

/// `n` images, each with one to three shapes (later shapes cover earlier ones) on a
/// background: a random colour with a random linear gradient, or, when `backgrounds` is
/// given, one of its images (chosen at random; they must be 32x32 RGB). Every pixel then
/// gets uniform noise of +/-32 per channel. Deterministic for `seed`; different seeds give
/// a train/test pair.
pub fn generate(n: usize, seed: u64, backgrounds: Option<&Dataset>) -> AnyResult<SegmentationSet> {
    let pixels = SIDE * SIDE;
    if let Some(b) = backgrounds {
        if b.image_shape() != [SIDE, SIDE, 3] || b.is_empty() {
            return Err(format!(
                "segmentation backgrounds must be {SIDE}x{SIDE} RGB images, got {} images of shape {:?}",
                b.len(),
                b.image_shape()
            )
            .into());
        }
    }
    let mut images = Vec::new();
    let mut masks = Vec::new();
    let too_many = || format!("--synthetic {n}: not enough memory for {n} generated images");
    images.try_reserve_exact(n.checked_mul(pixels * 3).ok_or_else(too_many)?).map_err(|_| too_many())?;
    masks.try_reserve_exact(n * pixels).map_err(|_| too_many())?;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut image = vec![0i32; pixels * 3];
    for _ in 0..n {
        match backgrounds {
            Some(b) => {
                let source = b.image(rng.random_range(0..b.len())).expect("index below len");
                image.iter_mut().zip(source).for_each(|(p, &s)| *p = s as i32);
            }
            None => {
                let base: [f32; 3] = [0; 3].map(|_| rng.random_range(0.0..=255.0));
                let (gy, gx) = (rng.random_range(-2.5..2.5), rng.random_range(-2.5..2.5));
                for (i, p) in image.iter_mut().enumerate() {
                    let (y, x) = ((i / 3 / SIDE) as f32 - 15.5, (i / 3 % SIDE) as f32 - 15.5);
                    *p = (base[i % 3] + gy * y + gx * x) as i32;
                }
            }
        }
        let mean: [i32; 3] = [0, 1, 2].map(|c| image.iter().skip(c).step_by(3).sum::<i32>() / pixels as i32);
        let mut mask = vec![0u8; pixels];
        for _ in 0..rng.random_range(1..=3) {
            let shape = Shape::random(&mut rng);
            let colour = contrasting_colour(&mut rng, mean);
            for (pixel, class) in mask.iter_mut().enumerate() {
                let (y, x) = ((pixel / SIDE) as f32 + 0.5, (pixel % SIDE) as f32 + 0.5);
                if shape.contains(y, x) {
                    *class = shape.class();
                    image[pixel * 3..pixel * 3 + 3].copy_from_slice(&colour);
                }
            }
        }
        images.extend(image.iter().map(|&p| (p + rng.random_range(-NOISE..=NOISE)).clamp(0, 255) as u8));
        masks.extend_from_slice(&mask);
    }
    let images = Dataset::new(images, vec![0; n], [SIDE, SIDE, 3], 1)?;
    Ok(SegmentationSet { images, masks })
}

/// A colour at least [`MIN_CONTRAST`] away from `background` (the farthest of a few draws).
fn contrasting_colour(rng: &mut StdRng, background: [i32; 3]) -> [i32; 3] {
    let distance = |c: &[i32; 3]| c.iter().zip(&background).map(|(a, b)| (a - b).abs()).sum::<i32>();
    let mut best = [0; 3].map(|_: i32| rng.random_range(0..=255));
    for _ in 0..16 {
        if distance(&best) >= MIN_CONTRAST {
            break;
        }
        let candidate = [0; 3].map(|_: i32| rng.random_range(0..=255));
        if distance(&candidate) > distance(&best) {
            best = candidate;
        }
    }
    best
}
