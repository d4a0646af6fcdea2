//! Mixed precision as in Keras (`keras.mixed_precision`): a dtype [`Policy`] per layer or
//! for the whole process ([`set_global_policy`]), and the [`LossScaleOptimizer`] that
//! `"mixed_float16"` training needs.
//!
//! ```
//! use tapegrad_layers::mixed_precision::{LossScaleOptimizer, Policy};
//! use tapegrad_layers::optimizers::{Adam, Optimizer};
//! use tapegrad_layers::{losses, BatchNormalization, Dense, Layer, Mode, Sequential};
//! use tapegrad_tensor::{DType, Device, GradientTape, Tensor};
//! # fn main() -> tapegrad_layers::Result<()> {
//! // Keras: keras.mixed_precision.set_global_policy("mixed_float16"), or a per-layer dtype=.
//! let model = Sequential::new()
//!     .add(Dense::new(8))
//!     .add(BatchNormalization::new())
//!     .add(Dense::new(2))
//!     .dtype_policy("mixed_float16".parse()?);
//! let mut optimizer = LossScaleOptimizer::new(Adam::new(1e-2));
//! let x = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2], &Device::Cpu)?;
//! let y = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
//! let tape = GradientTape::new();
//! let scaled_loss = tape.record(|| {
//!     let logits = model.call(&x, Mode::Train)?; // f16
//!     let loss = losses::sparse_categorical_crossentropy(&y, &logits, true)?; // f32
//!     Ok(optimizer.scale_loss(&loss)?) // loss * 2^15
//! })?;
//! let grads = tape.gradient(&scaled_loss, &model.trainable_variables())?; // f32
//! optimizer.apply_gradients(&grads, &model.trainable_variables())?; // unscaled, or skipped
//! assert_eq!(model.trainable_variables()[0].value_untracked().dtype(), DType::F32);
//! # Ok(())
//! # }
//! ```
//!
//! # Where the casts happen
//! - **Variables** are created in the policy's variable dtype (f32 under the `mixed_*`
//!   policies) and stay there: the optimizer updates f32 values with f32 gradients.
//! - **Inputs**: [`Layer::call`](crate::Layer::call) casts a layer's float inputs to its
//!   compute dtype ([`autocast`]; integer inputs pass), as Keras' `Layer.__call__` does.
//!   [`Sequential`](crate::Sequential) leaves that to its layers, and
//!   [`Embedding`](crate::Embedding) does not cast its ids
//!   ([`Layer::autocasts_inputs`](crate::Layer::autocasts_inputs)).
//! - **Variable reads**: a layer reads its variables through [`read_variable`], which casts
//!   them to the compute dtype under a mixed policy (Keras' `AutoCastVariable`). Casts are
//!   differentiable (the gradient is cast back), so gradients reach the f32 variables in
//!   f32. A layer written by a user reads its variables the same way to follow the policy.
//! - **f32 islands**: batch, layer and group normalisation keep f32 parameters and
//!   statistics and normalise in f32, the output cast back to the input's dtype (Keras 3);
//!   a softmax (the activation) computes and answers in f32; the losses cast 16-bit
//!   predictions to f32; `fit` and `evaluate` give the loss and the metrics f32 model
//!   outputs.
//!
//! # Which policy a layer uses
//! Its own ([`Layer::policy_override`](crate::Layer::policy_override), set with the
//! layer's `dtype_policy` builder, Keras' `dtype=`), else the policy of the layer it is
//! called in (a [`Sequential`](crate::Sequential) or any composite layer that returns one),
//! else the [global policy](global_policy). Keras fixes a layer's policy when the layer is
//! constructed and does not pass a model's policy to its layers; here the policy is looked
//! up when the layer is called (and built), and a container's policy is inherited, so
//! `Sequential::new().dtype_policy(..)` sets a whole model without global state. Setting the
//! global policy before building the model, the Keras way, gives the same result.
//!
//! Under `"float32"`, an f64 input keeps its dtype (see [`Policy`]).

mod autocast;
mod loss_scale;
mod policy;

pub use autocast::{
    autocast, current_policy, enter_policy, full_precision, in_full_precision, normalization_dtype, read_variable,
    resolve, variable_dtype, PolicyScope,
};
pub use loss_scale::{LossScaleOptimizer, LossScaleState};
pub use policy::{global_policy, set_global_policy, Policy};
