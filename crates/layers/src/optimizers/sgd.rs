//! [`Sgd`]: stochastic gradient descent with optional momentum, Nesterov momentum and L2
//! weight decay.

use super::update::{sgd_update, SgdStep};
use super::{check_hyperparameters, maybe_clip, pair_gradients, LearningRate, Optimizer, SlotTable};
use crate::Result;
use tapegrad_tensor::{Tensor, Variable};

/// Stochastic gradient descent (Keras' `optimizers.SGD`; formulas in
/// [`sgd_update`](super::update::sgd_update)). Weight decay is L2 regularization added to the
/// gradient, as in PyTorch's `SGD(weight_decay=...)` and the usual ResNet recipes; use
/// [`AdamW`](super::AdamW) for decoupled decay.
#[derive(Debug)]
pub struct Sgd {
    learning_rate: LearningRate,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    global_clipnorm: Option<f64>,
    iterations: u64,
    slots: SlotTable,
}

impl Sgd {
    /// Plain SGD with the given learning rate (a number or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
        Sgd {
            learning_rate: learning_rate.into(),
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            global_clipnorm: None,
            iterations: 0,
            slots: SlotTable::default(),
        }
    }

    /// Momentum (Keras' default 0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 weight decay added to the gradient.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Clips the gradients of each step to this global norm first (Keras' `global_clipnorm`).
    pub fn global_clipnorm(mut self, clip_norm: f64) -> Self {
        self.global_clipnorm = Some(clip_norm);
        self
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &str {
        "SGD"
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = SgdStep {
            learning_rate: self.learning_rate.at(self.iterations),
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        };
        check_hyperparameters(
            self.name(),
            &self.learning_rate,
            self.iterations,
            self.global_clipnorm,
            step.validate(),
        )?;
        pair_gradients(self.name(), grads, variables)?;
        let clipped = maybe_clip(grads, self.global_clipnorm)?;
        let grads = clipped.as_deref().unwrap_or(grads);
        for (i, g, var) in pair_gradients(self.name(), grads, variables)? {
            let slots = self.slots.slots_mut(var, i, 1);
            let (value, velocity) = sgd_update(&var.value_untracked(), g, slots[0].as_ref(), &step)?;
            slots[0] = velocity;
            var.assign(value)?;
        }
        self.iterations += 1;
        Ok(())
    }

    fn iterations(&self) -> u64 {
        self.iterations
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.iterations = iterations;
    }

    fn learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations)
    }

    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        self.learning_rate = learning_rate;
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["momentum"]
    }

    fn slots(&self) -> &SlotTable {
        &self.slots
    }

    fn slots_mut(&mut self) -> &mut SlotTable {
        &mut self.slots
    }
}
