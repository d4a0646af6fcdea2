//! [`PadSpec`]: the geometry of a padding as the backends receive it, and [`PadMode`]. The
//! op and its gradient rule are in `ops::pad`, which re-exports both.

use crate::shape::Dims;

/// What [`Tensor::pad`](crate::Tensor::pad) puts in the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// Every padded element is this value (0 is Keras' `ZeroPadding2D`).
    Constant(f64),
    /// The input mirrored about its first and last element, which are not repeated:
    /// `[1, 2, 3]` padded by 2 on both sides is `[3, 2, 1, 2, 3, 2, 1]`. Each padding must
    /// be smaller than its axis.
    Reflect,
}

impl Default for PadMode {
    fn default() -> Self {
        PadMode::Constant(0.0)
    }
}

/// A resolved padding: the input's dims and, per axis, the elements added before and
/// after. Axes without padding next to each other are merged before a backend sees the
/// spec, so NHWC padding of H and W reaches the kernels as at most five axes.
#[derive(Clone, Debug, PartialEq)]
pub struct PadSpec {
    /// The input's dims.
    pub in_dims: Dims,
    /// `(before, after)` per axis.
    pub pads: Vec<(usize, usize)>,
    /// The border's contents.
    pub mode: PadMode,
}

impl PadSpec {
    /// The output's dims: each input dim plus its padding (saturating; the op checks the
    /// element count).
    pub fn out_dims(&self) -> Dims {
        self.in_dims.iter().zip(&self.pads).map(|(&n, &(b, a))| n.saturating_add(b).saturating_add(a)).collect()
    }

    /// Merges runs of adjacent unpadded axes into one axis (same memory order).
    pub(crate) fn coalesced(&self) -> PadSpec {
        let mut in_dims = Dims::new();
        let mut pads = Vec::new();
        for (&n, &p) in self.in_dims.iter().zip(&self.pads) {
            match (pads.last(), in_dims.last_mut()) {
                (Some(&(0, 0)), Some(last)) if p == (0, 0) => *last *= n,
                _ => {
                    in_dims.push(n);
                    pads.push(p);
                }
            }
        }
        PadSpec { in_dims, pads, mode: self.mode }
    }

    /// The spec of the gradient of the forward pad: a constant no longer matters.
    pub(crate) fn linear(&self) -> PadSpec {
        let mode = match self.mode {
            PadMode::Constant(_) => PadMode::Constant(0.0),
            PadMode::Reflect => PadMode::Reflect,
        };
        PadSpec { mode, ..self.clone() }
    }
}
