//! [`GraphedStep`]: a training step whose forward and backward passes are captured once as
//! a CUDA graph and replayed at every later step, with eager fallback.
//!
//! What the graph holds, and why the optimizer is not in it: the optimizers pass their
//! per-step values (the learning rate of a schedule, Adam's bias correction `lr * sqrt(1 -
//! beta_2^t) / (1 - beta_1^t)`) to their kernels as host scalars, which a graph freezes at
//! capture. So the graph runs the forward pass, the loss and the gradients into fixed
//! buffers; the optimizer then runs eagerly on those gradients (one launch per variable,
//! or one for all of them with a multi-tensor update), exactly as in [`train_step_with`]
//! (super::train_step_with), which keeps its state and arithmetic bit for bit.
//!
//! Fixed addresses: the graph reads every variable of the model from a static buffer
//! made at capture; before each replay, a variable whose value is another tensor (the
//! optimizer's new value, a loaded checkpoint) is copied into its buffer on the device and
//! set to it. Variables the step itself assigns (batch-norm moving statistics) are written
//! back into their buffers by copies at the end of the graph.

use crate::optimizers::Optimizer;
use crate::{Error, Layer, Result};
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
/// the step assigns (batch-norm statistics) are overwritten in place by the next replay
/// too; copy one to keep it.
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
}

impl Statics {
    /// Private copies of the inputs and of every variable's value (so that the replays'
    /// in-place writes never reach a tensor someone holds), each variable set to its copy.
    fn new(model: &dyn Layer, x: &Tensor, y: &Tensor, signature: Signature) -> Result<Statics> {
        let copy = |t: &Tensor| -> Result<Tensor> {
            let buffer = t.zeros_like()?;
            copy_into(&buffer, t)?;
            Ok(buffer)
        };
        let mut variables = Vec::new();
        for variable in model.variables() {
            let buffer = copy(&variable.value_untracked())?;
            variable.assign(buffer.clone())?;
            variables.push((variable, buffer));
        }
        Ok(Statics { signature, x: copy(x)?, y: copy(y)?, variables })
    }

    /// Copies every variable whose value is another tensor (the optimizer's new value, a
    /// loaded checkpoint) into its buffer, and sets the variable to it.
    fn refresh(&self) -> Result<()> {
        for (variable, buffer) in &self.variables {
            let value = variable.value_untracked();
            if !shares_buffer(&value, buffer) {
                copy_into(buffer, &value)?;
                variable.assign(buffer.clone())?;
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

    /// The batch-norm updates that the layers' own counters did not see (one per replay):
    /// a replay runs no host code, so `BatchNormalization` cannot count it.
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
            State::Captured(c) if c.statics.signature == signature => self.replay(optimizer, x, y),
            State::Captured(c) => {
                let reason = format!("the batch ({signature}) differs from the captured one ({})", c.statics.signature);
                self.eager(model, optimizer, x, y, &forward, Some(reason))
            }
            State::Armed(statics) if statics.signature == signature => {
                let State::Armed(statics) = std::mem::replace(&mut self.state, State::Cold) else {
                    unreachable!("matched just above")
                };
                match capture(model, *statics, &forward) {
                    Ok(captured) => {
                        self.stats.captures += 1;
                        self.state = State::Captured(Box::new(captured));
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
            State::Warm(warm) if *warm == signature => {
                self.state = State::Armed(Box::new(Statics::new(model, x, y, signature)?));
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
        c.statics.refresh()?;
        copy_into(&c.statics.x, x)?;
        copy_into(&c.statics.y, y)?;
        c.graph.replay()?;
        optimizer.apply_gradients(&c.grads, &c.trainable)?;
        let out = (c.loss.clone(), c.outputs.clone());
        self.reason = None;
        self.stats.replays += 1;
        Ok(out)
    }
}

/// Captures the forward and backward pass of the step for `statics`' shapes. On failure
/// every variable is set back to its buffer, which holds its value (what the failed
/// capture assigned was never computed).
fn capture(model: &dyn Layer, statics: Statics, forward: &StepForward<'_>) -> Result<Captured> {
    statics.refresh()?;
    let trainable = model.trainable_variables();
    let captured = CudaGraph::capture(&statics.signature.device, || {
        let tape = GradientTape::new();
        let (loss, outputs) = tape.record(|| forward(&statics.x, &statics.y).map_err(tapegrad_tensor::Error::from))?;
        let grads = tape.gradient(&loss, &trainable)?;
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
    for (variable, buffer) in &statics.variables {
        variable.assign(buffer.clone())?;
    }
    let (graph, (loss, outputs, grads)) = captured?;
    Ok(Captured { statics, graph, trainable, loss, outputs, grads })
}
