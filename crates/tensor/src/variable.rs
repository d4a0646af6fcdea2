//! [`Variable`]: a named, shared, mutable parameter (TF's `tf.Variable`).

use crate::{tape, Error, Result, Tensor};
use std::sync::{Arc, RwLock};

struct VariableInner {
    name: String,
    trainable: bool,
    value: RwLock<Tensor>,
}

thread_local! {
    /// The variables read on this thread inside [`Variable::reads_during`], if any.
    static READS: std::cell::RefCell<Option<Vec<Variable>>> = const { std::cell::RefCell::new(None) };
}

/// A named parameter whose value can be replaced: layer weights, BN moving statistics,
/// optimizer slots. Clones share the same variable. Reading a trainable variable while a
/// [`GradientTape`](crate::GradientTape) records makes the tape watch it.
#[derive(Clone)]
pub struct Variable(Arc<VariableInner>);

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.value_untracked();
        write!(f, "Variable({:?}, {}, {}, trainable={})", self.name(), v.shape(), v.dtype(), self.trainable())
    }
}

impl Variable {
    /// A variable holding `value`.
    pub fn new(name: impl Into<String>, value: Tensor, trainable: bool) -> Self {
        Variable(Arc::new(VariableInner { name: name.into(), trainable, value: RwLock::new(value) }))
    }

    /// The name given at creation. Layers name their weights `<layer name>/<weight>`
    /// (`conv2d_3/kernel`, from the layer's own, unique name); the path of a variable inside
    /// a model (`layer1.0.conv1.kernel`), which checkpoints use, comes from the layers
    /// crate's `Layer::named_variables`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Whether optimizers train it and tapes watch it on read.
    pub fn trainable(&self) -> bool {
        self.0.trainable
    }

    /// The current value; recording tapes watch it if the variable is trainable, and
    /// [`Variable::reads_during`] lists it.
    pub fn value(&self) -> Tensor {
        let v = self.value_untracked();
        tape::variable_read(&v, self.trainable());
        READS.with(|reads| {
            if let Some(reads) = reads.borrow_mut().as_mut() {
                if !reads.iter().any(|r: &Variable| r.same_as(self)) {
                    reads.push(self.clone());
                }
            }
        });
        v
    }

    /// Runs `f` and returns, beside its result, every variable whose [`Variable::value`]
    /// it read on this thread, once each, in first-read order. Layers use it to find
    /// variables a composite layer reads but does not list. Calls nest: an outer call sees
    /// the inner call's reads too.
    pub fn reads_during<T>(f: impl FnOnce() -> T) -> (T, Vec<Variable>) {
        /// Puts the outer list back (with the inner reads added), also when `f` panics.
        struct Restore(Option<Vec<Variable>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                READS.with(|reads| {
                    let mut reads = reads.borrow_mut();
                    let inner = std::mem::replace(&mut *reads, self.0.take());
                    if let (Some(outer), Some(inner)) = (reads.as_mut(), inner) {
                        for v in inner {
                            if !outer.iter().any(|r| r.same_as(&v)) {
                                outer.push(v);
                            }
                        }
                    }
                });
            }
        }
        let guard = Restore(READS.with(|reads| reads.borrow_mut().replace(Vec::new())));
        let out = f();
        let inner = READS.with(|reads| reads.borrow().clone()).unwrap_or_default();
        drop(guard);
        (out, inner)
    }

    /// The current value, without telling any tape.
    pub fn value_untracked(&self) -> Tensor {
        self.0.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether two handles name the same variable.
    pub fn same_as(&self, other: &Variable) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Replaces the value; shape, dtype and device must stay the same.
    pub fn assign(&self, value: Tensor) -> Result<()> {
        let mut slot = self.0.value.write().unwrap_or_else(|e| e.into_inner());
        if slot.shape() != value.shape() {
            return Err(Error::ShapeMismatch {
                op: "Variable.assign",
                lhs: slot.shape().clone(),
                rhs: value.shape().clone(),
            });
        }
        slot.check_same(&value, "Variable.assign")?;
        // The new value is a fresh tensor: a tape never sees it as the old value.
        *slot = value.detach();
        Ok(())
    }

    /// `self = self + delta`.
    pub fn assign_add(&self, delta: &Tensor) -> Result<()> {
        self.assign(self.value_untracked().add(delta)?)
    }

    /// `self = self - delta`.
    pub fn assign_sub(&self, delta: &Tensor) -> Result<()> {
        self.assign(self.value_untracked().sub(delta)?)
    }
}
