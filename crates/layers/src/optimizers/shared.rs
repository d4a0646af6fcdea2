//! [`Core`]: what every optimizer keeps and does the same way (learning rate or schedule,
//! step count, global clip norm, per-variable slots, and the step loop), so that an
//! optimizer is its hyperparameters and one per-variable update.

use super::{check_hyperparameters, maybe_clip, pair_gradients, LearningRate, SlotTable};
use crate::Result;
use tapegrad_tensor::{Tensor, Variable};

/// The shared state of an optimizer.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: &'static str,
    pub(crate) learning_rate: LearningRate,
    pub(crate) global_clipnorm: Option<f64>,
    pub(crate) iterations: u64,
    pub(crate) slots: SlotTable,
}

impl Core {
    pub(crate) fn new(name: &'static str, learning_rate: LearningRate) -> Self {
        Core { name, learning_rate, global_clipnorm: None, iterations: 0, slots: SlotTable::default() }
    }

    /// The learning rate of the coming step.
    pub(crate) fn current_learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations)
    }

    /// One step. Validates everything first (the update's own hyperparameter `check`, the
    /// clip norm, every gradient's shape, dtype and device), clips, then computes every
    /// variable's new value and slots with one call of `update` (so that a device can
    /// update all variables in a few launches: the tensor crate's `*_update_many`), and
    /// only then assigns them and counts the step: a failed update changes nothing.
    pub(crate) fn apply(
        &mut self,
        grads: &[Option<Tensor>],
        variables: &[Variable],
        slot_count: usize,
        check: tapegrad_tensor::Result<()>,
        update: impl FnOnce(&[StepItem<'_>]) -> Result<Vec<(Tensor, Vec<Option<Tensor>>)>>,
    ) -> Result<()> {
        check_hyperparameters(self.name, &self.learning_rate, self.iterations, self.global_clipnorm, check)?;
        pair_gradients(self.name, grads, variables)?;
        let clipped = maybe_clip(grads, self.global_clipnorm)?;
        let grads = clipped.as_deref().unwrap_or(grads);
        let pairs = pair_gradients(self.name, grads, variables)?;
        let items: Vec<StepItem<'_>> = pairs
            .iter()
            .map(|&(i, grad, var)| StepItem {
                value: var.value_untracked(),
                grad,
                slots: self.slots.slots_mut(var, i, slot_count).to_vec(),
            })
            .collect();
        let results = update(&items)?;
        drop(items);
        for (&(i, _, var), (value, slots)) in pairs.iter().zip(results) {
            var.assign(value)?;
            self.slots.slots_mut(var, i, slot_count).clone_from_slice(&slots);
        }
        self.iterations += 1;
        Ok(())
    }
}

/// One variable's part of a step: its current value, gradient and slots.
pub(crate) struct StepItem<'a> {
    pub(crate) value: Tensor,
    pub(crate) grad: &'a Tensor,
    pub(crate) slots: Vec<Option<Tensor>>,
}

/// Inside `impl Optimizer for X`, the methods that only read or set X's [`Core`], which X
/// returns from its inherent `core()` and `core_mut()`.
macro_rules! core_methods {
    () => {
        fn name(&self) -> &str {
            self.core().name
        }

        fn iterations(&self) -> u64 {
            self.core().iterations
        }

        fn set_iterations(&mut self, iterations: u64) {
            self.core_mut().iterations = iterations;
        }

        fn learning_rate(&self) -> f64 {
            self.core().current_learning_rate()
        }

        fn set_learning_rate(&mut self, learning_rate: $crate::optimizers::LearningRate) {
            self.core_mut().learning_rate = learning_rate;
        }

        fn slots(&self) -> &$crate::optimizers::SlotTable {
            &self.core().slots
        }

        fn slots_mut(&mut self) -> &mut $crate::optimizers::SlotTable {
            &mut self.core_mut().slots
        }
    };
}

pub(crate) use core_methods;
