//! [`DepthwiseConv2D`]: one filter bank per input channel (Keras' `layers.DepthwiseConv2D`).

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

/// A depthwise 2-D convolution (Keras' `layers.DepthwiseConv2D`) over NHWC inputs: each
/// input channel is convolved with its own `depth_multiplier` filters, and output channel
/// `c * depth_multiplier + j` is filter `j` of input channel `c` (Keras' order). The kernel
/// is stored `[channels * depth_multiplier, kh, kw, 1]` (a convolution with
/// `groups = channels`); [`keras_depthwise_kernel`](crate::checkpoint::import::keras_depthwise_kernel)
/// converts Keras' `[kh, kw, channels, depth_multiplier]`. Keras' defaults: stride 1,
/// `Padding::Valid`, depth multiplier 1, a bias, glorot-uniform kernel, zero bias; the
/// parameter count is `kh * kw * channels * depth_multiplier (+ channels * depth_multiplier)`.
///
/// ```
/// use tapegrad_layers::{DepthwiseConv2D, Layer, Mode, Padding};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let conv = DepthwiseConv2D::new(3).strides(2).padding(Padding::Same).depth_multiplier(2);
/// let y = conv.call(&Tensor::zeros([8, 16, 16, 32], DType::F32, &Device::Cpu)?, Mode::Train)?;
/// assert_eq!(y.dims(), &[8, 8, 8, 64]);
/// assert_eq!(conv.count_params().trainable, 3 * 3 * 32 * 2 + 64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DepthwiseConv2D {
    name: String,
    kernel_size: (usize, usize),
    depth_multiplier: usize,
    params: Conv2dParams,
    use_bias: bool,
    activation: ActivationFn,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<DepthwiseWeights>,
}

#[derive(Debug)]
struct DepthwiseWeights {
    kernel: Variable,
    bias: Option<Variable>,
}

impl DepthwiseConv2D {
    /// A depthwise convolution with windows of `kernel_size` (one number or `(rows, columns)`).
    pub fn new(kernel_size: impl IntoPair) -> Self {
        DepthwiseConv2D {
            name: unique_name("depthwise_conv2d"),
            kernel_size: kernel_size.into_pair(),
            depth_multiplier: 1,
            params: Conv2dParams::default(),
            use_bias: true,
            activation: ActivationFn::Linear,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// Filters per input channel (at least 1; default 1).
    pub fn depth_multiplier(mut self, depth_multiplier: usize) -> Self {
        self.depth_multiplier = depth_multiplier;
        self
    }

    /// The strides (one number or `(rows, columns)`).
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.params.strides = strides.into_pair();
        self
    }

    /// The padding: `Padding::Valid` (default), `Padding::Same` (TF's) or explicit.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.params.padding = padding;
        self
    }

    /// The dilation rate (one number or `(rows, columns)`).
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.params.dilation = dilation.into_pair();
        self
    }

    weight_builders!();

    /// The kernel's initializer (Keras' `depthwise_initializer`).
    pub fn kernel_initializer(mut self, init: Initializer) -> Self {
        self.kernel_initializer = init;
        self
    }

    /// Strides, padding, dilation and (once built) the group count.
    pub fn conv_params(&self) -> Conv2dParams {
        let groups = self.kernel().map_or(1, |k| k.value().dims()[0] / self.depth_multiplier.max(1));
        Conv2dParams { groups, ..self.params }
    }

    /// The kernel `[channels * depth_multiplier, kh, kw, 1]`, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.kernel)
    }

    /// The bias `[channels * depth_multiplier]`, once built, if the layer has one.
    pub fn bias(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.bias.as_ref())
    }

    fn built(&self, input: &InputSpec) -> Result<&DepthwiseWeights> {
        get_or_build(&self.weights, || {
            if self.depth_multiplier == 0 {
                return Err(Error::layer(&self.name, "depth_multiplier must be at least 1, got 0"));
            }
            check_image_input(&self.name, &input.shape, None)?;
            let channels = input.shape.dims()[3];
            let outputs = channels * self.depth_multiplier;
            let (kh, kw) = self.kernel_size;
            let shape = Shape::new(&[outputs, kh, kw, 1]);
            // Keras' fans for its kernel [kh, kw, channels, depth_multiplier].
            let fans = Fans::conv2d(self.depth_multiplier, kh, kw, channels);
            let kernel = self.kernel_initializer.initialize_for(
                (&self.name, "depthwise_kernel"),
                &shape,
                fans,
                variable_dtype(self.dtype_policy, input.dtype),
                &input.device,
            )?;
            let kernel = Variable::new(format!("{}/depthwise_kernel", self.name), kernel, true);
            let bias = if self.use_bias {
                let b = self.bias_initializer.initialize_for(
                    (&self.name, "bias"),
                    &Shape::new(&[outputs]),
                    Fans::vector(outputs),
                    variable_dtype(self.dtype_policy, input.dtype),
                    &input.device,
                )?;
                Some(Variable::new(format!("{}/bias", self.name), b, true))
            } else {
                None
            };
            Ok(DepthwiseWeights { kernel, bias })
        })
    }

    pub(crate) fn compute(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(x))?;
        let kernel = read_variable(&w.kernel).in_layer(&self.name)?;
        let channels = kernel.dims()[0] / self.depth_multiplier;
        check_image_input(&self.name, x.shape(), Some(channels))?;
        let params = Conv2dParams { groups: channels, ..self.params };
        let bias = w.bias.as_ref().map(read_variable).transpose().in_layer(&self.name)?;
        let y = x.conv2d(&kernel, bias.as_ref(), &params).in_layer(&self.name)?;
        self.activation.apply(&y).in_layer(&self.name)
    }

    pub(crate) fn visit(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        if let Some(w) = self.weights.get() {
            visit("depthwise_kernel", &w.kernel);
            if let Some(b) = &w.bias {
                visit("bias", b);
            }
        }
    }
}

impl Layer for DepthwiseConv2D {
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
        self.visit(visit)
    }
}
