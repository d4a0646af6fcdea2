//! CUDA launch code of the fused optimizer updates; the kernels are in `optim.cu`. One
//! launch per parameter tensor.

use super::{AdamStep, SgdStep};
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};

/// The optimizer kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "optim", source: include_str!("optim.cu") };

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    ["sgd_update", "adam_update"]
        .iter()
        .flat_map(|k| [DType::F32, DType::F64].map(|d| format!("{k}_{}", dtype_suffix(d))))
        .collect()
}

/// Checks devices, dtypes (a float) and lengths of the parameter and its operands.
fn check(op: &'static str, var: &CudaStorage, others: &[Option<&CudaStorage>]) -> Result<DType> {
    let dtype = var.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64" });
    }
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
