//! The tensor crate of tapegrad: [`Tensor`], [`Shape`], [`DType`], [`Device`], [`Variable`],
//! the [`GradientTape`] autograd and the backends.
//!
//! Every op returns [`Result`]: bad shapes, axes, dtypes or devices are reported as an
//! [`Error`] that names the values involved, never as a panic.
//!
//! ```
//! use tapegrad_tensor::{Device, GradientTape, Tensor};
//! # fn main() -> tapegrad_tensor::Result<()> {
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &Device::Cpu)?;
//! let tape = GradientTape::new();
//! tape.watch(&x);
//! let y = tape.record(|| x.square()?.sum_all())?;
//! let grads = tape.gradient(&y, &[&x])?;
//! assert_eq!(grads[0].as_ref().unwrap().to_vec::<f32>()?, vec![2.0, 4.0, 6.0]);
//! # Ok(())
//! # }
//! ```

mod backend;
pub mod check_numerics;
mod cpu_backend;
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_backend;
pub mod cuda_graph;
mod device;
mod dtype;
mod error;
pub mod ops;
mod shape;
mod storage;
mod tape;
mod tensor;
pub mod testing;
mod utilities;
mod variable;

pub use backend::GroupNormSpec;
pub use backend::{
    ArgReduceOp, BackendStorage, BatchNormSpec, BinaryOp, Conv2dSpec, ConvActivation, MatmulSpec, Pool2dSpec, ReduceOp,
    StridedLayout, UnaryOp,
};
pub use backend::{BatchNormEpilogue, BatchNormGrads};
pub use cpu_backend::CpuStorage;
#[cfg(feature = "cuda")]
pub use cuda_backend::CudaStorage;
pub use device::Device;
pub use dtype::{DType, Element, FloatElement};
pub use error::{Error, Result};
/// The `half` crate, whose [`half::bf16`] and [`half::f16`] are the elements of
/// [`DType::BF16`] and [`DType::F16`] tensors.
pub use half;
pub use ops::conv::{Conv2dParams, Conv2dTransposeParams, Padding};
pub use ops::optim;
pub use ops::pad::PadMode;
pub use ops::resize::Interpolation;
pub use shape::Shape;
pub use storage::Storage;
pub use tape::{custom_gradient, GradientSource, GradientTape, ReadyHook};
pub use tensor::{Tensor, TensorId};
pub use variable::Variable;
