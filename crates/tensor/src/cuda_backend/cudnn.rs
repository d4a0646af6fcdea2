//! cuDNN: one handle per device, bound to the device's stream, and cached convolution
//! plans (descriptors plus the algorithm of each direction). Thin safe wrappers over
//! cudarc's `cudnn::result` layer; the convolution op (`ops/conv/cuda.rs`) decides what
//! to run.
//!
//! A plan is made once per (geometry including the group count, dtype, TF32 setting):
//! its tensor, filter and
//! convolution descriptors, and for each direction (forward, backward-data,
//! backward-filter) the first algorithm cuDNN's heuristics (`cudnnGet*Algorithm_v7`)
//! rank as supported, preferring a deterministic one (cuDNN reports each algorithm's
//! determinism: BWD_DATA_ALGO_0 and BWD_FILTER_ALGO_0/3 accumulate with atomics, so
//! their sums change from run to run), with its workspace size. A non-deterministic
//! algorithm is taken only when no deterministic one is usable. f32 convolutions run in plain FMA math
//! unless [`crate::cuda::set_tf32`] allows tensor cores. A direction with no usable
//! algorithm (cuDNN supports few f64 NHWC configurations) has none, and the op falls
//! back to the CPU for it (`cpu_fallback.rs`: silent for f64, a warning or an error for
//! f32). For f64 any heuristics or workspace-query failure counts as "no algorithm"
//! (cuDNN 9 rejects unsupported f64 NHWC geometries with assorted statuses); for f32 only
//! the "not supported" statuses do, and anything else is a hard error.
//!
//! A plan also knows how to run the forward direction with its bias and activation fused
//! (`cudnnConvolutionBiasActivationForward`): with the forward choice for ReLU, with
//! IMPLICIT_PRECOMP_GEMM (the only algorithm cuDNN takes for the identity) where cuDNN gives
//! that a workspace. A fused call that cuDNN refuses when made is marked in the plan and not
//! made again for that geometry; the op then runs the unfused path.
//!
//! With [`crate::cuda::set_cudnn_benchmark`] (PyTorch's `cudnn.benchmark`), a new plan's
//! ranking comes from measurement instead (`cudnnFind*AlgorithmEx` on scratch buffers, once
//! per plan, fastest first) and goes through the same choice: the fastest deterministic
//! algorithm that fits. Measuring runs the convolutions and waits for them, so it never
//! happens while the stream captures a graph (that plan is ranked by the heuristics), and a
//! measurement that fails falls back to the heuristics' ranking.

use super::device::{lock, CudaDevice};
use super::CudaStorage;
use crate::backend::{Conv2dSpec, ConvActivation};
use crate::{DType, Device, Error, Result};
use cudarc::cudnn::{result as dnn, sys};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How to get cuDNN, for the error raised when it cannot be loaded.
pub(crate) fn unavailable_message() -> String {
    "the cuDNN library (libcudnn.so, needed for convolutions) could not be loaded: install cuDNN 9, or \
     `pip install nvidia-cudnn-cu13` and put its nvidia/cudnn/lib folder on LD_LIBRARY_PATH"
        .to_string()
}

/// The largest workspace an algorithm may ask for; hungrier ones are skipped.
const WORKSPACE_LIMIT: usize = 1 << 30;

/// Whether libcudnn can be loaded (checked once per process; cudarc panics otherwise).
fn loadable() -> bool {
    static LOADABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen libcudnn under its known names; calls nothing in it.
    *LOADABLE.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// Whether a cuDNN error means "this configuration is not supported" (and so is worth a
/// fallback) rather than a bug or a broken device.
pub(crate) fn is_not_supported(e: &dnn::CudnnError) -> bool {
    (3000..4000).contains(&(e.0 as u32))
}

/// Whether a cuDNN error is one of cuDNN 9's BAD_PARAM family (2000-2999): the call's
/// arguments were refused before anything was queued.
fn is_bad_param(e: &dnn::CudnnError) -> bool {
    (2000..3000).contains(&(e.0 as u32))
}

/// One device's cuDNN state: its handle and the plans made so far.
pub(crate) struct Dnn {
    handle: sys::cudnnHandle_t,
    plans: Mutex<HashMap<PlanKey, Arc<ConvPlan>>>,
    /// The activation descriptors of the fused forward call, indexed by [`fused_slot`].
    activations: [ActivationDesc; 2],
}

// SAFETY: a cuDNN handle may be used from any thread, one thread at a time; the device
// keeps it behind a mutex. Descriptors are only read after creation.
unsafe impl Send for Dnn {}

impl Dnn {
    /// Creates the handle (the device's context must be current) and binds it to the
    /// device's stream.
    pub(crate) fn new(device: &CudaDevice) -> Result<Dnn> {
        if !loadable() {
            return Err(Error::DeviceUnavailable { device: device.device(), msg: unavailable_message() });
        }
        device.bind()?;
        let handle = dnn::create_handle().map_err(|e| Error::cuda(device.device(), "cudnnCreate", e))?;
        let activation = |activation| {
            ActivationDesc::new(activation).map_err(|e| Error::cuda(device.device(), "cudnnSetActivationDescriptor", e))
        };
        let activations = match (activation(ConvActivation::Identity), activation(ConvActivation::Relu)) {
            (Ok(identity), Ok(relu)) => [identity, relu],
            (Err(e), _) | (_, Err(e)) => {
                // SAFETY: just created, used by nothing else.
                let _ = unsafe { dnn::destroy_handle(handle) };
                return Err(e);
            }
        };
        let dnn = Dnn { handle, plans: Mutex::default(), activations };
        // SAFETY: both the handle and the stream are live; the stream outlives the handle
        // (the device owns both and is never dropped before process exit).
        unsafe { dnn::set_stream(handle, device.stream().cu_stream() as sys::cudaStream_t) }
            .map_err(|e| Error::cuda(device.device(), "cudnnSetStream", e))?;
        Ok(dnn)
    }

    /// The plan for a convolution whose padding is symmetric (`pad_top == pad_bottom`,
    /// `pad_left == pad_right`), made on first use.
    pub(crate) fn plan(&self, device: &Arc<CudaDevice>, spec: &Conv2dSpec, dtype: DType) -> Result<Arc<ConvPlan>> {
        let tf32 = dtype == DType::F32 && crate::cuda::tf32_enabled();
        let measured = crate::cuda::cudnn_benchmark_enabled() && !device.is_capturing();
        let key = PlanKey { spec: *spec, dtype, tf32, measured };
        if let Some(plan) = lock(&self.plans).get(&key) {
            return Ok(plan.clone());
        }
        let scratch = if measured { Some(Scratch::new(device, spec, dtype)?) } else { None };
        let plan = Arc::new(ConvPlan::new(self.handle, device.device(), spec, dtype, tf32, scratch.as_ref())?);
        lock(&self.plans).insert(key, plan.clone());
        Ok(plan)
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate and destroyed only here; a failure cannot be acted on.
        let _ = unsafe { dnn::destroy_handle(self.handle) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    spec: Conv2dSpec,
    dtype: DType,
    tf32: bool,
    /// Ranked by measurement (benchmark mode) rather than by the heuristics.
    measured: bool,
}

/// The workspace offered to the measured algorithms (the heuristics' choice may take up to
/// [`WORKSPACE_LIMIT`]): an algorithm that needs more is reported as failing to allocate and
/// is not chosen. The block goes back to the caching allocator (`cuda::empty_cache` frees it).
const FIND_WORKSPACE: usize = 256 << 20;

/// Buffers of one plan's geometry for measuring its algorithms: input and filter zeroed
/// (no NaN or denormal skews a timing), output and workspace uninitialised. Every direction
/// writes one of them, so no user buffer is touched.
struct Scratch {
    x: CudaStorage,
    w: CudaStorage,
    y: CudaStorage,
    workspace: CudaStorage,
}

impl Scratch {
    fn new(device: &Arc<CudaDevice>, s: &Conv2dSpec, dtype: DType) -> Result<Scratch> {
        let product = |dims: [usize; 4], what: &str| {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| Error::invalid("conv2d", format!("the {what} {dims:?} overflows the address space")))
        };
        let x = product([s.batch, s.in_h, s.in_w, s.in_channels], "input")?;
        let w = product([s.out_channels, s.kernel_h, s.kernel_w, s.in_channels / s.groups.max(1)], "kernel")?;
        let y = product([s.batch, s.out_h, s.out_w, s.out_channels], "output")?;
        Ok(Scratch {
            x: CudaStorage::zeros(device, x, dtype)?,
            w: CudaStorage::zeros(device, w, dtype)?,
            y: CudaStorage::alloc(device, y, dtype)?,
            workspace: workspace(device, FIND_WORKSPACE)?,
        })
    }

    fn ptrs(&self) -> (*mut c_void, *mut c_void, *mut c_void, *mut c_void) {
        let p = |b: &CudaStorage| b.ptr() as *mut c_void;
        (p(&self.x), p(&self.w), p(&self.y), p(&self.workspace))
    }
}

/// A tensor descriptor, destroyed on drop.
struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// A packed NHWC tensor `[n, h, w, c]` (cuDNN takes the sizes in NCHW order).
    fn nhwc(dtype: sys::cudnnDataType_t, [n, h, w, c]: [c_int; 4]) -> std::result::Result<Self, dnn::CudnnError> {
        let desc = TensorDesc(dnn::create_tensor_descriptor()?);
        // SAFETY: the descriptor was just created and is destroyed only on drop.
        unsafe {
            dnn::set_tensor4d_descriptor(desc.0, sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC, dtype, [n, c, h, w])
        }?;
        Ok(desc)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateTensorDescriptor, destroyed only here.
        let _ = unsafe { dnn::destroy_tensor_descriptor(self.0) };
    }
}

/// A filter descriptor, destroyed on drop.
struct FilterDesc(sys::cudnnFilterDescriptor_t);

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateFilterDescriptor, destroyed only here.
        let _ = unsafe { dnn::destroy_filter_descriptor(self.0) };
    }
}

/// A convolution descriptor, destroyed on drop.
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateConvolutionDescriptor, destroyed only here.
        let _ = unsafe { dnn::destroy_convolution_descriptor(self.0) };
    }
}

/// An activation descriptor of the fused forward call, destroyed on drop.
struct ActivationDesc(sys::cudnnActivationDescriptor_t);

impl ActivationDesc {
    /// `Identity` or `Relu`. NaN propagates, as through the CPU's relu: a NaN that the
    /// activation hid would let a broken run go on silently (a NaN kernel's outputs all 0).
    fn new(activation: ConvActivation) -> std::result::Result<Self, dnn::CudnnError> {
        use sys::cudnnActivationMode_t::{CUDNN_ACTIVATION_IDENTITY, CUDNN_ACTIVATION_RELU};
        let mode = match activation {
            ConvActivation::Identity => CUDNN_ACTIVATION_IDENTITY,
            ConvActivation::Relu => CUDNN_ACTIVATION_RELU,
        };
        let desc = ActivationDesc(dnn::create_activation_descriptor()?);
        // SAFETY: the descriptor was just created and is destroyed only on drop. The
        // coefficient is read only by the clipped ReLU and ELU.
        unsafe { dnn::set_activation_descriptor(desc.0, mode, sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN, 0.0) }?;
        Ok(desc)
    }
}

impl Drop for ActivationDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateActivationDescriptor, destroyed only here.
        let _ = unsafe { sys::cudnnDestroyActivationDescriptor(self.0) };
    }
}

/// The index of an activation's fused call in [`ConvPlan::fused`] and [`Dnn::activations`].
fn fused_slot(activation: ConvActivation) -> usize {
    match activation {
        ConvActivation::Identity => 0,
        ConvActivation::Relu => 1,
    }
}

/// The fused conv-bias-activation call of one activation for one plan: the algorithm and
/// workspace it runs with (`None`: cuDNN cannot run it for this geometry), and whether cuDNN
/// refused it at run time. Either way the caller falls back to the convolution and a
/// separate bias, and the decision is made once per plan.
struct Fused {
    choice: Option<(sys::cudnnConvolutionFwdAlgo_t, usize)>,
    refused: AtomicBool,
}

impl Fused {
    fn new(choice: Option<(sys::cudnnConvolutionFwdAlgo_t, usize)>) -> Fused {
        Fused { choice, refused: AtomicBool::new(false) }
    }

    /// The algorithm and workspace, unless there is none or cuDNN refused them.
    fn usable(&self) -> Option<(sys::cudnnConvolutionFwdAlgo_t, usize)> {
        self.choice.filter(|_| !self.refused.load(Ordering::Relaxed))
    }
}

/// The chosen algorithm of one direction, with its own convolution descriptor (the math
/// type the heuristics returned is a property of the descriptor) and workspace size.
struct Choice<A> {
    algo: A,
    conv: ConvDesc,
    workspace: usize,
}

/// Descriptors and algorithms of one convolution geometry.
pub(crate) struct ConvPlan {
    dtype: DType,
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    bias: TensorDesc,
    forward: Option<Choice<sys::cudnnConvolutionFwdAlgo_t>>,
    backward_data: Option<Choice<sys::cudnnConvolutionBwdDataAlgo_t>>,
    backward_filter: Option<Choice<sys::cudnnConvolutionBwdFilterAlgo_t>>,
    /// `cudnnConvolutionBiasActivationForward` per activation ([`fused_slot`]), with the
    /// forward choice's convolution descriptor.
    fused: [Fused; 2],
}

// SAFETY: the descriptors are immutable after creation (cuDNN only reads them).
unsafe impl Send for ConvPlan {}
unsafe impl Sync for ConvPlan {}

fn to_int(v: usize, what: &str) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| Error::invalid("conv2d", format!("{what} = {v} exceeds cuDNN's 32-bit limit")))
}

/// cuDNN's data type for a dtype's tensors and filters.
fn data_type(dtype: DType) -> Result<sys::cudnnDataType_t> {
    match dtype {
        DType::F32 => Ok(sys::cudnnDataType_t::CUDNN_DATA_FLOAT),
        DType::F64 => Ok(sys::cudnnDataType_t::CUDNN_DATA_DOUBLE),
        DType::BF16 => Ok(sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16),
        DType::F16 => Ok(sys::cudnnDataType_t::CUDNN_DATA_HALF),
        DType::I64 => Err(Error::UnsupportedDType { op: "conv2d", dtype, expected: "f32, f64, bf16 or f16" }),
    }
}

/// The convolution's compute (accumulation) type: f32 for bf16 and f16 data (cuDNN's
/// PSEUDO_BFLOAT16 / PSEUDO_HALF configurations, as the CPU accumulates them), else the
/// data type.
fn compute_type(dtype: DType) -> Result<sys::cudnnDataType_t> {
    if dtype.is_low_precision() {
        Ok(sys::cudnnDataType_t::CUDNN_DATA_FLOAT)
    } else {
        data_type(dtype)
    }
}

/// Whether an algorithm's math type may be used: tensor-core math for f32 only when TF32
/// is allowed (cuDNN's default math may use TF32 on Ampere and newer, so plain f32 asks
/// for FMA math). bf16 and f16 operands lose nothing in tensor cores (they multiply
/// exactly and accumulate in f32), so `tensor_ops` is true for them.
fn math_allowed(math: sys::cudnnMathType_t, tensor_ops: bool) -> bool {
    use sys::cudnnMathType_t::*;
    tensor_ops || !matches!(math, CUDNN_TENSOR_OP_MATH | CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
}

/// One heuristic result, whatever the direction.
struct Ranked<A> {
    algo: A,
    status: sys::cudnnStatus_t,
    memory: usize,
    math: sys::cudnnMathType_t,
    deterministic: bool,
}

impl ConvPlan {
    /// The plan of `s`, each direction ranked by measurement on `scratch` when given, else by
    /// cuDNN's heuristics.
    fn new(
        handle: sys::cudnnHandle_t,
        device: Device,
        s: &Conv2dSpec,
        dtype: DType,
        tf32: bool,
        scratch: Option<&Scratch>,
    ) -> Result<ConvPlan> {
        let cuda_err = |op: &'static str| move |e: dnn::CudnnError| Error::cuda(device, op, e);
        let dt = data_type(dtype)?;
        let compute = compute_type(dtype)?;
        let [n, h, w, c] = [
            to_int(s.batch, "batch")?,
            to_int(s.in_h, "height")?,
            to_int(s.in_w, "width")?,
            to_int(s.in_channels, "channels")?,
        ];
        let [k, r, q] = [
            to_int(s.out_channels, "filters")?,
            to_int(s.kernel_h, "kernel height")?,
            to_int(s.kernel_w, "kernel width")?,
        ];
        let [oh, ow] = [to_int(s.out_h, "output height")?, to_int(s.out_w, "output width")?];
        let groups = to_int(s.groups, "groups")?;
        let group_channels = to_int(s.in_channels / s.groups, "channels per group")?;
        let x = TensorDesc::nhwc(dt, [n, h, w, c]).map_err(cuda_err("cudnnSetTensor4dDescriptor"))?;
        let y = TensorDesc::nhwc(dt, [n, oh, ow, k]).map_err(cuda_err("cudnnSetTensor4dDescriptor"))?;
        let bias = TensorDesc::nhwc(dt, [1, 1, 1, k]).map_err(cuda_err("cudnnSetTensor4dDescriptor"))?;
        let wd = FilterDesc(dnn::create_filter_descriptor().map_err(cuda_err("cudnnCreateFilterDescriptor"))?);
        // SAFETY: the descriptor was just created. NHWC filters are KRSC: (out, kh, kw,
        // in / groups); a grouped filter's C is the channels of one group.
        unsafe {
            dnn::set_filter4d_descriptor(
                wd.0,
                dt,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                [k, group_channels, r, q],
            )
        }
        .map_err(cuda_err("cudnnSetFilter4dDescriptor"))?;
        let geometry = [
            to_int(s.pad_top, "padding")?,
            to_int(s.pad_left, "padding")?,
            to_int(s.stride_h, "stride")?,
            to_int(s.stride_w, "stride")?,
            to_int(s.dilation_h, "dilation")?,
            to_int(s.dilation_w, "dilation")?,
        ];
        let base_math = match (dtype, tf32) {
            (DType::F32, false) => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            (DType::F32, true) => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            _ => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        };
        let conv = |math| -> Result<ConvDesc> {
            // cuDNN's DEFAULT_MATH may use TF32 on Ampere and newer: plain f32 pins FMA math
            // whatever the heuristics ranked the algorithm with.
            let math = if base_math == sys::cudnnMathType_t::CUDNN_FMA_MATH { base_math } else { math };
            let desc =
                ConvDesc(dnn::create_convolution_descriptor().map_err(cuda_err("cudnnCreateConvolutionDescriptor"))?);
            let [ph, pw, u, v, dh, dw] = geometry;
            // SAFETY: the descriptor was just created and is destroyed only on drop.
            unsafe {
                dnn::set_convolution2d_descriptor(
                    desc.0,
                    ph,
                    pw,
                    u,
                    v,
                    dh,
                    dw,
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    compute,
                )
                .map_err(cuda_err("cudnnSetConvolution2dDescriptor"))?;
                dnn::set_convolution_math_type(desc.0, math).map_err(cuda_err("cudnnSetConvolutionMathType"))?;
                dnn::set_convolution_group_count(desc.0, groups).map_err(cuda_err("cudnnSetConvolutionGroupCount"))?;
            }
            Ok(desc)
        };
        let probe = conv(base_math)?;
        let (xd, yd, wdd, cd) = (x.0, y.0, wd.0, probe.0);
        let scratch = scratch.map(Scratch::ptrs);
        // A failed measurement leaves the heuristics' ranking (it only ever saves time).
        let measured = |find: sys::cudnnStatus_t| find == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;

        // SAFETY (the three closures below): every descriptor is live and describes this
        // geometry; the result buffers have room for `requested` entries; the scratch
        // buffers are as large as the descriptors say and the workspace holds
        // FIND_WORKSPACE bytes.
        let forward = choose(
            |requested, returned, results: *mut sys::cudnnConvolutionFwdAlgoPerf_t| unsafe {
                if let Some((sx, sw, sy, ws)) = scratch {
                    let find = sys::cudnnFindConvolutionForwardAlgorithmEx(
                        handle,
                        xd,
                        sx,
                        wdd,
                        sw,
                        cd,
                        yd,
                        sy,
                        requested,
                        returned,
                        results,
                        ws,
                        FIND_WORKSPACE,
                    );
                    if measured(find) {
                        return Ok(());
                    }
                }
                dnn::get_convolution_forward_algorithm(handle, xd, wdd, cd, yd, requested, returned, results)
            },
            |p| Ranked {
                algo: p.algo,
                status: p.status,
                memory: p.memory,
                math: p.mathType,
                deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            },
            |algo, conv: &ConvDesc| unsafe {
                dnn::get_convolution_forward_workspace_size(handle, xd, wdd, conv.0, yd, algo)
            },
            &conv,
            (dtype, tf32),
            (device, "cudnnGetConvolutionForwardAlgorithm_v7"),
        )?;
        let backward_data = choose(
            |requested, returned, results: *mut sys::cudnnConvolutionBwdDataAlgoPerf_t| unsafe {
                if let Some((sx, sw, sy, ws)) = scratch {
                    let find = sys::cudnnFindConvolutionBackwardDataAlgorithmEx(
                        handle,
                        wdd,
                        sw,
                        yd,
                        sy,
                        cd,
                        xd,
                        sx,
                        requested,
                        returned,
                        results,
                        ws,
                        FIND_WORKSPACE,
                    );
                    if measured(find) {
                        return Ok(());
                    }
                }
                dnn::get_convolution_backward_data_algorithm(handle, wdd, yd, cd, xd, requested, returned, results)
            },
            |p| Ranked {
                algo: p.algo,
                status: p.status,
                memory: p.memory,
                math: p.mathType,
                deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            },
            |algo, conv: &ConvDesc| unsafe {
                dnn::get_convolution_backward_data_workspace_size(handle, wdd, yd, conv.0, xd, algo)
            },
            &conv,
            (dtype, tf32),
            (device, "cudnnGetConvolutionBackwardDataAlgorithm_v7"),
        )?;
        let backward_filter = choose(
            |requested, returned, results: *mut sys::cudnnConvolutionBwdFilterAlgoPerf_t| unsafe {
                if let Some((sx, sw, sy, ws)) = scratch {
                    let find = sys::cudnnFindConvolutionBackwardFilterAlgorithmEx(
                        handle,
                        xd,
                        sx,
                        yd,
                        sy,
                        cd,
                        wdd,
                        sw,
                        requested,
                        returned,
                        results,
                        ws,
                        FIND_WORKSPACE,
                    );
                    if measured(find) {
                        return Ok(());
                    }
                }
                dnn::get_convolution_backward_filter_algorithm(handle, xd, yd, cd, wdd, requested, returned, results)
            },
            |p| Ranked {
                algo: p.algo,
                status: p.status,
                memory: p.memory,
                math: p.mathType,
                deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            },
            |algo, conv: &ConvDesc| unsafe {
                dnn::get_convolution_backward_filter_workspace_size(handle, xd, yd, conv.0, wdd, algo)
            },
            &conv,
            (dtype, tf32),
            (device, "cudnnGetConvolutionBackwardFilterAlgorithm_v7"),
        )?;
        let fused = fused_choices(forward.as_ref(), |algo, conv| unsafe {
            // SAFETY: as for the heuristics above.
            dnn::get_convolution_forward_workspace_size(handle, xd, wdd, conv.0, yd, algo)
        });
        Ok(ConvPlan { dtype, x, w: wd, y, bias, forward, backward_data, backward_filter, fused })
    }
}

/// The fused call's algorithm per activation. ReLU runs with the forward direction's
/// algorithm. The identity runs only with IMPLICIT_PRECOMP_GEMM (cuDNN's rule for
/// `CUDNN_ACTIVATION_IDENTITY`): the forward choice's, or that algorithm with the forward
/// choice's descriptor if cuDNN gives it a workspace within the limit. Any failure of that
/// query means "not fused": the fallback is the unfused path, which always works.
fn fused_choices(
    forward: Option<&Choice<sys::cudnnConvolutionFwdAlgo_t>>,
    workspace: impl Fn(sys::cudnnConvolutionFwdAlgo_t, &ConvDesc) -> std::result::Result<usize, dnn::CudnnError>,
) -> [Fused; 2] {
    use sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM as PRECOMP;
    let Some(forward) = forward else { return [Fused::new(None), Fused::new(None)] };
    let identity = if forward.algo == PRECOMP {
        Some((PRECOMP, forward.workspace))
    } else {
        workspace(PRECOMP, &forward.conv).ok().filter(|&bytes| bytes <= WORKSPACE_LIMIT).map(|bytes| (PRECOMP, bytes))
    };
    [Fused::new(identity), Fused::new(Some((forward.algo, forward.workspace)))]
}

/// Up to this many heuristic results are read per direction (cuDNN has at most 8 algorithms).
const MAX_ALGOS: usize = 8;

/// The first algorithm of the ranking (the heuristics', or the measured one: fastest first)
/// that is deterministic, supported, has an
/// allowed math type, and whose workspace (queried again with the descriptor set to its
/// math type) is within the limit; failing that, the first such non-deterministic one.
/// `Ok(None)` when there is none.
fn choose<P: Copy, A: Copy>(
    heuristics: impl Fn(c_int, *mut c_int, *mut P) -> std::result::Result<(), dnn::CudnnError>,
    rank: impl Fn(&P) -> Ranked<A>,
    workspace: impl Fn(A, &ConvDesc) -> std::result::Result<usize, dnn::CudnnError>,
    conv: &dyn Fn(sys::cudnnMathType_t) -> Result<ConvDesc>,
    (dtype, tf32): (DType, bool),
    (device, op): (Device, &'static str),
) -> Result<Option<Choice<A>>> {
    // f64 is a correctness path that the CPU can always take over; f32 is the fast path,
    // where an unexpected status should stop the run rather than slow it down.
    let no_algorithm = |e: &dnn::CudnnError| dtype == DType::F64 || is_not_supported(e);
    let mut results: Vec<std::mem::MaybeUninit<P>> = (0..MAX_ALGOS).map(|_| std::mem::MaybeUninit::uninit()).collect();
    let mut returned: c_int = 0;
    match heuristics(MAX_ALGOS as c_int, &mut returned, results.as_mut_ptr().cast()) {
        Ok(()) => {}
        Err(e) if no_algorithm(&e) => return Ok(None),
        Err(e) => return Err(Error::cuda(device, op, e)),
    }
    let returned = (returned.max(0) as usize).min(MAX_ALGOS);
    // SAFETY: cuDNN wrote the first `returned` entries.
    let ranked: Vec<Ranked<A>> =
        results[..returned].iter().map(|slot| rank(unsafe { slot.assume_init_ref() })).collect();
    let (deterministic, others): (Vec<_>, Vec<_>) = ranked.into_iter().partition(|r| r.deterministic);
    for ranked in deterministic.into_iter().chain(others) {
        if ranked.status != sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
            || !math_allowed(ranked.math, tf32 || dtype.is_low_precision())
            || ranked.memory > WORKSPACE_LIMIT
        {
            continue;
        }
        let desc = conv(ranked.math)?;
        match workspace(ranked.algo, &desc) {
            Ok(bytes) if bytes <= WORKSPACE_LIMIT => {
                return Ok(Some(Choice { algo: ranked.algo, conv: desc, workspace: bytes }))
            }
            Ok(_) => continue,
            Err(e) if no_algorithm(&e) => continue,
            Err(e) => return Err(Error::cuda(device, "cudnnGetConvolutionWorkspaceSize", e)),
        }
    }
    Ok(None)
}

/// The host scaling factors cuDNN blends with (`out = alpha * result + beta * out`):
/// doubles for f64 data, floats otherwise.
enum Scaling {
    F32(f32, f32),
    F64(f64, f64),
}

impl Scaling {
    fn new(dtype: DType, alpha: f64, beta: f64) -> Scaling {
        match dtype {
            DType::F64 => Scaling::F64(alpha, beta),
            _ => Scaling::F32(alpha as f32, beta as f32),
        }
    }

    fn alpha(&self) -> *const c_void {
        match self {
            Scaling::F32(a, _) => (a as *const f32).cast(),
            Scaling::F64(a, _) => (a as *const f64).cast(),
        }
    }

    fn beta(&self) -> *const c_void {
        match self {
            Scaling::F32(_, b) => (b as *const f32).cast(),
            Scaling::F64(_, b) => (b as *const f64).cast(),
        }
    }
}

/// A workspace of `bytes` from the caching allocator, returned to it on drop (safe before
/// the queued call has run: only work queued later on the same stream can reuse it).
fn workspace(device: &Arc<CudaDevice>, bytes: usize) -> Result<CudaStorage> {
    CudaStorage::alloc(device, bytes.div_ceil(4), DType::F32)
}

/// What a queued cuDNN call gave: done, or "this configuration is not supported" (the
/// caller falls back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// The call was queued on the stream.
    Done,
    /// cuDNN has no algorithm for it.
    NotSupported,
}

fn queued(device: Device, op: &'static str, r: std::result::Result<(), dnn::CudnnError>) -> Result<Queued> {
    match r {
        Ok(()) => Ok(Queued::Done),
        Err(e) if is_not_supported(&e) => Ok(Queued::NotSupported),
        Err(e) => Err(Error::cuda(device, op, e)),
    }
}

/// The addresses the calls below take are device addresses of live buffers of the plan's
/// dtype, each as large as the plan's descriptors say (`x` the input, `w` the filter, `y`
/// the output, `b` the bias). Every call is queued on the device's stream; none waits.
impl Dnn {
    /// Queues one direction's cuDNN call with its chosen algorithm, a workspace from the
    /// caching allocator and `out = 1 * result + 0 * out`; `NotSupported` where the plan
    /// has no algorithm for the direction.
    fn run<A: Copy>(
        &self,
        device: &Arc<CudaDevice>,
        plan: &ConvPlan,
        choice: &Option<Choice<A>>,
        op: &'static str,
        call: impl FnOnce(&Choice<A>, &Scaling, *mut c_void) -> std::result::Result<(), dnn::CudnnError>,
    ) -> Result<Queued> {
        let Some(choice) = choice else { return Ok(Queued::NotSupported) };
        let space = workspace(device, choice.workspace)?;
        let scaling = Scaling::new(plan.dtype, 1.0, 0.0);
        device.bind()?;
        queued(device.device(), op, call(choice, &scaling, space.ptr() as *mut c_void))
    }

    /// `y = conv(x, w)`.
    pub(crate) fn forward(&self, device: &Arc<CudaDevice>, plan: &ConvPlan, x: u64, w: u64, y: u64) -> Result<Queued> {
        self.run(device, plan, &plan.forward, "cudnnConvolutionForward", |c, s, space| {
            // SAFETY: the handle and descriptors are live; the pointers satisfy the contract
            // above; the workspace holds at least `c.workspace` bytes; alpha and beta are
            // host values read before the call returns.
            unsafe {
                dnn::convolution_forward(
                    self.handle,
                    s.alpha(),
                    plan.x.0,
                    x as *const c_void,
                    plan.w.0,
                    w as *const c_void,
                    c.conv.0,
                    c.algo,
                    space,
                    c.workspace,
                    s.beta(),
                    plan.y.0,
                    y as *mut c_void,
                )
            }
        })
    }

    /// `dx = conv_backward_data(w, dy)` (the gradient with respect to the input).
    pub(crate) fn backward_data(
        &self,
        device: &Arc<CudaDevice>,
        plan: &ConvPlan,
        w: u64,
        dy: u64,
        dx: u64,
    ) -> Result<Queued> {
        self.run(device, plan, &plan.backward_data, "cudnnConvolutionBackwardData", |c, s, space| {
            // SAFETY: as in `forward`.
            unsafe {
                dnn::convolution_backward_data(
                    self.handle,
                    s.alpha(),
                    plan.w.0,
                    w as *const c_void,
                    plan.y.0,
                    dy as *const c_void,
                    c.conv.0,
                    c.algo,
                    space,
                    c.workspace,
                    s.beta(),
                    plan.x.0,
                    dx as *mut c_void,
                )
            }
        })
    }

    /// `dw = conv_backward_filter(x, dy)` (the gradient with respect to the filter).
    pub(crate) fn backward_filter(
        &self,
        device: &Arc<CudaDevice>,
        plan: &ConvPlan,
        x: u64,
        dy: u64,
        dw: u64,
    ) -> Result<Queued> {
        self.run(device, plan, &plan.backward_filter, "cudnnConvolutionBackwardFilter", |c, s, space| {
            // SAFETY: as in `forward`.
            unsafe {
                dnn::convolution_backward_filter(
                    self.handle,
                    s.alpha(),
                    plan.x.0,
                    x as *const c_void,
                    plan.y.0,
                    dy as *const c_void,
                    c.conv.0,
                    c.algo,
                    space,
                    c.workspace,
                    s.beta(),
                    plan.w.0,
                    dw as *mut c_void,
                )
            }
        })
    }

    /// `y = activation(conv(x, w) + b)` in one call (`cudnnConvolutionBiasActivationForward`,
    /// `alpha1 = 1`, `alpha2 = 0` with `z = y`, which cuDNN then does not read), the sum and
    /// the activation in the compute type before the one rounding to y's type. The bias has
    /// y's dtype (cuDNN's FLOAT, DOUBLE, PSEUDO_HALF and PSEUDO_BFLOAT16 configurations).
    /// `NotSupported` where the plan has no algorithm for it or cuDNN refused it before;
    /// a refusal now is remembered in the plan, so each geometry asks once.
    pub(crate) fn forward_fused(
        &self,
        device: &Arc<CudaDevice>,
        plan: &ConvPlan,
        activation: ConvActivation,
        (x, w, b): (u64, u64, u64),
        y: u64,
    ) -> Result<Queued> {
        let slot = &plan.fused[fused_slot(activation)];
        let (Some((algo, bytes)), Some(forward)) = (slot.usable(), plan.forward.as_ref()) else {
            return Ok(Queued::NotSupported);
        };
        let space = workspace(device, bytes)?;
        let s = Scaling::new(plan.dtype, 1.0, 0.0);
        device.bind()?;
        // SAFETY: as in `forward`; `b` holds out_channels elements; z is y, which cuDNN does
        // not read with alpha2 = 0; the activation descriptor lives as long as the handle.
        let result = unsafe {
            dnn::convolution_bias_activation_forward(
                self.handle,
                s.alpha(),
                plan.x.0,
                x as *const c_void,
                plan.w.0,
                w as *const c_void,
                forward.conv.0,
                algo,
                space.ptr() as *mut c_void,
                bytes,
                s.beta(),
                plan.y.0,
                y as *const c_void,
                plan.bias.0,
                b as *const c_void,
                self.activations[fused_slot(activation)].0,
                plan.y.0,
                y as *mut c_void,
            )
        };
        // The fused call's rules (the bias dtype per configuration, NaN propagation with
        // ReLU) have not met a real cuDNN yet: a parameter refusal is treated as "not
        // supported" too, said once, and the unfused path (which reports its own errors)
        // takes over for this geometry.
        let result = match result {
            Err(e) if is_bad_param(&e) => {
                eprintln!(
                    "tapegrad: cudnnConvolutionBiasActivationForward refused a {:?} {:?} convolution ({e:?}); \
                     running the convolution and the bias separately for this shape",
                    plan.dtype, activation
                );
                Ok(Queued::NotSupported)
            }
            other => queued(device.device(), "cudnnConvolutionBiasActivationForward", other),
        };
        let queued = result?;
        if queued == Queued::NotSupported {
            slot.refused.store(true, Ordering::Relaxed);
        }
        Ok(queued)
    }

    /// `y += b`, the bias `[out_channels]` broadcast over every output pixel.
    pub(crate) fn add_bias(&self, device: &Arc<CudaDevice>, plan: &ConvPlan, b: u64, y: u64) -> Result<()> {
        let s = Scaling::new(plan.dtype, 1.0, 1.0);
        device.bind()?;
        // SAFETY: as in `forward`; `b` holds out_channels elements.
        unsafe {
            sys::cudnnAddTensor(
                self.handle,
                s.alpha(),
                plan.bias.0,
                b as *const c_void,
                s.beta(),
                plan.y.0,
                y as *mut c_void,
            )
        }
        .result()
        .map_err(|e| Error::cuda(device.device(), "cudnnAddTensor", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cuda_or_skip;

    #[test]
    fn benchmark_mode_measures_each_geometry_once_and_takes_the_fastest_deterministic_algorithm() {
        let test = "benchmark_mode_measures_each_geometry_once_and_takes_the_fastest_deterministic_algorithm";
        let Some((_lock, Device::Cuda(ordinal))) = cuda_or_skip(test) else { return };
        let device = CudaDevice::get(ordinal).unwrap();
        let spec = |batch| Conv2dSpec {
            batch,
            in_h: 6,
            in_w: 5,
            in_channels: 3,
            out_channels: 4,
            groups: 1,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 1,
            pad_bottom: 1,
            pad_left: 1,
            pad_right: 1,
            out_h: 6,
            out_w: 5,
        };
        use sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 as DATA_1;
        use sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 as FILTER_1;
        use sys::cudnnConvolutionFwdAlgo_t::{
            CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM as FWD_0,
            CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM as FWD_1,
        };
        let algos = |plan: &ConvPlan| {
            (
                plan.forward.as_ref().map(|c| c.algo),
                plan.backward_data.as_ref().map(|c| c.algo),
                plan.backward_filter.as_ref().map(|c| c.algo),
            )
        };
        let plan = |batch| device.with_dnn(|dnn| dnn.plan(&device, &spec(batch), DType::F32)).unwrap();
        // The fake cuDNN's heuristics rank the forward algorithm 1 first; its measurement
        // finds algorithm 0 faster. Backward, 0 is faster but not deterministic: 1 either way.
        let ranked = plan(7);
        assert_eq!(algos(&ranked), (Some(FWD_1), Some(DATA_1), Some(FILTER_1)));
        crate::cuda::set_cudnn_benchmark(true);
        let measured = plan(7);
        let again = plan(7);
        crate::cuda::set_cudnn_benchmark(false);
        assert_eq!(algos(&measured), (Some(FWD_0), Some(DATA_1), Some(FILTER_1)));
        assert!(Arc::ptr_eq(&measured, &again), "one measurement per geometry");
        assert!(Arc::ptr_eq(&ranked, &plan(7)), "the heuristics' plan is kept beside the measured one");
    }

    #[test]
    fn the_missing_library_message_says_how_to_get_it() {
        let msg = super::unavailable_message();
        for needle in ["libcudnn", "convolution", "pip install nvidia-cudnn-cu13", "LD_LIBRARY_PATH"] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
    }
}
