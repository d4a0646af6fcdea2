//! cuBLAS: one handle per device, bound to the device's stream, and the strided-batched
//! GEMM the matmul op uses. TF32 tensor-core math for f32 products is an explicit opt-in
//! ([`crate::cuda::set_tf32`]); by default f32 products are computed in full f32.
//! bf16 and f16 products read and write two-byte matrices and accumulate in f32
//! (`CUBLAS_COMPUTE_32F`, never TF32), rounding once per output element, as the CPU does.

use super::device::CudaDevice;
use crate::{DType, Error, Result};
use cudarc::cublas::{result as cublas, sys as cublas_sys};
use std::ffi::{c_longlong, c_void};
use std::sync::OnceLock;

const CUBLAS_HELP: &str = "install the CUDA toolkit, or `pip install nvidia-cublas==13.0.*` and put its \
     nvidia/cu13/lib folder on LD_LIBRARY_PATH";

/// A cuBLAS handle whose work goes to its device's stream.
pub(crate) struct BlasHandle(cublas_sys::cublasHandle_t);

// SAFETY: a cuBLAS handle may be used from any thread, one thread at a time; the device
// keeps it behind a mutex.
unsafe impl Send for BlasHandle {}

impl BlasHandle {
    pub(crate) fn new(device: &CudaDevice) -> Result<BlasHandle> {
        static LOADABLE: OnceLock<bool> = OnceLock::new();
        // SAFETY: only tries to dlopen libcublas under its known names; calls nothing in it.
        if !*LOADABLE.get_or_init(|| unsafe { cublas_sys::is_culib_present() }) {
            return Err(Error::DeviceUnavailable {
                device: device.device(),
                msg: format!("the cuBLAS library (libcublas.so) could not be loaded: {CUBLAS_HELP}"),
            });
        }
        device.bind()?;
        let handle = cublas::create_handle().map_err(|e| Error::cuda(device.device(), "cublasCreate", e))?;
        let handle = BlasHandle(handle);
        // SAFETY: both the handle and the stream are live; the stream outlives the handle
        // (the device owns both and is never dropped before process exit).
        unsafe { cublas::set_stream(handle.0, device.stream().cu_stream() as cublas_sys::cudaStream_t) }
            .map_err(|e| Error::cuda(device.device(), "cublasSetStream", e))?;
        Ok(handle)
    }
}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: the handle was created by cublasCreate and is destroyed only here; a
        // failure cannot be acted on.
        let _ = unsafe { cublas::destroy_handle(self.0) };
    }
}

/// A column-major strided-batched GEMM `C[b] = op(A[b]) op(B[b])` (cuBLAS' convention;
/// the matmul op maps row-major products onto it). Strides are in elements; a stride of 0
/// shares one matrix across the batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub(crate) transa: bool,
    pub(crate) transb: bool,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) lda: usize,
    pub(crate) ldb: usize,
    pub(crate) ldc: usize,
    pub(crate) stride_a: usize,
    pub(crate) stride_b: usize,
    pub(crate) stride_c: usize,
    pub(crate) batch: usize,
}

fn to_int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid("matmul", format!("{what} = {v} exceeds cuBLAS' 32-bit limit")))
}

fn to_long(v: usize, what: &str) -> Result<c_longlong> {
    c_longlong::try_from(v).map_err(|_| Error::invalid("matmul", format!("{what} = {v} exceeds cuBLAS' 64-bit limit")))
}

/// Queues `g` on the device's stream. `a`, `b`, `c` are device addresses of buffers of
/// `dtype` (f32 or f64) large enough for the sizes and strides in `g`; all of m, n, k
/// must be positive.
pub(crate) fn gemm_strided_batched(device: &CudaDevice, dtype: DType, g: &Gemm, a: u64, b: u64, c: u64) -> Result<()> {
    let op = |t: bool| {
        if t {
            cublas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            cublas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (m, n, k) = (to_int(g.m, "m")?, to_int(g.n, "n")?, to_int(g.k, "k")?);
    let (lda, ldb, ldc) = (to_int(g.lda, "lda")?, to_int(g.ldb, "ldb")?, to_int(g.ldc, "ldc")?);
    let (sa, sb, sc) = (to_long(g.stride_a, "stride")?, to_long(g.stride_b, "stride")?, to_long(g.stride_c, "stride")?);
    let batch = to_int(g.batch, "batch")?;
    let dev = device.device();
    device.bind()?;
    device.with_blas(|handle| {
        match dtype {
            DType::F32 | DType::BF16 | DType::F16 => {
                let (alpha, beta) = (1.0f32, 0.0f32);
                let compute = if dtype == DType::F32 && crate::cuda::tf32_enabled() {
                    cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
                } else {
                    cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
                };
                let data = match dtype {
                    DType::BF16 => cublas_sys::cudaDataType::CUDA_R_16BF,
                    DType::F16 => cublas_sys::cudaDataType::CUDA_R_16F,
                    _ => cublas_sys::cudaDataType::CUDA_R_32F,
                };
                // SAFETY: the caller guarantees that a, b and c hold matrices of `dtype` of the
                // given sizes, leading dimensions and strides; alpha and beta are host
                // values that live across the call (cuBLAS reads them before returning).
                unsafe {
                    cublas::gemm_strided_batched_ex(
                        handle.0,
                        op(g.transa),
                        op(g.transb),
                        m,
                        n,
                        k,
                        (&alpha as *const f32).cast::<c_void>(),
                        a as *const c_void,
                        data,
                        lda,
                        sa,
                        b as *const c_void,
                        data,
                        ldb,
                        sb,
                        (&beta as *const f32).cast::<c_void>(),
                        c as *mut c_void,
                        data,
                        ldc,
                        sc,
                        batch,
                        compute,
                        cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                    )
                }
                .map_err(|e| Error::cuda(dev, "cublasGemmStridedBatchedEx", e))
            }
            DType::F64 => {
                let (alpha, beta) = (1.0f64, 0.0f64);
                // SAFETY: as above, for f64 matrices.
                unsafe {
                    cublas::dgemm_strided_batched(
                        handle.0,
                        op(g.transa),
                        op(g.transb),
                        m,
                        n,
                        k,
                        &alpha,
                        a as *const f64,
                        lda,
                        sa,
                        b as *const f64,
                        ldb,
                        sb,
                        &beta,
                        c as *mut f64,
                        ldc,
                        sc,
                        batch,
                    )
                }
                .map_err(|e| Error::cuda(dev, "cublasDgemmStridedBatched", e))
            }
            DType::I64 => Err(Error::UnsupportedDType { op: "matmul", dtype, expected: "f32 or f64" }),
        }
    })
}
