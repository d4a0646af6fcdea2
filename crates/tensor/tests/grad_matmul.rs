//! Gradient checks of the matrix products against central finite differences in f64:
//! 2-D, batched, a shared 2-D operand on either side, and every transpose combination of
//! `matmul_transposed`.
//!
//! Tolerance: `GradCheck::default()` (see `src/testing.rs`): step `h = 1e-6`, accepted when
//! `|analytic - numeric| <= 1e-6 + 1e-5 * |numeric|`.

mod common;

use common::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// How the batch dimensions of the two operands relate.
#[derive(Clone, Copy, Debug)]
enum Batching {
    /// `[m, k] @ [k, n]`.
    None,
    /// `[..., m, k] @ [..., k, n]`, equal batch dimensions.
    Both,
    /// `[m, k] @ [..., k, n]`: lhs shared across rhs's batch.
    SharedLhs,
    /// `[..., m, k] @ [k, n]`: rhs shared across lhs's batch.
    SharedRhs,
}

const BATCHINGS: [Batching; 4] = [Batching::None, Batching::Both, Batching::SharedLhs, Batching::SharedRhs];

/// The stored shapes of both operands of `op(lhs) @ op(rhs)`.
fn operand_shapes(
    batching: Batching,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    (lt, rt): (bool, bool),
) -> (Vec<usize>, Vec<usize>) {
    let lhs_mat = if lt { [k, m] } else { [m, k] };
    let rhs_mat = if rt { [n, k] } else { [k, n] };
    let with = |batched: bool, mat: [usize; 2]| {
        let mut s = if batched { batch.to_vec() } else { Vec::new() };
        s.extend(mat);
        s
    };
    let (lb, rb) = match batching {
        Batching::None => (false, false),
        Batching::Both => (true, true),
        Batching::SharedLhs => (false, true),
        Batching::SharedRhs => (true, false),
    };
    (with(lb, lhs_mat), with(rb, rhs_mat))
}

fn random_values(shape: &[usize], rng: &mut impl Rng) -> Vec<f64> {
    (0..count(shape)).map(|_| rng.random_range(-1.0..1.0)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matmul_transposed_in_every_configuration(
        batching in prop::sample::select(BATCHINGS.to_vec()),
        batch in prop::collection::vec(1usize..=3, 1..=2),
        mkn in (1usize..=5, 1usize..=5, 1usize..=5),
        transposes in (any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let (ls, rs) = operand_shapes(batching, &batch, mkn, transposes);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (a, b) = (t64(random_values(&ls, &mut rng), &ls), t64(random_values(&rs, &mut rng), &rs));
        gradcheck(|x| x[0].matmul_transposed(&x[1], transposes.0, transposes.1), &[a, b])?;
    }

    #[test]
    fn plain_matmul_2d_and_batched(
        batch in prop::collection::vec(1usize..=3, 0..=2),
        mkn in (1usize..=5, 1usize..=5, 1usize..=5),
        seed in any::<u64>(),
    ) {
        let batching = if batch.is_empty() { Batching::None } else { Batching::Both };
        let (ls, rs) = operand_shapes(batching, &batch, mkn, (false, false));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (a, b) = (t64(random_values(&ls, &mut rng), &ls), t64(random_values(&rs, &mut rng), &rs));
        gradcheck(|x| x[0].matmul(&x[1]), &[a, b])?;
    }
}

/// Every batching mode with every transpose combination, deterministically (the property
/// above samples them).
#[test]
fn all_sixteen_combinations() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for batching in BATCHINGS {
        for transposes in [(false, false), (false, true), (true, false), (true, true)] {
            let (ls, rs) = operand_shapes(batching, &[2, 3], (3, 4, 2), transposes);
            let (a, b) = (t64(random_values(&ls, &mut rng), &ls), t64(random_values(&rs, &mut rng), &rs));
            tapegrad_tensor::testing::check_gradients(
                |x| x[0].matmul_transposed(&x[1], transposes.0, transposes.1),
                &[a, b],
            )
            .unwrap_or_else(|e| panic!("{batching:?} {transposes:?}: {e}"));
        }
    }
}

/// The same matrix used as both operands (`a @ a^T`) gets the sum of both gradients.
#[test]
fn one_matrix_on_both_sides() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let a = t64(random_values(&[3, 4], &mut rng), &[3, 4]);
    tapegrad_tensor::testing::check_gradients(|x| x[0].matmul_transposed(&x[0], false, true), &[a]).unwrap();
}
