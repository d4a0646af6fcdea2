//! [`Conv2DTranspose`]: transposed 2-D convolution over NHWC images.

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
use tapegrad_tensor::{Conv2dTransposeParams, Padding, Shape, Tensor, Variable};

/// A transposed convolution layer (Keras' `layers.Conv2DTranspose`) over NHWC inputs, the
/// upsampling step of U-Nets and decoders. Output sizes follow Keras: 'valid' gives
/// `in * stride + max(k - stride, 0)`, 'same' gives `in * stride`; with `output_padding`,
/// `(in - 1) * stride + k - 2 * pad + output_padding` (`pad` 0 or `k / 2`).
///
/// The kernel is stored `[in_channels, kh, kw, filters]` (the layout of the convolution
/// this layer transposes). Keras stores it `(kh, kw, filters, in_channels)` and PyTorch's
/// `ConvTranspose2d` `(in_channels, filters, kh, kw)`, so
/// [`keras_conv_kernel`](crate::checkpoint::import::keras_conv_kernel) and
/// [`torch_conv_kernel`](crate::checkpoint::import::torch_conv_kernel) convert them as
/// for `Conv2D`. Keras' defaults: stride 1, 'valid', a bias, glorot-uniform kernel.
///
/// ```
/// use tapegrad_layers::{Conv2DTranspose, Layer, Mode, Padding};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let up = Conv2DTranspose::new(32, 3).strides(2).padding(Padding::Same);
/// let y = up.call(&Tensor::zeros([4, 8, 8, 64], DType::F32, &Device::Cpu)?, Mode::Train)?;
/// assert_eq!(y.dims(), &[4, 16, 16, 32]);
/// assert_eq!(up.count_params().trainable, 3 * 3 * 64 * 32 + 32);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Conv2DTranspose {
    name: String,
    filters: usize,
    kernel_size: (usize, usize),
    params: Conv2dTransposeParams,
    use_bias: bool,
    activation: ActivationFn,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    dtype_policy: Option<Policy>,
    weights: OnceLock<Weights>,
}

#[derive(Debug)]
struct Weights {
    kernel: Variable,
    bias: Option<Variable>,
}

impl Conv2DTranspose {
    /// A transposed convolution with `filters` output channels and windows of
    /// `kernel_size` (one number or `(rows, columns)`).
    pub fn new(filters: usize, kernel_size: impl IntoPair) -> Self {
        Conv2DTranspose {
            name: unique_name("conv2d_transpose"),
            filters,
            kernel_size: kernel_size.into_pair(),
            params: Conv2dTransposeParams::default(),
            use_bias: true,
            activation: ActivationFn::Linear,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            dtype_policy: None,
            weights: OnceLock::new(),
        }
    }

    /// The strides, the upsampling factor (one number or `(rows, columns)`).
    pub fn strides(mut self, strides: impl IntoPair) -> Self {
        self.params.strides = strides.into_pair();
        self
    }

    /// `Padding::Valid` (default), `Padding::Same`, or explicit (PyTorch's `padding`:
    /// rows/columns cropped from the full output).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.params.padding = padding;
        self
    }

    /// Extra rows/columns at the bottom/right of the output (one number or
    /// `(rows, columns)`); each must be smaller than its stride.
    pub fn output_padding(mut self, output_padding: impl IntoPair) -> Self {
        self.params.output_padding = Some(output_padding.into_pair());
        self
    }

    /// The dilation rate (one number or `(rows, columns)`).
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.params.dilation = dilation.into_pair();
        self
    }

    weight_builders!(kernel_initializer);

    /// The number of output channels.
    pub fn filters(&self) -> usize {
        self.filters
    }

    /// Strides, padding, output padding and dilation.
    pub fn conv_params(&self) -> &Conv2dTransposeParams {
        &self.params
    }

    /// The kernel `[in_channels, kh, kw, filters]`, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.weights.get().map(|w| &w.kernel)
    }

    /// The bias `[filters]`, once built, if the layer has one.
    pub fn bias(&self) -> Option<&Variable> {
        self.weights.get().and_then(|w| w.bias.as_ref())
    }

    /// Keras' configuration checks, named in its terms.
    fn check_config(&self) -> Result<()> {
        let (sh, sw) = self.params.strides;
        if let Some((oh, ow)) = self.params.output_padding {
            if oh >= sh || ow >= sw {
                return Err(Error::layer(
                    &self.name,
                    format!(
                        "output_padding {:?} must be smaller than the strides {:?} along each axis",
                        (oh, ow),
                        self.params.strides
                    ),
                ));
            }
        }
        if self.filters == 0 || self.kernel_size.0 == 0 || self.kernel_size.1 == 0 {
            return Err(Error::layer(
                &self.name,
                format!("filters ({}) and kernel_size {:?} must be at least 1", self.filters, self.kernel_size),
            ));
        }
        Ok(())
    }

    fn built(&self, input: &InputSpec) -> Result<&Weights> {
        get_or_build(&self.weights, || {
            self.check_config()?;
            check_image_input(&self.name, &input.shape, None)?;
            let in_channels = input.shape.dims()[3];
            let (kh, kw) = self.kernel_size;
            let shape = Shape::new(&[in_channels, kh, kw, self.filters]);
            // Keras' kernel (kh, kw, filters, in): fan_in counts the filters.
            let fans = Fans::conv2d(in_channels, kh, kw, self.filters);
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
            Ok(Weights { kernel, bias })
        })
    }

    fn compute(&self, x: &Tensor, w: &Weights) -> Result<Tensor> {
        let kernel = read_variable(&w.kernel).in_layer(&self.name)?;
        let in_channels = kernel.dims()[0];
        check_image_input(&self.name, x.shape(), Some(in_channels))?;
        let bias = w.bias.as_ref().map(read_variable).transpose().in_layer(&self.name)?;
        let y = x.conv2d_transpose(&kernel, bias.as_ref(), &self.params).in_layer(&self.name)?;
        self.activation.apply(&y).in_layer(&self.name)
    }
}

impl Layer for Conv2DTranspose {
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
