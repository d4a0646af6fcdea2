//! [`IntoBorders`]: the amounts Keras' `ZeroPadding2D` and `Cropping2D` take.

/// Rows and columns at each border, given as Keras accepts them: one number for all four
/// (`1`), a symmetric `(rows, columns)` pair (`(1, 2)`), or
/// `((top, bottom), (left, right))`.
pub trait IntoBorders {
    /// `((top, bottom), (left, right))`.
    fn into_borders(self) -> ((usize, usize), (usize, usize));
}

impl IntoBorders for usize {
    fn into_borders(self) -> ((usize, usize), (usize, usize)) {
        ((self, self), (self, self))
    }
}

impl IntoBorders for (usize, usize) {
    fn into_borders(self) -> ((usize, usize), (usize, usize)) {
        ((self.0, self.0), (self.1, self.1))
    }
}

impl IntoBorders for ((usize, usize), (usize, usize)) {
    fn into_borders(self) -> ((usize, usize), (usize, usize)) {
        self
    }
}
