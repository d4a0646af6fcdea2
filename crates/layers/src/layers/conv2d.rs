//! [`Conv2D`]: 2-D convolution over NHWC images.

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

/// A 2-D convolution layer (Keras' `layers.Conv2D`) over NHWC inputs. The kernel is stored
/// `[filters, kh, kw, in_channels]` (cuDNN's NHWC filter layout; see
/// [`checkpoint::import`](crate::checkpoint::import) for Keras' and PyTorch's layouts).
/// Keras' defaults: stride 1, `Padding::Valid`, a bias, glorot-uniform kernel, zero bias.
/// With a bias and the ReLU activation the layer runs
/// [`Tensor::conv2d_relu`](tapegrad_tensor::Tensor::conv2d_relu): one cuDNN call on CUDA,
/// the same bits as the convolution followed by the ReLU on the CPU.
///
/// ```
/// use tapegrad_layers::{Conv2D, Layer, Mode, Padding};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let conv = Conv2D::new(64, 3).strides(2).padding(Padding::Same);
/// let y = conv.call(&Tensor::zeros([8, 15, 15, 3], DType::F32, &Device::Cpu)?, Mode::Train)?;
/// assert_eq!(y.dims(), &[8, 8, 8, 64]);
/// assert_eq!(conv.count_params().trainable, 64 * 3 * 3 * 3 + 64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Conv2D {
    name: String,
    filters: usize,
    kernel_size: (usize, usize),
    params: Conv2dParams,
    use_bias: bool,
    activation: ActivationFn,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<ConvWeights>,
}

#[derive(Debug)]
struct ConvWeights {
    kernel: Variable,
    bias: Option<Variable>,
}

impl Conv2D {
    /// A convolution with `filters` output channels and windows of `kernel_size` (one
    /// number or `(rows, columns)`).
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        Conv2D {
            name: unique_name("conv2d"),
            filters,
            kernel_size: kernel_size.into_pair(),
            params: Conv2dParams::default(),
            use_bias: true,
            activation: ActivationFn::Linear,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// The strides (one number or `(rows, columns)`).
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.params.strides = strides.into_pair();
        self
    }

    /// The padding: `Padding::Valid` (default), `Padding::Same` (TF's, extra at the
    /// bottom/right) or explicit.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.params.padding = padding;
        self
    }

    /// The dilation rate (one number or `(rows, columns)`).
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.params.dilation = dilation.into_pair();
        self
    }

    /// Channel groups (default 1): input channels and filters split into `groups` equal
    /// runs, each run of filters seeing only its run of channels (Keras' `groups`). Both
    /// counts must be divisible by it; the kernel is `[filters, kh, kw, in_channels / groups]`.
    pub fn groups(mut self, groups: usize) -> Self {
        self.params.groups = groups;
        self
    }

    weight_builders!(kernel_initializer);

    /// The number of output channels.
    pub fn filters(&self) -> usize {
        self.filters
    }

    /// Strides, padding, dilation and groups.
    pub fn conv_params(&self) -> &Conv2dParams {
        &self.params
    }

    /// The kernel `[filters, kh, kw, in_channels / groups]`, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.kernel)
    }

    /// The bias `[filters]`, once built, if the layer has one.
    pub fn bias(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.bias.as_ref())
    }

    fn built(&self, input: &InputSpec) -> Result<&ConvWeights> {
        get_or_build(&self.weights, || {
            if self.filters == 0 {
                return Err(Error::layer(&self.name, "filters must be at least 1, got 0"));
            }
            let options = [
                ("kernel_size", self.kernel_size),
                ("strides", self.params.strides),
                ("dilation", self.params.dilation),
            ];
            if let Some((option, pair)) = options.into_iter().find(|(_, (a, b))| *a == 0 || *b == 0) {
                return Err(Error::layer(
                    &self.name,
                    format!("{option} must be at least 1 on both axes, got {pair:?}"),
                ));
            }
            check_image_input(&self.name, &input.shape, None)?;
            let in_channels = input.shape.dims()[3];
            let groups = self.params.groups;
            if groups == 0 || !in_channels.is_multiple_of(groups) || !self.filters.is_multiple_of(groups) {
                return Err(Error::layer(
                    &self.name,
                    format!(
                        "groups = {groups} must be at least 1 and divide both the input channels ({in_channels}, input \
                         shape {}) and filters ({})",
                        input.shape, self.filters
                    ),
                ));
            }
            let (kh, kw) = self.kernel_size;
            let shape = Shape::new(&[self.filters, kh, kw, in_channels / groups]);
            let fans = Fans::conv2d(self.filters, kh, kw, in_channels / groups);
            let kernel = self.kernel_initializer.initialize_for(
                (&self.name, "kernel"),
                &shape,
                fans,
                variable_dtype(self.dtype_policy, input.dtype),
                &input.device,
            )?;
            let kernel = Variable::new(format!("{}/kernel", self.name), kernel, true);
            let bias = if self.use_bias {
                let shape = Shape::new(&[self.filters]);
                let b = self.bias_initializer.initialize_for(
                    (&self.name, "bias"),
                    &shape,
                    Fans::vector(self.filters),
                    variable_dtype(self.dtype_policy, input.dtype),
                    &input.device,
                )?;
                Some(Variable::new(format!("{}/bias", self.name), b, true))
            } else {
                None
            };
            Ok(ConvWeights { kernel, bias })
        })
    }

    fn compute(&self, x: &Tensor, w: &ConvWeights) -> Result<Tensor> {
        let kernel = read_variable(&w.kernel).in_layer(&self.name)?;
        let in_channels = kernel.dims()[3] * self.params.groups;
        check_image_input(&self.name, x.shape(), Some(in_channels))?;
        let bias = w.bias.as_ref().map(read_variable).transpose().in_layer(&self.name)?;
        if let (ActivationFn::Relu, Some(bias)) = (&self.activation, &bias) {
            // One op: on CUDA one cuDNN call (and one rounding for bf16/f16); the same bits
            // as the convolution and then the ReLU on the CPU.
            return x.conv2d_relu(&kernel, Some(bias), &self.params).in_layer(&self.name);
        }
        let y = x.conv2d(&kernel, bias.as_ref(), &self.params).in_layer(&self.name)?;
        self.activation.apply(&y).in_layer(&self.name)
    }
}

impl Layer for Conv2D {
    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let w = self.built(&InputSpec::from(input))?;
        self.compute(input, w)
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
            visit("kernel", &w.kernel);
            if let Some(b) = &w.bias {
                visit("bias", b);
            }
        }
    }
}
