//! [`GradientTape`]: reverse-mode automatic differentiation, as TensorFlow's
//! `tf.GradientTape`.
//!
//! While a tape records (inside [`GradientTape::record`]), every op whose input the tape
//! tracks appends a [`Node`]: the ids of its inputs and output and its gradient rule (a
//! closure that holds the tensors the rule needs). A tape tracks what it watches (trainable
//! [`Variable`](crate::Variable)s read while it records, and tensors passed to
//! [`GradientTape::watch`]) and every output of a recorded op. Ops on untracked inputs
//! record nothing, so inference holds no graph. [`GradientTape::gradient`] walks the nodes
//! backwards, summing gradients by tensor id. Gradient rules are ordinary tensor ops, so
//! an outer tape that records while an inner tape computes gradients records them too
//! (higher-order gradients).

use crate::{DType, Error, Result, Shape, Tensor, TensorId, Variable};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// A gradient rule: given the gradient of the op's output, the gradients of its inputs
/// (`None` where an input gets none), in input order.
/// A gradient rule: the output's gradient and which inputs need one (`needed[i]`) in,
/// one gradient per input out (`None` for an input that needs none, or has none).
pub(crate) type GradFn = dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>>;

/// The callback of [`GradientTape::gradient_with_ready_hook`]: a source's index and its
/// final gradient.
pub type ReadyHook<'a> = &'a mut dyn FnMut(usize, &Tensor) -> Result<()>;

/// One recorded op. Clones share the gradient rule.
#[derive(Clone)]
struct Node {
    op: &'static str,
    inputs: SmallVec<[(TensorId, Shape); 2]>,
    output: TensorId,
    backward: Rc<GradFn>,
}

struct TapeState {
    nodes: Vec<Node>,
    tracked: HashSet<TensorId>,
    persistent: bool,
    watch_accessed_variables: bool,
    used: bool,
    paused: bool,
}

thread_local! {
    /// The tapes recording on this thread, outermost first.
    static ACTIVE: RefCell<Vec<Rc<RefCell<TapeState>>>> = const { RefCell::new(Vec::new()) };
}

/// Records ops and computes gradients of a scalar target with respect to sources.
///
/// ```
/// use tapegrad_tensor::{Device, DType, GradientTape, Tensor, Variable};
/// # fn main() -> tapegrad_tensor::Result<()> {
/// let w = Variable::new("w", Tensor::from_vec(vec![3.0f32], [1], &Device::Cpu)?, true);
/// let tape = GradientTape::new();
/// let loss = tape.record(|| w.value().square()?.sum_all())?; // w is watched automatically
/// let grads = tape.gradient(&loss, &[&w])?;
/// assert_eq!(grads[0].as_ref().unwrap().to_vec::<f32>()?, vec![6.0]);
/// # Ok(())
/// # }
/// ```
pub struct GradientTape {
    state: Rc<RefCell<TapeState>>,
}

impl Default for GradientTape {
    fn default() -> Self {
        Self::new()
    }
}

impl GradientTape {
    /// A non-persistent tape that watches trainable variables read while it records
    /// (TF's defaults). `gradient` may be called once.
    pub fn new() -> Self {
        Self::with_options(false, true)
    }

    /// A persistent tape: `gradient` may be called any number of times; what it saved is
    /// freed when the tape is dropped.
    pub fn persistent() -> Self {
        Self::with_options(true, true)
    }

    /// A tape with TF's two options.
    pub fn with_options(persistent: bool, watch_accessed_variables: bool) -> Self {
        GradientTape {
            state: Rc::new(RefCell::new(TapeState {
                nodes: Vec::new(),
                tracked: HashSet::new(),
                persistent,
                watch_accessed_variables,
                used: false,
                paused: false,
            })),
        }
    }

    /// Runs `f` with this tape recording, and returns what `f` returns. May be called
    /// several times; the recordings add up. Tapes nest.
    pub fn record<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.state.borrow().used {
            return Err(Error::Tape(
                "this non-persistent tape has already computed its gradient; make a new tape".into(),
            ));
        }
        // Recording on a tape that already records (a helper calling `record` inside the
        // caller's `record`) must not push it twice: every op would be recorded twice.
        if ACTIVE.with(|a| a.borrow().iter().any(|t| Rc::ptr_eq(t, &self.state))) {
            return f();
        }
        ACTIVE.with(|a| a.borrow_mut().push(self.state.clone()));
        struct Pop;
        impl Drop for Pop {
            fn drop(&mut self) {
                ACTIVE.with(|a| a.borrow_mut().pop());
            }
        }
        let _pop = Pop;
        f()
    }

    /// Runs `f` with this tape not recording (TF's `tape.stop_recording()`).
    pub fn stop_recording<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = std::mem::replace(&mut self.state.borrow_mut().paused, true);
        struct Restore<'a>(&'a RefCell<TapeState>, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.borrow_mut().paused = self.1;
            }
        }
        let _restore = Restore(&self.state, was);
        f()
    }

    /// Watches a tensor, so that gradients with respect to it can be asked for.
    pub fn watch(&self, tensor: &Tensor) {
        self.state.borrow_mut().tracked.insert(tensor.id());
    }

    /// Watches a variable's current value (needed only for non-trainable variables, or
    /// on a tape made with `watch_accessed_variables = false`).
    pub fn watch_variable(&self, variable: &Variable) {
        self.watch(&variable.value_untracked());
    }

    /// The number of ops recorded and not yet freed.
    pub fn num_recorded_ops(&self) -> usize {
        self.state.borrow().nodes.len()
    }

    /// Gradients of a scalar `target` with respect to each source, `None` for a source the
    /// target does not depend on or that the tape does not track (as TF). A non-persistent
    /// tape frees its recording here and refuses a second call.
    pub fn gradient<S: GradientSource>(&self, target: &Tensor, sources: &[S]) -> Result<Vec<Option<Tensor>>> {
        if target.elem_count() != 1 {
            return Err(Error::Tape(format!(
                "the target has shape {} but must be a single value; reduce it (sum/mean) or call \
                 gradient_with_output_gradient with a gradient of that shape",
                target.shape()
            )));
        }
        let seed = target.ones_like()?;
        self.gradient_with_output_gradient(target, sources, &seed)
    }

    /// Gradients of any `target` given the gradient of some scalar with respect to it
    /// (`output_gradient`, of the target's shape, dtype and device).
    pub fn gradient_with_output_gradient<S: GradientSource>(
        &self,
        target: &Tensor,
        sources: &[S],
        output_gradient: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        self.walk(target, sources, output_gradient, None)
    }

    /// [`gradient`](Self::gradient) that calls `on_ready(i, grad)` as soon as source `i`'s
    /// gradient is final — after the last rule that adds to it has run, while the walk
    /// goes on to earlier ops — so that work on it (a data-parallel all-reduce) overlaps
    /// the rest of the backward pass. Sources that get no gradient are not reported; a
    /// source listed twice is reported twice. An error from `on_ready` ends the walk.
    pub fn gradient_with_ready_hook<S: GradientSource>(
        &self,
        target: &Tensor,
        sources: &[S],
        on_ready: ReadyHook<'_>,
    ) -> Result<Vec<Option<Tensor>>> {
        if target.elem_count() != 1 {
            return Err(Error::Tape(format!(
                "the target has shape {} but must be a single value; reduce it (sum/mean) first",
                target.shape()
            )));
        }
        self.walk(target, sources, &target.ones_like()?, Some(on_ready))
    }

    fn walk<S: GradientSource>(
        &self,
        target: &Tensor,
        sources: &[S],
        output_gradient: &Tensor,
        mut on_ready: Option<ReadyHook<'_>>,
    ) -> Result<Vec<Option<Tensor>>> {
        if output_gradient.shape() != target.shape() {
            return Err(Error::ShapeMismatch {
                op: "GradientTape.gradient (output gradient vs target)",
                lhs: output_gradient.shape().clone(),
                rhs: target.shape().clone(),
            });
        }
        target.check_same(output_gradient, "GradientTape.gradient (output gradient vs target)")?;
        if !target.dtype().is_float() {
            return Err(Error::Tape(format!("the target has dtype {}, which is not differentiable", target.dtype())));
        }
        let source_ids: Vec<TensorId> = sources.iter().map(|s| s.source_id()).collect();
        // Take what the walk needs out of the RefCell: gradient rules run ops, which may
        // record on tapes (this one included, if it is recording).
        // `tracked` is taken too: an op can mix tracked and untracked inputs (a watched
        // weight times a constant), and only tracked ones get gradients, as in TF.
        let (nodes, tracked): (Vec<Node>, HashSet<TensorId>) = {
            let mut st = self.state.borrow_mut();
            if st.used {
                return Err(Error::Tape(
                    "gradient() was already called on this non-persistent tape; use GradientTape::persistent() \
                     to ask for gradients more than once"
                        .into(),
                ));
            }
            if st.persistent {
                (st.nodes.clone(), st.tracked.clone())
            } else {
                st.used = true;
                (std::mem::take(&mut st.nodes), std::mem::take(&mut st.tracked))
            }
        };
        let keep: HashSet<TensorId> = source_ids.iter().copied().collect();
        // The tensors some source flows into (forward, in recording order): only inputs
        // among them need a gradient, so rules skip the others (an image's gradient when
        // only the weights are asked for).
        let mut from_sources = keep.clone();
        for node in &nodes {
            if node.inputs.iter().any(|(id, _)| from_sources.contains(id)) {
                from_sources.insert(node.output);
            }
        }
        // For the ready hook: the walk's last node that adds to each source's gradient is
        // the first recorded node that reads it; once it has run, the gradient is final.
        let mut ready_after: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut reported = vec![false; source_ids.len()];
        if on_ready.is_some() {
            let mut first_use: HashMap<TensorId, usize> = HashMap::new();
            for (k, node) in nodes.iter().enumerate() {
                for (id, _) in &node.inputs {
                    first_use.entry(*id).or_insert(k);
                }
            }
            for (i, id) in source_ids.iter().enumerate() {
                if let Some(&k) = first_use.get(id) {
                    ready_after.entry(k).or_default().push(i);
                }
            }
        }
        let mut report = |k: usize, grads: &HashMap<TensorId, Tensor>, reported: &mut [bool]| -> Result<()> {
            if let (Some(hook), Some(ready)) = (on_ready.as_mut(), ready_after.get(&k)) {
                for &i in ready {
                    if let (true, Some(g)) = (tracked.contains(&source_ids[i]), grads.get(&source_ids[i])) {
                        reported[i] = true;
                        hook(i, g)?;
                    }
                }
            }
            Ok(())
        };
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(target.id(), output_gradient.clone());
        let mut nodes = nodes;
        while let Some(Node { op, inputs, output, backward }) = nodes.pop() {
            let index = nodes.len();
            let g = if keep.contains(&output) { grads.get(&output).cloned() } else { grads.remove(&output) };
            let Some(g) = g else {
                report(index, &grads, &mut reported)?;
                continue;
            };
            let needed: SmallVec<[bool; 4]> =
                inputs.iter().map(|(id, _)| tracked.contains(id) && from_sources.contains(id)).collect();
            let input_grads = backward(&g, &needed)?;
            drop(backward);
            if input_grads.len() != inputs.len() {
                return Err(Error::Tape(format!(
                    "internal: the gradient rule of {op} returned {} gradients for {} inputs",
                    input_grads.len(),
                    inputs.len()
                )));
            }
            for (((id, shape), gi), needed) in inputs.into_iter().zip(input_grads).zip(needed) {
                let Some(gi) = gi else { continue };
                if !needed {
                    continue;
                }
                if gi.shape() != &shape {
                    return Err(Error::Tape(format!(
                        "internal: the gradient rule of {op} gave shape {} for an input of shape {shape}",
                        gi.shape()
                    )));
                }
                let total = match grads.remove(&id) {
                    Some(prev) => prev.add(&gi)?,
                    None => gi,
                };
                grads.insert(id, total);
            }
            report(index, &grads, &mut reported)?;
        }
        // Sources no recorded op reads (the target itself) are final only now.
        if let Some(hook) = on_ready.as_mut() {
            for (i, id) in source_ids.iter().enumerate() {
                if let (false, true, Some(g)) = (reported[i], tracked.contains(id), grads.get(id)) {
                    hook(i, g)?;
                }
            }
        }
        Ok(source_ids.iter().map(|id| if tracked.contains(id) { grads.get(id).cloned() } else { None }).collect())
    }
}

/// Something gradients can be asked for: a [`Tensor`] or a [`Variable`] (its current value).
pub trait GradientSource {
    /// The id of the tensor whose gradient is wanted.
    fn source_id(&self) -> TensorId;
}

impl GradientSource for Tensor {
    fn source_id(&self) -> TensorId {
        self.id()
    }
}

impl GradientSource for Variable {
    fn source_id(&self) -> TensorId {
        self.value_untracked().id()
    }
}

impl<T: GradientSource + ?Sized> GradientSource for &T {
    fn source_id(&self) -> TensorId {
        (**self).source_id()
    }
}

/// Records `output` on the recording tapes as an op of `inputs` whose gradient rule is
/// `rule` (TF's `tf.custom_gradient`): given the output's gradient, one gradient per
/// input (`None` for none), each of its input's shape. For ops the tensor crate cannot
/// express, such as a collective across processes (a cross-rank all-reduce whose
/// adjoint is another all-reduce). Compute `output` from detached inputs
/// ([`Tensor::detach`]) so that the ops producing it record nothing themselves.
pub fn custom_gradient(
    op: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
    rule: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    record_op(op, inputs, output, rule);
}

/// Records an op on every recording tape that tracks one of its inputs. Only float
/// outputs are differentiable; integer results are never recorded.
pub(crate) fn record_op(
    op: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
    backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    record_op_masked(op, inputs, output, move |g, _| backward(g));
}

/// `Some(f())` when the gradient is `needed`, else `None` without running `f`.
pub(crate) fn grad_if(needed: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    needed.then(f).transpose()
}

/// [`record_op`] for a rule that computes only the gradients asked for: `needed[i]` says
/// whether input `i` needs one (the others may be returned as `None`). For the ops
/// whose gradients are expensive products (convolutions, matmul).
pub(crate) fn record_op_masked(
    op: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
    backward: impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    if output.dtype() == DType::I64 {
        return;
    }
    ACTIVE.with(|active| {
        let active = active.borrow();
        if active.is_empty() {
            return;
        }
        let mut shared: Option<Rc<GradFn>> = None;
        let mut backward = Some(backward);
        for tape in active.iter() {
            let mut st = tape.borrow_mut();
            if st.paused || !inputs.iter().any(|x| st.tracked.contains(&x.id())) {
                continue;
            }
            let f = shared
                .get_or_insert_with(|| {
                    let b = backward.take().expect("taken once");
                    Rc::new(b)
                })
                .clone();
            st.nodes.push(Node {
                op,
                inputs: inputs.iter().map(|x| (x.id(), x.shape().clone())).collect(),
                output: output.id(),
                backward: f,
            });
            st.tracked.insert(output.id());
        }
    });
}

/// Called when a variable is read: recording tapes that watch accessed variables start
/// tracking its value if it is trainable.
pub(crate) fn variable_read(value: &Tensor, trainable: bool) {
    if !trainable {
        return;
    }
    ACTIVE.with(|active| {
        for tape in active.borrow().iter() {
            let mut st = tape.borrow_mut();
            if !st.paused && st.watch_accessed_variables {
                st.tracked.insert(value.id());
            }
        }
    });
}
