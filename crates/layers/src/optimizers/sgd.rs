//! [`Sgd`]: stochastic gradient descent with optional momentum, Nesterov momentum and L2
//! weight decay.

use super::shared::{core_methods, Core};
use super::update::{sgd_update_many, SgdOperands, SgdStep};
use super::{LearningRate, Optimizer};
use crate::Result;
use tapegrad_tensor::optim::{sgd_update_many_in_place, StepScalars};
use tapegrad_tensor::{Tensor, Variable};

/// Stochastic gradient descent (Keras' `optimizers.SGD`; formulas in
/// [`sgd_update`](super::update::sgd_update)). Weight decay is L2 regularization added to the
/// gradient, as in PyTorch's `SGD(weight_decay=...)` and the usual ResNet recipes; use
/// [`AdamW`](super::AdamW) for decoupled decay.
#[derive(Debug)]
pub struct Sgd {
    core: Core,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    /// Plain SGD with the given learning rate (a number or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
        Sgd { core: Core::new("SGD", learning_rate.into()), momentum: 0.0, nesterov: false, weight_decay: 0.0 }
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
    fn step(&self) -> SgdStep {
        self.step_at(self.core.iterations)
    }

    /// The hyperparameters of the step that follows `iterations` steps.
    fn step_at(&self, iterations: u64) -> SgdStep {
        SgdStep {
            learning_rate: self.core.learning_rate.at(iterations),
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        }
    }
}

/// SGD's slot as the operands of an update.
fn operands<'a>(items: &'a [super::shared::StepItem<'_>]) -> Vec<SgdOperands<'a>> {
    items.iter().map(|it| SgdOperands { param: &it.value, grad: it.grad, velocity: it.slots[0].as_ref() }).collect()
}

impl Optimizer for Sgd {
    core_methods!();

    fn supports_graph_update(&self) -> bool {
        true
    }

    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.graph_scalars(variables, step.validate())?.write_sgd(&step)?;
        Ok(())
    }

    fn graph_update_buffer(&self) -> Option<u64> {
        self.core.graph_scalars.as_ref().map(StepScalars::id)
    }

    fn graph_update_values(&self, iterations: u64) -> Result<Vec<f64>> {
        let step = self.step_at(iterations);
        self.core.check_at(iterations, step.validate())?;
        Ok(StepScalars::sgd_values(&step)?)
    }

    fn graph_step_scalars(&self) -> Option<&StepScalars> {
        self.core.graph_scalars.as_ref()
    }

    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.capture(grads, variables, step.validate(), |items, scalars| {
            Ok(sgd_update_many_in_place(&operands(items), &step, scalars)?)
        })
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        let step = self.step();
        self.core.apply(grads, variables, 1, step.validate(), |items| {
            let updated = sgd_update_many(&operands(items), &step)?;
            Ok(updated.into_iter().map(|(value, velocity)| (value, vec![velocity])).collect())
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["momentum"]
    }
}
