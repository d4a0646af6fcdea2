//! [`LossScaleOptimizer`]: dynamic loss scaling (Keras 3's
//! `keras.optimizers.LossScaleOptimizer`) around any optimizer.

use crate::optimizers::{pair_gradients, LearningRate, Optimizer, SlotTable};
use crate::{Error, Result};
use tapegrad_tensor::{check_numerics, Tensor, Variable};

/// The state of dynamic loss scaling, saved in checkpoints: the scale the next loss is
/// multiplied by, and the finite steps taken since it last changed (Keras'
/// `dynamic_scale` and `step_counter`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleState {
    /// The current loss scale (finite and above 0).
    pub scale: f64,
    /// Finite steps since the scale last changed (below `dynamic_growth_steps`).
    pub good_steps: u64,
}

/// Dynamic loss scaling around an optimizer, as Keras'
/// `keras.optimizers.LossScaleOptimizer`, for `"mixed_float16"` training: f16 gradients
/// of small values underflow to 0, so the loss is multiplied by a large scale before the
/// gradient is taken, and the gradients divided by it before the update.
///
/// - [`scale_loss`](Optimizer::scale_loss) multiplies the loss by the scale (call it under
///   the tape; [`train_step`](crate::training::train_step) and `fit` do).
/// - [`apply_gradients`](Optimizer::apply_gradients) checks every gradient: when all are
///   finite it divides them by the scale and lets the inner optimizer apply them, and after
///   `dynamic_growth_steps` such steps in a row it doubles the scale; when any is infinite
///   or NaN it **skips the step** (no variable, slot or iteration count changes) and halves
///   the scale. Deciding takes one read from the device per step.
///
/// Keras' defaults: initial scale 2^15, growth every 2000 finite steps. The name, the
/// iteration count, the learning rate and the slots are the inner optimizer's; checkpoints
/// save the scale and the step counter beside them ([`Optimizer::loss_scale`]).
///
/// ```
/// use tapegrad_layers::mixed_precision::LossScaleOptimizer;
/// use tapegrad_layers::optimizers::{Optimizer, Sgd};
/// use tapegrad_tensor::{DType, Device, Tensor, Variable};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let w = Variable::new("w", Tensor::ones([2], DType::F32, &Device::Cpu)?, true);
/// let mut opt = LossScaleOptimizer::new(Sgd::new(0.1)).initial_scale(1024.0);
/// let overflow = Tensor::from_vec(vec![f32::INFINITY, 1.0], [2], &Device::Cpu)?;
/// opt.apply_gradients(&[Some(overflow)], &[w.clone()])?; // skipped
/// assert_eq!(opt.loss_scale().unwrap().scale, 512.0);
/// assert_eq!(opt.iterations(), 0);
/// assert_eq!(w.value_untracked().to_vec::<f32>()?, [1.0, 1.0]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LossScaleOptimizer<O: Optimizer> {
    inner: O,
    initial_scale: f64,
    dynamic_growth_steps: u64,
    /// `None` until the first use: then the initial scale (so that the builder sets it).
    state: Option<LossScaleState>,
}

impl<O: Optimizer> LossScaleOptimizer<O> {
    /// `inner` with dynamic loss scaling: initial scale 2^15, doubled after 2000 finite
    /// steps (Keras' defaults).
    pub fn new(inner: O) -> Self {
        LossScaleOptimizer { inner, initial_scale: 32768.0, dynamic_growth_steps: 2000, state: None }
    }

    /// The scale of the first step (Keras' `initial_scale`, 2^15); must be finite and above 0.
    pub fn initial_scale(mut self, scale: f64) -> Self {
        self.initial_scale = scale;
        self
    }

    /// How many finite steps in a row double the scale (Keras' `dynamic_growth_steps`,
    /// 2000); at least 1.
    pub fn dynamic_growth_steps(mut self, steps: u64) -> Self {
        self.dynamic_growth_steps = steps;
        self
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, to change it.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// The wrapped optimizer, unwrapped.
    pub fn into_inner(self) -> O {
        self.inner
    }

    fn fail(&self, msg: String) -> Error {
        Error::Optimizer { optimizer: format!("LossScaleOptimizer({})", self.inner.name()), msg }
    }

    /// Checks the options, and returns the current state.
    fn checked_state(&self) -> Result<LossScaleState> {
        if !(self.initial_scale.is_finite() && self.initial_scale > 0.0) {
            return Err(self.fail(format!("initial_scale must be finite and > 0, got {}", self.initial_scale)));
        }
        if self.dynamic_growth_steps == 0 {
            return Err(self.fail("dynamic_growth_steps must be at least 1, got 0".into()));
        }
        Ok(self.state.unwrap_or(LossScaleState { scale: self.initial_scale, good_steps: 0 }))
    }
}

impl<O: Optimizer> Optimizer for LossScaleOptimizer<O> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let state = self.checked_state()?;
        // The lists are checked before deciding, so a bad call fails on a skipped step too.
        pair_gradients(self.inner.name(), grads, variables)?;
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        let finite = check_numerics::all_finite(&present)?;
        let state = if finite {
            let inverse = 1.0 / state.scale;
            let unscaled = grads
                .iter()
                .map(|g| g.as_ref().map(|g| g.mul_scalar(inverse)).transpose())
                .collect::<tapegrad_tensor::Result<Vec<_>>>()?;
            self.inner.apply_gradients(&unscaled, variables)?;
            if state.good_steps + 1 >= self.dynamic_growth_steps {
                LossScaleState { scale: state.scale * 2.0, good_steps: 0 }
            } else {
                LossScaleState { scale: state.scale, good_steps: state.good_steps + 1 }
            }
        } else {
            // Skipped: the inner optimizer (variables, slots, iterations) is not touched.
            LossScaleState { scale: state.scale / 2.0, good_steps: 0 }
        };
        self.state = Some(state);
        Ok(())
    }

    fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.mul_scalar(self.checked_state()?.scale)?)
    }

    fn loss_scale(&self) -> Option<LossScaleState> {
        Some(self.state.unwrap_or(LossScaleState { scale: self.initial_scale, good_steps: 0 }))
    }

    fn set_loss_scale(&mut self, state: LossScaleState) -> Result<()> {
        if !(state.scale.is_finite() && state.scale > 0.0) {
            return Err(self.fail(format!("a loss scale must be finite and > 0, got {}", state.scale)));
        }
        self.state = Some(state);
        Ok(())
    }

    fn iterations(&self) -> u64 {
        self.inner.iterations()
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.inner.set_iterations(iterations)
    }

    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        self.inner.set_learning_rate(learning_rate)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        self.inner.slot_names()
    }

    fn slots(&self) -> &SlotTable {
        self.inner.slots()
    }

    fn slots_mut(&mut self) -> &mut SlotTable {
        self.inner.slots_mut()
    }
}
