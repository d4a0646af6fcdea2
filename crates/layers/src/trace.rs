//! Records the output shape of each layer call while a summary traces a model.
//!
//! [`Layer::summary`](crate::Layer::summary) runs the model once on zeros; every layer
//! reports its output shape here from [`Layer::call`](crate::Layer::call), the trait's
//! provided wrapper around the `forward` a layer implements, user-written layers included. A layer is identified by its address and name for the duration of the
//! trace (the model is borrowed throughout, so addresses are stable).

use crate::Layer;
use std::cell::RefCell;
use std::collections::HashMap;
use tapegrad_tensor::Shape;

/// What a trace saw of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Traced {
    /// Every call returned this shape.
    Shape(Shape),
    /// Calls returned different shapes.
    Multiple,
}

type Key = (usize, String);

thread_local! {
    static TRACE: RefCell<Option<HashMap<Key, Traced>>> = const { RefCell::new(None) };
}

fn key(layer: &dyn Layer) -> Key {
    (layer as *const dyn Layer as *const () as usize, layer.name().to_string())
}

/// Records one call's output shape, if a trace is running on this thread.
pub(crate) fn record(layer: &dyn Layer, shape: &Shape) {
    TRACE.with(|t| {
        if let Some(map) = t.borrow_mut().as_mut() {
            let entry = map.entry(key(layer)).or_insert_with(|| Traced::Shape(shape.clone()));
            if *entry != Traced::Shape(shape.clone()) {
                *entry = Traced::Multiple;
            }
        }
    });
}

/// Runs `f` with tracing on and returns what it recorded.
pub(crate) fn with_trace<T>(f: impl FnOnce() -> T) -> (T, Recorded) {
    let previous = TRACE.with(|t| t.borrow_mut().replace(HashMap::new()));
    let out = f();
    let map = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), previous)).unwrap_or_default();
    (out, Recorded(map))
}

/// The shapes recorded by one trace.
pub(crate) struct Recorded(HashMap<Key, Traced>);

impl Recorded {
    /// What was recorded for `layer`, if it was called.
    pub(crate) fn get(&self, layer: &dyn Layer) -> Option<&Traced> {
        self.0.get(&key(layer))
    }
}
