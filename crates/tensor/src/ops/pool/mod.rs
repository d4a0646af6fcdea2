//! Max and average pooling over NHWC images, global average and max pooling, and their
//! gradients.
//!
//! Padding takes no part in a window: max pooling never picks it and average pooling
//! divides by the number of real elements (as TF). The max-pooling gradient is a
//! primitive that is not itself differentiable (asking an outer tape to differentiate
//! through it is an error); the average-pooling gradient is linear and differentiable
//! again (its own gradient is an average pooling).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod max_rows;

use crate::backend::Pool2dSpec;
use crate::ops::conv::{check_nhwc, check_positive, Padding, SpatialAxis};
use crate::ops::output_guard::guarded;
use crate::tape::record_op;
use crate::{Error, Result, Shape, Tensor};

/// Which pooling; names the op in messages and on the tape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "max_pool2d",
            PoolKind::Avg => "avg_pool2d",
        }
    }
}

impl Tensor {
    /// Max pooling of an NHWC input `[n, h, w, c]` with windows of `pool_size` (rows,
    /// columns) moved by `strides`; padding is never picked. The gradient goes to the
    /// position of each window's maximum (the first in row-major order on ties).
    /// First-order differentiable only.
    ///
    /// ```
    /// use tapegrad_tensor::{DType, Device, Padding, Tensor};
    /// # fn main() -> tapegrad_tensor::Result<()> {
    /// let x = Tensor::ones([2, 30, 30, 64], DType::F32, &Device::Cpu)?;
    /// // The seed's stem: 2x2 windows, stride 1, 'same' keeps 30x30.
    /// assert_eq!(x.max_pool2d((2, 2), (1, 1), Padding::Same)?.dims(), &[2, 30, 30, 64]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_pool2d(&self, pool_size: (usize, usize), strides: (usize, usize), padding: Padding) -> Result<Tensor> {
        let spec = pool2d_spec(self, PoolKind::Max, pool_size, strides, padding)?;
        let shape = output_shape(&spec);
        let storage = guarded("max_pool2d", &[self], &[&shape], self.dtype(), &self.device(), || {
            self.storage().max_pool2d(&spec)
        })?;
        let out = Tensor::from_storage(storage, shape);
        let (x, y) = (self.clone(), out.clone());
        record_op("max_pool2d", &[self], &out, move |g| Ok(vec![Some(max_pool2d_backward(&x, &y, g, spec)?)]));
        Ok(out)
    }

    /// Average pooling of an NHWC input `[n, h, w, c]`: each window's mean over its real
    /// (unpadded) elements, as TF. Differentiable to any order.
    pub fn avg_pool2d(&self, pool_size: (usize, usize), strides: (usize, usize), padding: Padding) -> Result<Tensor> {
        let spec = pool2d_spec(self, PoolKind::Avg, pool_size, strides, padding)?;
        avg_pool2d_with_spec(self, spec)
    }

    /// Global average pooling: the mean over height and width, `[n, h, w, c] -> [n, c]`
    /// (Keras' `GlobalAveragePooling2D`). Differentiable to any order.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        const OP: &str = "global_avg_pool2d";
        check_nhwc(self, OP)?;
        if self.dims()[1] * self.dims()[2] == 0 {
            return Err(Error::invalid(OP, format!("the input of shape {} has no pixels to average", self.shape())));
        }
        self.mean(&[1, 2], false)
    }

    /// Global max pooling: the maximum over height and width, `[n, h, w, c] -> [n, c]`
    /// (Keras' `GlobalMaxPooling2D`). The gradient is the max reduction's.
    pub fn global_max_pool2d(&self) -> Result<Tensor> {
        const OP: &str = "global_max_pool2d";
        check_nhwc(self, OP)?;
        if self.dims()[1] * self.dims()[2] == 0 {
            return Err(Error::invalid(OP, format!("the input of shape {} has no pixels to pool", self.shape())));
        }
        self.max(&[1, 2], false)
    }
}

/// Checks a pooling's operands and resolves its geometry.
fn pool2d_spec(
    x: &Tensor,
    kind: PoolKind,
    pool_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<Pool2dSpec> {
    let op = kind.name();
    check_nhwc(x, op)?;
    check_positive(op, "pool_size", pool_size)?;
    check_positive(op, "strides", strides)?;
    if let Padding::Explicit { top, bottom, left, right } = padding {
        // A window made only of padding would have no element to pick or average.
        if top.max(bottom) >= pool_size.0 || left.max(right) >= pool_size.1 {
            return Err(Error::invalid(
                op,
                format!("explicit padding {padding:?} must be smaller than the pool size {pool_size:?} on every side"),
            ));
        }
    }
    let &[batch, in_h, in_w, channels] = x.dims() else { unreachable!("rank checked") };
    let what = format!("pool window {pool_size:?}");
    let rows = padding.resolve(op, SpatialAxis::Height, in_h, pool_size.0, strides.0, &what)?;
    let cols = padding.resolve(op, SpatialAxis::Width, in_w, pool_size.1, strides.1, &what)?;
    Ok(Pool2dSpec {
        batch,
        in_h,
        in_w,
        channels,
        window_h: pool_size.0,
        window_w: pool_size.1,
        stride_h: strides.0,
        stride_w: strides.1,
        pad_top: rows.pad_before,
        pad_bottom: rows.pad_after,
        pad_left: cols.pad_before,
        pad_right: cols.pad_after,
        out_h: rows.out,
        out_w: cols.out,
    })
}

fn input_shape(s: &Pool2dSpec) -> Shape {
    Shape::new(&[s.batch, s.in_h, s.in_w, s.channels])
}

fn output_shape(s: &Pool2dSpec) -> Shape {
    Shape::new(&[s.batch, s.out_h, s.out_w, s.channels])
}

/// The max-pooling input gradient. Recorded so that an outer tape reports, rather than
/// silently drops, a second-order gradient through it.
fn max_pool2d_backward(x: &Tensor, y: &Tensor, grad_out: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let shape = input_shape(&spec);
    let storage = guarded("max_pool2d_backward", &[x, grad_out], &[&shape], x.dtype(), &x.device(), || {
        x.storage().max_pool2d_backward(y.storage(), grad_out.storage(), &spec)
    })?;
    let dx = Tensor::from_storage(storage, shape);
    record_op("max_pool2d_backward", &[x, grad_out], &dx, |_| {
        Err(Error::invalid(
            "max_pool2d_backward",
            "the max-pooling gradient is not differentiable (no second-order gradients through max_pool2d)",
        ))
    });
    Ok(dx)
}

/// Average pooling with a resolved geometry, recorded with its gradient rule.
fn avg_pool2d_with_spec(x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let shape = output_shape(&spec);
    let storage = guarded("avg_pool2d", &[x], &[&shape], x.dtype(), &x.device(), || x.storage().avg_pool2d(&spec))?;
    let out = Tensor::from_storage(storage, shape);
    record_op("avg_pool2d", &[x], &out, move |g| Ok(vec![Some(avg_pool2d_backward(g, spec)?)]));
    Ok(out)
}

/// The average-pooling input gradient; linear in `grad_out`, whose adjoint is the
/// average pooling itself.
fn avg_pool2d_backward(grad_out: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let shape = input_shape(&spec);
    let storage = guarded("avg_pool2d_backward", &[grad_out], &[&shape], grad_out.dtype(), &grad_out.device(), || {
        grad_out.storage().avg_pool2d_backward(&spec)
    })?;
    let dx = Tensor::from_storage(storage, shape);
    record_op("avg_pool2d_backward", &[grad_out], &dx, move |g| Ok(vec![Some(avg_pool2d_with_spec(g, spec)?)]));
    Ok(dx)
}
