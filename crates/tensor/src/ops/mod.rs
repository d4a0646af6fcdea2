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
//! | [`conv`] | conv2d over NHWC (strides, Valid/Same/explicit padding, dilation, bias), conv2d_transpose |
//! | [`pool`] | max_pool2d, avg_pool2d, global_avg_pool2d, global_max_pool2d |
//! | [`gather`] | gather (rows by i64 indices), scatter_add (its deterministic adjoint) |
//! | [`norm`] | batch_norm_train (fused backward), batch_norm_relu_train, batch_norm_add_relu_train, batch_norm_infer |
//! | [`pad`] | pad (constant, reflect; any rank) |
//! | [`resize`] | resize of NHWC images by integer factors (nearest, bilinear) |
//! | [`group_norm`] | layer_norm, group_norm (one primitive, fused backward) |
//! | [`optim`] | fused optimizer updates: sgd_update, adam_update (AdamW with weight decay), their multi-tensor `_many` forms |

pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod group_norm;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod optim;
pub(crate) mod output_guard;
pub mod pad;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod softmax;
