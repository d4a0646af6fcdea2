//! CPU kernels of the fused optimizer updates: one parallel pass over the elements that
//! reads the parameter, gradient and state once and writes the new ones.

use super::{AdamStep, SgdStep};
use crate::utilities::alloc::try_with_capacity;
use crate::{FloatElement, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

fn to_t<T: FloatElement>(v: f64) -> T {
    <T as num_traits::NumCast>::from(v).expect("f64 converts to a float type")
}

/// Runs `f(range, outputs)` over chunks of `n` elements in parallel, where `outputs` are
/// the chunk's slices of `K` new vectors of length `n`, and returns the vectors. `f` must
/// write every element of its slices. The vectors are not zeroed first (a whole pass over
/// memory fewer: an update is bandwidth-bound), and kernels loop over whole slices
/// (zipped iterators, no per-element index checks), so the loops vectorise.
fn for_chunks<T: FloatElement, const K: usize>(
    op: &'static str,
    n: usize,
    f: impl Fn(std::ops::Range<usize>, [&mut [MaybeUninit<T>]; K]) + Sync,
) -> Result<[Vec<T>; K]> {
    let mut outs: [Vec<T>; K] = std::array::from_fn(|_| Vec::new());
    for v in &mut outs {
        *v = try_with_capacity(op, n)?;
    }
    let mut pieces = outs.each_mut().map(|v| v.spare_capacity_mut()[..n].chunks_mut(CHUNK));
    let chunks: Vec<[&mut [MaybeUninit<T>]; K]> =
        (0..n.div_ceil(CHUNK)).map(|_| pieces.each_mut().map(|p| p.next().expect("outputs of equal length"))).collect();
    if chunks.len() == 1 {
        // One chunk: no thread hand-off for the many small tensors of a model.
        chunks.into_iter().for_each(|dst| f(0..n, dst));
    } else {
        chunks.into_par_iter().enumerate().for_each(|(c, dst)| {
            let lo = c * CHUNK;
            f(lo..lo + dst[0].len(), dst);
        });
    }
    for v in &mut outs {
        // SAFETY: the capacity is at least n; the chunks cover 0..n and the kernels of this
        // file (the only callers) write every element of every chunk.
        unsafe { v.set_len(n) };
    }
    Ok(outs)
}

/// One SGD step (formulas on [`super::sgd_update`]): the new parameter and velocity.
pub(crate) fn sgd_update<T: FloatElement>(
    var: &[T],
    grad: &[T],
    velocity: Option<&[T]>,
    p: &SgdStep,
) -> Result<(Vec<T>, Option<Vec<T>>)> {
    let (lr, momentum, decay) = (to_t::<T>(p.learning_rate), to_t::<T>(p.momentum), to_t::<T>(p.weight_decay));
    let has_decay = p.weight_decay != 0.0;
    let lr_g = move |w: T, g: T| if has_decay { (g + w * decay) * lr } else { g * lr };
    if p.momentum == 0.0 {
        let [value] = for_chunks("sgd_update", var.len(), |r, [out]| {
            for ((o, &w), &g) in out.iter_mut().zip(&var[r.clone()]).zip(&grad[r]) {
                o.write(w - lr_g(w, g));
            }
        })?;
        return Ok((value, None));
    }
    let new_velocity = |lr_g: T, v: Option<T>| match v {
        Some(v) => v * momentum - lr_g,
        None => -lr_g,
    };
    let new_value = |w: T, v: T, lr_g: T| if p.nesterov { (w + v * momentum) - lr_g } else { w + v };
    let [value, velocity_out] = for_chunks("sgd_update", var.len(), |r, [out, out_v]| {
        let (w, g) = (&var[r.clone()], &grad[r.clone()]);
        let lanes = out.iter_mut().zip(out_v.iter_mut()).zip(w).zip(g);
        match velocity {
            Some(vel) => {
                for ((((o, ov), &w), &g), &v) in lanes.zip(&vel[r]) {
                    let lr_g = lr_g(w, g);
                    let v = ov.write(new_velocity(lr_g, Some(v)));
                    o.write(new_value(w, *v, lr_g));
                }
            }
            None => {
                for (((o, ov), &w), &g) in lanes {
                    let lr_g = lr_g(w, g);
                    let v = ov.write(new_velocity(lr_g, None));
                    o.write(new_value(w, *v, lr_g));
                }
            }
        }
    })?;
    Ok((value, Some(velocity_out)))
}

/// One Adam(W) step (formulas on [`super::adam_update`]): the new parameter, m and v.
pub(crate) fn adam_update<T: FloatElement>(
    var: &[T],
    grad: &[T],
    m: Option<&[T]>,
    v: Option<&[T]>,
    p: &AdamStep,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    let c = p.coefficients();
    let (lr_t, b1, b2) = (to_t::<T>(c.lr_t), to_t::<T>(c.one_minus_beta_1), to_t::<T>(c.one_minus_beta_2));
    let (eps, decay) = (to_t::<T>(c.epsilon), to_t::<T>(c.decay_factor));
    // The step from the new moments; the state is None only on a variable's first step.
    let apply = move |w: T, m: T, v: T| {
        let w = if c.decay { w * decay } else { w };
        w - (m / (v.sqrt() + eps)) * lr_t
    };
    let [value, m_out, v_out] = for_chunks("adam_update", var.len(), |r, [out, out_m, out_v]| {
        let (w, g) = (&var[r.clone()], &grad[r.clone()]);
        let lanes = out.iter_mut().zip(out_m.iter_mut()).zip(out_v.iter_mut()).zip(w).zip(g);
        match (m, v) {
            (Some(m), Some(v)) => {
                for (((((o, om), ov), &w), &g), (&m, &v)) in lanes.zip(m[r.clone()].iter().zip(&v[r])) {
                    let m = om.write(m + (g - m) * b1);
                    let v = ov.write(v + (g * g - v) * b2);
                    o.write(apply(w, *m, *v));
                }
            }
            _ => {
                // Any missing moment starts at zero.
                for (i, ((((o, om), ov), &w), &g)) in lanes.enumerate() {
                    let m = om.write(m.map_or(g * b1, |m| m[r.start + i] + (g - m[r.start + i]) * b1));
                    let v = ov.write(v.map_or(g * g * b2, |v| v[r.start + i] + (g * g - v[r.start + i]) * b2));
                    o.write(apply(w, *m, *v));
                }
            }
        }
    })?;
    Ok((value, m_out, v_out))
}
