//! The seeded generator that initializers and dropout draw from.
//!
//! Each thread has one generator. [`set_seed`] resets it (as `tf.random.set_seed`), so that
//! building the same model twice after the same seed gives bit-identical variables: layers
//! draw from it in build order, which is the order of their first calls. Without a seed the
//! generator starts from operating-system entropy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

/// Resets this thread's generator to `seed`.
pub fn set_seed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// Runs `f` with this thread's generator.
pub fn with_rng<T>(f: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// A fresh generator seeded from this thread's generator (for layers that keep their own,
/// such as [`Dropout`](crate::Dropout)).
pub fn fork() -> StdRng {
    with_rng(|r| StdRng::seed_from_u64(r.random()))
}
