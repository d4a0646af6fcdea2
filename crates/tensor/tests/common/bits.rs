//! Bit-for-bit comparison of tensors of any dtype, for the tests that check one device or
//! kernel against another exactly.

use tapegrad_tensor::half::{bf16, f16};
use tapegrad_tensor::{DType, Device, Result, Tensor};

/// The elements' bits, whatever the dtype; every NaN as one value (a GPU's arithmetic may
/// return its canonical NaN where the CPU keeps a payload).
pub fn bits(t: &Tensor) -> Result<Vec<u64>> {
    const NAN: u64 = u64::MAX;
    let t = t.to_device(&Device::Cpu)?;
    Ok(match t.dtype() {
        DType::BF16 => t.to_vec::<bf16>()?.iter().map(|x| if x.is_nan() { NAN } else { x.to_bits() as u64 }).collect(),
        DType::F16 => t.to_vec::<f16>()?.iter().map(|x| if x.is_nan() { NAN } else { x.to_bits() as u64 }).collect(),
        DType::F32 => t.to_vec::<f32>()?.iter().map(|x| if x.is_nan() { NAN } else { x.to_bits() as u64 }).collect(),
        DType::F64 => t.to_vec::<f64>()?.iter().map(|x| if x.is_nan() { NAN } else { x.to_bits() }).collect(),
        DType::I64 => t.to_vec::<i64>()?.iter().map(|&x| x as u64).collect(),
    })
}

/// Asserts `got` equals `want` bit for bit (NaN matching any NaN), dtype and shape
/// included; `sides` names the two (e.g. `("on CUDA", "on the CPU")`) in a failure.
pub fn assert_same_bits(what: &str, got: &Tensor, want: &Tensor, sides: (&str, &str)) -> Result<()> {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (bits(got)?, bits(want)?);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert_eq!(a, b, "{what}[{i}]: bits {a:#x} {}, {b:#x} {}", sides.0, sides.1);
    }
    Ok(())
}
