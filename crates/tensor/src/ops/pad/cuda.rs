//! CUDA launch code of padding; the kernels are in `pad.cu`.

use super::{PadMode, PadSpec};
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, KernelSource};
use crate::cuda_backend::{launch, CudaStorage};
use crate::{BackendStorage, DType, Error, Result};
use cudarc::driver::DeviceRepr;

/// The padding kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "pad", source: include_str!("pad.cu") };

/// Most axes the kernels take (`PAD_MAX_DIMS` in pad.cu), after unpadded neighbours merge.
const PAD_MAX_DIMS: usize = 8;

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    ["pad", "pad_backward"]
        .iter()
        .flat_map(|k| [DType::F32, DType::F64, DType::BF16, DType::F16].map(|d| format!("{k}_{}", dtype_suffix(d))))
        .collect()
}

/// `PadGeom` of pad.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PadGeom {
    rank: u64,
    reflect: u64,
    value: f64,
    in_dims: [u64; PAD_MAX_DIMS],
    out_dims: [u64; PAD_MAX_DIMS],
    before: [u64; PAD_MAX_DIMS],
    after: [u64; PAD_MAX_DIMS],
}

// SAFETY: a #[repr(C)] struct of u64s and one f64, laid out as `PadGeom` in pad.cu.
unsafe impl DeviceRepr for PadGeom {}

impl PadGeom {
    fn new(op: &'static str, s: &PadSpec) -> Result<Self> {
        let rank = s.in_dims.len();
        if rank > PAD_MAX_DIMS {
            return Err(Error::invalid(
                op,
                format!(
                    "padding {:?} of dims {:?} needs {rank} axes on CUDA after merging unpadded ones (at most \
                     {PAD_MAX_DIMS})",
                    s.pads, s.in_dims
                ),
            ));
        }
        let (reflect, value) = match s.mode {
            PadMode::Reflect => (1, 0.0),
            PadMode::Constant(v) => (0, v),
        };
        let mut g = PadGeom {
            rank: rank as u64,
            reflect,
            value,
            in_dims: [1; PAD_MAX_DIMS],
            out_dims: [1; PAD_MAX_DIMS],
            before: [0; PAD_MAX_DIMS],
            after: [0; PAD_MAX_DIMS],
        };
        for (d, (&n, (&(b, a), &o))) in s.in_dims.iter().zip(s.pads.iter().zip(s.out_dims().iter())).enumerate() {
            (g.in_dims[d], g.out_dims[d], g.before[d], g.after[d]) = (n as u64, o as u64, b as u64, a as u64);
        }
        Ok(g)
    }
}

/// Checks the dtype (a float) and that the buffer holds `len` elements.
fn check(op: &'static str, x: &CudaStorage, len: usize) -> Result<DType> {
    let dtype = x.dtype();
    if dtype == DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype, expected: "f32 or f64" });
    }
    if x.len() != len {
        return Err(Error::invalid(op, format!("a buffer of {} elements where the padding needs {len}", x.len())));
    }
    Ok(dtype)
}

/// One launch of `kind` ("pad" or "pad_backward") from a buffer of `from` elements into a
/// new one of `to`.
fn run(kind: &'static str, x: &CudaStorage, s: &PadSpec, from: usize, to: usize) -> Result<CudaStorage> {
    let dtype = check(kind, x, from)?;
    let device = x.cuda_device();
    if to > 0 && from == 0 {
        // An empty input padded with a constant: the output is only the constant.
        return match s.mode {
            PadMode::Constant(v) if kind == "pad" => CudaStorage::full(to, v, dtype, device.ordinal()),
            _ => CudaStorage::zeros(device, to, dtype),
        };
    }
    let out = CudaStorage::alloc(device, to, dtype)?;
    if to == 0 {
        return Ok(out);
    }
    let (src, dst, n, geom) = (x.ptr(), out.ptr(), to as u64, PadGeom::new(kind, s)?);
    // Kernel signature: (const T* src, T* dst, u64 n, PadGeom g).
    launch!(device, KERNELS, format!("{kind}_{}", dtype_suffix(dtype)), elementwise_config(to); src, dst, n, geom);
    Ok(out)
}

pub(crate) fn pad(x: &CudaStorage, s: &PadSpec) -> Result<CudaStorage> {
    let (n_in, n_out) = (s.in_dims.iter().product(), s.out_dims().iter().product());
    run("pad", x, s, n_in, n_out)
}

pub(crate) fn pad_backward(dy: &CudaStorage, s: &PadSpec) -> Result<CudaStorage> {
    let (n_in, n_out) = (s.in_dims.iter().product(), s.out_dims().iter().product());
    run("pad_backward", dy, s, n_out, n_in)
}
