//! [`LossScaleOptimizer`]: dynamic loss scaling (Keras 3's
//! `keras.optimizers.LossScaleOptimizer`) around any optimizer.

use crate::optimizers::{pair_gradients, LearningRate, Optimizer, SlotTable};
use crate::{Error, Result};
use tapegrad_tensor::optim::{DeviceLossScale, DeviceLossScaleState};
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
/// **In a CUDA graph** ([`GraphedStep`](crate::training::GraphedStep)), when the inner
/// optimizer's update can be captured, the decision is made on the device: the scale, the
/// good-step counter and the applied-step count live in a
/// [`DeviceLossScale`](tapegrad_tensor::optim::DeviceLossScale); a kernel flags
/// non-finite gradients, a one-thread kernel updates the scale and either hands the inner
/// update its step's values (learning rate, Adam's bias correction) from a table of the
/// next [`graph_sync_steps`](Self::graph_sync_steps) steps or marks the update skipped
/// (its kernels then leave variables and slots as they are). The host reads the state
/// back every `graph_sync_steps` replays to write the next table, and whenever it is asked
/// for the scale or the iteration count (or runs an eager step): a replayed step equals an
/// eager one bit for bit, skips included. While replays are pending,
/// [`learning_rate`](Optimizer::learning_rate) and [`inner`](Self::inner) report the
/// inner optimizer as the host last saw it (up to `graph_sync_steps` steps behind).
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
    /// Behind the device's while graph replays are pending.
    state: Option<LossScaleState>,
    /// Table rows of a captured step, and replays between two reads of the device state.
    graph_sync_steps: u64,
    /// The device state of a captured step, once `prepare_graph_update` made it.
    graph: Option<GraphState>,
}

/// The device side of a captured loss-scaled step, and what the host knows of it.
#[derive(Debug)]
struct GraphState {
    device: DeviceLossScale,
    /// The id of the inner optimizer's step buffer that `device` writes.
    inner_buffer: u64,
    /// Replays queued since the device state was last written.
    pending: u64,
    /// Rows of the table the host wrote (a schedule's invalid step ends it early).
    rows: u64,
    /// The host's state changed (or was read back): write it and the table before the next
    /// replay.
    stale: bool,
}

impl<O: Optimizer> LossScaleOptimizer<O> {
    /// `inner` with dynamic loss scaling: initial scale 2^15, doubled after 2000 finite
    /// steps (Keras' defaults).
    pub fn new(inner: O) -> Self {
        LossScaleOptimizer {
            inner,
            initial_scale: 32768.0,
            dynamic_growth_steps: 2000,
            state: None,
            graph_sync_steps: 32,
            graph: None,
        }
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

    /// In a CUDA graph, how many replayed steps run between two reads of the device state
    /// (the size of the table of step values written at each read; 32, at least 1). A
    /// read waits for the device; fewer reads let more steps queue.
    pub fn graph_sync_steps(mut self, steps: u64) -> Self {
        self.graph_sync_steps = steps;
        self.graph = None;
        self
    }

    /// The wrapped optimizer (while CUDA-graph replays are pending, its iteration count is
    /// behind: see the type's docs).
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, to change it (brought up to date with the device first).
    pub fn inner_mut(&mut self) -> &mut O {
        self.sync_or_drop();
        self.mark_stale();
        &mut self.inner
    }

    /// The wrapped optimizer, unwrapped (brought up to date with the device first).
    pub fn into_inner(mut self) -> O {
        self.sync_or_drop();
        self.inner
    }

    fn fail(&self, msg: String) -> Error {
        Error::Optimizer { optimizer: format!("LossScaleOptimizer({})", self.inner.name()), msg }
    }

    /// Checks the options.
    fn check_options(&self) -> Result<()> {
        if !(self.initial_scale.is_finite() && self.initial_scale > 0.0) {
            return Err(self.fail(format!("initial_scale must be finite and > 0, got {}", self.initial_scale)));
        }
        if self.dynamic_growth_steps == 0 {
            return Err(self.fail("dynamic_growth_steps must be at least 1, got 0".into()));
        }
        if self.graph_sync_steps == 0 {
            return Err(self.fail("graph_sync_steps must be at least 1, got 0".into()));
        }
        Ok(())
    }

    /// Checks the options, and returns the current state.
    fn checked_state(&self) -> Result<LossScaleState> {
        self.check_options()?;
        Ok(self.current()?.0)
    }

    /// The state as the host last saw it.
    fn host_state(&self) -> LossScaleState {
        self.state.unwrap_or(LossScaleState { scale: self.initial_scale, good_steps: 0 })
    }

    /// The state and the iteration count now: read from the device when graph replays ran
    /// since the host last saw them.
    fn current(&self) -> Result<(LossScaleState, u64)> {
        match &self.graph {
            Some(g) if g.pending > 0 => {
                let s = g.device.read()?;
                Ok((LossScaleState { scale: s.scale, good_steps: s.good_steps }, s.applied))
            }
            _ => Ok((self.host_state(), self.inner.iterations())),
        }
    }

    /// Brings the host's state (scale, counter, the inner optimizer's iteration count) up
    /// to date with the device's after graph replays; the device's is then rewritten
    /// (with a new table) before the next replay.
    fn sync(&mut self) -> Result<()> {
        let Some(g) = &self.graph else { return Ok(()) };
        if g.pending == 0 {
            return Ok(());
        }
        let (state, applied) = self.current()?;
        self.state = Some(state);
        self.inner.set_iterations(applied);
        if let Some(g) = &mut self.graph {
            g.pending = 0;
            g.stale = true;
        }
        Ok(())
    }

    /// [`sync`](Self::sync) for the methods that cannot fail: when the device cannot be read
    /// (it failed, and the next step will say so), the host keeps what it last saw.
    fn sync_or_drop(&mut self) {
        if self.sync().is_err() {
            if let Some(g) = &mut self.graph {
                g.pending = 0;
                g.stale = true;
            }
        }
    }

    /// The host's state changed: the device's is rewritten before the next replay.
    fn mark_stale(&mut self) {
        if let Some(g) = &mut self.graph {
            g.stale = true;
        }
    }

    /// Writes the host's state and the next steps' values to the device (making the device
    /// state first, or again when the inner optimizer's step buffer changed).
    fn write_graph_state(&mut self, variables: &[Variable]) -> Result<()> {
        self.sync()?;
        // Makes (or checks) the inner optimizer's step buffer; the step it writes there is
        // overwritten on the device by the table's row.
        self.inner.prepare_graph_update(variables)?;
        let Some(scalars) = self.inner.graph_step_scalars() else {
            return Err(self.fail("the inner optimizer keeps no device buffer of step values".into()));
        };
        let (device, dtype, id) = (scalars.device(), scalars.dtype(), scalars.id());
        if self.graph.as_ref().is_none_or(|g| g.inner_buffer != id) {
            let rows = usize::try_from(self.graph_sync_steps).unwrap_or(usize::MAX);
            let device = DeviceLossScale::new(&device, dtype, rows)?;
            self.graph = Some(GraphState { device, inner_buffer: id, pending: 0, rows: 0, stale: true });
        }
        let iterations = self.inner.iterations();
        let mut rows = Vec::new();
        for r in 0..self.graph_sync_steps {
            match self.inner.graph_update_values(iterations.saturating_add(r)) {
                Ok(values) => rows.push(values),
                Err(e) if r == 0 => return Err(e),
                // A later step's values are invalid (a schedule's): the table ends before it,
                // so that the step reports its error when it comes (eagerly, as always).
                Err(_) => break,
            }
        }
        let state = self.host_state();
        let growth = self.dynamic_growth_steps;
        let Some(g) = &mut self.graph else {
            return Err(self.fail("the device state is missing (internal error)".into()));
        };
        let device_state =
            DeviceLossScaleState { scale: state.scale, good_steps: state.good_steps, applied: iterations };
        g.device.write(device_state, growth, &rows)?;
        (g.pending, g.rows, g.stale) = (0, rows.len() as u64, false);
        Ok(())
    }
}

impl<O: Optimizer> Optimizer for LossScaleOptimizer<O> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn apply_gradients(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        self.check_options()?;
        // After graph replays, this step starts from the device's state; the device's is
        // rewritten before the next replay.
        self.sync()?;
        self.mark_stale();
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

    /// The state now (read from the device after CUDA-graph replays; if that read fails,
    /// the state the host last saw).
    fn loss_scale(&self) -> Option<LossScaleState> {
        Some(self.current().map_or_else(|_| self.host_state(), |c| c.0))
    }

    fn set_loss_scale(&mut self, state: LossScaleState) -> Result<()> {
        if !(state.scale.is_finite() && state.scale > 0.0) {
            return Err(self.fail(format!("a loss scale must be finite and > 0, got {}", state.scale)));
        }
        self.sync()?;
        self.state = Some(state);
        self.mark_stale();
        Ok(())
    }

    /// The inner optimizer's count (read from the device after CUDA-graph replays; if that
    /// read fails, the count the host last saw).
    fn iterations(&self) -> u64 {
        self.current().map_or_else(|_| self.inner.iterations(), |c| c.1)
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.sync_or_drop();
        self.inner.set_iterations(iterations);
        self.mark_stale();
    }

    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        self.inner.set_learning_rate(learning_rate);
        // The table of the coming steps' values holds the old rate.
        self.mark_stale();
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

    fn supports_graph_update(&self) -> bool {
        self.inner.supports_graph_update()
    }

    /// Writes the device state and the table of the next steps' values when they need it:
    /// first, after the host's state changed, and when the table may run out (every
    /// [`graph_sync_steps`](Self::graph_sync_steps) replays; this reads the device state
    /// back, waiting for the device). Otherwise queues nothing: the device picks each
    /// step's values itself.
    fn prepare_graph_update(&mut self, variables: &[Variable]) -> Result<()> {
        self.check_options()?;
        if !self.inner.supports_graph_update() {
            return Err(self.fail("the inner optimizer cannot run its update inside a CUDA graph".into()));
        }
        match &self.graph {
            Some(g) if !g.stale && g.pending < g.rows => Ok(()),
            _ => self.write_graph_state(variables),
        }
    }

    fn graph_update_buffer(&self) -> Option<u64> {
        self.graph.as_ref().map(|g| g.device.id())
    }

    /// Multiplies the loss by the scale read on the device when the graph replays.
    fn capture_scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        self.check_options()?;
        let Some(g) = &self.graph else {
            return Err(
                self.fail("prepare_graph_update must run before the capture (it makes the device state)".into())
            );
        };
        Ok(g.device.scale(loss)?)
    }

    /// Queues the decision (are all gradients finite?), the unscaling and the inner
    /// optimizer's update, which the device skips when a gradient is not finite.
    fn capture_update(&mut self, grads: &[Option<Tensor>], variables: &[Variable]) -> Result<()> {
        self.check_options()?;
        pair_gradients(self.inner.name(), grads, variables)?;
        let (Some(g), Some(scalars)) = (&self.graph, self.inner.graph_step_scalars()) else {
            return Err(
                self.fail("prepare_graph_update must run before the capture (it makes the device state)".into())
            );
        };
        if scalars.id() != g.inner_buffer {
            return Err(self.fail("the inner optimizer's step buffer changed since prepare_graph_update".into()));
        }
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        g.device.decide(&present, scalars)?;
        let unscaled = grads
            .iter()
            .map(|grad| grad.as_ref().map(|grad| g.device.unscale(grad)).transpose())
            .collect::<tapegrad_tensor::Result<Vec<_>>>()?;
        self.inner.capture_update(&unscaled, variables)
    }

    fn graph_update_replayed(&mut self) {
        if let Some(g) = &mut self.graph {
            g.pending += 1;
        }
    }
}
