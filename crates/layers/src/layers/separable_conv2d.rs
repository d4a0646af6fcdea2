//! [`SeparableConv2D`]: a depthwise convolution followed by a pointwise (1x1) one, as
//! Keras' `layers.SeparableConv2D`.

use super::builders::weight_builders;
use super::get_or_build;
use super::nhwc::check_image_input;
use super::pair::IntoPair;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::mixed_precision::{read_variable, variable_dtype, Policy};
use crate::naming::unique_name;
use crate::{ActivationFn, Error, InputSpec, Layer, Mode, Result};
use std::sync::OnceLock;
use tapegrad_tensor::{Conv2dParams, Padding, Shape, Tensor, Variable};

/// A depthwise-separable 2-D convolution (Keras' `layers.SeparableConv2D`): a depthwise
/// convolution (`depth_multiplier` filters per input channel, no bias) with the strides,
/// padding and dilation, then a 1x1 convolution to `filters` channels, the bias and the
/// activation. Variables as Keras names them: `depthwise_kernel`
/// (`[channels * depth_multiplier, kh, kw, 1]`), `pointwise_kernel`
/// (`[filters, 1, 1, channels * depth_multiplier]`) and `bias` (`[filters]`); the
/// parameter count is `kh * kw * channels * m + channels * m * filters (+ filters)`.
///
/// ```
/// use tapegrad_layers::{Layer, Mode, Padding, SeparableConv2D};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let conv = SeparableConv2D::new(64, 3).padding(Padding::Same);
/// let y = conv.call(&Tensor::zeros([2, 8, 8, 32], DType::F32, &Device::Cpu)?, Mode::Train)?;
/// assert_eq!(y.dims(), &[2, 8, 8, 64]);
/// assert_eq!(conv.count_params().trainable, 3 * 3 * 32 + 32 * 64 + 64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SeparableConv2D {
    name: String,
    filters: usize,
    kernel_size: (usize, usize),
    depth_multiplier: usize,
    params: Conv2dParams,
    use_bias: bool,
    activation: ActivationFn,
    depthwise_initializer: Initializer,
    pointwise_initializer: Initializer,
    bias_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<SeparableWeights>,
}

#[derive(Debug)]
struct SeparableWeights {
    depthwise: Variable,
    pointwise: Variable,
    bias: Option<Variable>,
}

impl SeparableConv2D {
    /// A separable convolution to `filters` channels with depthwise windows of
    /// `kernel_size` (one number or `(rows, columns)`).
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        SeparableConv2D {
            name: unique_name("separable_conv2d"),
            filters,
            kernel_size: kernel_size.into_pair(),
            depth_multiplier: 1,
            params: Conv2dParams::default(),
            use_bias: true,
            activation: ActivationFn::Linear,
            depthwise_initializer: Initializer::GlorotUniform,
            pointwise_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// Depthwise filters per input channel (at least 1; default 1).
    pub fn depth_multiplier(mut self, depth_multiplier: usize) -> Self {
        self.depth_multiplier = depth_multiplier;
        self
    }

    /// The depthwise step's strides (one number or `(rows, columns)`).
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.params.strides = strides.into_pair();
        self
    }

    /// The depthwise step's padding: `Padding::Valid` (default), `Padding::Same` or explicit.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.params.padding = padding;
        self
    }

    /// The depthwise step's dilation rate (one number or `(rows, columns)`).
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.params.dilation = dilation.into_pair();
        self
    }

    weight_builders!();

    /// The depthwise kernel's initializer.
    pub fn depthwise_initializer(mut self, init: Initializer) -> Self {
        self.depthwise_initializer = init;
        self
    }

    /// The pointwise kernel's initializer.
    pub fn pointwise_initializer(mut self, init: Initializer) -> Self {
        self.pointwise_initializer = init;
        self
    }

    /// The number of output channels.
    pub fn filters(&self) -> usize {
        self.filters
    }

    /// The depthwise kernel `[channels * depth_multiplier, kh, kw, 1]`, once built.
    pub fn depthwise_kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.depthwise)
    }

    /// The pointwise kernel `[filters, 1, 1, channels * depth_multiplier]`, once built.
    pub fn pointwise_kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.pointwise)
    }

    /// The bias `[filters]`, once built, if the layer has one.
    pub fn bias(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.bias.as_ref())
    }

    fn built(&self, input: &InputSpec) -> Result<&SeparableWeights> {
        get_or_build(&self.weights, || {
            if self.depth_multiplier == 0 {
                return Err(Error::layer(&self.name, "depth_multiplier must be at least 1, got 0"));
            }
            check_image_input(&self.name, &input.shape, None)?;
            let (dtype, device) = (variable_dtype(self.dtype_policy, input.dtype), &input.device);
            let channels = input.shape.dims()[3];
            let middle = channels * self.depth_multiplier;
            let (kh, kw) = self.kernel_size;
            let depthwise = self.depthwise_initializer.initialize_for(
                (&self.name, "depthwise_kernel"),
                &Shape::new(&[middle, kh, kw, 1]),
                Fans::conv2d(self.depth_multiplier, kh, kw, channels),
                dtype,
                device,
            )?;
            let pointwise = self.pointwise_initializer.initialize_for(
                (&self.name, "pointwise_kernel"),
                &Shape::new(&[self.filters, 1, 1, middle]),
                Fans::conv2d(self.filters, 1, 1, middle),
                dtype,
                device,
            )?;
            let bias = if self.use_bias {
                let b = self.bias_initializer.initialize_for(
                    (&self.name, "bias"),
                    &Shape::new(&[self.filters]),
                    Fans::vector(self.filters),
                    dtype,
                    device,
                )?;
                Some(Variable::new(format!("{}/bias", self.name), b, true))
            } else {
                None
            };
            Ok(SeparableWeights {
                depthwise: Variable::new(format!("{}/depthwise_kernel", self.name), depthwise, true),
                pointwise: Variable::new(format!("{}/pointwise_kernel", self.name), pointwise, true),
                bias,
            })
        })
    }

    fn compute(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(x))?;
        let depthwise = read_variable(&w.depthwise).in_layer(&self.name)?;
        let channels = depthwise.dims()[0] / self.depth_multiplier;
        check_image_input(&self.name, x.shape(), Some(channels))?;
        let spatial = Conv2dParams { groups: channels, ..self.params };
        let mid = x.conv2d(&depthwise, None, &spatial).in_layer(&self.name)?;
        let bias = w.bias.as_ref().map(read_variable).transpose().in_layer(&self.name)?;
        let y = mid
            .conv2d(&read_variable(&w.pointwise).in_layer(&self.name)?, bias.as_ref(), &Conv2dParams::default())
            .in_layer(&self.name)?;
        self.activation.apply(&y).in_layer(&self.name)
    }
}

impl Layer for SeparableConv2D {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        self.compute(input)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    fn build(&self, input: &InputSpec) -> Result<()> {
        self.built(input).map(|_| ())
    }

    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        if let Some(w) = self.weights.get() {
            visit("depthwise_kernel", &w.depthwise);
            visit("pointwise_kernel", &w.pointwise);
            if let Some(b) = &w.bias {
                visit("bias", b);
            }
        }
    }
}
