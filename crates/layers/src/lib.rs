//! Keras-style layers, optimizers, learning-rate schedules, losses, metrics, checkpoints,
//! model summaries and models (ResNet18/34) for tapegrad.
//!
//! A model is a [`Layer`]: built-in layers ([`Dense`], [`Conv2D`], [`BatchNormalization`],
//! ...) and composite layers written as plain structs. Training reads as with TensorFlow's
//! `GradientTape`:
//!
//! ```
//! use tapegrad_layers::{losses, optimizers::{Adam, Optimizer}, Activation, Dense, Layer, Mode, Sequential};
//! use tapegrad_tensor::{Device, GradientTape, Tensor};
//! # fn main() -> tapegrad_layers::Result<()> {
//! tapegrad_layers::random::set_seed(1);
//! let model = Sequential::new().add(Dense::new(8)).add(Activation::relu()).add(Dense::new(2));
//! let mut optimizer = Adam::new(1e-2);
//! let x = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2], &Device::Cpu)?;
//! let labels = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
//! for _ in 0..20 {
//!     let tape = GradientTape::new();
//!     let loss = tape.record(|| {
//!         let logits = model.call(&x, Mode::Train)?;
//!         losses::sparse_categorical_crossentropy(&labels, &logits, true)
//!     })?;
//!     let grads = tape.gradient(&loss, &model.trainable_variables())?;
//!     optimizer.apply_gradients(&grads, &model.trainable_variables())?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`training`] wraps that loop as Keras' `fit` / `evaluate` / `predict`, with callbacks.

#![deny(missing_docs)]

pub mod checkpoint;
mod error;
pub mod initializers;
mod layer;
mod layers;
pub mod losses;
pub mod metrics;
pub mod mixed_precision;
pub mod models;
mod naming;
pub mod optimizers;
pub mod random;
mod summary;
mod trace;
pub mod training;

pub use error::{Error, Result};
pub use initializers::Initializer;
pub use layer::{AsDynLayer, InputSpec, Layer, Mode, MovingStatistics, ParamCount};
pub use layers::activation::{Activation, ActivationFn, ActivationFnPtr, CustomActivation};
pub use layers::batch_norm::BatchNormalization;
pub use layers::borders::IntoBorders;
pub use layers::conv2d::Conv2D;
pub use layers::conv2d_transpose::Conv2DTranspose;
pub use layers::cropping::Cropping2D;
pub use layers::dense::Dense;
pub use layers::depthwise_conv2d::DepthwiseConv2D;
pub use layers::dropout::Dropout;
pub use layers::embedding::Embedding;
pub use layers::flatten::Flatten;
pub use layers::group_norm::GroupNormalization;
pub use layers::layer_norm::LayerNormalization;
pub use layers::merge::{
    add, average, concatenate, maximum, minimum, multiply, subtract, Add, Average, Concatenate, Maximum, Minimum,
    Multiply, Subtract,
};
pub use layers::pair::IntoPair;
pub use layers::pooling::{AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPool2D};
pub use layers::relu::{LeakyReLU, ReLU, ELU};
pub use layers::separable_conv2d::SeparableConv2D;
pub use layers::sequential::Sequential;
pub use layers::shape::{Permute, RepeatVector, Reshape};
pub use layers::sync_batch_norm::SyncBatchNormalization;
pub use layers::upsampling::UpSampling2D;
pub use layers::zero_padding::ZeroPadding2D;
pub use naming::unique_name;
pub use summary::{summary, summary_nested, Summary, SummaryRow};
pub use tapegrad_tensor::{Interpolation, Padding};
