//! CPU kernels of the elementwise ops.

use crate::backend::{BinaryOp, UnaryOp};
use crate::cpu_backend::{is_nan, par_map, par_zip_map, PAR_MIN_LEN};
use crate::shape::Dims;
use crate::{DType, Error, Result, Shape};
use num_traits::{Float, NumCast};
use rayon::prelude::*;

/// A float unary op; the `match` sits outside the loop so each loop is monomorphic.
pub(crate) fn unary_float<T: Float + Send + Sync>(x: &[T], op: UnaryOp) -> Vec<T> {
    let c = |v: f64| -> T { <T as NumCast>::from(v).expect("f64 converts to a float type") };
    let (zero, one) = (T::zero(), T::one());
    match op {
        UnaryOp::Neg => par_map(x, |v| -v),
        UnaryOp::Exp => par_map(x, |v| v.exp()),
        UnaryOp::Log => par_map(x, |v| v.ln()),
        UnaryOp::Sqrt => par_map(x, |v| v.sqrt()),
        UnaryOp::Square => par_map(x, |v| v * v),
        // `v < 0`, not `v > 0`: NaN passes through (as PyTorch and TF) instead of
        // silently becoming 0 and hiding a diverged computation.
        UnaryOp::Relu => par_map(x, |v| if v < zero { zero } else { v }),
        UnaryOp::Sigmoid => par_map(x, |v| {
            // Stable for large |v|: never exponentiates a large positive number.
            if v >= zero {
                one / (one + (-v).exp())
            } else {
                let e = v.exp();
                e / (one + e)
            }
        }),
        UnaryOp::Tanh => par_map(x, |v| v.tanh()),
        UnaryOp::Abs => par_map(x, |v| v.abs()),
        UnaryOp::Sign => par_map(x, |v| {
            if v > zero {
                one
            } else if v < zero {
                -one
            } else {
                zero
            }
        }),
        UnaryOp::Recip => par_map(x, |v| one / v),
        UnaryOp::Powf(e) => {
            let e = c(e);
            par_map(x, move |v| v.powf(e))
        }
        UnaryOp::Clamp { min, max } => {
            let (lo, hi) = (c(min), c(max));
            par_map(x, move |v| {
                if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                }
            })
        }
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (c(mul), c(add));
            par_map(x, move |v| v * m + a)
        }
    }
}

/// The unary ops defined on integers.
pub(crate) fn unary_int(x: &[i64], op: UnaryOp) -> Result<Vec<i64>> {
    Ok(match op {
        UnaryOp::Neg => par_map(x, |v| v.wrapping_neg()),
        UnaryOp::Abs => par_map(x, |v| v.wrapping_abs()),
        UnaryOp::Sign => par_map(x, |v| v.signum()),
        UnaryOp::Square => par_map(x, |v| v.wrapping_mul(v)),
        UnaryOp::Relu => par_map(x, |v| v.max(0)),
        UnaryOp::Clamp { min, max } => {
            let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
            if lo > hi {
                return Err(Error::invalid(
                    "clamp",
                    format!("bounds [{min}, {max}] contain no integer, so i64 values cannot be clamped to them"),
                ));
            }
            par_map(x, move |v| v.clamp(lo, hi))
        }
        other => {
            return Err(Error::UnsupportedDType { op: unary_name(other), dtype: DType::I64, expected: "f32 or f64" })
        }
    })
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "neg",
        UnaryOp::Exp => "exp",
        UnaryOp::Log => "log",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Square => "square",
        UnaryOp::Relu => "relu",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Abs => "abs",
        UnaryOp::Sign => "sign",
        UnaryOp::Recip => "recip",
        UnaryOp::Powf(_) => "powf",
        UnaryOp::Clamp { .. } => "clamp",
        UnaryOp::Affine { .. } => "affine",
    }
}

/// The arithmetic a binary kernel needs, for floats and integers alike.
pub(crate) trait BinaryElem: Copy + Send + Sync + Default + PartialOrd + num_traits::Num {
    fn div_elem(self, rhs: Self) -> Self;
}
impl BinaryElem for f32 {
    fn div_elem(self, rhs: Self) -> Self {
        self / rhs
    }
}
impl BinaryElem for f64 {
    fn div_elem(self, rhs: Self) -> Self {
        self / rhs
    }
}
impl BinaryElem for i64 {
    /// Integer division by zero gives 0 rather than a panic.
    fn div_elem(self, rhs: Self) -> Self {
        self.checked_div(rhs).unwrap_or(0)
    }
}

/// A binary op with broadcasting: picks the function, then runs the broadcast loop.
pub(crate) fn binary<T: BinaryElem>(a: &[T], b: &[T], op: BinaryOp, ls: &Shape, rs: &Shape, out: &Shape) -> Vec<T> {
    let bool_to = |c: bool| if c { T::one() } else { T::zero() };
    match op {
        BinaryOp::Add => broadcast_map(a, b, ls, rs, out, |x, y| x + y),
        BinaryOp::Sub => broadcast_map(a, b, ls, rs, out, |x, y| x - y),
        BinaryOp::Mul => broadcast_map(a, b, ls, rs, out, |x, y| x * y),
        BinaryOp::Div => broadcast_map(a, b, ls, rs, out, |x, y| x.div_elem(y)),
        BinaryOp::Maximum => broadcast_map(a, b, ls, rs, out, |x, y| if x >= y || is_nan(x) { x } else { y }),
        BinaryOp::Minimum => broadcast_map(a, b, ls, rs, out, |x, y| if x <= y || is_nan(x) { x } else { y }),
        BinaryOp::Eq => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x == y)),
        BinaryOp::Ne => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x != y)),
        BinaryOp::Lt => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x < y)),
        BinaryOp::Le => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x <= y)),
        BinaryOp::Gt => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x > y)),
        BinaryOp::Ge => broadcast_map(a, b, ls, rs, out, move |x, y| bool_to(x >= y)),
    }
}

/// `out[i] = f(a[ia], b[ib])` over the broadcast shape. Same shapes and scalar operands
/// take flat loops; otherwise the dimensions are coalesced and the innermost one runs as
/// a tight loop over rows whose start offsets come from the outer index.
pub(crate) fn broadcast_map<T: Copy + Send + Sync, U: Copy + Send + Sync + Default>(
    a: &[T],
    b: &[T],
    ls: &Shape,
    rs: &Shape,
    out: &Shape,
    f: impl Fn(T, T) -> U + Sync + Send + Copy,
) -> Vec<U> {
    let n = out.elem_count();
    if n == 0 {
        // Nothing to compute; the row loop below would split into rows of length 0.
        return Vec::new();
    }
    if ls == rs {
        return par_zip_map(a, b, f);
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        return par_map(a, move |x| f(x, y));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        return par_map(b, move |y| f(x, y));
    }
    let (dims, sa, sb) = coalesce(out.dims(), &[ls.broadcast_strides(out), rs.broadcast_strides(out)]);
    let rank = dims.len();
    let inner = dims[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut result = vec![U::default(); n];
    let row = |(r, chunk): (usize, &mut [U])| {
        // Offsets of this row's first element in a and b.
        let (mut oa, mut ob, mut rem) = (0usize, 0usize, r);
        for d in (0..rank - 1).rev() {
            let i = rem % dims[d];
            rem /= dims[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        match (ia, ib) {
            (1, 1) => {
                for (o, (&x, &y)) in chunk.iter_mut().zip(a[oa..oa + inner].iter().zip(&b[ob..ob + inner])) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (o, &x) in chunk.iter_mut().zip(&a[oa..oa + inner]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (o, &y) in chunk.iter_mut().zip(&b[ob..ob + inner]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = f(a[oa + j * ia], b[ob + j * ib]);
                }
            }
        }
    };
    if n < PAR_MIN_LEN {
        result.chunks_mut(inner).enumerate().for_each(row);
    } else {
        let rows_per_task = (PAR_MIN_LEN / 8 / inner).max(1);
        result.par_chunks_mut(inner).enumerate().with_min_len(rows_per_task).for_each(row);
    }
    result
}

/// Drops dimensions of size 1 and merges neighbours that every operand reads
/// contiguously, so broadcast loops run over as few, as long rows as possible.
/// Returns the merged dims and each operand's strides over them (at least one dim).
pub(crate) fn coalesce(dims: &[usize], strides: &[Dims]) -> (Dims, Dims, Dims) {
    let mut out_dims = Dims::new();
    let mut out_strides: Vec<Dims> = vec![Dims::new(); strides.len()];
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let mergeable =
            !out_dims.is_empty() && strides.iter().zip(&out_strides).all(|(s, os)| *os.last().unwrap() == s[d] * size);
        if mergeable {
            *out_dims.last_mut().unwrap() *= size;
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                *os.last_mut().unwrap() = s[d];
            }
        } else {
            out_dims.push(size);
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                os.push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for os in out_strides.iter_mut() {
            os.push(0);
        }
    }
    let mut it = out_strides.into_iter();
    let first = it.next().unwrap_or_default();
    let second = it.next().unwrap_or_default();
    (out_dims, first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_contiguous_dims() {
        let out = Shape::new(&[2, 3, 4]);
        let a = Shape::new(&[2, 3, 4]).broadcast_strides(&out);
        let b = Shape::new(&[4]).broadcast_strides(&out);
        let (dims, sa, sb) = coalesce(out.dims(), &[a, b]);
        assert_eq!(&dims[..], &[6, 4]);
        assert_eq!(&sa[..], &[4, 1]);
        assert_eq!(&sb[..], &[0, 1]);
    }

    #[test]
    fn broadcast_bias_and_column() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let bias = vec![10.0f32, 20.0, 30.0];
        let r = binary(&a, &bias, BinaryOp::Add, &Shape::new(&[2, 3]), &Shape::new(&[3]), &Shape::new(&[2, 3]));
        assert_eq!(r, vec![10.0, 21.0, 32.0, 13.0, 24.0, 35.0]);
        let col = vec![1.0f32, 2.0];
        let r = binary(&a, &col, BinaryOp::Mul, &Shape::new(&[2, 3]), &Shape::new(&[2, 1]), &Shape::new(&[2, 3]));
        assert_eq!(r, vec![0.0, 1.0, 2.0, 6.0, 8.0, 10.0]);
    }
}
