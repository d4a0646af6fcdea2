//! [`GraphedStep`]: a training step whose forward pass, backward pass and optimizer update
//! are captured once as a CUDA graph and replayed at every later step, with eager fallback.
//!
//! The optimizer's update is in the graph when the optimizer supports it
//! ([`Optimizer::supports_graph_update`]: `Sgd`, `Adam`, `AdamW`, and a
//! `LossScaleOptimizer` around one of them, whose loss scale and skip decision then live
//! on the device: see [`LossScaleOptimizer`](crate::mixed_precision::LossScaleOptimizer)). A graph freezes the host
//! scalars of its kernels, but the learning rate of a schedule and Adam's bias correction
//! `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)` change every step; so the captured update
//! reads them from a small device buffer of the optimizer, which the host writes before
//! each replay ([`Optimizer::prepare_graph_update`]: an asynchronous copy from pinned
//! memory, queued before the replay like the batch's copy into the static inputs). The
//! host computes them exactly as an eager step does, and the update runs the eager
//! kernels' arithmetic, in place on the variables' and the slots' static buffers: replayed
//! steps equal eager ones bit for bit. With another optimizer, the graph ends with the
//! gradients and the update runs eagerly after each replay, as in
//! [`train_step_with`](super::train_step_with).
//!
//! Fixed addresses: the graph reads every variable of the model, and every slot of the
//! optimizer (momentum, Adam's moments), from a static buffer made before the capture;
//! before each replay, a variable or slot whose value is another tensor (an eager step's
//! new value, a loaded checkpoint) is copied into its buffer on the device and set to it.
//! Variables the step itself assigns (batch-norm moving statistics) are written back into
//! their buffers by copies at the end of the graph.
//!
//! Host state that a forward pass advances (`Dropout`'s generator, batch norm's update
//! counter; [`Layer::host_state`]) is saved before the capture and restored after it: the
//! capture computes nothing, so an eager step that replaces a failed capture draws the
//! same masks as without graphs, and a replay is counted once.

use crate::optimizers::Optimizer;
use crate::{Error, Layer, Result};
use std::any::Any;
use std::collections::HashSet;
use tapegrad_tensor::cuda_graph::{copy_into, shares_buffer, CudaGraph};
use tapegrad_tensor::{check_numerics, DType, Device, GradientTape, Tensor, Variable};

/// A step's computation: `(x, y) -> (loss, outputs)`.
type StepForward<'a> = dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// How many steps a [`GraphedStep`] ran each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphedStepStats {
    /// Steps run eagerly (the warm-up step and every fallback).
    pub eager_steps: u64,
    /// Graphs captured.
    pub captures: u64,
    /// Steps run by replaying the graph.
    pub replays: u64,
}

/// A training step through a CUDA graph, for [`Trainer::fit`](super::Trainer::fit)
/// (`FitOptions::cuda_graph`) and hand-written loops:
///
/// ```no_run
/// use tapegrad_layers::training::GraphedStep;
/// use tapegrad_layers::{losses, models, optimizers::Adam, Layer, Mode};
/// use tapegrad_tensor::{DType, Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let gpu = Device::Cuda(0);
/// let model = models::resnet18(100);
/// let mut optimizer = Adam::new(1e-3);
/// let mut step = GraphedStep::new();
/// for _ in 0..10 {
///     let x = Tensor::zeros([64, 32, 32, 3], DType::F32, &gpu)?;
///     let y = Tensor::zeros([64], DType::I64, &gpu)?;
///     let (loss, _logits) = step.run(&model, &mut optimizer, &x, &y, |x, y| {
///         let logits = model.call(x, Mode::Train)?;
///         Ok((losses::sparse_categorical_crossentropy(y, &logits, true)?, logits))
///     })?;
///     let _ = loss; // overwritten by the next step: read or accumulate it now
/// }
/// println!("{:?}, fallback: {:?}", step.stats(), step.fallback_reason());
/// # Ok(())
/// # }
/// ```
///
/// The first two steps run eagerly (the first builds the model, the optimizer's slots and
/// the kernels; the second runs with the graph's static buffers in place, which leaves in
/// the allocator's cache every block the step needs); the third is captured, then
/// replayed; later steps replay. A step
/// runs eagerly instead, printing the reason once on stderr (see
/// [`GraphedStep::fallback_reason`]), on the CPU, with `check_numerics` on, when the batch
/// shapes differ from the captured ones (a partial last batch), or for good when the
/// capture failed (an op that needs the host, such as `gather`'s index read or
/// `Dropout`'s host-drawn mask).
///
/// `forward(x, y)` must compute the step from its arguments and the model alone (it is
/// run again at capture, and the graph replays what it queued), returning `(loss,
/// outputs)`. The returned tensors, and the gradients, live in the graph's buffers: the
/// next step overwrites them, so read or accumulate them before it. Values of variables
/// (weights, batch-norm statistics) and of the optimizer's slots are overwritten in place
/// by the next replay too; copy one to keep it. The optimizer counts every replayed step
/// and takes its learning rate at that step, as an eager step would; its state may be
/// replaced between steps (a loaded checkpoint is copied into the graph's buffers), but not
/// cleared (the next step then starts over: two eager steps and a new capture).
pub struct GraphedStep {
    state: State,
    reason: Option<String>,
    reported: HashSet<String>,
    stats: GraphedStepStats,
    verbose: bool,
}

/// The shapes, dtypes and device a graph was captured for.
#[derive(Clone, Debug, PartialEq)]
struct Signature {
    device: Device,
    x: (Vec<usize>, DType),
    y: (Vec<usize>, DType),
}

impl Signature {
    fn of(x: &Tensor, y: &Tensor) -> Signature {
        Signature { device: x.device(), x: (x.dims().to_vec(), x.dtype()), y: (y.dims().to_vec(), y.dtype()) }
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x {:?} {}, y {:?} {}", self.x.0, self.x.1, self.y.0, self.y.1)
    }
}

enum State {
    /// Nothing ran yet.
    Cold,
    /// One eager step ran with these shapes (it built the model and the optimizer's slots).
    Warm(Signature),
    /// The static buffers exist and an eager step ran with them in place, so that the
    /// allocator's cache now holds every block the step needs: the next step with these
    /// shapes is captured.
    Armed(Box<Statics>),
    Captured(Box<Captured>),
    /// Capture failed: every step runs eagerly, for this reason.
    Off(String),
}

/// The buffers a graph reads: inputs and every variable of the model.
struct Statics {
    signature: Signature,
    x: Tensor,
    y: Tensor,
    /// Every variable of the model, with the buffer the graph reads it from.
    variables: Vec<(Variable, Tensor)>,
    /// Every slot of the optimizer for a trainable variable: the variable, the slot's
    /// index, the number of slots, and the buffer the graph reads and writes it in.
    slots: Vec<(Variable, usize, usize, Tensor)>,
    /// Whether the optimizer's update goes into the graph.
    update_in_graph: bool,
}

/// A private copy of `t` on its device.
fn private_copy(t: &Tensor) -> Result<Tensor> {
    let buffer = t.zeros_like()?;
    copy_into(&buffer, t)?;
    Ok(buffer)
}

impl Statics {
    /// Private copies of the inputs and of every variable's value (so that the replays'
    /// in-place writes never reach a tensor someone holds), each variable set to its copy.
    /// When the optimizer's update can be captured, its slots get private buffers too, and
    /// its device buffer of per-step values is made: all before the eager step that leaves
    /// the allocator's cache as the capture needs it.
    fn new(
        model: &dyn Layer,
        optimizer: &mut dyn Optimizer,
        x: &Tensor,
        y: &Tensor,
        signature: Signature,
    ) -> Result<Statics> {
        let mut variables = Vec::new();
        for variable in model.variables() {
            let buffer = private_copy(&variable.value_untracked())?;
            variable.assign(buffer.clone())?;
            variables.push((variable, buffer));
        }
        // Not capturable (variables of several dtypes or devices): the update stays eager.
        let update_in_graph =
            optimizer.supports_graph_update() && optimizer.prepare_graph_update(&model.trainable_variables()).is_ok();
        let mut statics = Statics {
            signature,
            x: private_copy(x)?,
            y: private_copy(y)?,
            variables,
            slots: Vec::new(),
            update_in_graph,
        };
        statics.track_slots(model, optimizer)?;
        Ok(statics)
    }

    /// Gives every slot of a trainable variable that has no buffer yet a private one
    /// (when the update goes into the graph). Run when arming and again just before the
    /// capture: the arming eager step makes the slots of a variable whose first gradient
    /// comes then, and an untracked slot would be updated in place in a buffer that
    /// [`Statics::refresh`] never checks, so a slot the user replaced later would be
    /// silently ignored by the replays.
    fn track_slots(&mut self, model: &dyn Layer, optimizer: &mut dyn Optimizer) -> Result<()> {
        if !self.update_in_graph {
            return Ok(());
        }
        let count = optimizer.slot_names().len();
        for variable in model.trainable_variables() {
            let Some(values) = optimizer.slots().get(&variable).map(<[Option<Tensor>]>::to_vec) else { continue };
            for (index, value) in values.iter().enumerate() {
                let Some(value) = value else { continue };
                let tracked = self.slots.iter().any(|(v, i, _, _)| *i == index && v.same_as(&variable));
                if tracked {
                    continue;
                }
                let buffer = private_copy(value)?;
                optimizer.slots_mut().set(&variable, count, index, buffer.clone());
                self.slots.push((variable.clone(), index, count, buffer));
            }
        }
        Ok(())
    }

    /// Copies every variable and slot whose value is another tensor (an eager step's new
    /// value, a loaded checkpoint) into its buffer, and sets the variable or slot to it.
    /// Fails when a slot the graph updates is gone (the optimizer's state was cleared).
    fn refresh(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        for (variable, buffer) in &self.variables {
            let value = variable.value_untracked();
            if !shares_buffer(&value, buffer) {
                copy_into(buffer, &value)?;
                variable.assign(buffer.clone())?;
            }
        }
        for (variable, index, count, buffer) in &self.slots {
            let value = optimizer.slots().get(variable).and_then(|s| s.get(*index).cloned().flatten());
            let Some(value) = value else {
                return Err(Error::Invalid(format!(
                    "GraphedStep: slot {index} of {} is gone from the optimizer's state",
                    variable.name()
                )));
            };
            if !shares_buffer(&value, buffer) {
                copy_into(buffer, &value)?;
                optimizer.slots_mut().set(variable, *count, *index, buffer.clone());
            }
        }
        Ok(())
    }
}

/// A captured step and the buffers its graph reads and writes.
struct Captured {
    statics: Statics,
    graph: CudaGraph,
    trainable: Vec<Variable>,
    loss: Tensor,
    outputs: Tensor,
    grads: Vec<Option<Tensor>>,
    /// Whether the optimizer's update is in the graph (else it runs after each replay).
    update_in_graph: bool,
    /// The optimizer's step buffer that the captured update reads.
    update_buffer: Option<u64>,
}

impl Captured {
    /// Readies a replay: every variable and slot back in its buffer, and, when the update
    /// is in the graph, this step's values written into the buffer the graph reads. Fails
    /// (and the step starts over) when the optimizer's state was cleared or its step buffer
    /// is not the captured one: another optimizer, or its buffer remade for another dtype
    /// or device; the graph would otherwise read values no one writes.
    fn prepare(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        self.statics.refresh(optimizer)?;
        if self.update_in_graph {
            optimizer.prepare_graph_update(&self.trainable)?;
            if optimizer.graph_update_buffer() != self.update_buffer {
                return Err(Error::Invalid(
                    "GraphedStep: the optimizer's step buffer is not the one the graph was captured with (another \
                     optimizer, or one also used for variables of another dtype or device)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl Default for GraphedStep {
    fn default() -> Self {
        GraphedStep {
            state: State::Cold,
            reason: None,
            reported: HashSet::new(),
            stats: GraphedStepStats::default(),
            verbose: true,
        }
    }
}

impl GraphedStep {
    /// A step that has captured nothing yet (the first [`run`](GraphedStep::run) is eager).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to print each new fallback reason on stderr (default true).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Why the last step ran eagerly, if it did for a reason other than warming up.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// How many steps ran each way.
    pub fn stats(&self) -> GraphedStepStats {
        self.stats
    }

    /// Whether a graph is captured (it replays for batches of its shapes).
    pub fn is_captured(&self) -> bool {
        matches!(self.state, State::Captured(_))
    }

    /// Whether the captured graph holds the optimizer's update (false before a capture,
    /// and for an optimizer without [`Optimizer::supports_graph_update`], whose update
    /// runs eagerly after each replay).
    pub fn updates_in_graph(&self) -> bool {
        matches!(&self.state, State::Captured(c) if c.update_in_graph)
    }

    /// The batch-norm updates that the layers' own counters did not see (one per replay):
    /// a replay runs no host code, so `BatchNormalization` cannot count it (and the
    /// capture's host code is not counted: the counters are restored after it).
    pub(crate) fn uncounted_batch_norm_updates(&self) -> u64 {
        self.stats.replays
    }

    /// One training step on `(x, y)`: `forward(x, y)` gives `(loss, outputs)`, whose
    /// gradient with respect to `model`'s trainable variables `optimizer` applies. Returns
    /// `(loss, outputs)`, valid until the next step. See the type's docs for when it
    /// replays and when it runs eagerly.
    pub fn run(
        &mut self,
        model: &dyn Layer,
        optimizer: &mut dyn Optimizer,
        x: &Tensor,
        y: &Tensor,
        forward: impl Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let signature = Signature::of(x, y);
        let skip = if signature.device.is_cpu() {
            Some("the step runs on the cpu (CUDA graphs need a CUDA device)".to_string())
        } else if check_numerics::is_enabled() {
            Some("check_numerics is on (it reads every op's output on the host)".to_string())
        } else if !optimizer.supports_graph_update() && optimizer.loss_scale().is_some() {
            Some(
                "the optimizer scales the loss, and its inner optimizer's update cannot be captured (a \
                 LossScaleOptimizer then decides each step on the host)"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(reason) = skip {
            return self.eager(model, optimizer, x, y, &forward, Some(reason));
        }
        match &self.state {
            State::Off(reason) => {
                let reason = reason.clone();
                self.eager(model, optimizer, x, y, &forward, Some(reason))
            }
            State::Captured(c) if c.statics.signature == signature => match c.prepare(optimizer) {
                Ok(()) => self.replay(optimizer, x, y),
                Err(e) => {
                    // The optimizer's state was reset, or it is another optimizer: start over (warm up,
                    // capture again).
                    self.state = State::Cold;
                    self.eager(model, optimizer, x, y, &forward, Some(e.to_string()))
                }
            },
            State::Captured(c) => {
                let reason = format!("the batch ({signature}) differs from the captured one ({})", c.statics.signature);
                self.eager(model, optimizer, x, y, &forward, Some(reason))
            }
            State::Armed(statics) if statics.signature == signature => {
                let State::Armed(mut statics) = std::mem::replace(&mut self.state, State::Cold) else {
                    unreachable!("matched just above")
                };
                if let Err(e) = statics.track_slots(model, optimizer).and_then(|()| statics.refresh(optimizer)) {
                    // The optimizer's state was cleared since the arming step: start over, as a
                    // replay would.
                    return self.eager(model, optimizer, x, y, &forward, Some(e.to_string()));
                }
                match capture(model, optimizer, *statics, &forward) {
                    Ok(captured) => {
                        self.stats.captures += 1;
                        // This step's values, as before every replay.
                        let prepared = captured.prepare(optimizer);
                        self.state = State::Captured(Box::new(captured));
                        prepared?;
                        self.replay(optimizer, x, y)
                    }
                    Err(e) => {
                        let reason = format!("capture failed: {e}");
                        self.state = State::Off(reason.clone());
                        self.eager(model, optimizer, x, y, &forward, Some(reason))
                    }
                }
            }
            State::Armed(statics) => {
                let reason = format!("the batch ({signature}) differs from the prepared one ({})", statics.signature);
                self.eager(model, optimizer, x, y, &forward, Some(reason))
            }
            // Arm only after a step was applied: a loss-scaled run skips its first steps while
            // the scale overflows, and until one is applied the optimizer has no state to capture.
            State::Warm(warm) if *warm == signature && optimizer.iterations() > 0 => {
                self.state = State::Armed(Box::new(Statics::new(model, optimizer, x, y, signature)?));
                self.eager(model, optimizer, x, y, &forward, None)
            }
            State::Cold | State::Warm(_) => {
                self.state = State::Warm(signature);
                self.eager(model, optimizer, x, y, &forward, None)
            }
        }
    }

    fn eager(
        &mut self,
        model: &dyn Layer,
        optimizer: &mut dyn Optimizer,
        x: &Tensor,
        y: &Tensor,
        forward: &StepForward<'_>,
        reason: Option<String>,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(reason) = &reason {
            if self.verbose && self.reported.insert(reason.clone()) {
                eprintln!("cuda graph: running the step eagerly: {reason}");
            }
        }
        self.reason = reason;
        self.stats.eager_steps += 1;
        super::train_step_with(model, optimizer, || forward(x, y))
    }

    fn replay(&mut self, optimizer: &mut dyn Optimizer, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let State::Captured(c) = &self.state else {
            return Err(Error::Invalid("GraphedStep: replay without a captured graph (internal error)".into()));
        };
        copy_into(&c.statics.x, x)?;
        copy_into(&c.statics.y, y)?;
        if c.update_in_graph {
            // The step's values were written by `Captured::prepare`.
            c.graph.replay()?;
            optimizer.graph_update_replayed();
        } else {
            c.graph.replay()?;
            optimizer.apply_gradients(&c.grads, &c.trainable)?;
        }
        let out = (c.loss.clone(), c.outputs.clone());
        self.reason = None;
        self.stats.replays += 1;
        Ok(out)
    }
}

/// Captures the step for `statics`' shapes: forward and backward, and the optimizer's
/// update when it supports it. Every variable and slot must be in its buffer
/// ([`Statics::track_slots`], then [`Statics::refresh`]). On failure every variable is set
/// back to its buffer, which holds its value (what the failed capture assigned was never
/// computed); either way the layers' host state is restored to what it was before the
/// capture.
fn capture(
    model: &dyn Layer,
    optimizer: &mut dyn Optimizer,
    statics: Statics,
    forward: &StepForward<'_>,
) -> Result<Captured> {
    let trainable = model.trainable_variables();
    let update_in_graph = statics.update_in_graph;
    let host_state = save_host_state(model);
    let captured = CudaGraph::capture(&statics.signature.device, || {
        let tape = GradientTape::new();
        let optimizer_ref: &dyn Optimizer = &*optimizer;
        let (loss, scaled, outputs) = tape.record(|| {
            let (loss, outputs) = forward(&statics.x, &statics.y).map_err(tapegrad_tensor::Error::from)?;
            // A LossScaleOptimizer's scale, read on the device at each replay.
            let scaled = optimizer_ref.capture_scale_loss(&loss).map_err(tapegrad_tensor::Error::from)?;
            Ok((loss, scaled, outputs))
        })?;
        let grads = tape.gradient(&scaled, &trainable)?;
        if update_in_graph {
            optimizer.capture_update(&grads, &trainable).map_err(tapegrad_tensor::Error::from)?;
        }
        // What the step assigned (batch-norm statistics) goes back to the buffers the next
        // replay reads.
        for (variable, buffer) in &statics.variables {
            let value = variable.value_untracked();
            if !shares_buffer(&value, buffer) {
                copy_into(buffer, &value)?;
            }
        }
        Ok((loss, outputs, grads))
    });
    restore_host_state(model, host_state);
    for (variable, buffer) in &statics.variables {
        variable.assign(buffer.clone())?;
    }
    let (graph, (loss, outputs, grads)) = captured?;
    let update_buffer = optimizer.graph_update_buffer();
    Ok(Captured { statics, graph, trainable, loss, outputs, grads, update_in_graph, update_buffer })
}

/// The host state of every layer of `model` (itself and its sublayers, depth first).
fn save_host_state(model: &dyn Layer) -> Vec<Option<Box<dyn Any>>> {
    fn walk(layer: &dyn Layer, out: &mut Vec<Option<Box<dyn Any>>>) {
        out.push(layer.host_state());
        layer.visit_sublayers(&mut |_, sub| walk(sub, out));
    }
    let mut out = Vec::new();
    walk(model, &mut out);
    out
}

/// Gives every layer back the state [`save_host_state`] took, in the same order.
fn restore_host_state(model: &dyn Layer, states: Vec<Option<Box<dyn Any>>>) {
    fn walk(layer: &dyn Layer, states: &mut std::vec::IntoIter<Option<Box<dyn Any>>>) {
        if let Some(Some(state)) = states.next() {
            layer.restore_host_state(state.as_ref());
        }
        layer.visit_sublayers(&mut |_, sub| walk(sub, states));
    }
    walk(model, &mut states.into_iter());
}
