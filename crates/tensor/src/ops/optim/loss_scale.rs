//! Dynamic loss scaling decided on the device, for CUDA graphs: [`DeviceLossScale`].
//!
//! A `LossScaleOptimizer` skips a step whose gradients hold an Inf or a NaN, halves its
//! scale then, and doubles it after a run of good steps. Eagerly that decision reads the
//! device on the host each step; a captured graph cannot, so here it is made by kernels
//! that a graph replays:
//!
//! 1. [`DeviceLossScale::scale`] multiplies the loss by the current scale, read from the
//!    device state when the kernel runs (recorded on the tape: its gradient multiplies by
//!    the same scale, as `mul_scalar`'s does).
//! 2. [`DeviceLossScale::decide`] sets a flag when any gradient is not finite, then one
//!    thread reads it and either copies the step's values (learning rate, Adam's bias
//!    correction) from a table the host wrote into the optimizer's [`StepScalars`] and
//!    counts a good step (doubling the scale after `growth_steps` of them), or marks the
//!    `StepScalars` skipped (slot 7; the `*_many_in_place` updates then change nothing)
//!    and halves the scale.
//! 3. [`DeviceLossScale::unscale`] multiplies each gradient by the inverse of the step's
//!    scale (`1 / scale` in f64, rounded to the dtype, as `mul_scalar(1.0 / scale)`).
//!
//! The table holds the values of the next `rows` applied steps: row `r` is the step that
//! comes after `base + r` applied steps. Which row a step uses depends on how many steps
//! were skipped, which only the device knows, so the host writes the values of every step
//! it may be; it reads the state back ([`DeviceLossScale::read`]) and writes the next rows
//! before they run out. Every value is computed as an eager step computes it, so replayed
//! steps equal eager ones bit for bit.

use super::StepScalars;
use crate::cuda_graph::copy_into;
use crate::{DType, Device, Error, Result, Tensor};

/// Slots of the f64 state (`state` in optim.cu's `loss_scale_decide`).
const SCALE: usize = 0;
const GOOD_STEPS: usize = 1;
const APPLIED: usize = 2;
const BASE: usize = 3;
const GROWTH: usize = 4;
const INVERSE: usize = 5;
const OVERRUN: usize = 6;
const STATE_LEN: usize = 8;
/// Values per table row (the layout of [`StepScalars`]).
const ROW: usize = 8;

/// The loss-scaling state as the device left it (see [`DeviceLossScale::read`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceLossScaleState {
    /// The scale the next step multiplies its loss by.
    pub scale: f64,
    /// Good (finite) steps since the scale last changed.
    pub good_steps: u64,
    /// Steps applied in all (the optimizer's iteration count).
    pub applied: u64,
}

/// The device side of dynamic loss scaling for a captured training step (see the
/// [module docs](self)): an f64 state (scale, good steps, applied steps) and a table of
/// the next steps' update values, on one CUDA device, for parameters of one dtype (f32 or
/// f64). Make it, and write it, outside a capture; its kernels are queued during one.
pub struct DeviceLossScale {
    device: Device,
    dtype: DType,
    rows: usize,
    id: u64,
    state: Tensor,
    table: Tensor,
}

impl std::fmt::Debug for DeviceLossScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceLossScale({}, {}, {} rows)", self.device, self.dtype, self.rows)
    }
}

/// The next [`DeviceLossScale::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl DeviceLossScale {
    /// A zeroed state and a table of `rows` (at least 1) steps' values on `device` (a CUDA
    /// device), for parameters and gradients of `dtype` (f32 or f64). Loads its kernels, so
    /// that a capture never has to.
    pub fn new(device: &Device, dtype: DType, rows: usize) -> Result<DeviceLossScale> {
        const OP: &str = "DeviceLossScale::new";
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType { op: OP, dtype, expected: "f32 or f64" });
        }
        if rows == 0 {
            return Err(Error::invalid(OP, "the table needs at least one row"));
        }
        if device.is_cpu() {
            return Err(Error::invalid(OP, "device-side loss scaling needs a CUDA device, got cpu"));
        }
        let state = Tensor::zeros([STATE_LEN], DType::F64, device)?;
        let table = Tensor::zeros([rows * ROW], dtype, device)?;
        #[cfg(feature = "cuda")]
        cuda::preload(&state, dtype)?;
        Ok(DeviceLossScale {
            device: *device,
            dtype,
            rows,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            state,
            table,
        })
    }

    /// A number identifying this state, never given to another one in this process (a
    /// graph reads the state it was captured with).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The device holding the state.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The dtype of the parameters and gradients.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How many steps' values the table holds.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Queues the write of the whole state: the scale, the good steps since it changed,
    /// the applied steps (also the table's base: row 0 is the next applied step) and the
    /// good steps that double the scale; and of the table, one row per coming applied step
    /// (at most [`rows`](Self::rows), each in [`StepScalars`]' layout, rounded to the
    /// dtype). Refused during a capture.
    pub fn write(&self, state: DeviceLossScaleState, growth_steps: u64, rows: &[Vec<f64>]) -> Result<()> {
        const OP: &str = "DeviceLossScale::write";
        if rows.len() > self.rows || rows.iter().any(|r| r.len() > ROW) {
            return Err(Error::invalid(
                OP,
                format!("at most {} rows of at most {ROW} values fit, got {} rows", self.rows, rows.len()),
            ));
        }
        if !(state.scale.is_finite() && state.scale > 0.0) || growth_steps == 0 {
            return Err(Error::invalid(
                OP,
                format!("the scale must be finite and > 0 ({}), growth_steps >= 1 ({growth_steps})", state.scale),
            ));
        }
        let mut values = [0.0; STATE_LEN];
        values[SCALE] = state.scale;
        values[GOOD_STEPS] = state.good_steps as f64;
        values[APPLIED] = state.applied as f64;
        values[BASE] = state.applied as f64;
        values[GROWTH] = growth_steps as f64;
        copy_into(&self.state, &Tensor::from_vec(values.to_vec(), [STATE_LEN], &self.device)?)?;
        let mut table = vec![0.0f64; self.rows * ROW];
        for (r, row) in rows.iter().enumerate() {
            table[r * ROW..r * ROW + row.len()].copy_from_slice(row);
        }
        let table = match self.dtype {
            // Rounded as StepScalars rounds the values it writes.
            DType::F32 => {
                Tensor::from_vec(table.iter().map(|&v| v as f32).collect::<Vec<_>>(), [table.len()], &self.device)?
            }
            _ => Tensor::from_vec(table, [self.rows * ROW], &self.device)?,
        };
        copy_into(&self.table, &table)
    }

    /// Reads the state back (waits for the device). Fails when a step found the table
    /// exhausted (the host wrote too few rows; that step was skipped without counting).
    pub fn read(&self) -> Result<DeviceLossScaleState> {
        let v = self.state.to_vec::<f64>()?;
        if v[OVERRUN] != 0.0 {
            return Err(Error::invalid(
                "DeviceLossScale::read",
                "a replayed step ran past the table of step values (it was skipped); write more rows before replaying",
            ));
        }
        Ok(DeviceLossScaleState { scale: v[SCALE], good_steps: v[GOOD_STEPS] as u64, applied: v[APPLIED] as u64 })
    }

    /// `x` times the current scale (f32 or f64, on this device), as `x.mul_scalar(scale)`
    /// computes it, the scale read when the kernel runs. Recorded on the tape: the
    /// gradient is multiplied by the same scale (the state changes only after the
    /// backward pass, in [`decide`](Self::decide)).
    pub fn scale(&self, x: &Tensor) -> Result<Tensor> {
        let out = mul_state(&self.device, &self.state, x, SCALE, "loss_scale")?;
        let (device, state) = (self.device, self.state.clone());
        crate::tape::record_op("loss_scale", &[x], &out, move |g| {
            Ok(vec![Some(mul_state(&device, &state, g, SCALE, "loss_scale")?)])
        });
        Ok(out)
    }

    /// `g` times the inverse of this step's scale (kept by [`decide`](Self::decide)), as
    /// `g.mul_scalar(1.0 / scale)` computes it. Not recorded.
    pub fn unscale(&self, g: &Tensor) -> Result<Tensor> {
        mul_state(&self.device, &self.state, g, INVERSE, "loss_unscale")
    }

    /// Queues the step's decision: whether every present gradient (of this dtype and
    /// device) is finite; then either this step's row of the table into `scalars` and a
    /// good step counted, or `scalars` marked skipped and the scale halved (see the
    /// [module docs](self)). Keeps this step's inverse scale for
    /// [`unscale`](Self::unscale).
    pub fn decide(&self, grads: &[&Tensor], scalars: &StepScalars) -> Result<()> {
        const OP: &str = "DeviceLossScale::decide";
        if scalars.device() != self.device || scalars.dtype() != self.dtype {
            return Err(Error::invalid(
                OP,
                format!(
                    "the step values are {} on {}, the loss scale {} on {}",
                    scalars.dtype(),
                    scalars.device(),
                    self.dtype,
                    self.device
                ),
            ));
        }
        for (i, g) in grads.iter().enumerate() {
            if g.device() != self.device || g.dtype() != self.dtype {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "gradient #{i} is {} on {}, the loss scale {} on {}",
                        g.dtype(),
                        g.device(),
                        self.dtype,
                        self.device
                    ),
                ));
            }
        }
        #[cfg(feature = "cuda")]
        {
            cuda::decide(grads, &self.state, &self.table, self.rows, scalars)
        }
        #[cfg(not(feature = "cuda"))]
        Err(Error::invalid(OP, "tapegrad was built without the `cuda` feature"))
    }
}

/// `x * (T)state[index]` on `device` (see optim.cu's `loss_scale_mul`).
fn mul_state(device: &Device, state: &Tensor, x: &Tensor, index: usize, op: &'static str) -> Result<Tensor> {
    if x.device() != *device || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(Error::invalid(
            op,
            format!("needs an f32 or f64 tensor on {device}, got {} on {}", x.dtype(), x.device()),
        ));
    }
    #[cfg(feature = "cuda")]
    {
        cuda::mul(x, state, index)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (state, index);
        Err(Error::invalid(op, "tapegrad was built without the `cuda` feature"))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::cuda_backend::kernels::{block_per_task_config, dtype_suffix, elementwise_config, BLOCK};
    use crate::cuda_backend::{launch, CudaStorage};
    use crate::ops::optim::cuda::{launch_tables, MultiItem, KERNELS};
    use crate::ops::optim::StepScalars;
    use crate::storage::Storage;
    use crate::{BackendStorage, DType, Error, Result, Tensor};
    use cudarc::driver::LaunchConfig;

    fn cuda(t: &Tensor) -> Result<&CudaStorage> {
        match t.storage() {
            Storage::Cuda(c) => Ok(c),
            #[allow(unreachable_patterns)]
            _ => Err(Error::invalid("loss scaling", format!("a tensor on {} (CUDA only)", t.device()))),
        }
    }

    /// Loads every kernel of the state's dtype.
    pub(super) fn preload(state: &Tensor, dtype: DType) -> Result<()> {
        let device = cuda(state)?.cuda_device();
        for kernel in ["all_finite_multi", "loss_scale_decide", "adam_update_multi_dev", "sgd_update_multi_dev"] {
            device.function(&KERNELS, &format!("{kernel}_{}", dtype_suffix(dtype)))?;
        }
        for d in [DType::F32, DType::F64] {
            device.function(&KERNELS, &format!("loss_scale_mul_{}", dtype_suffix(d)))?;
        }
        Ok(())
    }

    pub(super) fn mul(x: &Tensor, state: &Tensor, index: usize) -> Result<Tensor> {
        let (xs, ss) = (cuda(x)?, cuda(state)?);
        let device = xs.cuda_device();
        let out = CudaStorage::alloc(device, xs.len(), xs.dtype())?;
        if !xs.is_empty() {
            let (src, dst, n, s, index) = (xs.ptr(), out.ptr(), xs.len() as u64, ss.ptr(), index as u64);
            let name = format!("loss_scale_mul_{}", dtype_suffix(xs.dtype()));
            // Kernel signature: (const T* x, T* y, u64 n, const f64* state, u64 index).
            launch!(device, KERNELS, name, elementwise_config(xs.len()); src, dst, n, s, index);
        }
        Ok(Tensor::from_storage(Storage::Cuda(out), x.shape().clone()))
    }

    pub(super) fn decide(
        grads: &[&Tensor],
        state: &Tensor,
        table: &Tensor,
        rows: usize,
        scalars: &StepScalars,
    ) -> Result<()> {
        let (ss, ts, sc) = (cuda(state)?, cuda(table)?, scalars.buffer());
        let device = ss.cuda_device();
        let suffix = dtype_suffix(table.dtype());
        let items = grads
            .iter()
            .map(|g| Ok(MultiItem { var: cuda(g)?, grad: cuda(g)?, state_a: None, state_b: None }))
            .collect::<Result<Vec<_>>>()?;
        let targets: Vec<(&MultiItem<'_>, [u64; 3])> = items.iter().map(|item| (item, [0, 0, 0])).collect();
        let (s, name) = (ss.ptr(), format!("all_finite_multi_{suffix}"));
        launch_tables(&targets, |table, chunks| {
            let (cfg, table) = (block_per_task_config(chunks, BLOCK), *table);
            // Kernel signature: (MultiTable<T> t, f64* state).
            launch!(device, KERNELS, name, cfg; table, s);
            Ok(())
        })?;
        let (t, rows, step) = (ts.ptr(), rows as u64, sc.ptr());
        let name = format!("loss_scale_decide_{suffix}");
        let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // Kernel signature: (f64* state, const T* table, u64 rows, T* s).
        launch!(device, KERNELS, name, one; s, t, rows, step);
        Ok(())
    }
}
