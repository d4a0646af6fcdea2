//! The primitive kernels every backend provides.
//!
//! [`BackendStorage`] is the one list of them: the CPU backend implements it in
//! `cpu_backend`, the CUDA backend in `cuda_backend`; [`Storage`](crate::Storage)
//! dispatches to whichever holds the data. Everything else (all gradient rules, softmax
//! cross-entropy, one-hot, ...) is written with tensor ops on top of these, so it runs on
//! every backend. A kernel is implemented next to the op that uses it, in
//! `ops/<family>/cpu.rs` (and `cuda.rs`).

use crate::shape::Dims;
use crate::{DType, Result, Shape};

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
}
