//! Data-parallel training steps: the hand-written loop's step and `Trainer::fit`'s, with
//! gradients averaged over the ranks of a [`DataParallel`] before they are applied.

use crate::optimizers::Optimizer;
use crate::{Layer, Mode, Result};
use tapegrad_distributed::DataParallel;
use tapegrad_tensor::{GradientTape, Tensor};

/// Makes every rank's replica of `model` rank 0's: builds the model on `example` (an input
/// batch, run in inference mode, which changes no state) if it is not built yet, then
/// broadcasts every variable, the moving statistics included. Call it once, on every rank,
/// before the first step.
pub fn broadcast_model(dp: &DataParallel, model: &dyn Layer, example: &Tensor) -> Result<()> {
    if model.variables().is_empty() {
        model.call(example, Mode::Infer)?;
    }
    dp.broadcast_variables(&model.variables())?;
    Ok(())
}

/// [`train_step_with`](super::train_step_with) on one data-parallel rank: the loss of
/// this rank's batch is differentiated with [`DataParallel::gradient`], so every rank
/// applies the same averaged gradients and its weights and optimizer state stay equal
/// to the other ranks'. Returns this rank's loss.
pub fn data_parallel_step_with<T>(
    dp: &DataParallel,
    model: &dyn Layer,
    optimizer: &mut dyn Optimizer,
    step: impl FnOnce() -> Result<(Tensor, T)>,
) -> Result<(Tensor, T)> {
    let tape = GradientTape::new();
    // The loss scale (a LossScaleOptimizer's; 1 otherwise) is applied under the tape, so
    // the gradients are of the scaled loss; `apply_gradients` divides it out.
    let (loss, scaled, extra) = tape.record(|| {
        let (loss, extra) = step().map_err(tapegrad_tensor::Error::from)?;
        let scaled = optimizer.scale_loss(&loss).map_err(tapegrad_tensor::Error::from)?;
        Ok((loss, scaled, extra))
    })?;
    let variables = model.trainable_variables();
    let grads = dp.gradient(&tape, &scaled, &variables)?;
    optimizer.apply_gradients(&grads, &variables)?;
    Ok((loss, extra))
}
