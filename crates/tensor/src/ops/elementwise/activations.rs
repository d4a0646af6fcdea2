//! Activation functions as fused elementwise ops: each forward pass is one kernel
//! (`UnaryOp`), and each gradient rule is written with tensor ops, so that it runs on
//! every backend and an outer tape can differentiate it again.

use crate::backend::UnaryOp;
use crate::{Error, Result, Tensor};
use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// `√(2/π)`, the tanh approximation of GELU's scale.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_TANH_CUBIC: f64 = 0.044715;

/// `1` where `x < value`, else `0`.
fn lt_scalar(x: &Tensor, value: f64) -> Result<Tensor> {
    x.lt(&x.scalar_like(value)?)
}

/// `1` strictly inside `(-3, 3)`, where the hard sigmoid is not flat (0 on the edges, as
/// PyTorch's gradient).
fn hard_sigmoid_slope_mask(x: &Tensor) -> Result<Tensor> {
    lt_scalar(x, 3.0)?.mul(&x.gt_scalar(-3.0)?)
}

fn check_finite(op: &'static str, option: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("{option} must be finite, got {value}")))
    }
}

impl Tensor {
    /// `min(max(x, 0), 6)` in one pass (Keras' and PyTorch's `relu6`); the gradient is 1
    /// strictly inside `(0, 6)` and 0 elsewhere, as TF's and PyTorch's.
    pub fn relu6(&self) -> Result<Tensor> {
        self.relu_max(6.0)
    }

    /// `min(max(x, 0), max_value)` in one pass (Keras' `relu(x, max_value=..)`); the
    /// gradient is 1 strictly inside `(0, max_value)`. `max_value` must be `>= 0`.
    pub fn relu_max(&self, max_value: f64) -> Result<Tensor> {
        if max_value.is_nan() || max_value < 0.0 {
            return Err(Error::invalid("relu_max", format!("max_value must be >= 0, got {max_value}")));
        }
        self.unary_float("relu_max", UnaryOp::Clamp { min: 0.0, max: max_value }, move |x, _, g| {
            g.mul(&x.gt_scalar(0.0)?.mul(&lt_scalar(x, max_value)?)?)
        })
    }

    /// `x` for `x >= 0`, else `negative_slope * x`; the gradient at 0 is `negative_slope`,
    /// as PyTorch's.
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        check_finite("leaky_relu", "negative_slope", negative_slope)?;
        self.unary_float("leaky_relu", UnaryOp::LeakyRelu { slope: negative_slope }, move |x, _, g| {
            g.mul(&x.gt_scalar(0.0)?.affine(1.0 - negative_slope, negative_slope)?)
        })
    }

    /// `x` for `x > 0`, else `alpha * (e^x - 1)` (ELU).
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        check_finite("elu", "alpha", alpha)?;
        self.unary_float("elu", UnaryOp::Elu { alpha }, move |x, y, g| {
            // d/dx = 1 above 0, alpha * e^x = y + alpha below.
            let positive = x.gt_scalar(0.0)?;
            let negative = positive.affine(-1.0, 1.0)?;
            g.mul(&positive.add(&negative.mul(&y.add_scalar(alpha)?)?)?)
        })
    }

    /// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` (no overflow).
    pub fn softplus(&self) -> Result<Tensor> {
        self.unary_float("softplus", UnaryOp::Softplus, |x, _, g| g.mul(&x.sigmoid()?))
    }

    /// `x / (1 + |x|)`.
    pub fn softsign(&self) -> Result<Tensor> {
        self.unary_float("softsign", UnaryOp::Softsign, |x, _, g| g.div(&x.abs()?.add_scalar(1.0)?.square()?))
    }

    /// The Gaussian error linear unit `x * Φ(x)`: exact (through erf) when `approximate`
    /// is false (Keras' and PyTorch's default), else the tanh approximation
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (PyTorch's `approximate='tanh'`).
    pub fn gelu(&self, approximate: bool) -> Result<Tensor> {
        if approximate {
            return self.unary_float("gelu_tanh", UnaryOp::GeluTanh, |x, _, g| {
                // t = tanh(u), u = k (x + c x³): d/dx = (1 + t)/2 + x (1 - t²) k (1 + 3 c x²) / 2.
                let x2 = x.square()?;
                let u = x.mul(&x2.affine(GELU_TANH_CUBIC, 1.0)?)?.affine(SQRT_2_OVER_PI, 0.0)?;
                let t = u.tanh()?;
                let du = x2.affine(3.0 * GELU_TANH_CUBIC * SQRT_2_OVER_PI, SQRT_2_OVER_PI)?;
                let inner = x.mul(&t.square()?.affine(-1.0, 1.0)?)?.mul(&du)?;
                g.mul(&t.add(&inner)?.affine(0.5, 0.5)?)
            });
        }
        self.unary_float("gelu", UnaryOp::Gelu, |x, _, g| {
            // Φ(x) + x φ(x), φ the standard normal density.
            let cdf = x.affine(FRAC_1_SQRT_2, 0.0)?.erf()?.affine(0.5, 0.5)?;
            let pdf = x.square()?.affine(-0.5, 0.0)?.exp()?.affine(1.0 / (2.0 * PI).sqrt(), 0.0)?;
            g.mul(&cdf.add(&x.mul(&pdf)?)?)
        })
    }

    /// `x * sigmoid(x)` (SiLU, Keras' swish).
    pub fn silu(&self) -> Result<Tensor> {
        self.unary_float("silu", UnaryOp::Silu, |x, y, g| {
            // s (1 + x (1 - s)) = s (1 + x - y).
            g.mul(&x.sigmoid()?.mul(&x.sub(y)?.add_scalar(1.0)?)?)
        })
    }

    /// `x * tanh(softplus(x))` (Mish).
    pub fn mish(&self) -> Result<Tensor> {
        self.unary_float("mish", UnaryOp::Mish, |x, _, g| {
            // t + x (1 - t²) sigmoid(x), t = tanh(softplus(x)).
            let t = x.softplus()?.tanh()?;
            let inner = x.mul(&t.square()?.affine(-1.0, 1.0)?)?.mul(&x.sigmoid()?)?;
            g.mul(&t.add(&inner)?)
        })
    }

    /// `relu6(x + 3) / 6` (Keras 3's `hard_sigmoid`, PyTorch's `hardsigmoid`).
    pub fn hard_sigmoid(&self) -> Result<Tensor> {
        self.unary_float("hard_sigmoid", UnaryOp::HardSigmoid, |x, _, g| {
            g.mul(&hard_sigmoid_slope_mask(x)?.affine(1.0 / 6.0, 0.0)?)
        })
    }

    /// `x * relu6(x + 3) / 6` (Keras' `hard_silu` / `hard_swish`, PyTorch's `hardswish`).
    pub fn hard_swish(&self) -> Result<Tensor> {
        self.unary_float("hard_swish", UnaryOp::HardSwish, |x, _, g| {
            // hard_sigmoid(x) + x / 6 inside (-3, 3): 0 below -3, 1 above 3.
            let slope = x.mul(&hard_sigmoid_slope_mask(x)?)?.affine(1.0 / 6.0, 0.0)?;
            g.mul(&x.hard_sigmoid()?.add(&slope)?)
        })
    }
}
