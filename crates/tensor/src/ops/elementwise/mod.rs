//! Elementwise ops with NumPy broadcasting, and their gradient rules.

mod activations;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{BinaryOp, UnaryOp};
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{DType, Error, Result, Tensor};
use std::f64::consts::FRAC_2_SQRT_PI;

impl Tensor {
    fn unary_op(&self, name: &'static str, op: UnaryOp) -> Result<Tensor> {
        let storage =
            guarded(name, &[self], &[self.shape()], self.dtype(), &self.device(), || self.storage().unary(op))?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// Applies a float-only unary op and records its gradient rule
    /// `grad(x, y, g) -> dx`.
    fn unary_float(
        &self,
        name: &'static str,
        op: UnaryOp,
        grad: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + 'static,
    ) -> Result<Tensor> {
        self.check_float(name)?;
        let y = self.unary_op(name, op)?;
        let (x, y2) = (self.clone(), y.clone());
        record_op(name, &[self], &y, move |g| Ok(vec![Some(grad(&x, &y2, g)?)]));
        Ok(y)
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return self.unary_op("neg", UnaryOp::Neg);
        }
        self.unary_float("neg", UnaryOp::Neg, |_, _, g| g.neg())
    }

    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary_float("exp", UnaryOp::Exp, |_, y, g| g.mul(y))
    }

    /// Natural logarithm (`-inf` at 0, NaN below).
    pub fn log(&self) -> Result<Tensor> {
        self.unary_float("log", UnaryOp::Log, |x, _, g| g.div(x))
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary_float("sqrt", UnaryOp::Sqrt, |_, y, g| g.div(y)?.affine(0.5, 0.0))
    }

    /// The error function `erf(x) = 2/√π ∫₀ˣ e^(-t²) dt`.
    pub fn erf(&self) -> Result<Tensor> {
        self.unary_float("erf", UnaryOp::Erf, |x, _, g| g.mul(&x.square()?.neg()?.exp()?.affine(FRAC_2_SQRT_PI, 0.0)?))
    }

    /// `ln(1 + x)`, accurate for small `x`.
    pub fn log1p(&self) -> Result<Tensor> {
        self.unary_float("log1p", UnaryOp::Log1p, |x, _, g| g.div(&x.add_scalar(1.0)?))
    }

    /// `e^x - 1`, accurate for small `x`.
    pub fn expm1(&self) -> Result<Tensor> {
        self.unary_float("expm1", UnaryOp::Expm1, |_, y, g| g.mul(&y.add_scalar(1.0)?))
    }

    /// `x * x`.
    pub fn square(&self) -> Result<Tensor> {
        self.unary_float("square", UnaryOp::Square, |x, _, g| g.mul(x)?.affine(2.0, 0.0))
    }

    /// `x^exponent` for a constant exponent.
    pub fn powf(&self, exponent: f64) -> Result<Tensor> {
        self.unary_float("powf", UnaryOp::Powf(exponent), move |x, _, g| {
            g.mul(&x.powf(exponent - 1.0)?)?.affine(exponent, 0.0)
        })
    }

    /// `max(x, 0)`; the gradient at 0 is 0 (as TF and PyTorch).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary_float("relu", UnaryOp::Relu, |x, _, g| g.mul(&x.gt_scalar(0.0)?))
    }

    /// The logistic function `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary_float("sigmoid", UnaryOp::Sigmoid, |_, y, g| {
            // y * (1 - y)
            g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)
        })
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary_float("tanh", UnaryOp::Tanh, |_, y, g| g.mul(&y.square()?.affine(-1.0, 1.0)?))
    }

    /// `|x|`; the gradient at 0 is 0.
    pub fn abs(&self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return self.unary_op("abs", UnaryOp::Abs);
        }
        self.unary_float("abs", UnaryOp::Abs, |x, _, g| g.mul(&x.sign()?))
    }

    /// -1, 0 or 1 by the sign of each element. Not differentiable (its gradient is 0).
    pub fn sign(&self) -> Result<Tensor> {
        self.unary_op("sign", UnaryOp::Sign)
    }

    /// `1 / x`.
    pub fn recip(&self) -> Result<Tensor> {
        self.unary_float("recip", UnaryOp::Recip, |_, y, g| g.mul(&y.square()?)?.neg())
    }

    /// Clamps into `[min, max]`; the gradient passes where `min <= x <= max`.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(Error::invalid("clamp", format!("bad bounds [{min}, {max}]")));
        }
        if !self.dtype().is_float() {
            return self.unary_op("clamp", UnaryOp::Clamp { min, max });
        }
        self.unary_float("clamp", UnaryOp::Clamp { min, max }, move |x, _, g| {
            g.mul(&x.ge_scalar(min)?)?.mul(&x.le_scalar(max)?)
        })
    }

    /// `x * mul + add` in one pass.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary_float("affine", UnaryOp::Affine { mul, add }, move |_, _, g| g.affine(mul, 0.0))
    }

    /// `x + value`.
    pub fn add_scalar(&self, value: f64) -> Result<Tensor> {
        self.affine(1.0, value)
    }

    /// `x * value`.
    pub fn mul_scalar(&self, value: f64) -> Result<Tensor> {
        self.affine(value, 0.0)
    }

    fn binary_op(&self, rhs: &Tensor, op: BinaryOp, name: &'static str) -> Result<Tensor> {
        self.check_same(rhs, name)?;
        let out_shape = self.shape().broadcast(rhs.shape(), name)?;
        let storage = guarded(name, &[self, rhs], &[&out_shape], self.dtype(), &self.device(), || {
            self.storage().binary(rhs.storage(), op, self.shape(), rhs.shape(), &out_shape)
        })?;
        Ok(Tensor::from_storage(storage, out_shape))
    }

    /// Records a binary op's rule `grad(a, b, g) -> (da, db)`, where `da` and `db` may
    /// still have the broadcast shape: they are summed back to each operand's shape.
    fn record_binary(
        &self,
        rhs: &Tensor,
        out: &Tensor,
        name: &'static str,
        grad: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + 'static,
    ) {
        let (a, b) = (self.clone(), rhs.clone());
        record_op(name, &[self, rhs], out, move |g| {
            let (da, db) = grad(&a, &b, g)?;
            Ok(vec![
                da.map(|d| d.sum_to_shape(a.shape())).transpose()?,
                db.map(|d| d.sum_to_shape(b.shape())).transpose()?,
            ])
        });
    }

    /// `a + b`, broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Add, "add")?;
        self.record_binary(rhs, &out, "add", |_, _, g| Ok((Some(g.clone()), Some(g.clone()))));
        Ok(out)
    }

    /// `a - b`, broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Sub, "sub")?;
        self.record_binary(rhs, &out, "sub", |_, _, g| Ok((Some(g.clone()), Some(g.neg()?))));
        Ok(out)
    }

    /// `a * b`, broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Mul, "mul")?;
        self.record_binary(rhs, &out, "mul", |a, b, g| Ok((Some(g.mul(b)?), Some(g.mul(a)?))));
        Ok(out)
    }

    /// `a / b`, broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Div, "div")?;
        self.record_binary(rhs, &out, "div", |a, b, g| {
            let da = g.div(b)?;
            // d(a/b)/db = -a / b^2 = -(g/b) * (a/b)
            let db = da.mul(&a.div(b)?)?.neg()?;
            Ok((Some(da), Some(db)))
        });
        Ok(out)
    }

    /// Elementwise maximum; on ties the gradient goes to `a`.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Maximum, "maximum")?;
        self.record_binary(rhs, &out, "maximum", |a, b, g| {
            let mask = a.ge(b)?;
            Ok((Some(g.mul(&mask)?), Some(g.mul(&mask.affine(-1.0, 1.0)?)?)))
        });
        Ok(out)
    }

    /// Elementwise minimum; on ties the gradient goes to `a`.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = self.binary_op(rhs, BinaryOp::Minimum, "minimum")?;
        self.record_binary(rhs, &out, "minimum", |a, b, g| {
            let mask = a.le(b)?;
            Ok((Some(g.mul(&mask)?), Some(g.mul(&mask.affine(-1.0, 1.0)?)?)))
        });
        Ok(out)
    }

    /// `a == b` as 1 or 0 in the operands' dtype, broadcasting. No gradient.
    pub fn equal(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Eq, "equal")
    }

    /// `a != b` as 1 or 0. No gradient.
    pub fn not_equal(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Ne, "not_equal")
    }

    /// `a < b` as 1 or 0. No gradient.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Lt, "lt")
    }

    /// `a <= b` as 1 or 0. No gradient.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Le, "le")
    }

    /// `a > b` as 1 or 0. No gradient.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Gt, "gt")
    }

    /// `a >= b` as 1 or 0. No gradient.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Ge, "ge")
    }

    /// A scalar of this tensor's dtype and device.
    pub(crate) fn scalar_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, (), self.dtype(), &self.device())
    }

    /// `x > value` as 1 or 0.
    pub fn gt_scalar(&self, value: f64) -> Result<Tensor> {
        self.gt(&self.scalar_like(value)?)
    }

    /// `x >= value` as 1 or 0.
    pub fn ge_scalar(&self, value: f64) -> Result<Tensor> {
        self.ge(&self.scalar_like(value)?)
    }

    /// `x <= value` as 1 or 0.
    pub fn le_scalar(&self, value: f64) -> Result<Tensor> {
        self.le(&self.scalar_like(value)?)
    }

    /// `x < value` as 1 or 0.
    pub fn lt_scalar(&self, value: f64) -> Result<Tensor> {
        self.lt(&self.scalar_like(value)?)
    }

    /// `x == value` as 1 or 0.
    pub fn equal_scalar(&self, value: f64) -> Result<Tensor> {
        self.equal(&self.scalar_like(value)?)
    }

    /// Converts to another dtype. Casts between float dtypes pass gradients (converted
    /// back); casts to or from i64 do not.
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let from = self.dtype();
        let storage = guarded("cast", &[self], &[self.shape()], dtype, &self.device(), || self.storage().cast(dtype))?;
        let out = Tensor::from_storage(storage, self.shape().clone());
        if from.is_float() {
            record_op("cast", &[self], &out, move |g| Ok(vec![Some(g.cast(from)?)]));
        }
        Ok(out)
    }
}
