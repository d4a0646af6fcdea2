//! The GPU check's first step (scripts/gpu-check.sh runs it with `--nocapture`): prints
//! the driver, NVRTC, cuBLAS and cuDNN versions, the device, the library files this
//! process actually loaded and the kernel cache's state, after a matmul, a convolution
//! and an elementwise op have run and matched the CPU. A wrong library found first on the
//! search path (a toolkit's or a stub `libcuda.so`) shows up here, before anything slow.
//!
//! Without a usable GPU it prints `SKIPPED` and passes; `REQUIRE_GPU=1` makes it fail.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::ffi::c_int;
use tapegrad_tensor::{cuda, Conv2dParams, DType, Device, Padding, Tensor};

/// `f`'s value, or why it could not be had. A library without the symbol (an old or fake
/// one) makes cudarc panic; that is a finding to print, not a failure.
fn query(f: impl FnOnce() -> Result<String, String> + std::panic::UnwindSafe) -> String {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => format!("unknown ({e})"),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("unknown ({msg})")
        }
    }
}

fn driver_version() -> Result<String, String> {
    let mut v: c_int = 0;
    // SAFETY: the driver is loaded (ensure_available succeeded); `v` is a live local.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result().map_err(|e| format!("{e:?}"))?;
    Ok(format!("{v} (CUDA {}.{})", v / 1000, (v % 1000) / 10))
}

fn cublas_version() -> Result<String, String> {
    use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType_t as P};
    let mut parts = [0 as c_int; 3];
    for (slot, property) in parts.iter_mut().zip([P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL]) {
        // SAFETY: needs no handle; `slot` is a live local.
        unsafe { cublasGetProperty(property, slot) }.result().map_err(|e| format!("{e:?}"))?;
    }
    Ok(format!("{}.{}.{}", parts[0], parts[1], parts[2]))
}

fn cudnn_version() -> Result<String, String> {
    // SAFETY: takes nothing, returns a number.
    let v = unsafe { cudarc::cudnn::sys::cudnnGetVersion() };
    Ok(format!("{v} ({}.{}.{})", v / 10000, (v % 10000) / 100, v % 100))
}

fn device_description() -> Result<String, String> {
    let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| format!("{e:?}"))?;
    let name = ctx.name().map_err(|e| format!("{e:?}"))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
    Ok(format!("{name}, compute capability {major}.{minor}"))
}

/// The CUDA libraries mapped into this process, as the files they resolved to.
fn loaded_libraries() -> Vec<String> {
    const NAMES: [&str; 8] = [
        "libcuda",
        "libnvrtc",
        "libcublas",
        "libcublasLt",
        "libcudnn",
        "libnvJitLink",
        "libcudart",
        "libtapegrad_cuda_emu",
    ];
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut paths: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let file = path.rsplit('/').next().unwrap_or("");
            NAMES.iter().any(|n| file.starts_with(n))
        })
        .map(str::to_string)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[test]
fn report_versions_and_loaded_libraries() {
    if let Err(e) = cuda::ensure_available(0) {
        if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("report_versions_and_loaded_libraries: REQUIRE_GPU=1 but {e}");
        }
        eprintln!("SKIPPED report_versions_and_loaded_libraries: {e}");
        return;
    }
    let gpu = Device::Cuda(0);
    let mut rng = StdRng::seed_from_u64(3);
    let a = Tensor::rand_normal([33, 70], 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let b = Tensor::rand_normal([70, 9], 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let x = Tensor::rand_normal([2, 8, 8, 3], 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let k = Tensor::rand_normal([5, 3, 3, 3], 0.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
    let params = Conv2dParams { strides: (1, 1), padding: Padding::Same, dilation: (1, 1), groups: 1 };
    let work = |a: &Tensor, b: &Tensor, x: &Tensor, k: &Tensor| -> Vec<Vec<f64>> {
        let mm = a.matmul(b).and_then(|t| t.relu()).unwrap_or_else(|e| panic!("matmul + relu on {}: {e}", a.device()));
        let conv = x.conv2d(k, None, &params).unwrap_or_else(|e| panic!("conv2d on {}: {e}", x.device()));
        vec![mm.to_vec_f64().unwrap(), conv.to_vec_f64().unwrap()]
    };
    let start = std::time::Instant::now();
    let up = |t: &Tensor| t.to_device(&gpu).unwrap();
    let got = work(&up(&a), &up(&b), &up(&x), &up(&k));
    let first_use = start.elapsed();
    let want = work(&a, &b, &x, &k);

    println!("preflight: device       {}", query(device_description));
    println!("preflight: driver       {}", query(driver_version));
    println!(
        "preflight: nvrtc        {}",
        query(|| cuda::nvrtc_version().map(|(a, b)| format!("{a}.{b}")).map_err(|e| e.to_string()))
    );
    println!("preflight: cublas       {}", query(cublas_version));
    println!("preflight: cudnn        {}", query(cudnn_version));
    println!("preflight: tf32         {}", cuda::tf32_enabled());
    println!("preflight: first use    {:.2} s (NVRTC compiles or cache reads included)", first_use.as_secs_f64());
    println!("preflight: {}", cuda::kernel_cache_report());
    for path in loaded_libraries() {
        println!("preflight: loaded       {path}");
    }
    for (what, (g, w)) in ["matmul + relu", "conv2d"].iter().zip(got.iter().zip(&want)) {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (b.abs() + 1.0), "{what}: element {i}: cuda {a} vs cpu {b}");
        }
    }
}
