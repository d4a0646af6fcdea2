//! Where a tensor's storage lives.

/// A compute device. `Cuda` exists in every build so that code naming it compiles
/// everywhere; without the `cuda` feature, using it is an [`Error`](crate::Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU (rayon threads, the `gemm` crate).
    #[default]
    Cpu,
    /// An NVIDIA GPU, by ordinal.
    Cuda(usize),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The first CUDA device if one is usable (built with the `cuda` feature, a driver and
    /// a GPU present, NVRTC and cuBLAS loadable), else the CPU. The reason a GPU is not
    /// usable is available from [`cuda::ensure_available`](crate::cuda::ensure_available).
    pub fn cuda_if_available() -> Device {
        if crate::cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
