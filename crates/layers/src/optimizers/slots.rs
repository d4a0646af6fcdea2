//! [`SlotTable`]: an optimizer's per-variable state.

use tapegrad_tensor::{Tensor, Variable};

/// The state an optimizer keeps for each variable it has updated: a fixed number of slot
/// tensors (SGD's momentum, Adam's two moments), created on the variable's first update.
///
/// Variables are matched by identity ([`Variable::same_as`]). Models pass the same list
/// in the same order at every step, so the lookup first tries the entry at the variable's
/// position in that list and only then searches.
#[derive(Debug, Default)]
pub struct SlotTable {
    entries: Vec<(Variable, Vec<Option<Tensor>>)>,
}

impl SlotTable {
    /// The slots of `variable`, if it has any.
    pub fn get(&self, variable: &Variable) -> Option<&[Option<Tensor>]> {
        self.find(variable, None).map(|i| self.entries[i].1.as_slice())
    }

    /// Every variable with its slots, in the order they were created.
    pub fn iter(&self) -> impl Iterator<Item = (&Variable, &[Option<Tensor>])> {
        self.entries.iter().map(|(v, s)| (v, s.as_slice()))
    }

    /// The number of variables with state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no variable has state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets all state.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Sets slot `index` of `variable` (of `count` slots), creating its entry if needed.
    pub fn set(&mut self, variable: &Variable, count: usize, index: usize, value: Tensor) {
        let i = self.entry(variable, None, count);
        self.entries[i].1[index] = Some(value);
    }

    /// The slots of `variable` for an update, created empty (`None`) on first use.
    /// `position` is the variable's index in the caller's list (the fast path).
    pub(crate) fn slots_mut(&mut self, variable: &Variable, position: usize, count: usize) -> &mut [Option<Tensor>] {
        let i = self.entry(variable, Some(position), count);
        &mut self.entries[i].1
    }

    fn entry(&mut self, variable: &Variable, position: Option<usize>, count: usize) -> usize {
        if let Some(i) = self.find(variable, position) {
            return i;
        }
        self.entries.push((variable.clone(), vec![None; count]));
        self.entries.len() - 1
    }

    fn find(&self, variable: &Variable, position: Option<usize>) -> Option<usize> {
        if let Some(p) = position {
            if self.entries.get(p).is_some_and(|(v, _)| v.same_as(variable)) {
                return Some(p);
            }
        }
        self.entries.iter().position(|(v, _)| v.same_as(variable))
    }
}
