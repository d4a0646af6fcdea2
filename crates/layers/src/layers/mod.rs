//! The built-in layers.

pub(crate) mod activation;
pub(crate) mod batch_norm;
pub(crate) mod borders;
pub(crate) mod builders;
pub(crate) mod conv2d;
pub(crate) mod conv2d_transpose;
pub(crate) mod cropping;
pub(crate) mod dense;
pub(crate) mod depthwise_conv2d;
pub(crate) mod dropout;
pub(crate) mod embedding;
pub(crate) mod flatten;
pub(crate) mod group_norm;
pub(crate) mod layer_norm;
pub(crate) mod merge;
pub(crate) mod nhwc;
pub(crate) mod pair;
pub(crate) mod pooling;
pub(crate) mod relu;
pub(crate) mod separable_conv2d;
pub(crate) mod sequential;
pub(crate) mod shape;
pub(crate) mod sync_batch_norm;
pub(crate) mod upsampling;
pub(crate) mod zero_padding;

use crate::Result;
use std::sync::OnceLock;

/// The value in `cell`, creating it with `init` the first time. If two threads build at
/// once, the first value stored wins and the other is dropped.
pub(crate) fn get_or_build<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}
