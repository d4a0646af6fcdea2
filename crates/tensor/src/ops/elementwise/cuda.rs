//! CUDA launch code of the elementwise ops; the kernels are in `elementwise.cu`.

use crate::backend::{BinaryOp, UnaryOp};
use crate::cuda_backend::kernels::{dtype_suffix, elementwise_config, index_width, KernelSource};
use crate::cuda_backend::{launch, CudaStorage, MAX_DIMS};
use crate::utilities::coalesce::coalesce;
use crate::{DType, Error, Result, Shape};
use cudarc::driver::DeviceRepr;

/// The elementwise kernels' source.
pub(crate) const KERNELS: KernelSource = KernelSource { name: "elementwise", source: include_str!("elementwise.cu") };

const ALL_UNARY: [UnaryOp; 27] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Square,
    UnaryOp::Relu,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Abs,
    UnaryOp::Sign,
    UnaryOp::Recip,
    UnaryOp::Powf(0.0),
    UnaryOp::Clamp { min: 0.0, max: 0.0 },
    UnaryOp::Affine { mul: 0.0, add: 0.0 },
    UnaryOp::Erf,
    UnaryOp::Log1p,
    UnaryOp::Expm1,
    UnaryOp::Softplus,
    UnaryOp::Softsign,
    UnaryOp::Gelu,
    UnaryOp::GeluTanh,
    UnaryOp::Silu,
    UnaryOp::Mish,
    UnaryOp::HardSigmoid,
    UnaryOp::HardSwish,
    UnaryOp::Elu { alpha: 0.0 },
    UnaryOp::LeakyRelu { slope: 0.0 },
];

const ALL_BINARY: [BinaryOp; 12] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Maximum,
    BinaryOp::Minimum,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
];

/// The unary ops with an i64 kernel (as on the CPU).
fn has_int_kernel(op: UnaryOp) -> bool {
    matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Square | UnaryOp::Relu | UnaryOp::Clamp { .. })
}

fn unary_kernel(op: UnaryOp, dtype: DType) -> String {
    format!("unary_{}_{}", op.name(), dtype_suffix(dtype))
}

fn binary_op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Maximum => "maximum",
        BinaryOp::Minimum => "minimum",
        BinaryOp::Eq => "eq",
        BinaryOp::Ne => "ne",
        BinaryOp::Lt => "lt",
        BinaryOp::Le => "le",
        BinaryOp::Gt => "gt",
        BinaryOp::Ge => "ge",
    }
}

/// A binary kernel's name: the flat form, or the broadcast one in index width `index`
/// ("u32" or "u64").
fn binary_kernel(op: BinaryOp, dtype: DType, broadcast: Option<&str>) -> String {
    let suffix = broadcast.map_or(String::new(), |index| format!("_bcast_{index}"));
    format!("binary_{}_{}{suffix}", binary_op_name(op), dtype_suffix(dtype))
}

fn cast_kernel(from: DType, to: DType) -> String {
    format!("cast_{}_{}", dtype_suffix(from), dtype_suffix(to))
}

const ALL_DTYPES: [DType; 5] = [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16];

/// The float dtypes with unary kernels (bf16 and f16 compute in f32).
const FLOAT_DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::BF16, DType::F16];

/// Every kernel name this file can launch.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    for op in ALL_UNARY {
        for dtype in FLOAT_DTYPES {
            names.push(unary_kernel(op, dtype));
        }
        if has_int_kernel(op) {
            names.push(unary_kernel(op, DType::I64));
        }
    }
    for op in ALL_BINARY {
        for dtype in ALL_DTYPES {
            names.push(binary_kernel(op, dtype, None));
            names.push(binary_kernel(op, dtype, Some("u32")));
            names.push(binary_kernel(op, dtype, Some("u64")));
        }
    }
    for from in ALL_DTYPES {
        for to in ALL_DTYPES.into_iter().filter(|&t| t != from) {
            names.push(cast_kernel(from, to));
        }
    }
    names
}

/// The two scalar parameters of a unary kernel, as f64.
fn unary_params(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Powf(e) => (e, 0.0),
        UnaryOp::Clamp { min, max } => (min, max),
        UnaryOp::Affine { mul, add } => (mul, add),
        UnaryOp::Elu { alpha } => (alpha, 0.0),
        UnaryOp::LeakyRelu { slope } => (slope, 0.0),
        _ => (0.0, 0.0),
    }
}

pub(crate) fn unary(x: &CudaStorage, op: UnaryOp) -> Result<CudaStorage> {
    use crate::BackendStorage;
    let dtype = x.dtype();
    if dtype == DType::I64 && !has_int_kernel(op) {
        return Err(Error::UnsupportedDType { op: op.name(), dtype, expected: "f32 or f64" });
    }
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, x.len(), dtype)?;
    if x.is_empty() {
        return Ok(out);
    }
    let (src, dst, n) = (x.ptr(), out.ptr(), x.len() as u64);
    let cfg = elementwise_config(x.len());
    let name = unary_kernel(op, dtype);
    let (p0, p1) = unary_params(op);
    // Kernel signature: (const T* x, T* y, u64 n, T p0, T p1), with f32 parameters for bf16
    // and f16 (computed in f32).
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => {
            let (p0, p1) = (p0 as f32, p1 as f32);
            launch!(device, KERNELS, name, cfg; src, dst, n, p0, p1);
        }
        DType::F64 => launch!(device, KERNELS, name, cfg; src, dst, n, p0, p1),
        DType::I64 => {
            // Integer clamp bounds round inward, as on the CPU.
            let (p0, p1) = (p0.ceil() as i64, p1.floor() as i64);
            launch!(device, KERNELS, name, cfg; src, dst, n, p0, p1);
        }
    }
    Ok(out)
}

/// The broadcast kernels' view of both operands: dims and strides innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct BroadcastMeta {
    rank: u64,
    dims: [u64; MAX_DIMS],
    lhs_strides: [u64; MAX_DIMS],
    rhs_strides: [u64; MAX_DIMS],
}

// SAFETY: a #[repr(C)] struct of u64s, laid out as `BroadcastMeta` in elementwise.cu.
unsafe impl DeviceRepr for BroadcastMeta {}

pub(crate) fn binary(
    a: &CudaStorage,
    b: &CudaStorage,
    op: BinaryOp,
    ls: &Shape,
    rs: &Shape,
    out_shape: &Shape,
) -> Result<CudaStorage> {
    use crate::BackendStorage;
    a.check_device(b, "binary")?;
    a.check_dtype(b, "binary")?;
    let n = out_shape.elem_count();
    if a.len() != ls.elem_count() || b.len() != rs.elem_count() {
        return Err(Error::invalid(
            "binary",
            format!("buffers of {} and {} elements for shapes {ls} and {rs}", a.len(), b.len()),
        ));
    }
    let device = a.cuda_device();
    let out = CudaStorage::alloc(device, n, a.dtype())?;
    if n == 0 {
        return Ok(out);
    }
    let (pa, pb, po, n64) = (a.ptr(), b.ptr(), out.ptr(), n as u64);
    let cfg = elementwise_config(n);
    // Same shapes, or a single value against a full operand: flat loops.
    let steps = if ls == rs {
        Some((1u64, 1u64))
    } else if b.len() == 1 && a.len() == n {
        Some((1, 0))
    } else if a.len() == 1 && b.len() == n {
        Some((0, 1))
    } else {
        None
    };
    if let Some((a_step, b_step)) = steps {
        // Kernel signature: (const T* a, const T* b, T* out, u64 n, u64 a_step, u64 b_step).
        launch!(device, KERNELS, binary_kernel(op, a.dtype(), None), cfg; pa, pb, po, n64, a_step, b_step);
        return Ok(out);
    }
    let (dims, sa, sb) =
        coalesce(out_shape.dims(), &[ls.broadcast_strides(out_shape), rs.broadcast_strides(out_shape)]);
    if dims.len() > MAX_DIMS {
        return Err(Error::invalid(
            "binary",
            format!("broadcasting {ls} with {rs} needs {} dimensions on CUDA (at most {MAX_DIMS})", dims.len()),
        ));
    }
    let mut meta = BroadcastMeta {
        rank: dims.len() as u64,
        dims: [1; MAX_DIMS],
        lhs_strides: [0; MAX_DIMS],
        rhs_strides: [0; MAX_DIMS],
    };
    for (i, d) in (0..dims.len()).rev().enumerate() {
        meta.dims[i] = dims[d] as u64;
        meta.lhs_strides[i] = sa[d] as u64;
        meta.rhs_strides[i] = sb[d] as u64;
    }
    // Every index is below n: the operands are no larger than the output.
    let name = binary_kernel(op, a.dtype(), Some(index_width(n)));
    // Kernel signature: (const T* a, const T* b, T* out, u64 n, BroadcastMeta m).
    launch!(device, KERNELS, name, cfg; pa, pb, po, n64, meta);
    Ok(out)
}

pub(crate) fn cast(x: &CudaStorage, dtype: DType) -> Result<CudaStorage> {
    use crate::BackendStorage;
    if dtype == x.dtype() {
        return x.copy();
    }
    let device = x.cuda_device();
    let out = CudaStorage::alloc(device, x.len(), dtype)?;
    if x.is_empty() {
        return Ok(out);
    }
    let (src, dst, n) = (x.ptr(), out.ptr(), x.len() as u64);
    // Kernel signature: (const A* x, B* y, u64 n).
    launch!(device, KERNELS, cast_kernel(x.dtype(), dtype), elementwise_config(x.len()); src, dst, n);
    Ok(out)
}
