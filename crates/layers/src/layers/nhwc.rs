//! The one check of an image layer's input: rank 4, NHWC, and (once built) the channel
//! count it was built for. Its messages say what is most likely wrong: a missing batch
//! axis, or channels-first (NCHW) data.

use crate::{Error, Result};
use tapegrad_tensor::Shape;

/// Fails unless `shape` is NHWC with `channels` channels (any, when `None`), with a
/// message for the layer `layer` that names the likely mistake.
pub(crate) fn check_image_input(layer: &str, shape: &Shape, channels: Option<usize>) -> Result<()> {
    let dims = shape.dims();
    let expected = channels.map_or(String::new(), |c| format!(" with {c} channels"));
    if dims.len() == 3 {
        let [h, w, c] = [dims[0], dims[1], dims[2]];
        return Err(Error::layer(
            layer,
            format!(
                "expects NHWC inputs [batch, height, width, channels]{expected}, got shape {shape}, which has no \
                 batch axis: for one image, reshape it to [1, {h}, {w}, {c}] (`x.unsqueeze(0)`)"
            ),
        ));
    }
    if dims.len() != 4 {
        return Err(Error::layer(
            layer,
            format!(
                "expects NHWC inputs [batch, height, width, channels]{expected}, got shape {shape} of rank {}",
                dims.len()
            ),
        ));
    }
    let Some(c) = channels else { return Ok(()) };
    if dims[3] == c {
        return Ok(());
    }
    let hint = if dims[1] == c {
        format!(
            "; it looks channels-first (NCHW, {c} channels on axis 1): tapegrad's image layers take NHWC, so \
             permute it with `x.permute(&[0, 2, 3, 1])`"
        )
    } else {
        String::new()
    };
    Err(Error::layer(layer, format!("was built for NHWC inputs{expected} but got an input of shape {shape}{hint}")))
}
