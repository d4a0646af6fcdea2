//! [`Tensor`]: an immutable, reference-counted n-dimensional array on a device.

use crate::cpu_backend::CpuStorage;
use crate::ops::output_guard::check_outputs;
use crate::utilities::alloc::try_with_capacity;
use crate::{DType, Device, Element, Error, Result, Shape, Storage};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A unique identity per tensor value; the tape keys gradients by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

struct TensorInner {
    id: TensorId,
    storage: Arc<Storage>,
    shape: Shape,
}

/// An n-dimensional array with a run-time dtype and device.
///
/// Tensors are immutable and cheap to clone (a reference count). Their buffer is always
/// contiguous and row-major; ops return new tensors (a `reshape` shares the buffer).
/// Ops run while a [`GradientTape`](crate::GradientTape) records are recorded on it.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}, {}, {})", self.shape(), self.dtype(), self.device())
    }
}

impl Tensor {
    /// Wraps a storage whose length must match the shape (checked by the caller).
    pub(crate) fn from_storage(storage: Storage, shape: Shape) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count());
        Self::from_arc(Arc::new(storage), shape)
    }

    pub(crate) fn from_arc(storage: Arc<Storage>, shape: Shape) -> Tensor {
        Tensor(Arc::new(TensorInner { id: TensorId::next(), storage, shape }))
    }

    /// A tensor from a vector of elements in row-major order; its length must equal the
    /// shape's element count.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.checked_elem_count("from_vec")? {
            return Err(Error::ElementCount { op: "from_vec", len: data.len(), shape });
        }
        Ok(Self::from_storage(Storage::from_cpu(T::into_storage(data), device)?, shape))
    }

    /// A tensor from a slice (copied).
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let mut copy = try_with_capacity("from_slice", data.len())?;
        copy.extend_from_slice(data);
        Self::from_vec(copy, shape, device)
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(value: T, device: &Device) -> Result<Tensor> {
        Self::from_vec(vec![value], Shape::scalar(), device)
    }

    /// A tensor of `value` converted to `dtype`.
    pub fn full(value: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        // NaN would become 0 and infinity i64::MAX, silently (a fraction truncates, as `cast`).
        const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
        if dtype == DType::I64 && !(-LIMIT..LIMIT).contains(&value) {
            return Err(Error::invalid("full", format!("the value {value} has no i64 equivalent")));
        }
        let len = shape.elem_count();
        // A constant is what the caller asked for, not a computed value: sized, not checked.
        check_outputs("full", &[&shape], dtype, device)?;
        let storage = Storage::full(len, value, dtype, device)?;
        Ok(Self::from_storage(storage, shape))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Self::full(0.0, shape, dtype, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Self::full(1.0, shape, dtype, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape(), self.dtype(), &self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Self::ones(self.shape(), self.dtype(), &self.device())
    }

    /// The rank-1 tensor `start, start + step, ...` up to (excluding) `end`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", format!("bad range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil().max(0.0);
        // The float count may exceed any buffer (or usize); check before allocating.
        let n = if n < usize::MAX as f64 { n as usize } else { usize::MAX };
        let shape = Shape::new(&[n]);
        check_outputs("arange", &[&shape], DType::F64, &Device::Cpu)?;
        let value = |i: usize| start + i as f64 * step;
        let cpu = match dtype {
            DType::F32 => CpuStorage::F32(try_collect("arange", n, |i| value(i) as f32)?),
            DType::F64 => CpuStorage::F64(try_collect("arange", n, value)?),
            DType::BF16 => CpuStorage::BF16(try_collect("arange", n, |i| crate::dtype::bf16_from_f64(value(i)))?),
            DType::F16 => CpuStorage::F16(try_collect("arange", n, |i| crate::dtype::f16_from_f64(value(i)))?),
            DType::I64 => CpuStorage::I64(try_collect("arange", n, |i| value(i) as i64)?),
        };
        Ok(Self::from_storage(Storage::from_cpu(cpu, device)?, shape))
    }

    /// Values drawn uniformly from `[low, high)` with the given generator.
    pub fn rand_uniform<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        low: f64,
        high: f64,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_outputs("rand_uniform", &[&shape], DType::F64, &Device::Cpu)?;
        let n = shape.elem_count();
        let dist = Uniform::new(low, high)
            .map_err(|e| Error::invalid("rand_uniform", format!("bad range [{low}, {high}): {e}")))?;
        let values = try_collect("rand_uniform", n, |_| dist.sample(rng))?;
        Self::from_f64_values(values, shape, dtype, device, "rand_uniform")
    }

    /// Values drawn from a normal distribution with the given generator.
    pub fn rand_normal<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_outputs("rand_normal", &[&shape], DType::F64, &Device::Cpu)?;
        let n = shape.elem_count();
        // rand_distr accepts a negative std (it mirrors the samples); a negative std is a
        // mistake in the caller's code, as PyTorch's `normal_` holds.
        if std.is_nan() || std < 0.0 || !mean.is_finite() {
            return Err(Error::invalid(
                "rand_normal",
                format!("bad mean {mean} / std {std}: need a finite mean and std >= 0"),
            ));
        }
        let dist = Normal::new(mean, std)
            .map_err(|e| Error::invalid("rand_normal", format!("bad mean {mean} / std {std}: {e}")))?;
        let values = try_collect("rand_normal", n, |_| dist.sample(rng))?;
        Self::from_f64_values(values, shape, dtype, device, "rand_normal")
    }

    fn from_f64_values(
        values: Vec<f64>,
        shape: Shape,
        dtype: DType,
        device: &Device,
        op: &'static str,
    ) -> Result<Tensor> {
        let cpu = match dtype {
            DType::F32 => CpuStorage::F32(try_collect(op, values.len(), |i| values[i] as f32)?),
            DType::F64 => CpuStorage::F64(values),
            DType::BF16 => CpuStorage::BF16(try_collect(op, values.len(), |i| crate::dtype::bf16_from_f64(values[i]))?),
            DType::F16 => CpuStorage::F16(try_collect(op, values.len(), |i| crate::dtype::f16_from_f64(values[i]))?),
            DType::I64 => return Err(Error::UnsupportedDType { op, dtype, expected: "a float dtype" }),
        };
        Ok(Self::from_storage(Storage::from_cpu(cpu, device)?, shape))
    }

    /// The tensor's identity (a new one for every op result).
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }

    /// The number of elements.
    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }

    /// The underlying buffer.
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }

    pub(crate) fn storage_arc(&self) -> &Arc<Storage> {
        &self.0.storage
    }

    /// How many tensors share this tensor's buffer (tape memory tests use it).
    #[doc(hidden)]
    pub fn storage_ref_count(&self) -> usize {
        Arc::strong_count(&self.0.storage)
    }

    /// The elements as a host vector of `T` (synchronises with the device). `T` must
    /// match the dtype; see [`Tensor::to_vec_f64`] for a converting read.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let copy = |slice: &[T]| {
            let mut out = try_with_capacity("to_vec", slice.len())?;
            out.extend_from_slice(slice);
            Ok(out)
        };
        match self.storage() {
            // A host tensor is copied once, straight from its buffer.
            Storage::Cpu(cpu) => copy(T::slice(cpu).expect("dtype checked above")),
            #[allow(unreachable_patterns)]
            other => copy(T::slice(&other.to_cpu()?).expect("dtype checked above")),
        }
    }

    /// The elements converted to f64, whatever the dtype.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match self.storage() {
            Storage::Cpu(cpu) => cpu.to_f64_vec(),
            #[allow(unreachable_patterns)]
            other => other.to_cpu()?.to_f64_vec(),
        }
    }

    /// The value of a one-element tensor (any shape with one element).
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::invalid("to_scalar", format!("tensor of shape {} is not a single value", self.shape())));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// A copy on another device (the same tensor if already there). Not recorded.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if &self.device() == device {
            return Ok(self.clone());
        }
        let cpu = self.storage().to_cpu()?;
        Ok(Self::from_storage(Storage::from_cpu(cpu, device)?, self.shape().clone()))
    }

    /// The same values as a new tensor that no tape tracks: gradients stop here
    /// (TF's `tf.stop_gradient`).
    pub fn detach(&self) -> Tensor {
        Self::from_arc(self.0.storage.clone(), self.shape().clone())
    }

    /// Checks that two operands share a dtype and device.
    pub(crate) fn check_same(&self, rhs: &Tensor, op: &'static str) -> Result<()> {
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: rhs.dtype() });
        }
        if self.device() != rhs.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: rhs.device() });
        }
        Ok(())
    }

    /// Fails unless the dtype is a float.
    pub(crate) fn check_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), expected: "f32, f64, bf16 or f16" });
        }
        Ok(())
    }
}

/// `(0..n).map(f).collect()` into a vector reserved fallibly, for constructors whose
/// length a user's shape decides.
fn try_collect<T>(op: &'static str, n: usize, f: impl FnMut(usize) -> T) -> Result<Vec<T>> {
    let mut out = try_with_capacity(op, n)?;
    out.extend((0..n).map(f));
    Ok(out)
}
