//! CPU kernels of the fused optimizer updates: one parallel pass over the elements that
//! reads the parameter, gradient and state once and writes the new ones.

use super::{AdamStep, SgdStep};
use crate::FloatElement;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

fn to_t<T: FloatElement>(v: f64) -> T {
    <T as num_traits::NumCast>::from(v).expect("f64 converts to a float type")
}

/// Fills `outs[k][i] = f(i)[k]` for every element, in parallel chunks.
fn fill<T: FloatElement, const K: usize>(n: usize, f: impl Fn(usize) -> [T; K] + Sync) -> [Vec<T>; K] {
    let mut outs: [Vec<T>; K] = std::array::from_fn(|_| vec![T::zero(); n]);
    let mut pieces = outs.each_mut().map(|v| v.chunks_mut(CHUNK));
    let chunks: Vec<[&mut [T]; K]> =
        (0..n.div_ceil(CHUNK)).map(|_| pieces.each_mut().map(|p| p.next().expect("outputs of equal length"))).collect();
    chunks.into_par_iter().enumerate().for_each(|(c, mut dst)| {
        let base = c * CHUNK;
        for i in 0..dst[0].len() {
            let values = f(base + i);
            for (d, v) in dst.iter_mut().zip(values) {
                d[i] = v;
            }
        }
    });
    outs
}

/// One SGD step (formulas on [`super::sgd_update`]): the new parameter and velocity.
pub(crate) fn sgd_update<T: FloatElement>(
    var: &[T],
    grad: &[T],
    velocity: Option<&[T]>,
    p: &SgdStep,
) -> (Vec<T>, Option<Vec<T>>) {
    let (lr, momentum, decay) = (to_t::<T>(p.learning_rate), to_t::<T>(p.momentum), to_t::<T>(p.weight_decay));
    let has_decay = p.weight_decay != 0.0;
    let lr_g = move |i: usize| {
        let g = if has_decay { grad[i] + var[i] * decay } else { grad[i] };
        g * lr
    };
    if p.momentum == 0.0 {
        let [value] = fill(var.len(), |i| [var[i] - lr_g(i)]);
        return (value, None);
    }
    let [value, new_velocity] = fill(var.len(), |i| {
        let lr_g = lr_g(i);
        let v = match velocity {
            Some(v) => v[i] * momentum - lr_g,
            None => -lr_g,
        };
        let w = if p.nesterov { (var[i] + v * momentum) - lr_g } else { var[i] + v };
        [w, v]
    });
    (value, Some(new_velocity))
}

/// One Adam(W) step (formulas on [`super::adam_update`]): the new parameter, m and v.
pub(crate) fn adam_update<T: FloatElement>(
    var: &[T],
    grad: &[T],
    m: Option<&[T]>,
    v: Option<&[T]>,
    p: &AdamStep,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = p.coefficients();
    let (lr_t, b1, b2, eps, decay) = (
        to_t::<T>(c.lr_t),
        to_t::<T>(c.one_minus_beta_1),
        to_t::<T>(c.one_minus_beta_2),
        to_t::<T>(c.epsilon),
        to_t::<T>(c.decay_factor),
    );
    let [value, new_m, new_v] = fill(var.len(), |i| {
        let g = grad[i];
        let m = match m {
            Some(m) => m[i] + (g - m[i]) * b1,
            None => g * b1,
        };
        let g2 = g * g;
        let v = match v {
            Some(v) => v[i] + (g2 - v[i]) * b2,
            None => g2 * b2,
        };
        let w = if c.decay { var[i] * decay } else { var[i] };
        [w - (m / (v.sqrt() + eps)) * lr_t, m, v]
    });
    (value, new_m, new_v)
}
