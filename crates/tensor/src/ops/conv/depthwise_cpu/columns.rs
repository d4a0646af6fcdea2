//! Which output columns read real (unpadded) input columns.

use crate::backend::Conv2dSpec;

/// The output columns `lo..hi` whose tap `kx` reads a real (unpadded) input column.
#[inline(always)]
pub(super) fn reading_columns(s: &Conv2dSpec, kx: usize) -> (usize, usize) {
    // Input column of output ox: ox * stride - pad + kx * dilation, in 0..in_w.
    let offset = kx * s.dilation_w;
    let lo = s.pad_left.saturating_sub(offset).div_ceil(s.stride_w);
    let hi = if s.in_w + s.pad_left > offset { (s.in_w + s.pad_left - offset - 1) / s.stride_w + 1 } else { 0 };
    (lo.min(s.out_w), hi.min(s.out_w).max(lo.min(s.out_w)))
}

/// The output columns `lo..hi` whose taps all read real input columns.
#[inline(always)]
pub(super) fn interior_columns(s: &Conv2dSpec) -> (usize, usize) {
    let (lo, _) = reading_columns(s, 0);
    let (_, hi) = reading_columns(s, s.kernel_w - 1);
    (lo, hi.max(lo))
}
