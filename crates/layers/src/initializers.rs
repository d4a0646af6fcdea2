//! Weight initializers, as Keras defines them, drawn from the seeded generator of
//! [`random`](crate::random).
//!
//! Fans are given by the layer, because they depend on the layout: a Dense kernel
//! `[in, out]` has `fan_in = in`, `fan_out = out`; a convolution kernel, stored here as
//! `[out, kh, kw, in]`, has `fan_in = kh * kw * in` and `fan_out = kh * kw * out`, as Keras
//! computes them for its `(kh, kw, in, out)` layout.

use crate::random::with_rng;
use crate::Result;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad_tensor::{DType, Device, Shape, Tensor};

/// The fan-in and fan-out of a weight, which variance-scaling initializers scale by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fans {
    /// Inputs that feed one output unit.
    pub fan_in: usize,
    /// Outputs that one input unit feeds.
    pub fan_out: usize,
}

impl Fans {
    /// The fans of a Dense kernel `[in, out]`.
    pub fn dense(inputs: usize, outputs: usize) -> Self {
        Fans { fan_in: inputs, fan_out: outputs }
    }

    /// The fans of a convolution kernel `[out, kh, kw, in]`.
    pub fn conv2d(out_channels: usize, kh: usize, kw: usize, in_channels: usize) -> Self {
        // Saturating: a kernel too large to allocate is refused by `initialize`, not here.
        let taps = kh.saturating_mul(kw);
        Fans { fan_in: taps.saturating_mul(in_channels), fan_out: taps.saturating_mul(out_channels) }
    }

    /// Fans for a vector or other shape with no fan structure (Keras: both the length).
    pub fn vector(len: usize) -> Self {
        Fans { fan_in: len, fan_out: len }
    }
}

/// Which fan a variance-scaling initializer divides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// `fan_in`.
    FanIn,
    /// `fan_out`.
    FanOut,
    /// `(fan_in + fan_out) / 2`.
    FanAvg,
}

/// The distribution of a variance-scaling initializer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingDistribution {
    /// Uniform on `[-limit, limit]`, `limit = sqrt(3 * scale / fan)`.
    Uniform,
    /// Normal truncated at two standard deviations, its std corrected to
    /// `sqrt(scale / fan)` (Keras' `truncated_normal`).
    TruncatedNormal,
    /// Plain normal with std `sqrt(scale / fan)`.
    UntruncatedNormal,
}

/// How a variable's initial value is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    /// All zeros (Keras' default for biases and BN's beta and moving mean).
    Zeros,
    /// All ones (BN's gamma and moving variance).
    Ones,
    /// Every element `value`.
    Constant(f64),
    /// Uniform on `[-limit, limit]` with `limit = sqrt(6 / (fan_in + fan_out))`: Keras'
    /// default for kernels.
    GlorotUniform,
    /// Truncated normal with std `sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Truncated normal with std `sqrt(2 / fan_in)`.
    HeNormal,
    /// Uniform on `[-limit, limit]` with `limit = sqrt(6 / fan_in)`.
    HeUniform,
    /// Normal with the given mean and std.
    RandomNormal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
    /// Uniform on `[low, high)`.
    RandomUniform {
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
    },
    /// Keras' `VarianceScaling`, of which the Glorot and He initializers are cases.
    VarianceScaling {
        /// The variance scale.
        scale: f64,
        /// Which fan to divide by.
        mode: FanMode,
        /// The distribution.
        distribution: ScalingDistribution,
    },
}

/// The std of a standard normal truncated to `[-2, 2]` (what Keras divides by so that the
/// truncated draw has the intended variance).
const TRUNCATED_NORMAL_STD: f64 = 0.879_625_661_034_239_8;

impl Initializer {
    /// A tensor of `shape` drawn from this initializer with the thread's seeded generator.
    ///
    /// A parameter that cannot give finite values (a NaN constant, a negative std, an empty
    /// range) is an error naming it, and so is a shape too large to allocate: the values are
    /// drawn into a buffer reserved fallibly, so a huge layer (`Dense::new(1 << 40)`) is an
    /// error, not an aborted process.
    pub fn initialize(&self, shape: &Shape, fans: Fans, dtype: DType, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let n = shape.checked_elem_count("initializer")?;
        let values: Result<Vec<f64>> = match *self {
            Initializer::Zeros => return Ok(Tensor::zeros(shape.clone(), dtype, device)?),
            Initializer::Ones => return Ok(Tensor::ones(shape.clone(), dtype, device)?),
            Initializer::Constant(v) => return Ok(Tensor::full(v, shape.clone(), dtype, device)?),
            Initializer::GlorotUniform => {
                variance_scaling(n, shape, fans, 1.0, FanMode::FanAvg, ScalingDistribution::Uniform)
            }
            Initializer::GlorotNormal => {
                variance_scaling(n, shape, fans, 1.0, FanMode::FanAvg, ScalingDistribution::TruncatedNormal)
            }
            Initializer::HeNormal => {
                variance_scaling(n, shape, fans, 2.0, FanMode::FanIn, ScalingDistribution::TruncatedNormal)
            }
            Initializer::HeUniform => {
                variance_scaling(n, shape, fans, 2.0, FanMode::FanIn, ScalingDistribution::Uniform)
            }
            Initializer::RandomNormal { mean, std } => {
                draw(n, shape, |r| mean + std * Distribution::<f64>::sample(&StandardNormal, r))
            }
            Initializer::RandomUniform { low, high } => draw(n, shape, |r| r.random_range(low..high)),
            Initializer::VarianceScaling { scale, mode, distribution } => {
                variance_scaling(n, shape, fans, scale, mode, distribution)
            }
        };
        let values = values?;
        let t = match dtype {
            DType::F64 => Tensor::from_vec(values, shape.clone(), device)?,
            _ => Tensor::from_vec(values, shape.clone(), &Device::Cpu)?.cast(dtype)?.to_device(device)?,
        };
        Ok(t)
    }
}

impl Initializer {
    /// [`initialize`](Self::initialize) for the variable `variable` (e.g. "kernel") of the
    /// layer `layer`: an error names both, since a model's build error must say which of its
    /// layers was given the bad initializer or the shape too large to allocate.
    pub(crate) fn initialize_for(
        &self,
        (layer, variable): (&str, &str),
        shape: &Shape,
        fans: Fans,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        self.initialize(shape, fans, dtype, device).map_err(|e| match e {
            crate::Error::Invalid(msg) => crate::Error::layer(layer, format!("{variable} initializer {msg}")),
            // Kept a tensor error (an out-of-memory one stays matchable); its message names the shape.
            crate::Error::Tensor(e) => crate::Error::in_layer(layer, e),
            other => other,
        })
    }

    /// Checks the parameters: finite constants, a non-negative finite std, a non-empty finite
    /// range, a positive finite scale. The error names the initializer, the option and its value.
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(crate::Error::Invalid(format!("{self:?}: {what}")));
        match *self {
            Initializer::Constant(v) if !v.is_finite() => bad(format!("the value must be finite, got {v}")),
            Initializer::RandomNormal { mean, std } if !(mean.is_finite() && std.is_finite() && std >= 0.0) => {
                bad(format!("mean must be finite and std finite and >= 0, got mean {mean}, std {std}"))
            }
            Initializer::RandomUniform { low, high } if !(low.is_finite() && high.is_finite() && low < high) => {
                bad(format!("empty or non-finite range [{low}, {high})"))
            }
            Initializer::VarianceScaling { scale, .. } if !(scale.is_finite() && scale > 0.0) => {
                bad(format!("scale must be finite and > 0, got {scale}"))
            }
            _ => Ok(()),
        }
    }
}

/// `n` values drawn by `sample` from the thread's generator, into a buffer reserved
/// fallibly: a shape too large for memory is an out-of-memory error naming it.
fn draw(n: usize, shape: &Shape, mut sample: impl FnMut(&mut rand::rngs::StdRng) -> f64) -> Result<Vec<f64>> {
    let mut values = Vec::new();
    values.try_reserve_exact(n).map_err(|_| tapegrad_tensor::Error::OutOfMemory {
        device: Device::Cpu,
        op: "initializer",
        requested: n.saturating_mul(std::mem::size_of::<f64>()),
        detail: format!(" for the initial values of a variable of shape {shape} (drawn in f64)"),
    })?;
    with_rng(|r| values.extend((0..n).map(|_| sample(r))));
    Ok(values)
}

fn variance_scaling(
    n: usize,
    shape: &Shape,
    fans: Fans,
    scale: f64,
    mode: FanMode,
    dist: ScalingDistribution,
) -> Result<Vec<f64>> {
    let fan = match mode {
        FanMode::FanIn => fans.fan_in as f64,
        FanMode::FanOut => fans.fan_out as f64,
        FanMode::FanAvg => (fans.fan_in as f64 + fans.fan_out as f64) / 2.0,
    }
    .max(1.0);
    let variance = scale / fan;
    match dist {
        ScalingDistribution::Uniform => {
            let limit = (3.0 * variance).sqrt();
            draw(n, shape, |r| r.random_range(-limit..=limit))
        }
        ScalingDistribution::UntruncatedNormal => {
            let std = variance.sqrt();
            draw(n, shape, |r| std * Distribution::<f64>::sample(&StandardNormal, r))
        }
        ScalingDistribution::TruncatedNormal => {
            let std = variance.sqrt() / TRUNCATED_NORMAL_STD;
            draw(n, shape, |r| std * truncated_standard_normal(r))
        }
    }
}

/// A standard normal draw redrawn until it lies within two standard deviations.
fn truncated_standard_normal<R: Rng + ?Sized>(r: &mut R) -> f64 {
    loop {
        let z: f64 = StandardNormal.sample(r);
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::set_seed;

    fn stats(init: Initializer, fans: Fans) -> (f64, f64, f64) {
        set_seed(7);
        let t = init.initialize(&Shape::new(&[200, 100]), fans, DType::F64, &Device::Cpu).unwrap();
        let v = t.to_vec::<f64>().unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        (mean, var, max)
    }

    #[test]
    fn variance_scaling_initializers_have_keras_variances() {
        let fans = Fans::conv2d(64, 3, 3, 32); // fan_in 288, fan_out 576
        let cases = [
            (Initializer::GlorotUniform, 2.0f64 / (288.0 + 576.0), (6.0f64 / 864.0).sqrt()),
            (Initializer::HeUniform, 2.0 / 288.0, (6.0f64 / 288.0).sqrt()),
            (Initializer::GlorotNormal, 2.0 / 864.0, 2.0 * (2.0f64 / 864.0).sqrt() / TRUNCATED_NORMAL_STD),
            (Initializer::HeNormal, 2.0 / 288.0, 2.0 * (2.0f64 / 288.0).sqrt() / TRUNCATED_NORMAL_STD),
        ];
        for (init, variance, bound) in cases {
            let (mean, var, max) = stats(init, fans);
            assert!(mean.abs() < 0.05 * variance.sqrt() * 3.0, "{init:?}: mean {mean}");
            assert!((var / variance - 1.0).abs() < 0.03, "{init:?}: variance {var} vs {variance}");
            assert!(max <= bound * (1.0 + 1e-12), "{init:?}: {max} exceeds {bound}");
        }
    }

    #[test]
    fn constants_and_seeding() {
        let s = Shape::new(&[3]);
        let f = Fans::vector(3);
        let c = Initializer::Constant(2.5).initialize(&s, f, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![2.5; 3]);
        let o = Initializer::Ones.initialize(&s, f, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(o.to_vec::<f32>().unwrap(), vec![1.0; 3]);
        set_seed(3);
        let a = Initializer::GlorotUniform.initialize(&s, f, DType::F32, &Device::Cpu).unwrap();
        set_seed(3);
        let b = Initializer::GlorotUniform.initialize(&s, f, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
}
