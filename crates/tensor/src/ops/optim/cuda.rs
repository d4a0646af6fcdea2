//! CUDA launch code of the fused optimizer updates; the kernels are in `optim.cu`. One
//! launch per parameter tensor, or one per 40 parameters through the multi-tensor kernels.

use super::{AdamStep, SgdStep};
use crate::cuda_backend::kernels::{block_per_task_config, dtype_suffix, elementwise_config, KernelSource, BLOCK};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The optimizer kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "optim", source: include_str!("optim.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    [
        "sgd_update",
        "adam_update",
        "sgd_update_multi",
        "adam_update_multi",
        "sgd_update_multi_dev",
        "adam_update_multi_dev",
        "all_finite_multi",
        "loss_scale_decide",
        "loss_scale_mul",
    ]
    .iter()
    .flat_map(|k| [DType::F32, DType::F64].map(|d| format!("{k}_{}", dtype_suffix(d))))
    .collect()
}

/// Checks devices, dtypes (a float) and lengths of the parameter and its operands.
fn check(op: &'static str, var: &CudaStorage, others: &[Option<&CudaStorage>]) -> Result<DType> {
    let dtype = var.dtype();
    // bf16 and f16 are refused as on the CPU (statistics and variables stay in f32).
    crate::cuda_backend::float_only(op, dtype)?;
    for o in others.iter().flatten() {
        var.check_device(o, op)?;
        var.check_dtype(o, op)?;
        if o.len() != var.len() {
            return Err(Error::invalid(op, format!("an operand of {} elements for {} parameters", o.len(), var.len())));
        }
    }
    Ok(dtype)
}

fn optional_ptr(s: Option<&CudaStorage>) -> u64 {
    s.map_or(0, CudaStorage::ptr)
}

pub(crate) fn sgd_update(
    var: &CudaStorage,
    grad: &CudaStorage,
    velocity: Option<&CudaStorage>,
    p: &SgdStep,
) -> Result<(CudaStorage, Option<CudaStorage>)> {
    const OP: &str = "sgd_update";
    let dtype = check(OP, var, &[Some(grad), velocity])?;
    let device = var.cuda_device();
    let n = var.len();
    let out = CudaStorage::alloc(device, n, dtype)?;
    let has_momentum = p.momentum != 0.0;
    let out_velocity = if has_momentum { Some(CudaStorage::alloc(device, n, dtype)?) } else { None };
    if n == 0 {
        return Ok((out, out_velocity));
    }
    let (pv, pg, pvel, pout, pout_vel) =
        (var.ptr(), grad.ptr(), optional_ptr(velocity), out.ptr(), optional_ptr(out_velocity.as_ref()));
    let (n64, has_decay, has_momentum, nesterov) =
        (n as u64, u64::from(p.weight_decay != 0.0), u64::from(has_momentum), u64::from(p.nesterov));
    let (cfg, name) = (elementwise_config(n), format!("{OP}_{}", dtype_suffix(dtype)));
    // Kernel signature: (const T* var, const T* grad, const T* velocity, T* out, T* out_velocity, u64 n,
    // T lr, T momentum, T decay, u64 has_decay, u64 has_momentum, u64 nesterov).
    match dtype {
        DType::F32 => {
            let (lr, momentum, decay) = (p.learning_rate as f32, p.momentum as f32, p.weight_decay as f32);
            launch!(device, KERNELS, name, cfg;
                pv, pg, pvel, pout, pout_vel, n64, lr, momentum, decay, has_decay, has_momentum, nesterov);
        }
        _ => {
            let (lr, momentum, decay) = (p.learning_rate, p.momentum, p.weight_decay);
            launch!(device, KERNELS, name, cfg;
                pv, pg, pvel, pout, pout_vel, n64, lr, momentum, decay, has_decay, has_momentum, nesterov);
        }
    }
    Ok((out, out_velocity))
}

pub(crate) fn adam_update(
    var: &CudaStorage,
    grad: &CudaStorage,
    m: Option<&CudaStorage>,
    v: Option<&CudaStorage>,
    p: &AdamStep,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    const OP: &str = "adam_update";
    let dtype = check(OP, var, &[Some(grad), m, v])?;
    let device = var.cuda_device();
    let n = var.len();
    let (out, m_out, v_out) = (
        CudaStorage::alloc(device, n, dtype)?,
        CudaStorage::alloc(device, n, dtype)?,
        CudaStorage::alloc(device, n, dtype)?,
    );
    if n == 0 {
        return Ok((out, m_out, v_out));
    }
    let c = p.coefficients();
    let (pv, pg, pm, pvv) = (var.ptr(), grad.ptr(), optional_ptr(m), optional_ptr(v));
    let (pout, pm_out, pv_out, n64, has_decay) = (out.ptr(), m_out.ptr(), v_out.ptr(), n as u64, u64::from(c.decay));
    let (cfg, name) = (elementwise_config(n), format!("{OP}_{}", dtype_suffix(dtype)));
    // Kernel signature: (const T* var, const T* grad, const T* m, const T* v, T* out, T* m_out, T* v_out, u64 n,
    // T lr_t, T one_minus_beta_1, T one_minus_beta_2, T epsilon, T decay_factor, u64 has_decay).
    match dtype {
        DType::F32 => {
            let (lr_t, b1, b2, eps, decay) = (
                c.lr_t as f32,
                c.one_minus_beta_1 as f32,
                c.one_minus_beta_2 as f32,
                c.epsilon as f32,
                c.decay_factor as f32,
            );
            launch!(device, KERNELS, name, cfg;
                pv, pg, pm, pvv, pout, pm_out, pv_out, n64, lr_t, b1, b2, eps, decay, has_decay);
        }
        _ => {
            let (lr_t, b1, b2, eps, decay) =
                (c.lr_t, c.one_minus_beta_1, c.one_minus_beta_2, c.epsilon, c.decay_factor);
            launch!(device, KERNELS, name, cfg;
                pv, pg, pm, pvv, pout, pm_out, pv_out, n64, lr_t, b1, b2, eps, decay, has_decay);
        }
    }
    Ok((out, m_out, v_out))
}

/// Tensors per multi-tensor launch (`MT_MAX_TENSORS` in optim.cu).
const MAX_TENSORS: usize = 40;
/// Elements per block task of a multi-tensor launch (`MT_CHUNK` in optim.cu).
const CHUNK: usize = 4096;

/// `MultiTable<T>` of optim.cu: a kernel parameter (2,896 bytes), so a launch uploads
/// nothing. Pointers are device addresses, 0 for an absent state.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MultiTable {
    var: [u64; MAX_TENSORS],
    grad: [u64; MAX_TENSORS],
    state_a: [u64; MAX_TENSORS],
    state_b: [u64; MAX_TENSORS],
    out: [u64; MAX_TENSORS],
    out_a: [u64; MAX_TENSORS],
    out_b: [u64; MAX_TENSORS],
    n: [u64; MAX_TENSORS],
    first_chunk: [u64; MAX_TENSORS + 1],
    count: u64,
}

// SAFETY: plain old data (u64 arrays, no padding) with the layout of optim.cu's
// `MultiTable<T>` (pointers are 8 bytes on every CUDA platform).
unsafe impl cudarc::driver::DeviceRepr for MultiTable {}

/// One parameter of a multi-tensor update: its buffer, gradient and two optional states
/// (Adam's m and v; SGD's velocity and none), and the outputs it gets.
pub(crate) struct MultiItem<'a> {
    pub var: &'a CudaStorage,
    pub grad: &'a CudaStorage,
    pub state_a: Option<&'a CudaStorage>,
    pub state_b: Option<&'a CudaStorage>,
}

/// The new parameter and the new states of one [`MultiItem`].
type MultiOutputs = (CudaStorage, Option<CudaStorage>, Option<CudaStorage>);

/// Checks every item against the first (device, dtype) and its own operands, allocates
/// the outputs (`outputs` of the three), and fills one table per `MAX_TENSORS` items;
/// `launch(table)` queues each table's kernel. Empty tensors get outputs and no work.
fn multi_update(
    op: &'static str,
    items: &[MultiItem<'_>],
    outputs: [bool; 3],
    launch: impl FnMut(&MultiTable, usize) -> Result<()>,
) -> Result<Vec<MultiOutputs>> {
    let Some(first) = items.first() else { return Ok(Vec::new()) };
    let dtype = check(op, first.var, &[])?;
    for item in items {
        first.var.check_device(item.var, op)?;
        first.var.check_dtype(item.var, op)?;
        check(op, item.var, &[Some(item.grad), item.state_a, item.state_b])?;
    }
    let device = first.var.cuda_device();
    let alloc = |wanted: bool, n: usize| wanted.then(|| CudaStorage::alloc(device, n, dtype)).transpose();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let n = item.var.len();
        results.push((CudaStorage::alloc(device, n, dtype)?, alloc(outputs[1], n)?, alloc(outputs[2], n)?));
    }
    let targets: Vec<(&MultiItem<'_>, [u64; 3])> = items
        .iter()
        .zip(&results)
        .map(|(item, (out, a, b))| (item, [out.ptr(), optional_ptr(a.as_ref()), optional_ptr(b.as_ref())]))
        .collect();
    launch_tables(&targets, launch)?;
    Ok(results)
}

/// Fills one table per `MAX_TENSORS` non-empty items, each item writing to its three
/// target addresses (new buffers, or its own operands for an update in place), and calls
/// `launch(table, chunks)` for each.
pub(crate) fn launch_tables(
    targets: &[(&MultiItem<'_>, [u64; 3])],
    mut launch: impl FnMut(&MultiTable, usize) -> Result<()>,
) -> Result<()> {
    let nonempty: Vec<&(&MultiItem<'_>, [u64; 3])> = targets.iter().filter(|(item, _)| item.var.len() > 0).collect();
    for batch in nonempty.chunks(MAX_TENSORS) {
        let mut t = MultiTable {
            var: [0; MAX_TENSORS],
            grad: [0; MAX_TENSORS],
            state_a: [0; MAX_TENSORS],
            state_b: [0; MAX_TENSORS],
            out: [0; MAX_TENSORS],
            out_a: [0; MAX_TENSORS],
            out_b: [0; MAX_TENSORS],
            n: [0; MAX_TENSORS],
            first_chunk: [0; MAX_TENSORS + 1],
            count: batch.len() as u64,
        };
        for (k, (item, [out, out_a, out_b])) in batch.iter().enumerate() {
            let n = item.var.len();
            (t.var[k], t.grad[k], t.out[k]) = (item.var.ptr(), item.grad.ptr(), *out);
            (t.state_a[k], t.state_b[k]) = (optional_ptr(item.state_a), optional_ptr(item.state_b));
            (t.out_a[k], t.out_b[k]) = (*out_a, *out_b);
            t.n[k] = n as u64;
            t.first_chunk[k + 1] = t.first_chunk[k] + n.div_ceil(CHUNK) as u64;
        }
        launch(&t, t.first_chunk[batch.len()] as usize)?;
    }
    Ok(())
}

/// Checks the items of an update in place (one device and dtype, that of `scalars`, with
/// the states given by `states`) and launches it over them, each item writing its own
/// operands; `launch(table, chunks)` queues one table's kernel.
fn multi_update_in_place(
    op: &'static str,
    items: &[MultiItem<'_>],
    scalars: &CudaStorage,
    states: [bool; 2],
    launch: impl FnMut(&MultiTable, usize) -> Result<()>,
) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        scalars.check_device(item.var, op)?;
        scalars.check_dtype(item.var, op)?;
        check(op, item.var, &[Some(item.grad), item.state_a, item.state_b])?;
        for (present, wanted, name) in
            [(item.state_a.is_some(), states[0], "first"), (item.state_b.is_some(), states[1], "second")]
        {
            if present != wanted {
                let what = if wanted {
                    "is missing (run one ordinary update first, which creates it)"
                } else {
                    "is not used by this update"
                };
                return Err(Error::invalid(op, format!("the {name} state of parameter #{i} {what}")));
            }
        }
    }
    let targets: Vec<(&MultiItem<'_>, [u64; 3])> = items
        .iter()
        .map(|item| (item, [item.var.ptr(), optional_ptr(item.state_a), optional_ptr(item.state_b)]))
        .collect();
    launch_tables(&targets, launch)
}

/// One Adam step in place for many parameters of one device and dtype, reading the
/// step's values from the device buffer `scalars` when the kernels run (see
/// `in_place.rs`); the per-element arithmetic is `adam_update`'s.
pub(crate) fn adam_update_multi_in_place(items: &[MultiItem<'_>], p: &AdamStep, scalars: &CudaStorage) -> Result<()> {
    const OP: &str = "adam_update_many_in_place";
    let has_decay = u64::from(p.coefficients().decay);
    let (device, dtype, s) = (scalars.cuda_device(), scalars.dtype(), scalars.ptr());
    let name = format!("adam_update_multi_dev_{}", dtype_suffix(dtype));
    multi_update_in_place(OP, items, scalars, [true, true], |table, chunks| {
        let (cfg, table) = (block_per_task_config(chunks, BLOCK), *table);
        // Kernel signature: (MultiTable<T> t, const T* s, u64 has_decay).
        launch!(device, KERNELS, name, cfg; table, s, has_decay);
        Ok(())
    })
}

/// One SGD step in place for many parameters of one device and dtype, reading the
/// step's values from the device buffer `scalars` when the kernels run; the per-element
/// arithmetic is `sgd_update`'s.
pub(crate) fn sgd_update_multi_in_place(items: &[MultiItem<'_>], p: &SgdStep, scalars: &CudaStorage) -> Result<()> {
    const OP: &str = "sgd_update_many_in_place";
    let has_momentum = p.momentum != 0.0;
    let (has_decay, has_momentum_flag, nesterov) =
        (u64::from(p.weight_decay != 0.0), u64::from(has_momentum), u64::from(p.nesterov));
    let (device, dtype, s) = (scalars.cuda_device(), scalars.dtype(), scalars.ptr());
    let name = format!("sgd_update_multi_dev_{}", dtype_suffix(dtype));
    multi_update_in_place(OP, items, scalars, [has_momentum, false], |table, chunks| {
        let (cfg, table) = (block_per_task_config(chunks, BLOCK), *table);
        // Kernel signature: (MultiTable<T> t, const T* s, u64 has_decay, u64 has_momentum, u64 nesterov).
        launch!(device, KERNELS, name, cfg; table, s, has_decay, has_momentum_flag, nesterov);
        Ok(())
    })
}

/// One Adam step for many parameters of one device and dtype, in one launch per
/// `MAX_TENSORS` parameters; the per-element arithmetic is `adam_update`'s.
pub(crate) fn adam_update_multi(items: &[MultiItem<'_>], p: &AdamStep) -> Result<Vec<MultiOutputs>> {
    const OP: &str = "adam_update";
    let c = p.coefficients();
    let has_decay = u64::from(c.decay);
    multi_update(OP, items, [true, true, true], |table, chunks| {
        let device = items[0].var.cuda_device();
        let dtype = items[0].var.dtype();
        let (cfg, name) = (block_per_task_config(chunks, BLOCK), format!("adam_update_multi_{}", dtype_suffix(dtype)));
        let table = *table;
        // Kernel signature: (MultiTable<T> t, T lr_t, T one_minus_beta_1, T one_minus_beta_2, T epsilon,
        // T decay_factor, u64 has_decay).
        match dtype {
            DType::F32 => {
                let (lr_t, b1, b2, eps, decay) = (
                    c.lr_t as f32,
                    c.one_minus_beta_1 as f32,
                    c.one_minus_beta_2 as f32,
                    c.epsilon as f32,
                    c.decay_factor as f32,
                );
                launch!(device, KERNELS, name, cfg; table, lr_t, b1, b2, eps, decay, has_decay);
            }
            _ => {
                let (lr_t, b1, b2, eps, decay) =
                    (c.lr_t, c.one_minus_beta_1, c.one_minus_beta_2, c.epsilon, c.decay_factor);
                launch!(device, KERNELS, name, cfg; table, lr_t, b1, b2, eps, decay, has_decay);
            }
        }
        Ok(())
    })
}

/// One SGD step for many parameters of one device and dtype, in one launch per
/// `MAX_TENSORS` parameters; the per-element arithmetic is `sgd_update`'s.
pub(crate) fn sgd_update_multi(items: &[MultiItem<'_>], p: &SgdStep) -> Result<Vec<MultiOutputs>> {
    const OP: &str = "sgd_update";
    let has_momentum = p.momentum != 0.0;
    let (has_decay, has_momentum_flag, nesterov) =
        (u64::from(p.weight_decay != 0.0), u64::from(has_momentum), u64::from(p.nesterov));
    multi_update(OP, items, [true, has_momentum, false], |table, chunks| {
        let device = items[0].var.cuda_device();
        let dtype = items[0].var.dtype();
        let (cfg, name) = (block_per_task_config(chunks, BLOCK), format!("sgd_update_multi_{}", dtype_suffix(dtype)));
        let table = *table;
        // Kernel signature: (MultiTable<T> t, T lr, T momentum, T decay, u64 has_decay, u64 has_momentum,
        // u64 nesterov).
        match dtype {
            DType::F32 => {
                let (lr, momentum, decay) = (p.learning_rate as f32, p.momentum as f32, p.weight_decay as f32);
                launch!(device, KERNELS, name, cfg; table, lr, momentum, decay, has_decay, has_momentum_flag, nesterov);
            }
            _ => {
                let (lr, momentum, decay) = (p.learning_rate, p.momentum, p.weight_decay);
                launch!(device, KERNELS, name, cfg; table, lr, momentum, decay, has_decay, has_momentum_flag, nesterov);
            }
        }
        Ok(())
    })
}
