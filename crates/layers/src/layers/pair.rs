//! [`IntoPair`]: `3` or `(3, 1)` where a layer takes a (rows, columns) size.

/// A size given as one number for both spatial axes or as `(rows, columns)`, as Keras
/// accepts `kernel_size=3` or `kernel_size=(3, 1)`.
pub trait IntoPair {
    /// The `(rows, columns)` pair.
    fn into_pair(self) -> (usize, usize);
}

impl IntoPair for usize {
    fn into_pair(self) -> (usize, usize) {
        (self, self)
    }
}

impl IntoPair for (usize, usize) {
    fn into_pair(self) -> (usize, usize) {
        self
    }
}

impl IntoPair for [usize; 2] {
    fn into_pair(self) -> (usize, usize) {
        (self[0], self[1])
    }
}
