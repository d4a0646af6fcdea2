//! The ops, one folder per family. Each folder holds the ops' forward passes and
//! gradient rules (`mod.rs`) and their kernels (`cpu.rs`, and `cuda.rs` with its `.cu`
//! source under the `cuda` feature).
//!
//! | family | ops |
//! | --- | --- |
//! | [`elementwise`] | add, sub, mul, div, maximum, minimum, comparisons, neg, exp, log, sqrt, square, powf, relu, sigmoid, tanh, abs, clamp, affine, cast |
//! | [`reduce`] | sum, mean, max, min over axes; argmax, argmin |
//! | [`matmul`] | 2-D and batched matrix products |
//! | [`layout`] | reshape, permute, transpose, broadcast_to, narrow, concat, stack, squeeze |
//! | [`softmax`] | softmax, log_softmax, softmax cross-entropy, one_hot |

pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod reduce;
pub mod softmax;
