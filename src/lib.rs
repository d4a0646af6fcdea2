//! tapegrad: a deep-learning framework with a TensorFlow-style `GradientTape`, Keras-style
//! layers, and CPU and CUDA backends.
//!
//! This crate re-exports the workspace's crates: [`tensor`] (tensors, ops, autograd),
//! [`layers`] (layers, optimizers, losses, metrics, checkpoints, models) and [`data`] (CIFAR
//! reader and downloader, the input pipeline).

pub use tapegrad_data as data;
pub use tapegrad_distributed as distributed;
pub use tapegrad_layers as layers;
pub use tapegrad_tensor as tensor;
pub use tapegrad_tensor::{DType, Device, Error, GradientTape, Result, Shape, Tensor, Variable};
