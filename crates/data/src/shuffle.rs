//! Seeded, per-epoch shuffling, and the derivation of independent random streams
//! from one user seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The stream that shuffles an epoch's order.
pub(crate) const STREAM_SHUFFLE: u64 = 0x5348_5546;
/// The stream that draws a batch's augmentations.
pub(crate) const STREAM_AUGMENT: u64 = 0x4155_474d;
/// The stream that generates synthetic class prototypes.
pub(crate) const STREAM_PROTOTYPE: u64 = 0x5052_4f54;
/// The stream that generates synthetic samples.
pub(crate) const STREAM_SAMPLE: u64 = 0x5341_4d50;

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random generator for `(seed, stream, a, b)`: distinct tuples give independent-looking
/// streams, the same tuple always the same one (e.g. `a` = epoch, `b` = batch index).
pub(crate) fn rng_for(seed: u64, stream: u64, a: u64, b: u64) -> StdRng {
    let s = splitmix(splitmix(splitmix(seed ^ splitmix(stream)) ^ a) ^ b);
    StdRng::seed_from_u64(s)
}

/// The order in which epoch `epoch` visits `n` examples: a permutation of `0..n` that is
/// deterministic for `(seed, epoch)` and differs from epoch to epoch.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, STREAM_SHUFFLE, epoch, 0));
    order
}
