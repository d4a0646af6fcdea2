//! The one error type of the tensor crate.

use crate::{DType, Device, Shape};

/// Everything that can go wrong in a tensor operation. Messages name the operation and
/// the shapes, dtypes, axes or devices involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must be equal (or compatible for the op) are not.
    #[error("{op}: shape mismatch between {lhs} and {rhs}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The first shape.
        lhs: Shape,
        /// The second shape.
        rhs: Shape,
    },
    /// Two shapes cannot be broadcast together.
    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// The first shape.
        lhs: Shape,
        /// The second shape.
        rhs: Shape,
    },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch: {lhs} vs {rhs}")]
    DTypeMismatch {
        /// The operation.
        op: &'static str,
        /// The first dtype.
        lhs: DType,
        /// The second dtype.
        rhs: DType,
    },
    /// The op does not support this dtype.
    #[error("{op}: dtype {dtype} is not supported (expected {expected})")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The dtype given.
        dtype: DType,
        /// What the op accepts, in words.
        expected: &'static str,
    },
    /// The op does not support this dtype on this device, although another device does
    /// (no op of the tensor crate refuses this way since CUDA computes bf16 and f16).
    #[error("{op}: dtype {dtype} is not supported on {device} yet ({hint})")]
    UnsupportedDTypeOnDevice {
        /// The operation.
        op: &'static str,
        /// The dtype given.
        dtype: DType,
        /// The device.
        device: Device,
        /// What to do instead, in words.
        hint: &'static str,
    },
    /// Two operands live on different devices.
    #[error("{op}: device mismatch: {lhs} vs {rhs}")]
    DeviceMismatch {
        /// The operation.
        op: &'static str,
        /// The first device.
        lhs: Device,
        /// The second device.
        rhs: Device,
    },
    /// An axis outside `-rank..rank`.
    #[error("{op}: axis {axis} is out of range for shape {shape} (rank {})", shape.rank())]
    AxisOutOfRange {
        /// The operation.
        op: &'static str,
        /// The axis given.
        axis: isize,
        /// The tensor's shape.
        shape: Shape,
    },
    /// A buffer's length does not match the element count of a shape.
    #[error("{op}: {len} elements given for shape {shape}, which holds {}", shape.elem_count())]
    ElementCount {
        /// The operation.
        op: &'static str,
        /// The number of elements given.
        len: usize,
        /// The shape asked for.
        shape: Shape,
    },
    /// Any other invalid argument, described in words.
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// A misuse of [`GradientTape`](crate::GradientTape).
    #[error("GradientTape: {0}")]
    Tape(String),
    /// A device or backend is unavailable (no CUDA driver, a library missing, ...).
    #[error("device {device}: {msg}")]
    DeviceUnavailable {
        /// The device asked for.
        device: Device,
        /// Why it cannot be used, and what to do.
        msg: String,
    },
    /// An allocation failed: the host allocator refused it, or a device has too little free
    /// memory (after tapegrad's cache of freed blocks was returned to the driver and the
    /// allocation retried).
    #[error("{op}: out of memory on {device} allocating {requested} bytes{detail}")]
    OutOfMemory {
        /// The device.
        device: Device,
        /// The operation that allocated.
        op: &'static str,
        /// The bytes asked for.
        requested: usize,
        /// More about it, starting with a space: the shape, the memory free and in use.
        detail: String,
    },
    /// In [check-numerics mode](crate::check_numerics), an op's output holds NaN or
    /// infinity; the message names the op's inputs and the layer it ran in.
    #[error("{op}: {msg}")]
    NonFinite {
        /// The operation whose output is not finite.
        op: &'static str,
        /// What was found, where, and from which inputs.
        msg: String,
    },
    /// A call into a device library (driver, NVRTC, cuBLAS) failed.
    #[error("device {device}: {op} failed: {msg}")]
    Cuda {
        /// The device.
        device: Device,
        /// The library call or step that failed.
        op: &'static str,
        /// The library's error.
        msg: String,
    },
    /// An error of a crate above this one (the layers crate's, a program's own), carried
    /// through a closure that returns this crate's [`Result`], such as the one
    /// [`GradientTape::record`](crate::GradientTape::record) runs. It displays as the
    /// original; downcast it to get the original back (the layers crate's `?` does).
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The result type of every fallible tensor function.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }

    /// Shorthand for [`Error::Cuda`] from a library error.
    pub fn cuda(device: Device, op: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Cuda { device, op, msg: err.to_string() }
    }
}
