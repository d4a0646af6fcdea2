//! CPU kernel of log_softmax over the last axis.

use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::utilities::PAR_MIN_LEN;
use crate::Result;
use num_traits::Float;
use rayon::prelude::*;

/// `(x - max) - ln(sum(exp(x - max)))` per row of `cols` elements.
pub(crate) fn log_softmax<T: Float + ZeroBits + Send + Sync>(x: &[T], rows: usize, cols: usize) -> Result<Vec<T>> {
    let mut out = try_zeros("log_softmax", rows.saturating_mul(cols))?;
    let row = |(src, dst): (&[T], &mut [T])| {
        let max = src.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        // A row of -inf (or all NaN) has no finite max; shifting by 0 keeps NaN/-inf honest.
        let shift = if max.is_finite() { max } else { T::zero() };
        let sum = src.iter().fold(T::zero(), |s, &v| s + (v - shift).exp());
        let log_sum = sum.ln();
        // `(v - shift) - log_sum`, not `v - (shift + log_sum)`: the shifted value is exact
        // for the largest logits, whereas adding `log_sum` to a large `shift` first would
        // round it to the precision of `shift` (1e-3 at 1e4 in f32).
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v - shift) - log_sum;
        }
    };
    if x.len() < PAR_MIN_LEN {
        x.chunks(cols).zip(out.chunks_mut(cols)).for_each(row);
    } else {
        x.par_chunks(cols).zip(out.par_chunks_mut(cols)).for_each(row);
    }
    Ok(out)
}
