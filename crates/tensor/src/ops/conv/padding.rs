//! [`Padding`] and the output size it gives along one spatial axis, shared by
//! convolution and pooling.

use crate::{Error, Result};

/// How a convolution or pooling window treats the borders of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: only windows that fit inside the input (`out = (in - k) / stride + 1`).
    #[default]
    Valid,
    /// TF's 'same': `out = ceil(in / stride)`, with just enough padding for that; when the
    /// padding is odd, the extra row/column goes at the bottom/right (as TF and Keras).
    Same,
    /// Explicit, possibly asymmetric padding.
    Explicit {
        /// Rows above.
        top: usize,
        /// Rows below.
        bottom: usize,
        /// Columns left.
        left: usize,
        /// Columns right.
        right: usize,
    },
}

/// One spatial axis of a window op, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AxisGeometry {
    pub(crate) out: usize,
    pub(crate) pad_before: usize,
    pub(crate) pad_after: usize,
}

/// Which spatial axis; names it in messages and picks the explicit padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpatialAxis {
    Height,
    Width,
}

impl SpatialAxis {
    fn name(self) -> &'static str {
        match self {
            SpatialAxis::Height => "height",
            SpatialAxis::Width => "width",
        }
    }
}

impl Padding {
    /// Resolves the padding along one axis of size `input` for a window whose extent
    /// (after dilation) is `window` and a stride (already checked non-zero). `what`
    /// names the window in errors ("kernel", "pool window").
    pub(crate) fn resolve(
        self,
        op: &'static str,
        axis: SpatialAxis,
        input: usize,
        window: usize,
        stride: usize,
        what: &str,
    ) -> Result<AxisGeometry> {
        let (pad_before, pad_after) = match self {
            Padding::Valid => (0, 0),
            Padding::Same => {
                let out = input.div_ceil(stride);
                // Checked: a window or stride near usize::MAX is the error below, not an overflow.
                let total = (out.max(1) - 1)
                    .checked_mul(stride)
                    .and_then(|n| n.checked_add(window))
                    .ok_or_else(|| too_large(op, axis, input, window, stride, what))?
                    .saturating_sub(input);
                (total / 2, total - total / 2)
            }
            Padding::Explicit { top, bottom, left, right } => match axis {
                SpatialAxis::Height => (top, bottom),
                SpatialAxis::Width => (left, right),
            },
        };
        if input == 0 {
            return Err(Error::invalid(op, format!("the input {} is 0", axis.name())));
        }
        let padded = input
            .checked_add(pad_before)
            .and_then(|n| n.checked_add(pad_after))
            .ok_or_else(|| too_large(op, axis, input, window, stride, what))?;
        if window > padded {
            return Err(Error::invalid(
                op,
                format!(
                    "the {what} {} ({window}) is larger than the padded input {} ({input} + {pad_before} + {pad_after} \
                     padding = {padded}) with {self:?} padding",
                    axis.name(),
                    axis.name()
                ),
            ));
        }
        Ok(AxisGeometry { out: (padded - window) / stride + 1, pad_before, pad_after })
    }
}

/// The error for a window, stride or padding so large that the padded extent overflows.
fn too_large(op: &'static str, axis: SpatialAxis, input: usize, window: usize, stride: usize, what: &str) -> Error {
    Error::invalid(
        op,
        format!(
            "the {what} {} ({window}) with stride {stride} and its padding overflow the address space for an \
             input {} of {input}",
            axis.name(),
            axis.name()
        ),
    )
}
