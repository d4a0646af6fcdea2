//! The one check every op makes before its kernel allocates: that its outputs can exist.
//!
//! A user's shapes decide the size of an op's output (a broadcast `[1e6, 1] + [1, 1e6]`
//! asks for 4 TB). Kernels allocate through fallible helpers, but the op layer checks
//! first, so an impossible output is [`Error::OutOfMemory`] naming the op, the output
//! shape and the bytes whatever backend or kernel runs it, and no kernel starts work
//! (workspaces, threads) it cannot finish. Errors the kernel itself reports for lack of
//! memory get the output shape added, since kernels see only lengths.

use crate::check_numerics::{self, OpOutputs};
use crate::{DType, Device, Error, Result, Shape, Tensor};

/// From this size up a host output is probed: its address space is reserved and given
/// back at once (no page touched), so a size the allocator refuses is reported here.
const PROBE_FROM: usize = 1 << 30;

/// The bytes of a buffer of `shape` holding `dtype`, or `None` when that does not fit
/// in an `isize` (no allocator can provide it).
fn output_bytes(shape: &Shape, dtype: DType) -> Option<usize> {
    if shape.dims().contains(&0) {
        return Some(0);
    }
    let n = shape.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    n.checked_mul(dtype.size_in_bytes()).filter(|&b| b <= isize::MAX as usize)
}

/// Describes the outputs for an error message: ` for output shape [..]`.
fn describe(outputs: &[&Shape], dtype: DType) -> String {
    let shapes: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
    let noun = if outputs.len() == 1 { "output shape" } else { "output shapes" };
    format!(" for {noun} {} of {dtype}", shapes.join(", "))
}

/// Fails with [`Error::OutOfMemory`] unless `op`'s outputs of `outputs` shapes and
/// `dtype` can be allocated on `device`: their byte size must be representable, and on
/// the host, from 1 GiB up, the allocator must accept a reservation of it.
pub(crate) fn check_outputs(op: &'static str, outputs: &[&Shape], dtype: DType, device: &Device) -> Result<()> {
    let oom = |requested: usize, why: &str| Error::OutOfMemory {
        device: *device,
        op,
        requested,
        detail: format!("{}{why}", describe(outputs, dtype)),
    };
    let mut total = 0usize;
    for shape in outputs {
        let bytes = output_bytes(shape, dtype)
            .ok_or_else(|| oom(usize::MAX, " (too many elements: the byte size overflows)"))?;
        total = total
            .checked_add(bytes)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| oom(usize::MAX, " (too many elements: the byte size overflows)"))?;
    }
    if device.is_cpu() && total >= PROBE_FROM {
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(total).map_err(|_| oom(total, ", which cannot be allocated"))?;
    }
    Ok(())
}

/// Runs `kernel` for `op` on `inputs` after [`check_outputs`], and adds the output shapes
/// to an out-of-memory error the kernel (or a device allocator) reports. In
/// [check-numerics mode](crate::check_numerics) the outputs are then checked for NaN and
/// infinity. Every op computes its outputs through this function.
pub(crate) fn guarded<T: OpOutputs>(
    op: &'static str,
    inputs: &[&Tensor],
    outputs: &[&Shape],
    dtype: DType,
    device: &Device,
    kernel: impl FnOnce() -> Result<T>,
) -> Result<T> {
    check_outputs(op, outputs, dtype, device)?;
    if device.is_cpu() {
        crate::utilities::enter_pool_on_main_thread();
    }
    let out = kernel().map_err(|err| match err {
        Error::OutOfMemory { device, op: kernel_op, requested, detail } => Error::OutOfMemory {
            device,
            op: kernel_op,
            requested,
            detail: format!("{}{detail}", describe(outputs, dtype)),
        },
        other => other,
    })?;
    check_numerics::check(op, inputs, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_outputs_name_op_shape_and_bytes() {
        let shape = Shape::new(&[1 << 40, 1 << 40]);
        let err = check_outputs("add", &[&shape], DType::F32, &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::OutOfMemory { op: "add", .. }), "{msg}");
        assert!(msg.contains("[1099511627776, 1099511627776]") && msg.contains("too many elements"), "{msg}");
        let refused = Shape::new(&[1 << 20, 1 << 25]); // 128 TiB of f32: representable, refused
        let msg = check_outputs("matmul", &[&refused], DType::F32, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("140737488355328 bytes") && msg.contains("[1048576, 33554432]"), "{msg}");
    }

    #[test]
    fn possible_outputs_pass_and_kernel_errors_gain_the_shape() {
        let shape = Shape::new(&[3, 0]);
        assert!(check_outputs("add", &[&shape, &Shape::new(&[4])], DType::F64, &Device::Cpu).is_ok());
        let s = Shape::new(&[2, 3]);
        let err = guarded::<crate::Storage>("op", &[], &[&s], DType::F32, &Device::Cpu, || {
            Err(crate::utilities::alloc::host_oom::<f32>("kernel", 6))
        })
        .unwrap_err();
        assert!(err.to_string().contains("for output shape [2, 3] of f32"), "{err}");
    }
}
