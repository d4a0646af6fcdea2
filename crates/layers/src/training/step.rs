//! One training step for hand-written loops (candle's `backward_step`): a loss closure
//! in, the gradients computed on a tape and applied, the loss out.

use crate::optimizers::Optimizer;
use crate::{Layer, Result};
use tapegrad_tensor::{GradientTape, Tensor};

/// Runs `loss` on a new [`GradientTape`], takes the gradient of the loss it returns with
/// respect to `model`'s trainable variables and applies it with `optimizer`; returns the
/// loss (still on the device: reading it is up to the caller).
///
/// ```
/// use tapegrad_layers::{losses, optimizers::Adam, training::train_step, Dense, Layer, Mode};
/// use tapegrad_tensor::{Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let model = Dense::new(2);
/// let mut optimizer = Adam::new(1e-2);
/// let x = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2], &Device::Cpu)?;
/// let y = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
/// let loss = train_step(&model, &mut optimizer, || {
///     Ok(losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true)?)
/// })?;
/// assert!(loss.to_scalar::<f32>()?.is_finite());
/// # Ok(())
/// # }
/// ```
///
/// It is the loop of the seed program (`tape.record`, `tape.gradient`,
/// `optimizer.apply_gradients`) in one call, with the same arithmetic. An error of the
/// closure comes out as the variant it went in (a layer error stays a layer error).
pub fn train_step(
    model: &dyn Layer,
    optimizer: &mut dyn Optimizer,
    loss: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    Ok(train_step_with(model, optimizer, || Ok((loss()?, ())))?.0)
}

/// [`train_step`] for a closure that also returns something computed under the tape (the
/// model's outputs, for metrics): `(loss, extra)` in, `(loss, extra)` out.
pub fn train_step_with<T>(
    model: &dyn Layer,
    optimizer: &mut dyn Optimizer,
    step: impl FnOnce() -> Result<(Tensor, T)>,
) -> Result<(Tensor, T)> {
    let tape = GradientTape::new();
    // A layer error crosses `record` whole and comes back as its own variant.
    // The loss scale (a LossScaleOptimizer's; 1 otherwise) is applied under the tape, so
    // the gradients are of the scaled loss; `apply_gradients` divides it out.
    let (loss, scaled, extra) = tape.record(|| {
        let (loss, extra) = step().map_err(tapegrad_tensor::Error::from)?;
        let scaled = optimizer.scale_loss(&loss).map_err(tapegrad_tensor::Error::from)?;
        Ok((loss, scaled, extra))
    })?;
    // After the forward pass: a model built lazily by it has its variables now.
    let variables = model.trainable_variables();
    let grads = tape.gradient(&scaled, &variables)?;
    optimizer.apply_gradients(&grads, &variables)?;
    Ok((loss, extra))
}
