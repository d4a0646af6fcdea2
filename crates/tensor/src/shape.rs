//! Tensor shapes, axis normalisation and broadcasting rules.

use crate::{Error, Result};
use smallvec::SmallVec;

/// Dimension lists are short; keep them inline.
pub(crate) type Dims = SmallVec<[usize; 4]>;

/// The dimensions of a tensor, outermost first (row-major). A rank-0 shape is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Dims);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: &[usize]) -> Self {
        Shape(Dims::from_slice(dims))
    }

    /// The rank-0 shape of a scalar.
    pub fn scalar() -> Self {
        Shape(Dims::new())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The number of elements (1 for a scalar). Saturates at `usize::MAX` for a shape too
    /// large to exist (no tensor can have it: constructors check
    /// [`Shape::checked_elem_count`]).
    pub fn elem_count(&self) -> usize {
        if self.0.contains(&0) {
            return 0;
        }
        self.0.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The number of elements, or an error naming `op` if a buffer of that many elements
    /// (of up to 8 bytes each) could not be allocated at all: the product overflows or
    /// exceeds `isize::MAX` bytes, where `Vec` would panic.
    pub fn checked_elem_count(&self, op: &'static str) -> Result<usize> {
        let too_large = || Error::invalid(op, format!("shape {self} has too many elements to allocate"));
        if self.0.contains(&0) {
            return Ok(0);
        }
        let n = self.0.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_large)?;
        if n > isize::MAX as usize / 8 {
            return Err(too_large());
        }
        Ok(n)
    }

    /// Row-major strides of a contiguous tensor of this shape, in elements.
    pub fn contiguous_strides(&self) -> Dims {
        let mut strides = Dims::from_elem(1, self.rank());
        for i in (0..self.rank().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }

    /// Resolves a possibly negative axis (`-1` is the last) to an index, or reports it.
    pub fn axis(&self, axis: isize, op: &'static str) -> Result<usize> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(Error::AxisOutOfRange { op, axis, shape: self.clone() });
        }
        Ok(a as usize)
    }

    /// Resolves a list of axes; duplicates are an error. The result is sorted.
    pub fn axes(&self, axes: &[isize], op: &'static str) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let a2 = self.axis(a, op)?;
            if out.contains(&a2) {
                return Err(Error::invalid(op, format!("axis {a} is repeated in {axes:?}")));
            }
            out.push(a2);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The shape both operands broadcast to, by NumPy's rule (align on the right; a
    /// dimension of 1 stretches).
    pub fn broadcast(&self, other: &Shape, op: &'static str) -> Result<Shape> {
        let rank = self.rank().max(other.rank());
        let mut dims = Dims::from_elem(0, rank);
        for i in 0..rank {
            let a = dim_from_right(self, rank - 1 - i);
            let b = dim_from_right(other, rank - 1 - i);
            dims[i] = match (a, b) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::Broadcast { op, lhs: self.clone(), rhs: other.clone() });
                }
            };
        }
        Ok(Shape(dims))
    }

    /// The strides with which a contiguous tensor of this shape is read when broadcast to
    /// `target` (0 on stretched or added dimensions). `target` must be a broadcast of self.
    pub(crate) fn broadcast_strides(&self, target: &Shape) -> Dims {
        let own = self.contiguous_strides();
        let offset = target.rank() - self.rank();
        (0..target.rank()).map(|i| if i < offset || self.0[i - offset] == 1 { 0 } else { own[i - offset] }).collect()
    }

    /// This shape with the given (sorted) axes set to 1.
    pub(crate) fn keepdims(&self, axes: &[usize]) -> Shape {
        let mut dims = self.0.clone();
        for &a in axes {
            dims[a] = 1;
        }
        Shape(dims)
    }

    /// This shape with the given (sorted) axes removed.
    pub(crate) fn remove_axes(&self, axes: &[usize]) -> Shape {
        Shape(self.0.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect())
    }
}

/// The dimension `i` places from the right, or 1 where the shape is shorter.
fn dim_from_right(shape: &Shape, i: usize) -> usize {
    if i < shape.rank() {
        shape.0[shape.rank() - 1 - i]
    } else {
        1
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape::new(d)
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape::new(&d)
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Self {
        Shape::new(d)
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape::new(&d)
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape::scalar()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        let a = Shape::new(&[8, 1, 6, 1]);
        let b = Shape::new(&[7, 1, 5]);
        assert_eq!(a.broadcast(&b, "t").unwrap(), Shape::new(&[8, 7, 6, 5]));
        assert!(Shape::new(&[3]).broadcast(&Shape::new(&[4]), "t").is_err());
        assert_eq!(Shape::new(&[2, 3]).broadcast_strides(&Shape::new(&[4, 2, 3]))[..], [0, 3, 1]);
        assert_eq!(Shape::new(&[2, 1]).broadcast_strides(&Shape::new(&[2, 5]))[..], [1, 0]);
    }

    #[test]
    fn axes_resolve_and_reject() {
        let s = Shape::new(&[2, 3, 4]);
        assert_eq!(s.axis(-1, "t").unwrap(), 2);
        assert!(s.axis(3, "t").is_err());
        assert!(s.axes(&[0, -3], "t").is_err());
        assert_eq!(s.axes(&[-1, 0], "t").unwrap(), vec![0, 2]);
    }
}
