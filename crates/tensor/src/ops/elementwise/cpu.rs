//! CPU kernels of the elementwise ops.

use crate::backend::{BinaryOp, UnaryOp};
use crate::utilities::alloc::{try_zeros, ZeroBits};
use crate::utilities::coalesce::coalesce;
use crate::utilities::{is_nan, PAR_MIN_LEN};
use crate::{DType, Error, Result, Shape};
use num_traits::{Float, NumCast};
use rayon::prelude::*;

/// The float element types of the unary kernels: `Float` plus the error function, which
/// `num_traits` lacks (libm's, accurate to an ulp or so in f32 and f64).
pub(crate) trait UnaryFloat: Float + ZeroBits + Send + Sync {
    /// The error function.
    fn erf(self) -> Self;
    /// `1 - erf(x)`, without the cancellation for large `x`.
    fn erfc(self) -> Self;
}
impl UnaryFloat for f32 {
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn erfc(self) -> Self {
        libm::erfcf(self)
    }
}
impl UnaryFloat for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
}

/// `x.iter().map(f)` into a fallibly allocated buffer, in parallel for large inputs.
fn try_map<T: Copy + Send + Sync, U: ZeroBits + Send>(
    op: &'static str,
    x: &[T],
    f: impl Fn(T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    let mut out = try_zeros::<U>(op, x.len())?;
    if x.len() < PAR_MIN_LEN {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    } else {
        out.par_iter_mut().zip(x.par_iter()).with_min_len(PAR_MIN_LEN / 4).for_each(|(o, &v)| *o = f(v));
    }
    Ok(out)
}

/// Elementwise `f(a[i], b[i])` over equal-length slices into a fallibly allocated buffer.
fn try_zip_map<T: Copy + Send + Sync, U: ZeroBits + Send>(
    op: &'static str,
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = try_zeros::<U>(op, a.len())?;
    if a.len() < PAR_MIN_LEN {
        out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y));
    } else {
        out.par_iter_mut()
            .zip(a.par_iter().zip(b.par_iter()))
            .with_min_len(PAR_MIN_LEN / 4)
            .for_each(|(o, (&x, &y))| *o = f(x, y));
    }
    Ok(out)
}

/// The logistic function, never exponentiating a large positive number.
#[inline(always)]
fn sigmoid<T: Float>(v: T) -> T {
    if v >= T::zero() {
        T::one() / (T::one() + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::one() + e)
    }
}

/// `ln(1 + e^v)` as `max(v, 0) + ln(1 + e^-|v|)`: no overflow for large `v`, no loss
/// of the small result for very negative `v`. NaN stays NaN.
#[inline(always)]
fn softplus<T: Float>(v: T) -> T {
    let pos = if v > T::zero() { v } else { T::zero() };
    pos + (-v.abs()).exp().ln_1p()
}

/// `relu6(v + 3)`, in PyTorch's order of operations (NaN passes through).
#[inline(always)]
fn relu6_shifted<T: Float>(v: T, three: T, six: T) -> T {
    let u = v + three;
    if u < T::zero() {
        T::zero()
    } else if u > six {
        six
    } else {
        u
    }
}

/// A float unary op; the `match` sits outside the loop so each loop is monomorphic.
pub(crate) fn unary_float<T: UnaryFloat>(x: &[T], op: UnaryOp) -> Result<Vec<T>> {
    let c = |v: f64| -> T { <T as NumCast>::from(v).expect("f64 converts to a float type") };
    let (zero, one, half) = (T::zero(), T::one(), c(0.5));
    let (three, six) = (c(3.0), c(6.0));
    let name = op.name();
    match op {
        UnaryOp::Neg => try_map(name, x, |v| -v),
        UnaryOp::Exp => try_map(name, x, |v| v.exp()),
        UnaryOp::Log => try_map(name, x, |v| v.ln()),
        UnaryOp::Sqrt => try_map(name, x, |v| v.sqrt()),
        UnaryOp::Square => try_map(name, x, |v| v * v),
        // `v < 0`, not `v > 0`: NaN passes through (as PyTorch and TF) instead of
        // silently becoming 0 and hiding a diverged computation.
        UnaryOp::Relu => try_map(name, x, |v| if v < zero { zero } else { v }),
        UnaryOp::Sigmoid => try_map(name, x, sigmoid),
        UnaryOp::Tanh => try_map(name, x, |v| v.tanh()),
        UnaryOp::Abs => try_map(name, x, |v| v.abs()),
        UnaryOp::Sign => try_map(name, x, |v| {
            if v > zero {
                one
            } else if v < zero {
                -one
            } else {
                zero
            }
        }),
        UnaryOp::Recip => try_map(name, x, |v| one / v),
        UnaryOp::Powf(e) => {
            let e = c(e);
            try_map(name, x, move |v| v.powf(e))
        }
        UnaryOp::Clamp { min, max } => {
            let (lo, hi) = (c(min), c(max));
            try_map(name, x, move |v| {
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
            try_map(name, x, move |v| v * m + a)
        }
        UnaryOp::Erf => try_map(name, x, UnaryFloat::erf),
        UnaryOp::Log1p => try_map(name, x, |v| v.ln_1p()),
        UnaryOp::Expm1 => try_map(name, x, |v| v.exp_m1()),
        UnaryOp::Softplus => try_map(name, x, softplus),
        UnaryOp::Softsign => try_map(name, x, |v| v / (one + v.abs())),
        UnaryOp::Gelu => {
            // Φ(v) = erfc(-v/√2)/2 keeps its precision in the far negative tail, where
            // 1 + erf(v/√2) cancels.
            let s = c(std::f64::consts::FRAC_1_SQRT_2);
            try_map(name, x, move |v| v * half * (-v * s).erfc())
        }
        UnaryOp::GeluTanh => {
            let (k, a) = (c((2.0 / std::f64::consts::PI).sqrt()), c(0.044715));
            try_map(name, x, move |v| half * v * (one + (k * (v + a * v * v * v)).tanh()))
        }
        UnaryOp::Silu => try_map(name, x, |v| v * sigmoid(v)),
        UnaryOp::Mish => try_map(name, x, |v| v * softplus(v).tanh()),
        UnaryOp::HardSigmoid => try_map(name, x, move |v| relu6_shifted(v, three, six) / six),
        UnaryOp::HardSwish => try_map(name, x, move |v| v * relu6_shifted(v, three, six) / six),
        UnaryOp::Elu { alpha } => {
            let alpha = c(alpha);
            try_map(name, x, move |v| if v > zero { v } else { alpha * v.exp_m1() })
        }
        UnaryOp::LeakyRelu { slope } => {
            let slope = c(slope);
            try_map(name, x, move |v| if v < zero { v * slope } else { v })
        }
    }
}

/// The unary ops defined on integers.
pub(crate) fn unary_int(x: &[i64], op: UnaryOp) -> Result<Vec<i64>> {
    let name = op.name();
    match op {
        UnaryOp::Neg => try_map(name, x, |v| v.wrapping_neg()),
        UnaryOp::Abs => try_map(name, x, |v| v.wrapping_abs()),
        UnaryOp::Sign => try_map(name, x, |v| v.signum()),
        UnaryOp::Square => try_map(name, x, |v| v.wrapping_mul(v)),
        UnaryOp::Relu => try_map(name, x, |v| v.max(0)),
        UnaryOp::Clamp { min, max } => {
            let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
            if lo > hi {
                return Err(Error::invalid(
                    "clamp",
                    format!("bounds [{min}, {max}] contain no integer, so i64 values cannot be clamped to them"),
                ));
            }
            try_map(name, x, move |v| v.clamp(lo, hi))
        }
        other => {
            Err(Error::UnsupportedDType { op: other.name(), dtype: DType::I64, expected: "f32, f64, bf16 or f16" })
        }
    }
}

/// The op's name, as errors spell it.
fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Maximum => "maximum",
        BinaryOp::Minimum => "minimum",
        BinaryOp::Eq => "equal",
        BinaryOp::Ne => "not_equal",
        BinaryOp::Lt => "lt",
        BinaryOp::Le => "le",
        BinaryOp::Gt => "gt",
        BinaryOp::Ge => "ge",
    }
}

/// The arithmetic a binary kernel needs, for floats and integers alike.
/// Integers wrap on overflow (as NumPy, PyTorch and TF do) rather than panic.
pub(crate) trait BinaryElem: ZeroBits + Send + Sync + PartialOrd + num_traits::Num {
    fn add_elem(self, rhs: Self) -> Self {
        self + rhs
    }
    fn sub_elem(self, rhs: Self) -> Self {
        self - rhs
    }
    fn mul_elem(self, rhs: Self) -> Self {
        self * rhs
    }
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
    fn add_elem(self, rhs: Self) -> Self {
        self.wrapping_add(rhs)
    }
    fn sub_elem(self, rhs: Self) -> Self {
        self.wrapping_sub(rhs)
    }
    fn mul_elem(self, rhs: Self) -> Self {
        self.wrapping_mul(rhs)
    }
    /// Integer division by zero gives 0 rather than a panic.
    fn div_elem(self, rhs: Self) -> Self {
        self.checked_div(rhs).unwrap_or(0)
    }
}

/// A binary op with broadcasting: picks the function, then runs the broadcast loop.
pub(crate) fn binary<T: BinaryElem>(
    a: &[T],
    b: &[T],
    op: BinaryOp,
    ls: &Shape,
    rs: &Shape,
    out: &Shape,
) -> Result<Vec<T>> {
    let bool_to = |c: bool| if c { T::one() } else { T::zero() };
    let name = binary_name(op);
    match op {
        BinaryOp::Add => broadcast_map(name, a, b, ls, rs, out, |x, y| x.add_elem(y)),
        BinaryOp::Sub => broadcast_map(name, a, b, ls, rs, out, |x, y| x.sub_elem(y)),
        BinaryOp::Mul => broadcast_map(name, a, b, ls, rs, out, |x, y| x.mul_elem(y)),
        BinaryOp::Div => broadcast_map(name, a, b, ls, rs, out, |x, y| x.div_elem(y)),
        BinaryOp::Maximum => broadcast_map(name, a, b, ls, rs, out, |x, y| if x >= y || is_nan(x) { x } else { y }),
        BinaryOp::Minimum => broadcast_map(name, a, b, ls, rs, out, |x, y| if x <= y || is_nan(x) { x } else { y }),
        BinaryOp::Eq => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x == y)),
        BinaryOp::Ne => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x != y)),
        BinaryOp::Lt => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x < y)),
        BinaryOp::Le => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x <= y)),
        BinaryOp::Gt => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x > y)),
        BinaryOp::Ge => broadcast_map(name, a, b, ls, rs, out, move |x, y| bool_to(x >= y)),
    }
}

/// `out[i] = f(a[ia], b[ib])` over the broadcast shape. Same shapes and scalar operands
/// take flat loops; otherwise the dimensions are coalesced and the innermost one runs as
/// a tight loop over rows whose start offsets come from the outer index.
pub(crate) fn broadcast_map<T: Copy + Send + Sync, U: ZeroBits + Send + Sync>(
    op: &'static str,
    a: &[T],
    b: &[T],
    ls: &Shape,
    rs: &Shape,
    out: &Shape,
    f: impl Fn(T, T) -> U + Sync + Send + Copy,
) -> Result<Vec<U>> {
    let n = out.elem_count();
    if n == 0 {
        // Nothing to compute; the row loop below would split into rows of length 0.
        return Ok(Vec::new());
    }
    if ls == rs {
        return try_zip_map(op, a, b, f);
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        return try_map(op, a, move |x| f(x, y));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        return try_map(op, b, move |y| f(x, y));
    }
    let (dims, sa, sb) = coalesce(out.dims(), &[ls.broadcast_strides(out), rs.broadcast_strides(out)]);
    let rank = dims.len();
    let inner = dims[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut result = try_zeros::<U>(op, n)?;
    if rank == 2 && (ia, ib) == (1, 1) && sa[0] == inner && sb[0] == 0 {
        // A vector along the last axis (a bias over NHWC pixels): its rows, a few
        // channels long, are too short for the per-row offsets below; tasks of many rows
        // zip each with the vector instead.
        let rows_per_task = (PAR_MIN_LEN / inner).max(1);
        let task = |(t, chunk): (usize, &mut [U])| {
            let a = &a[t * rows_per_task * inner..][..chunk.len()];
            for (o, x) in chunk.chunks_exact_mut(inner).zip(a.chunks_exact(inner)) {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(&b[..inner]) {
                    *o = f(x, y);
                }
            }
        };
        if n < PAR_MIN_LEN {
            task((0, &mut result));
        } else {
            result.par_chunks_mut(rows_per_task * inner).enumerate().for_each(task);
        }
        return Ok(result);
    }
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
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_bias_and_column() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let bias = vec![10.0f32, 20.0, 30.0];
        let r =
            binary(&a, &bias, BinaryOp::Add, &Shape::new(&[2, 3]), &Shape::new(&[3]), &Shape::new(&[2, 3])).unwrap();
        assert_eq!(r, vec![10.0, 21.0, 32.0, 13.0, 24.0, 35.0]);
        let col = vec![1.0f32, 2.0];
        let r =
            binary(&a, &col, BinaryOp::Mul, &Shape::new(&[2, 3]), &Shape::new(&[2, 1]), &Shape::new(&[2, 3])).unwrap();
        assert_eq!(r, vec![0.0, 1.0, 2.0, 6.0, 8.0, 10.0]);
    }
}
