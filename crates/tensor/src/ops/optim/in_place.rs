//! Optimizer updates for CUDA graphs: in place, with the per-step values on the device.
//!
//! A captured kernel's host arguments are frozen at capture, but a training step's
//! learning rate (a schedule's) and Adam's bias correction change every step. So these
//! updates read them from a small device buffer, [`StepScalars`], when the kernel runs;
//! before each replay the host writes that step's values into it
//! ([`StepScalars::write_adam`]), through a pinned buffer and an asynchronous copy queued
//! on the device's stream, so the copy lands after the previous replay has read the old
//! values and before this one reads them, without the host waiting for the device.
//!
//! The values written are exactly what [`adam_update`](super::adam_update) and
//! [`sgd_update`](super::sgd_update) pass their kernels (computed in f64 on the host,
//! rounded to the parameter's dtype), and the per-element arithmetic is theirs, so a
//! replayed update equals the ordinary one bit for bit.
//!
//! The updates write the parameter and its state **in place** (a graph reads and writes
//! fixed addresses): every clone of those tensors sees the new values. They are meant for
//! a graph's private buffers (`tapegrad_layers::training::GraphedStep` makes them) and need
//! a CUDA device; the state must exist (the first, ordinary update creates it).

use super::{check_operands, AdamOperands, AdamStep, SgdOperands, SgdStep};
use crate::{DType, Device, Error, Result, Tensor};

/// Slots of the device buffer: Adam's five values, SGD's three; slot 7 is the skip flag
/// (not 0: the in-place updates change nothing; see [`DeviceLossScale`](super::DeviceLossScale)).
const LEN: usize = 8;

/// The per-step values of an update, on a CUDA device, in the parameters' dtype (see the
/// [module docs](self)). Layout: Adam `[lr_t, 1 - beta_1, 1 - beta_2, epsilon,
/// 1 - lr * weight_decay]`; SGD `[lr, momentum, weight_decay]`; slot 7 is 0, or, written
/// by a [`DeviceLossScale`](super::DeviceLossScale), 1 to skip the step.
pub struct StepScalars {
    device: Device,
    dtype: DType,
    id: u64,
    #[cfg(feature = "cuda")]
    inner: cuda::Scalars,
}

impl std::fmt::Debug for StepScalars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepScalars({}, {})", self.device, self.dtype)
    }
}

/// The next [`StepScalars::id`].
#[cfg(feature = "cuda")]
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl StepScalars {
    /// A zeroed buffer on `device` (a CUDA device) for parameters of `dtype` (f32 or f64).
    /// Make it before a capture: allocating during one is refused.
    pub fn new(device: &Device, dtype: DType) -> Result<StepScalars> {
        const OP: &str = "StepScalars::new";
        // Updates of bf16/f16 variables are refused anyway (variables stay f32).
        if !dtype.is_float() || dtype.is_low_precision() {
            return Err(Error::UnsupportedDType { op: OP, dtype, expected: "f32 or f64" });
        }
        match device {
            Device::Cpu => Err(Error::invalid(OP, "device-resident step values need a CUDA device, got cpu")),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => Ok(StepScalars {
                device: *device,
                dtype,
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                inner: cuda::Scalars::new(*n, dtype)?,
            }),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(n) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(*n),
                msg: "tapegrad was built without the `cuda` feature; rebuild with `--features cuda`".into(),
            }),
        }
    }

    /// A number identifying this buffer, never given to another one in this process: a
    /// captured graph reads the buffer it was captured with, and this tells whether a
    /// buffer being written is that one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The dtype of the values (that of the parameters they update).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Queues the write of `step`'s values (validated first) for the updates that run
    /// after it on the device's stream. Refused during a capture (it copies from the host).
    pub fn write_adam(&self, step: &AdamStep) -> Result<()> {
        self.write(&Self::adam_values(step)?)
    }

    /// Queues the write of `step`'s values (validated first); see [`write_adam`](Self::write_adam).
    pub fn write_sgd(&self, step: &SgdStep) -> Result<()> {
        self.write(&Self::sgd_values(step)?)
    }

    /// The values [`write_adam`](Self::write_adam) writes for `step` (validated first), in
    /// f64: one row of a [`DeviceLossScale`](super::DeviceLossScale)'s table.
    pub fn adam_values(step: &AdamStep) -> Result<Vec<f64>> {
        step.validate()?;
        let c = step.coefficients();
        Ok(vec![c.lr_t, c.one_minus_beta_1, c.one_minus_beta_2, c.epsilon, c.decay_factor])
    }

    /// The values [`write_sgd`](Self::write_sgd) writes for `step` (validated first).
    pub fn sgd_values(step: &SgdStep) -> Result<Vec<f64>> {
        step.validate()?;
        Ok(vec![step.learning_rate, step.momentum, step.weight_decay])
    }

    /// The device buffer the in-place updates read.
    #[cfg(feature = "cuda")]
    pub(crate) fn buffer(&self) -> &crate::cuda_backend::CudaStorage {
        &self.inner.buffer
    }

    /// Rounds `values` to the dtype (as the ordinary updates round their arguments) and
    /// queues their upload.
    fn write(&self, values: &[f64]) -> Result<()> {
        let mut bytes = Vec::with_capacity(LEN * 8);
        for i in 0..LEN {
            let v = values.get(i).copied().unwrap_or(0.0);
            match self.dtype {
                DType::F32 => bytes.extend_from_slice(&(v as f32).to_ne_bytes()),
                _ => bytes.extend_from_slice(&v.to_ne_bytes()),
            }
        }
        #[cfg(feature = "cuda")]
        {
            self.inner.upload(&bytes)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = bytes;
            unreachable!("a StepScalars exists only with the cuda feature")
        }
    }
}

/// Checks the common ground of an update in place: the step, a CUDA device, and every
/// operand against its parameter and the scalars' device and dtype.
fn check_items<'a>(
    op: &'static str,
    scalars: &StepScalars,
    items: impl Iterator<Item = (&'a Tensor, [(&'static str, Option<&'a Tensor>); 3])>,
) -> Result<()> {
    for (i, (param, operands)) in items.enumerate() {
        check_operands(op, param, &operands)?;
        if param.device() != scalars.device || param.dtype() != scalars.dtype {
            return Err(Error::invalid(
                op,
                format!(
                    "parameter #{i} is {} on {}, but the step values are {} on {}",
                    param.dtype(),
                    param.device(),
                    scalars.dtype,
                    scalars.device
                ),
            ));
        }
    }
    Ok(())
}

/// [`adam_update_many`](super::adam_update_many) in place: each parameter, `m` and `v`
/// (both required) are overwritten with their new values, computed from the values in
/// `scalars` when the kernels run (during a capture: at each replay). `step` is validated
/// and gives what the launch fixes, whether there is weight decay; its numbers must be
/// written with [`StepScalars::write_adam`]. One launch per 40 parameters.
pub fn adam_update_many_in_place(items: &[AdamOperands<'_>], step: &AdamStep, scalars: &StepScalars) -> Result<()> {
    const OP: &str = "adam_update_many_in_place";
    step.validate()?;
    check_items(
        OP,
        scalars,
        items
            .iter()
            .map(|it| (it.param, [("gradient", Some(it.grad)), ("first moment", it.m), ("second moment", it.v)])),
    )?;
    #[cfg(feature = "cuda")]
    {
        let cuda = cuda::items(items.iter().map(|it| (it.param, it.grad, it.m, it.v)))?;
        super::cuda::adam_update_multi_in_place(&cuda, step, &scalars.inner.buffer)
    }
    #[cfg(not(feature = "cuda"))]
    unreachable!("a StepScalars exists only with the cuda feature")
}

/// [`sgd_update_many`](super::sgd_update_many) in place: each parameter and its velocity
/// (required with momentum, absent without) are overwritten; see
/// [`adam_update_many_in_place`]. `step` fixes whether there is weight decay, momentum
/// and Nesterov momentum; its numbers must be written with [`StepScalars::write_sgd`].
pub fn sgd_update_many_in_place(items: &[SgdOperands<'_>], step: &SgdStep, scalars: &StepScalars) -> Result<()> {
    const OP: &str = "sgd_update_many_in_place";
    step.validate()?;
    check_items(
        OP,
        scalars,
        items.iter().map(|it| (it.param, [("gradient", Some(it.grad)), ("velocity", it.velocity), ("", None)])),
    )?;
    #[cfg(feature = "cuda")]
    {
        let cuda = cuda::items(items.iter().map(|it| (it.param, it.grad, it.velocity, None)))?;
        super::cuda::sgd_update_multi_in_place(&cuda, step, &scalars.inner.buffer)
    }
    #[cfg(not(feature = "cuda"))]
    unreachable!("a StepScalars exists only with the cuda feature")
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::LEN;
    use crate::cuda_backend::device::CudaDevice;
    use crate::cuda_backend::kernels::dtype_suffix;
    use crate::cuda_backend::staging::Ring;
    use crate::cuda_backend::CudaStorage;
    use crate::ops::optim::cuda::MultiItem;
    use crate::ops::optim::cuda::KERNELS;
    use crate::storage::Storage;
    use crate::{DType, Error, Result, Tensor};
    use std::sync::Mutex;

    /// The device buffer and the pinned buffers its values are copied from (a ring of its
    /// own, so that writing them never waits for a batch upload's buffer).
    pub(super) struct Scalars {
        pub(super) buffer: CudaStorage,
        ring: Mutex<Ring>,
    }

    impl Scalars {
        pub(super) fn new(ordinal: usize, dtype: DType) -> Result<Scalars> {
            let device = CudaDevice::get(ordinal)?;
            // Loads the kernels now, so that a capture never has to.
            for kernel in ["adam_update_multi_dev", "sgd_update_multi_dev"] {
                device.function(&KERNELS, &format!("{kernel}_{}", dtype_suffix(dtype)))?;
            }
            Ok(Scalars { buffer: CudaStorage::zeros(&device, LEN, dtype)?, ring: Mutex::default() })
        }

        pub(super) fn upload(&self, bytes: &[u8]) -> Result<()> {
            let device = self.buffer.cuda_device();
            device.refuse_while_capturing("writing a step's values to the device")?;
            device.bind()?;
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            crate::cuda_backend::staging::upload(device, &mut ring, bytes, self.buffer.ptr())
        }
    }

    impl Drop for Scalars {
        fn drop(&mut self) {
            let ring = self.ring.get_mut().unwrap_or_else(|e| e.into_inner());
            ring.release(self.buffer.cuda_device());
        }
    }

    /// The operands as CUDA buffers (their devices and dtypes were checked).
    pub(super) fn items<'a>(
        items: impl Iterator<Item = (&'a Tensor, &'a Tensor, Option<&'a Tensor>, Option<&'a Tensor>)>,
    ) -> Result<Vec<MultiItem<'a>>> {
        let cuda = |t: &'a Tensor| match t.storage() {
            Storage::Cuda(c) => Ok(c),
            #[allow(unreachable_patterns)]
            _ => Err(Error::invalid("optimizer update in place", format!("a tensor on {} (CUDA only)", t.device()))),
        };
        items
            .map(|(param, grad, a, b)| {
                Ok(MultiItem {
                    var: cuda(param)?,
                    grad: cuda(grad)?,
                    state_a: a.map(cuda).transpose()?,
                    state_b: b.map(cuda).transpose()?,
                })
            })
            .collect()
    }
}
