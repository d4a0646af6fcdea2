//! The activation ops (and erf, log1p, expm1) on CUDA against the CPU backend, forward and
//! gradient, in f32 and f64, on inputs that include NaN, +/-Inf and +/-0.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;
use tapegrad_tensor::{cuda, DType, Device, GradientTape, Result, Tensor};

static GPU_LOCK: Mutex<()> = Mutex::new(());

type Activation = fn(&Tensor) -> Result<Tensor>;

/// Every activation, on inputs spread over [-12, 12] (normal with sd 4) so that both
/// sides of every kink (0, ±3, 6) and the saturated tails are covered.
const CASES: &[(&str, Activation)] = &[
    ("erf", |x| x.erf()),
    ("log1p", |x| x.abs()?.log1p()),
    ("expm1", |x| x.expm1()),
    ("relu6", |x| x.relu6()),
    ("relu_max", |x| x.relu_max(2.5)),
    ("leaky_relu", |x| x.leaky_relu(0.3)),
    ("elu", |x| x.elu(0.7)),
    ("gelu", |x| x.gelu(false)),
    ("gelu_tanh", |x| x.gelu(true)),
    ("silu", |x| x.silu()),
    ("mish", |x| x.mish()),
    ("softplus", |x| x.softplus()),
    ("softsign", |x| x.softsign()),
    ("hard_sigmoid", |x| x.hard_sigmoid()),
    ("hard_swish", |x| x.hard_swish()),
];

/// Output and input gradient of `sum(f(x) * w)`.
fn forward_backward(f: Activation, x: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let tape = GradientTape::new();
    tape.watch(x);
    let (y, loss) = tape.record(|| {
        let y = f(x)?;
        let loss = y.mul(w)?.sum_all()?;
        Ok((y, loss))
    })?;
    let dx = tape.gradient(&loss, &[x])?.remove(0).expect("x is watched");
    Ok((y, dx))
}

/// `|a - b| <= tol * (|b| + 1)` elementwise; NaN and +/-Inf must match exactly.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_finite() && b.is_finite() {
            a == b || (a - b).abs() <= tol * (b.abs() + 1.0)
        } else {
            a == b || (a.is_nan() && b.is_nan())
        };
        assert!(ok, "{what}: element {i}: cuda {a} vs cpu {b} (tolerance {tol})");
    }
}

/// `x` with its first elements replaced by NaN, +/-Inf, +/-0 and +/-1e30: each activation
/// must pass them on (forward and gradient) exactly as the CPU does.
fn with_special_values(x: Tensor) -> Tensor {
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e30, -1e30];
    let mut v = x.to_vec_f64().unwrap();
    v[..specials.len()].copy_from_slice(&specials);
    Tensor::from_vec(v, x.shape().clone(), &Device::Cpu).unwrap().cast(x.dtype()).unwrap()
}

#[test]
fn activations_match_cpu() {
    let _guard = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = cuda::ensure_available(0) {
        if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("activations_match_cpu: REQUIRE_GPU=1 but {e}");
        }
        eprintln!("SKIPPED activations_match_cpu: {e}");
        return;
    }
    let gpu = Device::Cuda(0);
    let mut rng = StdRng::seed_from_u64(7);
    for dtype in [DType::F32, DType::F64] {
        // Math libraries differ by an ulp or two between host and device.
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        let x = with_special_values(Tensor::rand_normal([5, 67], 0.0, 4.0, dtype, &Device::Cpu, &mut rng).unwrap());
        let w = Tensor::rand_normal([5, 67], 0.0, 1.0, dtype, &Device::Cpu, &mut rng).unwrap();
        let (xg, wg) = (x.to_device(&gpu).unwrap(), w.to_device(&gpu).unwrap());
        for (name, f) in CASES {
            let (y, dx) = forward_backward(*f, &x, &w).unwrap_or_else(|e| panic!("{name} on cpu: {e}"));
            let (yg, dxg) = forward_backward(*f, &xg, &wg).unwrap_or_else(|e| panic!("{name} on cuda: {e}"));
            assert_eq!(yg.device(), gpu, "{name}: output device");
            assert_close(&format!("{name} {dtype} forward"), &yg, &y, tol);
            assert_close(&format!("{name} {dtype} gradient"), &dxg, &dx, tol);
        }
    }
}
