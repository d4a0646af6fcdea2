//! The primitive kernels every backend provides.
//!
//! [`BackendStorage`] is the one list of them: the CPU backend implements it in
//! `cpu_backend`, the CUDA backend in `cuda_backend`; [`Storage`](crate::Storage)
//! dispatches to whichever holds the data. Everything else (all gradient rules, softmax
//! cross-entropy, one-hot, ...) is written with tensor ops on top of these, so it runs on
//! every backend. A kernel is implemented next to the op that uses it, in
//! `ops/<family>/cpu.rs` (and `cuda.rs`).

pub(crate) mod optim_step;
pub(crate) mod pad_spec;
pub(crate) mod resize_spec;

use crate::shape::Dims;
use crate::{DType, Result, Shape};
pub(crate) use optim_step::{AdamStep, SgdStep};
pub use pad_spec::PadSpec;
pub use resize_spec::ResizeSpec;

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// square root
    Sqrt,
    /// `x * x`
    Square,
    /// `max(x, 0)`
    Relu,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// hyperbolic tangent
    Tanh,
    /// `|x|`
    Abs,
    /// -1, 0 or 1
    Sign,
    /// `1 / x`
    Recip,
    /// `x^e`
    Powf(f64),
    /// `min(max(x, min), max)`
    Clamp {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// `x * mul + add`
    Affine {
        /// Factor.
        mul: f64,
        /// Offset.
        add: f64,
    },
    /// The error function.
    Erf,
    /// `ln(1 + x)`, accurate near 0.
    Log1p,
    /// `e^x - 1`, accurate near 0.
    Expm1,
    /// `ln(1 + e^x)`, computed without overflow.
    Softplus,
    /// `x / (1 + |x|)`
    Softsign,
    /// `x * Φ(x)` with the normal CDF `Φ` (exact GELU, through erf).
    Gelu,
    /// GELU's tanh approximation `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    GeluTanh,
    /// `x * sigmoid(x)` (SiLU, swish).
    Silu,
    /// `x * tanh(softplus(x))`
    Mish,
    /// `relu6(x + 3) / 6` (Keras 3 and PyTorch).
    HardSigmoid,
    /// `x * relu6(x + 3) / 6`
    HardSwish,
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`.
    Elu {
        /// The scale of the negative part.
        alpha: f64,
    },
    /// `x` for `x >= 0`, else `slope * x`.
    LeakyRelu {
        /// The slope of the negative part.
        slope: f64,
    },
}

impl UnaryOp {
    /// The op's name, as errors and the CUDA kernels spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
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
            UnaryOp::Erf => "erf",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Softsign => "softsign",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Mish => "mish",
            UnaryOp::HardSigmoid => "hard_sigmoid",
            UnaryOp::HardSwish => "hard_swish",
            UnaryOp::Elu { .. } => "elu",
            UnaryOp::LeakyRelu { .. } => "leaky_relu",
        }
    }
}

/// Elementwise functions of two tensors, with broadcasting. Comparisons give 1 or 0 in
/// the operands' dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Maximum,
    /// `min(a, b)`
    Minimum,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// Index-of reductions along one axis; the result has dtype i64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgReduceOp {
    /// Index of the largest value (the first, on ties).
    ArgMax,
    /// Index of the smallest value (the first, on ties).
    ArgMin,
}

/// A (batched) matrix product `out[b] = op(lhs[b]) @ op(rhs[b])`, where `op` transposes
/// when asked. `lhs[b]` is stored `[m, k]` (or `[k, m]` if transposed), `rhs[b]` `[k, n]`
/// (or `[n, k]`); the output is contiguous `[batch, m, n]`. An operand that is not batched
/// is shared by every batch entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    /// Number of products.
    pub batch: usize,
    /// Rows of the output.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// Whether lhs is stored transposed.
    pub lhs_transposed: bool,
    /// Whether rhs is stored transposed.
    pub rhs_transposed: bool,
    /// Whether lhs has one matrix per batch entry (else one shared matrix).
    pub lhs_batched: bool,
    /// Whether rhs has one matrix per batch entry (else one shared matrix).
    pub rhs_batched: bool,
}

/// A strided view of a contiguous buffer: element `idx` of the view is
/// `buffer[offset + sum(idx[d] * strides[d])]`. Strides of 0 broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedLayout {
    /// The view's shape (and the shape of the copy).
    pub shape: Shape,
    /// Stride of each dimension, in elements.
    pub strides: Dims,
    /// Offset of the first element.
    pub offset: usize,
}

/// What a forward convolution applies to its output after the bias
/// ([`Tensor::conv2d_relu`](crate::Tensor::conv2d_relu) asks for `Relu`). On CUDA it is
/// cuDNN's fused conv-bias-activation call's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvActivation {
    /// None: the convolution plus its bias.
    Identity,
    /// `max(v, 0)`, NaN passed through, as [`Tensor::relu`](crate::Tensor::relu).
    Relu,
}

/// The geometry of a 2-D convolution (cross-correlation, as in TF and PyTorch) over an
/// NHWC input `[batch, in_h, in_w, in_channels]` with a kernel stored
/// `[out_channels, kernel_h, kernel_w, in_channels / groups]` (cuDNN's NHWC filter layout).
/// The output is `[batch, out_h, out_w, out_channels]`. With `groups` > 1 the channels
/// split into `groups` equal, consecutive runs: output channels of group `g` read only the
/// input channels of group `g` (PyTorch's and TF's grouped convolution; depthwise when
/// `groups == in_channels`). Padding is explicit and may be
/// asymmetric (TF's 'same' at stride 2 on an odd size pads one more at the bottom/right);
/// padded positions read as zero. Output pixel `(oy, ox)` reads input rows
/// `oy * stride_h - pad_top + ky * dilation_h` (and likewise for columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// Images in the batch.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Channel groups (1 = a dense convolution); divides both channel counts.
    pub groups: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride (at least 1).
    pub stride_h: usize,
    /// Horizontal stride (at least 1).
    pub stride_w: usize,
    /// Vertical dilation (1 = dense kernel).
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero rows below the input.
    pub pad_bottom: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Zero columns right of the input.
    pub pad_right: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

/// The geometry of a 2-D pooling over an NHWC input `[batch, in_h, in_w, channels]`;
/// the output is `[batch, out_h, out_w, channels]`. Window `(oy, ox)` covers input rows
/// `oy * stride_h - pad_top ..` (`window_h` of them) and likewise for columns; padded
/// positions never take part (max pooling never picks them, average pooling divides by
/// the number of real elements in the window, as TF). Every window holds at least one
/// real element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    /// Images in the batch.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels (pooled independently).
    pub channels: usize,
    /// Window height.
    pub window_h: usize,
    /// Window width.
    pub window_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Padding rows above the input.
    pub pad_top: usize,
    /// Padding rows below the input.
    pub pad_bottom: usize,
    /// Padding columns left of the input.
    pub pad_left: usize,
    /// Padding columns right of the input.
    pub pad_right: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

/// Batch normalization of a buffer viewed as `[rows, channels]`: channels are the last
/// (fastest) axis, and the statistics of each channel are taken over all rows (N*H*W for
/// NHWC input, N for `[N, C]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormSpec {
    /// Number of rows (at least 1).
    pub rows: usize,
    /// Number of channels.
    pub channels: usize,
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// What the kernels apply after the affine map, in the same pass.
    pub epilogue: BatchNormEpilogue,
}

/// `(d_x, d_gamma, d_beta, d_residual)` of a batch-norm backward pass.
pub type BatchNormGrads<S> = (S, S, S, Option<S>);

/// The work a fused batch-norm kernel does after `bn(x) = (x - mean) * scale + shift`, so
/// that a ResNet block's `BN - ReLU` and `BN - add - ReLU` are one forward and one backward
/// pass each. ReLU is `v < 0 ? 0 : v` (NaN passes through), its gradient mask `y > 0`, as
/// the elementwise `relu`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormEpilogue {
    /// `y = bn(x)`.
    Identity,
    /// `y = relu(bn(x))`.
    Relu,
    /// `y = relu(residual + bn(x))`, the residual a tensor of the input's shape.
    AddRelu,
}

/// Group normalization of a buffer viewed as `[outer, spatial, groups, channels_per_group]`
/// (channels, `groups * channels_per_group` of them, the last and fastest axis): the
/// statistics of each `(outer, group)` pair are taken over its `spatial *
/// channels_per_group` values, the affine map is per channel. Layer normalization over the
/// trailing axes is `spatial = groups = 1`; group normalization of NHWC input has
/// `spatial = H * W`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormSpec {
    /// Independent slices (the batch, or every axis before the normalised ones).
    pub outer: usize,
    /// Positions per slice that share the statistics of a group (H * W for images).
    pub spatial: usize,
    /// Groups of channels.
    pub groups: usize,
    /// Channels in each group.
    pub channels_per_group: usize,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl GroupNormSpec {
    /// Channels: `groups * channels_per_group`.
    pub fn channels(&self) -> usize {
        self.groups * self.channels_per_group
    }

    /// Number of `(outer, group)` statistics.
    pub fn stat_count(&self) -> usize {
        self.outer * self.groups
    }

    /// Values each statistic is taken over: `spatial * channels_per_group`.
    pub fn group_size(&self) -> usize {
        self.spatial * self.channels_per_group
    }
}

/// The primitive kernels of a backend. Inputs are contiguous row-major buffers; outputs
/// are new contiguous buffers.
pub trait BackendStorage: Sized + Send + Sync {
    /// The element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// An elementwise function (float dtypes; `Neg`, `Abs`, `Sign`, `Square`, `Relu`,
    /// `Clamp` also i64).
    fn unary(&self, op: UnaryOp) -> Result<Self>;
    /// An elementwise function of two operands of shapes `lhs` and `rhs`, broadcast to `out`.
    fn binary(&self, rhs: &Self, op: BinaryOp, lhs: &Shape, rhs_shape: &Shape, out: &Shape) -> Result<Self>;
    /// Reduces the (sorted, distinct) `axes` of a tensor of `shape`; the result has the
    /// shape with those axes set to 1.
    fn reduce(&self, op: ReduceOp, shape: &Shape, axes: &[usize]) -> Result<Self>;
    /// Index of the extreme value along `axis`; the result (i64) has that axis removed.
    fn arg_reduce(&self, op: ArgReduceOp, shape: &Shape, axis: usize) -> Result<Self>;
    /// A batched matrix product.
    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self>;
    /// Copies a strided view into a new contiguous buffer (permute, broadcast, slice).
    fn strided_copy(&self, layout: &StridedLayout) -> Result<Self>;
    /// Concatenates buffers viewed as `[outer, inner_i]` along their second dimension.
    fn concat(parts: &[&Self], outer: usize, inners: &[usize]) -> Result<Self>;
    /// Converts to another dtype (floats to i64 round toward zero).
    fn cast(&self, dtype: DType) -> Result<Self>;
    /// `log(softmax(x))` over the last axis of a `[rows, cols]` view, computed stably.
    fn log_softmax(&self, rows: usize, cols: usize) -> Result<Self>;

    /// 2-D convolution of an NHWC input (`self`) with `kernel`
    /// `[out_channels, kernel_h, kernel_w, in_channels]`, plus `bias` `[out_channels]`
    /// when given, then `activation` applied to each element before the result is stored
    /// (for bf16 and f16, before its one rounding). Float dtypes; all operands share one.
    fn conv2d(&self, kernel: &Self, bias: Option<&Self>, spec: &Conv2dSpec, activation: ConvActivation)
        -> Result<Self>;
    /// The gradient of [`conv2d`](Self::conv2d) with respect to its input, given the
    /// output gradient (`self`, `[batch, out_h, out_w, out_channels]`): a buffer
    /// `[batch, in_h, in_w, in_channels]` (a transposed convolution).
    fn conv2d_backward_input(&self, kernel: &Self, spec: &Conv2dSpec) -> Result<Self>;
    /// The gradient of [`conv2d`](Self::conv2d) with respect to its kernel, given the
    /// input (`self`) and the output gradient: a buffer of the kernel's layout
    /// `[out_channels, kernel_h, kernel_w, in_channels]`.
    fn conv2d_backward_filter(&self, grad_out: &Self, spec: &Conv2dSpec) -> Result<Self>;
    /// Max pooling of an NHWC input (`self`). Padding is never picked.
    fn max_pool2d(&self, spec: &Pool2dSpec) -> Result<Self>;
    /// The gradient of [`max_pool2d`](Self::max_pool2d) with respect to its input
    /// (`self`), given its `output` and the output gradient: each window's gradient goes to
    /// the position of its maximum, the first in row-major window order on ties; windows
    /// that share a maximum add up.
    fn max_pool2d_backward(&self, output: &Self, grad_out: &Self, spec: &Pool2dSpec) -> Result<Self>;
    /// Average pooling of an NHWC input (`self`), dividing each window's sum by the number
    /// of real (unpadded) elements in it.
    fn avg_pool2d(&self, spec: &Pool2dSpec) -> Result<Self>;
    /// The gradient of [`avg_pool2d`](Self::avg_pool2d) with respect to its input, given
    /// the output gradient (`self`): `[batch, in_h, in_w, channels]`.
    fn avg_pool2d_backward(&self, spec: &Pool2dSpec) -> Result<Self>;
    /// Training-mode batch normalization of `self` (`[rows, channels]`): returns
    /// `(y, mean, var)` where `mean` and `var` (`[channels]`, the variance biased: divided
    /// by `rows`) are the batch statistics and
    /// `y = (x - mean) / sqrt(var + epsilon) * gamma + beta`, followed by the spec's
    /// epilogue. A missing `gamma` is 1, a missing `beta` 0; `residual` (`[rows,
    /// channels]`) is given exactly when the epilogue is `AddRelu`.
    fn batch_norm_train(
        &self,
        gamma: Option<&Self>,
        beta: Option<&Self>,
        residual: Option<&Self>,
        spec: &BatchNormSpec,
    ) -> Result<(Self, Self, Self)>;
    /// The gradient of [`batch_norm_train`](Self::batch_norm_train), fused: given the input
    /// (`self`), the output gradient, `gamma`, the batch `mean` and `var` the forward
    /// pass returned, and (for a ReLU epilogue) its output `y`, returns `(d_x, d_gamma,
    /// d_beta, d_residual)` (`d_gamma` and `d_beta` are computed even where the forward
    /// pass had no gamma or beta; `d_residual`, the output gradient masked by `y > 0`, is
    /// `Some` exactly for `AddRelu`).
    fn batch_norm_backward(
        &self,
        grad_out: &Self,
        gamma: Option<&Self>,
        mean: &Self,
        var: &Self,
        output: Option<&Self>,
        spec: &BatchNormSpec,
    ) -> Result<BatchNormGrads<Self>>;
    /// Row `indices[i]` of a table (`self`, `[rows, row_len]`) for each of the i64
    /// `indices` (all in `0..rows`; the op checks them): `[indices.len(), row_len]`.
    fn gather_rows(&self, indices: &Self, row_len: usize) -> Result<Self>;
    /// The segmented row sum under scatter_add: output row `s` (of `offsets.len() - 1`) is
    /// the sum of the rows `self[order[k]]` (`self` is `[n, row_len]`) for `k` in
    /// `offsets[s]..offsets[s + 1]`, added in that order, so the result is deterministic.
    /// `order` and `offsets` are i64.
    fn segment_sum_rows(&self, order: &Self, offsets: &Self, row_len: usize) -> Result<Self>;
    /// Group normalization of `self` (viewed as the spec says): returns `(y, mean, rstd)`
    /// where `mean` and `rstd` (`[outer * groups]`, `rstd = 1 / sqrt(var + epsilon)` with
    /// the biased variance) are the statistics of each `(outer, group)` and
    /// `y = (x - mean) * rstd * gamma + beta` (`gamma`, `beta`: `[channels]`; a missing
    /// `gamma` is 1, a missing `beta` 0).
    fn group_norm(&self, gamma: Option<&Self>, beta: Option<&Self>, spec: &GroupNormSpec)
        -> Result<(Self, Self, Self)>;
    /// The gradient of [`group_norm`](Self::group_norm), fused: given the input (`self`),
    /// the output gradient, `gamma` and the `mean` and `rstd` the forward pass returned,
    /// returns `(d_x, d_gamma, d_beta)` (`d_gamma` and `d_beta` are computed even where
    /// the forward pass had no gamma or beta).
    fn group_norm_backward(
        &self,
        grad_out: &Self,
        gamma: Option<&Self>,
        mean: &Self,
        rstd: &Self,
        spec: &GroupNormSpec,
    ) -> Result<(Self, Self, Self)>;
    /// One fused SGD step of a parameter (`self`) given its gradient and velocity (`None`
    /// before the first step): the new parameter and the new velocity (`None` when
    /// `momentum` is 0). Formulas on [`sgd_update`](crate::optim::sgd_update).
    fn sgd_update(&self, grad: &Self, velocity: Option<&Self>, step: &SgdStep) -> Result<(Self, Option<Self>)>;
    /// One fused Adam(W) step of a parameter (`self`) given its gradient and moments (`None`
    /// before the first step): the new parameter, m and v. Formulas on
    /// [`adam_update`](crate::optim::adam_update).
    fn adam_update(
        &self,
        grad: &Self,
        m: Option<&Self>,
        v: Option<&Self>,
        step: &AdamStep,
    ) -> Result<(Self, Self, Self)>;
    /// Pads a buffer of `spec.in_dims` (`self`) into one of `spec.out_dims()` (float
    /// dtypes; [`Tensor::pad`](crate::Tensor::pad)).
    fn pad(&self, spec: &PadSpec) -> Result<Self>;
    /// The adjoint of [`pad`](Self::pad): given a buffer of `spec.out_dims()` (`self`),
    /// each input element the sum of the output elements that read it.
    fn pad_backward(&self, spec: &PadSpec) -> Result<Self>;
    /// Resizes an NHWC image (`self`) by integer factors
    /// ([`Tensor::resize`](crate::Tensor::resize)).
    fn resize(&self, spec: &ResizeSpec) -> Result<Self>;
    /// The adjoint of [`resize`](Self::resize): given the output gradient (`self`), each
    /// input pixel the weighted sum of the output pixels that read it.
    fn resize_backward(&self, spec: &ResizeSpec) -> Result<Self>;
}
