//! [`Adam`] and [`AdamW`], with Keras' defaults and epsilon placement.

use super::shared::{core_methods, Core};
use super::update::{adam_update_many, AdamOperands, AdamStep};
use super::{LearningRate, Optimizer};
use crate::Result;
use tapegrad_tensor::optim::{adam_update_many_in_place, StepScalars};
use tapegrad_tensor::{Tensor, Variable};

/// Adam (Keras' `optimizers.Adam`): beta_1 0.9, beta_2 0.999, epsilon 1e-7, bias
/// correction folded into the step size; formulas and the difference from PyTorch in
/// [`adam_update`](super::update::adam_update).
#[derive(Debug)]
pub struct Adam {
    core: Core,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
}

impl Adam {
    /// Adam with Keras' defaults and the given learning rate (a number or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
        Adam {
            core: Core::new("Adam", learning_rate.into()),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
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
        self.core.global_clipnorm = Some(clip_norm);
        self
    }

    fn core(&self) -> &Core {
        &self.core
    }

    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The hyperparameters of the coming step.
    fn step(&self) -> AdamStep {
        self.step_at(self.core.iterations)
    }

    /// The hyperparameters of the step that follows `iterations` steps.
    fn step_at(&self, iterations: u64) -> AdamStep {
        AdamStep {
            learning_rate: self.core.learning_rate.at(iterations),
            step: iterations.saturating_add(1),
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        }
    }
}

/// Adam's slots as the operands of an update.
fn operands<'a>(items: &'a [super::shared::StepItem<'_>]) -> Vec<AdamOperands<'a>> {
    items
        .iter()
        .map(|it| AdamOperands { param: &it.value, grad: it.grad, m: it.slots[0].as_ref(), v: it.slots[1].as_ref() })
        .collect()
}

impl Optimizer for Adam {
    core_methods!();

    fn supports_graph_update(&self) -> bool {
        true
    }

    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.graph_scalars(variables, step.validate())?.write_adam(&step)?;
        Ok(())
    }

    fn graph_update_buffer(&self) -> Option<u64> {
        self.core.graph_scalars.as_ref().map(StepScalars::id)
    }

    fn graph_update_values(&self, iterations: u64) -> Result<Vec<f64>> {
        let step = self.step_at(iterations);
        self.core.check_at(iterations, step.validate())?;
        Ok(StepScalars::adam_values(&step)?)
    }

    fn graph_step_scalars(&self) -> Option<&StepScalars> {
        self.core.graph_scalars.as_ref()
    }

    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.capture(grads, variables, step.validate(), |items, scalars| {
            Ok(adam_update_many_in_place(&operands(items), &step, scalars)?)
        })
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.apply(grads, variables, 2, step.validate(), |items| {
            let updated = adam_update_many(&operands(items), &step)?;
            Ok(updated.into_iter().map(|(value, m, v)| (value, vec![Some(m), Some(v)])).collect())
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["m", "v"]
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
        let mut adam = Adam { weight_decay: 0.004, ..Adam::new(learning_rate) };
        adam.core.name = "AdamW";
        AdamW(adam)
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

    fn core(&self) -> &Core {
        &self.0.core
    }

    fn core_mut(&mut self) -> &mut Core {
        &mut self.0.core
    }
}

impl Optimizer for AdamW {
    core_methods!();

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        self.0.apply_gradients(grads, variables)
    }

    fn supports_graph_update(&self) -> bool {
        self.0.supports_graph_update()
    }

    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        self.0.prepare_graph_update(variables)
    }

    fn graph_update_buffer(&self) -> Option<u64> {
        self.0.graph_update_buffer()
    }

    fn graph_update_values(&self, iterations: u64) -> Result<Vec<f64>> {
        self.0.graph_update_values(iterations)
    }

    fn graph_step_scalars(&self) -> Option<&StepScalars> {
        self.0.graph_step_scalars()
    }

    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        self.0.capture_update(grads, variables)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        self.0.slot_names()
    }
}
