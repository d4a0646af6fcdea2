//! Gradient checking against central finite differences, for tests of this crate and of
//! crates built on it.
//!
//! [`check_gradients`] evaluates `f` on f64 inputs, contracts its output with fixed
//! pseudo-random weights `w` (so that the check covers a non-trivial output gradient, not
//! only ones), and compares the tape's gradient of `sum(w * f(x))` with respect to every
//! input against `(L(x + h e_i) - L(x - h e_i)) / 2h` for every element `i`.
//!
//! Tolerance: with `h = 1e-6` in f64 the finite difference is accurate to about
//! `1e-9` for smooth functions of moderate size (truncation `~h^2`, rounding
//! `~1e-16 |L| / h`); the default [`GradCheck`] accepts `|analytic - numeric| <= 1e-6 +
//! 1e-5 * |numeric|`, plus the finite difference's own rounding floor,
//! `8 eps max(|L(x + h)|, |L(x - h)|) / 2h`: where the loss is large (exp at 8 sums to
//! thousands), a small gradient element cannot be resolved more finely than that by any
//! step. Inputs should avoid kinks (relu at 0, ties of max) by a margin much larger than
//! `h`.
//!
//! [`cuda_or_skip`] and [`cuda_device_or_skip`] give a test the CUDA device, or skip it
//! with a printed reason where there is none.

mod gpu;

pub use gpu::{cuda_device_or_skip, cuda_or_skip, gpu_lock};

use crate::{DType, Error, GradientTape, Result, Tensor};

/// Settings of a gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (to the numeric gradient's magnitude).
    pub rtol: f64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { step: 1e-6, atol: 1e-6, rtol: 1e-5 }
    }
}

/// Checks the gradients of `f` at `inputs` (f64 tensors) with default settings.
pub fn check_gradients(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<()> {
    GradCheck::default().check(f, inputs)
}

impl GradCheck {
    /// Checks the gradients of `f` with respect to every input; the error names the input,
    /// the element and both values.
    pub fn check(&self, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<()> {
        for (i, x) in inputs.iter().enumerate() {
            if x.dtype() != DType::F64 {
                return Err(Error::invalid(
                    "check_gradients",
                    format!("input {i} has dtype {}, expected f64", x.dtype()),
                ));
            }
        }
        let out = f(inputs)?;
        let weights: Vec<f64> = (0..out.elem_count()).map(|j| 0.5 + ((j * 7919) % 13) as f64 / 13.0).collect();
        let w = Tensor::from_vec(weights, out.shape().clone(), &out.device())?;
        let loss = |xs: &[Tensor]| -> Result<Tensor> { f(xs)?.mul(&w)?.sum_all() };

        let tape = GradientTape::new();
        let watched: Vec<Tensor> = inputs.iter().map(|x| x.detach()).collect();
        for x in &watched {
            tape.watch(x);
        }
        let target = tape.record(|| loss(&watched))?;
        let grads = tape.gradient(&target, &watched)?;

        for (i, x) in inputs.iter().enumerate() {
            let analytic = match &grads[i] {
                Some(g) => g.to_vec::<f64>()?,
                None => vec![0.0; x.elem_count()],
            };
            let base = x.to_vec::<f64>()?;
            for e in 0..base.len() {
                let eval = |delta: f64| -> Result<f64> {
                    let mut v = base.clone();
                    v[e] += delta;
                    let mut xs = inputs.to_vec();
                    xs[i] = Tensor::from_vec(v, x.shape().clone(), &x.device())?;
                    loss(&xs)?.to_scalar::<f64>()
                };
                let (up, down) = (eval(self.step)?, eval(-self.step)?);
                let numeric = (up - down) / (2.0 * self.step);
                let rounding = 8.0 * f64::EPSILON * up.abs().max(down.abs()) / (2.0 * self.step);
                let a = analytic[e];
                let close = (a - numeric).abs() <= self.atol + self.rtol * numeric.abs() + rounding;
                if !close {
                    return Err(Error::invalid(
                        "check_gradients",
                        format!(
                            "input {i} (shape {}), element {e}: analytic gradient {a:e} vs finite difference {numeric:e}",
                            x.shape()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
