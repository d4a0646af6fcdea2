//! [`Core`]: what every optimizer keeps and does the same way (learning rate or schedule,
//! step count, global clip norm, per-variable slots, and the step loop), so that an
//! optimizer is its hyperparameters and one per-variable update.

use super::{check_hyperparameters, clip_by_global_norm, pair_gradients, LearningRate, SlotTable};
use crate::{Error, Result};
use std::borrow::Cow;
use tapegrad_tensor::optim::StepScalars;
use tapegrad_tensor::{Tensor, Variable};

/// The shared state of an optimizer.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: &'static str,
    pub(crate) learning_rate: LearningRate,
    pub(crate) global_clipnorm: Option<f64>,
    pub(crate) iterations: u64,
    pub(crate) slots: SlotTable,
    /// The device buffer of the per-step values a captured update reads (CUDA graphs).
    pub(crate) graph_scalars: Option<StepScalars>,
}

impl Core {
    pub(crate) fn new(name: &'static str, learning_rate: LearningRate) -> Self {
        Core {
            name,
            learning_rate,
            global_clipnorm: None,
            iterations: 0,
            slots: SlotTable::default(),
            graph_scalars: None,
        }
    }

    /// The learning rate of the coming step.
    pub(crate) fn current_learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations)
    }

    /// Validates the hyperparameters of the step that follows `iterations` steps (`check`:
    /// the update's own validation of them) as [`Core::apply`] would then.
    pub(crate) fn check_at(&self, iterations: u64, check: tapegrad_tensor::Result<()>) -> Result<()> {
        check_hyperparameters(self.name, &self.learning_rate, iterations, self.global_clipnorm, check)
    }

    /// The gradients a step uses: validates the hyperparameters (`check`: the update's
    /// own validation) and, when a global clip norm is set, every gradient against its
    /// variable (the norm needs them to match) before clipping. Without clipping the
    /// caller's pairing is the validation, so the gradients are paired once per step.
    fn checked_gradients<'g>(
        &self,
        grads: &'g [Option<Tensor>],
        variables: &[Variable],
        check: tapegrad_tensor::Result<()>,
    ) -> Result<Cow<'g, [Option<Tensor>]>> {
        check_hyperparameters(self.name, &self.learning_rate, self.iterations, self.global_clipnorm, check)?;
        match self.global_clipnorm {
            None => Ok(Cow::Borrowed(grads)),
            Some(clipnorm) => {
                pair_gradients(self.name, grads, variables)?;
                Ok(Cow::Owned(clip_by_global_norm(grads, clipnorm)?.0))
            }
        }
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
        let grads = self.checked_gradients(grads, variables, check)?;
        let pairs = pair_gradients(self.name, &grads, variables)?;
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

impl Core {
    /// Validates the coming step's hyperparameters (`check`: the update's own validation)
    /// and returns the device buffer for `variables`' device and dtype, made on first use.
    pub(crate) fn graph_scalars(
        &mut self,
        variables: &[Variable],
        check: tapegrad_tensor::Result<()>,
    ) -> Result<&StepScalars> {
        check_hyperparameters(self.name, &self.learning_rate, self.iterations, self.global_clipnorm, check)?;
        let Some(first) = variables.first().map(Variable::value_untracked) else {
            return Err(self.fail("a CUDA-graph update needs at least one variable".into()));
        };
        let (device, dtype) = (first.device(), first.dtype());
        for v in variables {
            let value = v.value_untracked();
            if value.device() != device || value.dtype() != dtype {
                return Err(self.fail(format!(
                    "a CUDA-graph update needs every variable on one device with one dtype: {} is {} on {}, {} is {} on {}",
                    variables[0].name(),
                    dtype,
                    device,
                    v.name(),
                    value.dtype(),
                    value.device()
                )));
            }
        }
        if !self.graph_scalars.as_ref().is_some_and(|s| s.device() == device && s.dtype() == dtype) {
            self.graph_scalars = Some(StepScalars::new(&device, dtype)?);
        }
        Ok(self.graph_scalars.as_ref().expect("made just above"))
    }

    /// Queues, during a capture, one in-place update (`update(items, scalars)`) of every
    /// variable with a gradient; validates as [`Core::apply`] does, assigns and counts
    /// nothing. Every such variable must have its slots.
    pub(crate) fn capture(
        &mut self,
        grads: &[Option<Tensor>],
        variables: &[Variable],
        check: tapegrad_tensor::Result<()>,
        update: impl FnOnce(&[StepItem<'_>], &StepScalars) -> Result<()>,
    ) -> Result<()> {
        let grads = self.checked_gradients(grads, variables, check)?;
        let pairs = pair_gradients(self.name, &grads, variables)?;
        let mut items = Vec::with_capacity(pairs.len());
        for &(_, grad, var) in &pairs {
            let Some(slots) = self.slots.get(var) else {
                return Err(self.fail(format!(
                    "{} has no optimizer state yet (an ordinary step makes it before a capture)",
                    var.name()
                )));
            };
            items.push(StepItem { value: var.value_untracked(), grad, slots: slots.to_vec() });
        }
        let Some(scalars) = &self.graph_scalars else {
            return Err(self.fail("prepare_graph_update must run before the capture (it makes the step buffer)".into()));
        };
        update(&items, scalars)
    }

    fn fail(&self, msg: String) -> Error {
        Error::Optimizer { optimizer: self.name.to_string(), msg }
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
