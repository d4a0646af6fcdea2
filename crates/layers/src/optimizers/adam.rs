//! [`Adam`] and [`AdamW`], with Keras' defaults and epsilon placement.

use super::update::{adam_update, AdamStep};
use super::{check_hyperparameters, maybe_clip, pair_gradients, LearningRate, Optimizer, SlotTable};
use crate::Result;
use tapegrad_tensor::{Tensor, Variable};

/// Adam (Keras' `optimizers.Adam`): beta_1 0.9, beta_2 0.999, epsilon 1e-7, bias
/// correction folded into the step size; formulas and the difference from PyTorch in
/// [`adam_update`](super::update::adam_update).
#[derive(Debug)]
pub struct Adam {
    name: &'static str,
    learning_rate: LearningRate,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
    global_clipnorm: Option<f64>,
    iterations: u64,
    slots: SlotTable,
}

impl Adam {
    /// Adam with Keras' defaults and the given learning rate (a number or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
        Adam {
            name: "Adam",
            learning_rate: learning_rate.into(),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
            global_clipnorm: None,
            iterations: 0,
            slots: SlotTable::default(),
        }
    }

    /// Decay of the first moment (0.9).
    pub fn beta_1(mut self, beta_1: f64) -> Self {
        self.beta_1 = beta_1;
        self
    }

    /// Decay of the second moment (0.999).
    pub fn beta_2(mut self, beta_2: f64) -> Self {
        self.beta_2 = beta_2;
        self
    }

    /// The epsilon added to `sqrt(v)` (1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Clips the gradients of each step to this global norm first (Keras' `global_clipnorm`).
    pub fn global_clipnorm(mut self, clip_norm: f64) -> Self {
        self.global_clipnorm = Some(clip_norm);
        self
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &str {
        self.name
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = AdamStep {
            learning_rate: self.learning_rate.at(self.iterations),
            step: self.iterations.saturating_add(1),
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        };
        check_hyperparameters(self.name, &self.learning_rate, self.iterations, self.global_clipnorm, step.validate())?;
        pair_gradients(self.name, grads, variables)?;
        let clipped = maybe_clip(grads, self.global_clipnorm)?;
        let grads = clipped.as_deref().unwrap_or(grads);
        for (i, g, var) in pair_gradients(self.name, grads, variables)? {
            let slots = self.slots.slots_mut(var, i, 2);
            let (value, m, v) = adam_update(&var.value_untracked(), g, slots[0].as_ref(), slots[1].as_ref(), &step)?;
            slots[0] = Some(m);
            slots[1] = Some(v);
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
        &["m", "v"]
    }

    fn slots(&self) -> &SlotTable {
        &self.slots
    }

    fn slots_mut(&mut self) -> &mut SlotTable {
        &mut self.slots
    }
}

/// Adam with decoupled weight decay (Keras' and PyTorch's `AdamW`): each step first
/// shrinks every variable by `learning_rate * weight_decay * var`, then applies Adam.
/// Keras' defaults: weight decay 0.004, beta_1 0.9, beta_2 0.999, epsilon 1e-7.
#[derive(Debug)]
pub struct AdamW(Adam);

impl AdamW {
    /// AdamW with Keras' defaults and the given learning rate (a number or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
        AdamW(Adam { name: "AdamW", weight_decay: 0.004, ..Adam::new(learning_rate) })
    }

    /// The decoupled weight decay (0.004).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.0.weight_decay = weight_decay;
        self
    }

    /// Decay of the first moment (0.9).
    pub fn beta_1(self, beta_1: f64) -> Self {
        AdamW(self.0.beta_1(beta_1))
    }

    /// Decay of the second moment (0.999).
    pub fn beta_2(self, beta_2: f64) -> Self {
        AdamW(self.0.beta_2(beta_2))
    }

    /// The epsilon added to `sqrt(v)` (1e-7).
    pub fn epsilon(self, epsilon: f64) -> Self {
        AdamW(self.0.epsilon(epsilon))
    }

    /// Clips the gradients of each step to this global norm first.
    pub fn global_clipnorm(self, clip_norm: f64) -> Self {
        AdamW(self.0.global_clipnorm(clip_norm))
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        self.0.apply_gradients(grads, variables)
    }

    fn iterations(&self) -> u64 {
        self.0.iterations()
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.0.set_iterations(iterations)
    }

    fn learning_rate(&self) -> f64 {
        self.0.learning_rate()
    }

    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        self.0.set_learning_rate(learning_rate);
    }

    fn slot_names(&self) -> &'static [&'static str] {
        self.0.slot_names()
    }

    fn slots(&self) -> &SlotTable {
        self.0.slots()
    }

    fn slots_mut(&mut self) -> &mut SlotTable {
        self.0.slots_mut()
    }
}
