//! Every op on CUDA against the CPU backend, forward and gradients (through
//! GradientTape), on random inputs; the allocator's reuse; out-of-memory and device
//! errors.
//!
//! Without a usable GPU every GPU test prints `SKIPPED <test>: <reason>` on stderr and
//! passes; `REQUIRE_GPU=1` turns that into a failure (set it on GPU machines). Tests take
//! one lock so they run one at a time on the device: the TF32 switch is global and the
//! allocator test counts the device's allocations.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use tapegrad_tensor::testing::{cuda_or_skip, gpu_lock};
use tapegrad_tensor::{cuda, Conv2dParams, DType, Device, Error, GradientTape, Padding, Result, Tensor};

/// How to draw an input.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// Standard normal floats.
    Normal,
    /// Floats in [0.5, 2) (for log, sqrt, recip, powf, divisors).
    Positive,
    /// Integers in `0..n` (labels), as i64.
    Labels(usize),
    /// Integers in -20..20, as i64.
    Ints,
    /// Floats: normal with sd 3, every third element replaced in turn by NaN, +Inf, -Inf,
    /// -0.0, 0.0 or +/-1e30 (a finite value that overflows on the way).
    Special,
}

/// The values [`Input::Special`] mixes in, in order.
const SPECIAL_VALUES: [f64; 7] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e30, -1e30];

/// One op applied to inputs of the given shapes.
struct Case {
    name: &'static str,
    inputs: Vec<(Vec<usize>, DType, Input)>,
    f: fn(&[Tensor]) -> Result<Tensor>,
    /// Whether to compare gradients too (float inputs are watched).
    differentiable: bool,
}

fn case(
    name: &'static str,
    inputs: &[(&[usize], DType, Input)],
    differentiable: bool,
    f: fn(&[Tensor]) -> Result<Tensor>,
) -> Case {
    Case { name, inputs: inputs.iter().map(|(s, d, i)| (s.to_vec(), *d, *i)).collect(), f, differentiable }
}

fn draw(shape: &[usize], dtype: DType, input: Input, rng: &mut StdRng) -> Result<Tensor> {
    use rand::Rng;
    let n: usize = shape.iter().product();
    match input {
        Input::Normal => Tensor::rand_normal(shape.to_vec(), 0.0, 1.0, dtype, &Device::Cpu, rng),
        Input::Positive => Tensor::rand_uniform(shape.to_vec(), 0.5, 2.0, dtype, &Device::Cpu, rng),
        Input::Labels(k) => {
            Tensor::from_vec((0..n).map(|_| rng.random_range(0..k as i64)).collect(), shape.to_vec(), &Device::Cpu)
        }
        Input::Ints => {
            Tensor::from_vec((0..n).map(|_| rng.random_range(-20i64..20)).collect(), shape.to_vec(), &Device::Cpu)
        }
        Input::Special => {
            let normal = Tensor::rand_normal(shape.to_vec(), 0.0, 3.0, DType::F64, &Device::Cpu, rng)?.to_vec_f64()?;
            let mixed: Vec<f64> = normal
                .into_iter()
                .enumerate()
                .map(|(i, v)| if i % 3 == 0 { SPECIAL_VALUES[(i / 3) % SPECIAL_VALUES.len()] } else { v })
                .collect();
            Tensor::from_vec(mixed, shape.to_vec(), &Device::Cpu)?.cast(dtype)
        }
    }
}

/// `|a - b| <= tol * (|b| + max|b|)` elementwise: relative to each value and to the
/// tensor's finite scale (a sum near zero of large terms keeps the terms' rounding); i64
/// exact. NaN and +/-Inf must match exactly (an infinite tolerance would accept anything).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let tol = if want.dtype() == DType::I64 { 0.0 } else { tol };
    let scale = w.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_finite() && b.is_finite() {
            a == b || (a - b).abs() <= tol * (b.abs() + scale)
        } else {
            a == b || (a.is_nan() && b.is_nan())
        };
        assert!(ok, "{what}: element {i} of {}: cuda {a} vs cpu {b} (tolerance {tol})", want.shape());
    }
}

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        _ => 1e-10,
    }
}

/// Runs `f` under a tape; returns the output and, if differentiable, the gradients of
/// `sum(output * out_grad)` with respect to every float input.
fn run(c: &Case, inputs: &[Tensor], out_grad: Option<&Tensor>) -> Result<(Tensor, Vec<Option<Tensor>>)> {
    let tape = GradientTape::new();
    for x in inputs.iter().filter(|x| x.dtype().is_float()) {
        tape.watch(x);
    }
    let y = tape.record(|| (c.f)(inputs))?;
    let grads = match out_grad {
        Some(w) if c.differentiable => {
            let sources: Vec<&Tensor> = inputs.iter().filter(|x| x.dtype().is_float()).collect();
            tape.gradient_with_output_gradient(&y, &sources, w)?
        }
        _ => Vec::new(),
    };
    Ok((y, grads))
}

/// Compares a case on CUDA with the CPU, forward and backward.
fn check(c: &Case, device: Device, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let cpu: Vec<Tensor> =
        c.inputs.iter().map(|(s, d, i)| draw(s, *d, *i, &mut rng)).collect::<Result<_>>().expect("inputs");
    let gpu: Vec<Tensor> = cpu.iter().map(|t| t.to_device(&device)).collect::<Result<_>>().expect("upload");
    let (y_cpu, _) = run(c, &cpu, None).unwrap_or_else(|e| panic!("{} on cpu: {e}", c.name));
    let w = if c.differentiable {
        Some(Tensor::rand_normal(y_cpu.shape().clone(), 0.0, 1.0, y_cpu.dtype(), &Device::Cpu, &mut rng).expect("w"))
    } else {
        None
    };
    let w_gpu = w.as_ref().map(|w| w.to_device(&device).expect("upload w"));
    let (y_cpu, g_cpu) = run(c, &cpu, w.as_ref()).unwrap_or_else(|e| panic!("{} on cpu: {e}", c.name));
    let (y_gpu, g_gpu) = run(c, &gpu, w_gpu.as_ref()).unwrap_or_else(|e| panic!("{} on cuda: {e}", c.name));
    assert_eq!(y_gpu.device(), device, "{}: output device", c.name);
    let tol = tolerance(y_cpu.dtype());
    assert_close(&format!("{} forward", c.name), &y_gpu, &y_cpu, tol);
    assert_eq!(g_gpu.len(), g_cpu.len(), "{}: gradient count", c.name);
    for (i, (gg, gc)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        match (gg, gc) {
            (Some(gg), Some(gc)) => {
                assert_eq!(gg.device(), device, "{}: gradient {i} device", c.name);
                assert_close(&format!("{} gradient {i}", c.name), gg, gc, tol);
            }
            (None, None) => {}
            _ => panic!("{}: gradient {i} is present on one device only", c.name),
        }
    }
}

fn run_cases(test: &str, cases: &[Case]) {
    let Some((_lock, device)) = cuda_or_skip(test) else { return };
    for (i, c) in cases.iter().enumerate() {
        check(c, device, 1000 + i as u64);
    }
}

const F32: DType = DType::F32;
const F64: DType = DType::F64;
const I64: DType = DType::I64;
use Input::{Ints, Labels, Normal, Positive, Special};

#[test]
fn unary_ops_match_cpu() {
    let s: &[usize] = &[3, 50, 7];
    run_cases(
        "unary_ops_match_cpu",
        &[
            case("neg", &[(s, F32, Normal)], true, |x| x[0].neg()),
            case("exp", &[(s, F32, Normal)], true, |x| x[0].exp()),
            case("log", &[(s, F32, Positive)], true, |x| x[0].log()),
            case("sqrt", &[(s, F32, Positive)], true, |x| x[0].sqrt()),
            case("square", &[(s, F32, Normal)], true, |x| x[0].square()),
            case("relu", &[(s, F32, Normal)], true, |x| x[0].relu()),
            case("sigmoid", &[(s, F32, Normal)], true, |x| x[0].affine(8.0, 0.0)?.sigmoid()),
            case("tanh", &[(s, F32, Normal)], true, |x| x[0].tanh()),
            case("abs", &[(s, F32, Normal)], true, |x| x[0].abs()),
            case("sign", &[(s, F32, Normal)], false, |x| x[0].sign()),
            case("recip", &[(s, F32, Positive)], true, |x| x[0].recip()),
            case("powf", &[(s, F32, Positive)], true, |x| x[0].powf(2.5)),
            case("clamp", &[(s, F32, Normal)], true, |x| x[0].clamp(-0.5, 0.7)),
            case("affine", &[(s, F32, Normal)], true, |x| x[0].affine(1.5, -0.25)),
            case("exp f64", &[(s, F64, Normal)], true, |x| x[0].exp()?.log()?.tanh()),
            // (square and relu are float-only at the tensor level.)
            case("int neg abs", &[(s, I64, Ints)], false, |x| x[0].neg()?.abs()?.sub(&x[0].neg()?)),
            case("int clamp sign", &[(s, I64, Ints)], false, |x| x[0].clamp(-4.5, 9.0)?.add(&x[0].sign()?)),
        ],
    );
}

#[test]
fn binary_ops_broadcast_like_cpu() {
    run_cases(
        "binary_ops_broadcast_like_cpu",
        &[
            case("add same shape", &[(&[4, 33], F32, Normal), (&[4, 33], F32, Normal)], true, |x| x[0].add(&x[1])),
            case("add bias", &[(&[64, 130], F32, Normal), (&[130], F32, Normal)], true, |x| x[0].add(&x[1])),
            case("sub column", &[(&[3, 1, 5], F32, Normal), (&[4, 1], F32, Normal)], true, |x| x[0].sub(&x[1])),
            case("mul scalar", &[(&[2, 3], F32, Normal), (&[], F32, Normal)], true, |x| x[0].mul(&x[1])),
            case("mul scalar left", &[(&[], F32, Normal), (&[5, 2], F32, Normal)], true, |x| x[0].mul(&x[1])),
            case("div", &[(&[4, 5], F32, Normal), (&[4, 1], F32, Positive)], true, |x| x[0].div(&x[1])),
            case("maximum", &[(&[6, 7], F32, Normal), (&[7], F32, Normal)], true, |x| x[0].maximum(&x[1])),
            case("minimum", &[(&[2, 1, 7], F32, Normal), (&[3, 1], F32, Normal)], true, |x| x[0].minimum(&x[1])),
            case("comparisons", &[(&[5, 6], F32, Normal), (&[6], F32, Normal)], false, |x| {
                let (a, b) = (&x[0], &x[1]);
                a.lt(b)?
                    .add(&a.ge(b)?.mul_scalar(2.0)?)?
                    .add(&a.equal(a)?)?
                    .add(&a.not_equal(b)?)?
                    .add(&a.le(b)?)?
                    .add(&a.gt(b)?)
            }),
            case("rank 5 broadcast", &[(&[2, 1, 3, 1, 4], F32, Normal), (&[5, 1, 2, 1], F32, Normal)], true, |x| {
                x[0].mul(&x[1])
            }),
            case("f64", &[(&[3, 4], F64, Normal), (&[3, 1], F64, Positive)], true, |x| x[0].div(&x[1])?.add(&x[1])),
            case("i64", &[(&[3, 4], I64, Ints), (&[4], I64, Ints)], false, |x| {
                x[0].add(&x[1])?.mul(&x[1])?.sub(&x[0])?.div(&x[1])?.maximum(&x[0])?.minimum(&x[1])
            }),
        ],
    );
}

#[test]
fn elementwise_ops_treat_nan_and_inf_like_cpu() {
    // CUDA's relu once turned NaN into 0 (`v > 0 ? v : 0`); every elementwise op, its
    // gradient, the casts and the max-like reductions must pass NaN and +/-Inf on as the CPU does.
    let s: &[usize] = &[4, 21];
    let x = |d: DType| -> [(&[usize], DType, Input); 1] { [(s, d, Special)] };
    let xy = |d: DType| -> [(&[usize], DType, Input); 2] { [(s, d, Special), (&s[1..], d, Special)] };
    let mut cases = Vec::new();
    for d in [F32, F64] {
        cases.extend([
            case("neg", &x(d), true, |x| x[0].neg()),
            case("exp", &x(d), true, |x| x[0].exp()),
            case("log", &x(d), true, |x| x[0].log()),
            case("sqrt", &x(d), true, |x| x[0].sqrt()),
            case("square", &x(d), true, |x| x[0].square()),
            case("relu", &x(d), true, |x| x[0].relu()),
            case("sigmoid", &x(d), true, |x| x[0].sigmoid()),
            case("tanh", &x(d), true, |x| x[0].tanh()),
            case("abs", &x(d), true, |x| x[0].abs()),
            case("sign", &x(d), false, |x| x[0].sign()),
            case("recip", &x(d), true, |x| x[0].recip()),
            case("powf", &x(d), true, |x| x[0].powf(2.5)),
            case("clamp", &x(d), true, |x| x[0].clamp(-0.5, 0.7)),
            case("affine", &x(d), true, |x| x[0].affine(1.5, -0.25)),
            case("add", &xy(d), true, |x| x[0].add(&x[1])),
            case("sub", &xy(d), true, |x| x[0].sub(&x[1])),
            case("mul", &xy(d), true, |x| x[0].mul(&x[1])),
            case("div", &xy(d), true, |x| x[0].div(&x[1])),
            case("maximum", &xy(d), true, |x| x[0].maximum(&x[1])),
            case("minimum", &xy(d), true, |x| x[0].minimum(&x[1])),
            case("maximum, NaN on the right", &xy(d), true, |x| x[1].broadcast_to([4, 21])?.maximum(&x[0])),
            case("comparisons", &xy(d), false, |x| {
                let (a, b) = (&x[0], &x[1]);
                a.lt(b)?
                    .add(&a.ge(b)?.mul_scalar(2.0)?)?
                    .add(&a.equal(b)?.mul_scalar(4.0)?)?
                    .add(&a.not_equal(b)?.mul_scalar(8.0)?)?
                    .add(&a.le(b)?.mul_scalar(16.0)?)?
                    .add(&a.gt(b)?.mul_scalar(32.0)?)
            }),
            case("cast to i64", &x(d), false, |x| x[0].cast(I64)),
            case("cast f32 f64", &x(d), true, |x| x[0].cast(F32)?.cast(F64)),
            case("max min rows", &x(d), true, |x| x[0].max(&[1], false)?.add(&x[0].min(&[1], false)?)),
            case("max min columns", &x(d), false, |x| x[0].max(&[0], false)?.add(&x[0].min(&[0], false)?)),
            case("sum", &x(d), true, |x| x[0].sum(&[1], false)),
            case("argmax argmin", &x(d), false, |x| x[0].argmax(1)?.add(&x[0].argmin(0)?.reshape([21, 1])?)),
        ]);
    }
    run_cases("elementwise_ops_treat_nan_and_inf_like_cpu", &cases);
}

#[test]
fn elementwise_covers_more_elements_than_one_grid() {
    // More than 65536 blocks x 256 threads: the grid-stride loop must cover the rest.
    let n = (1 << 24) + 1234;
    run_cases(
        "elementwise_covers_more_elements_than_one_grid",
        &[
            case("large add", &[(&[n], F32, Normal), (&[n], F32, Normal)], false, |x| x[0].add(&x[1])?.relu()),
            // f64: the CPU's f32 sum of 2^24 terms is itself off by more than 1e-5.
            case("large sum", &[(&[n], F64, Normal)], false, |x| x[0].sum_all()),
        ],
    );
}

#[test]
fn reductions_match_cpu() {
    run_cases(
        "reductions_match_cpu",
        &[
            case("sum middle", &[(&[4, 5, 6], F32, Normal)], true, |x| x[0].sum(&[1], true)),
            case("sum outer and inner", &[(&[4, 5, 6], F32, Normal)], true, |x| x[0].sum(&[0, 2], false)),
            case("sum all", &[(&[7, 9, 11], F32, Normal)], true, |x| x[0].sum_all()),
            case("mean", &[(&[8, 3, 5], F32, Normal)], true, |x| x[0].mean(&[-1], false)),
            case("long rows", &[(&[3, 70_000], F32, Normal)], true, |x| x[0].sum(&[1], false)),
            case("one long row", &[(&[300_000], F32, Normal)], true, |x| x[0].sum_all()),
            case("column sum", &[(&[20_000, 3], F32, Normal)], true, |x| x[0].sum(&[0], false)),
            case("many columns", &[(&[300, 500], F32, Normal)], true, |x| x[0].sum(&[0], false)),
            // 256 chunks of 64 rows x 256 columns: split beyond the old 32K-thread cap.
            case("column sum split in 256 chunks", &[(&[16_384, 256], F32, Normal)], false, |x| x[0].sum(&[0], false)),
            case("max", &[(&[4, 5, 6], F32, Normal)], true, |x| x[0].max(&[1], false)),
            case("max long rows", &[(&[2, 50_000], F32, Normal)], true, |x| x[0].max(&[1], false)),
            case("min", &[(&[4, 5, 6], F32, Normal)], true, |x| x[0].min(&[0, 2], true)),
            case("min columns", &[(&[9000, 4], F32, Normal)], true, |x| x[0].min(&[0], false)),
            case("sum f64", &[(&[30, 40], F64, Normal)], true, |x| x[0].sum(&[0], false)),
            case("i64 sum max min", &[(&[6, 7], I64, Ints)], false, |x| {
                x[0].sum(&[1], false)?.add(&x[0].max(&[1], false)?)?.add(&x[0].min(&[1], false)?)
            }),
            case("size-1 axes", &[(&[3, 1, 4], F32, Normal)], true, |x| x[0].sum(&[1], false)),
            case("empty sum", &[(&[0, 3], F32, Normal)], false, |x| x[0].sum(&[0], false)),
            case("argmax", &[(&[7, 11], F32, Normal)], false, |x| x[0].argmax(1)),
            case("argmax axis 0", &[(&[7, 11], F32, Normal)], false, |x| x[0].argmax(0)),
            case("argmin", &[(&[3, 4, 5], F64, Normal)], false, |x| x[0].argmin(1)),
            case("argmax i64", &[(&[5, 9], I64, Ints)], false, |x| x[0].argmax(-1)),
        ],
    );
}

#[test]
fn matmul_matches_cpu() {
    run_cases(
        "matmul_matches_cpu",
        &[
            case("2-D", &[(&[5, 7], F32, Normal), (&[7, 3], F32, Normal)], true, |x| x[0].matmul(&x[1])),
            case("batched", &[(&[4, 5, 7], F32, Normal), (&[4, 7, 3], F32, Normal)], true, |x| x[0].matmul(&x[1])),
            case("shared rhs", &[(&[4, 5, 7], F32, Normal), (&[7, 3], F32, Normal)], true, |x| x[0].matmul(&x[1])),
            case("shared lhs", &[(&[5, 7], F32, Normal), (&[4, 7, 3], F32, Normal)], true, |x| x[0].matmul(&x[1])),
            case("lhs transposed", &[(&[7, 5], F32, Normal), (&[7, 3], F32, Normal)], true, |x| {
                x[0].matmul_transposed(&x[1], true, false)
            }),
            case("rhs transposed", &[(&[5, 7], F32, Normal), (&[3, 7], F32, Normal)], true, |x| {
                x[0].matmul_transposed(&x[1], false, true)
            }),
            case("both transposed, batched", &[(&[2, 7, 5], F32, Normal), (&[2, 3, 7], F32, Normal)], true, |x| {
                x[0].matmul_transposed(&x[1], true, true)
            }),
            case("larger", &[(&[128, 256], F32, Normal), (&[256, 96], F32, Normal)], true, |x| x[0].matmul(&x[1])),
            case("f64", &[(&[3, 6, 5], F64, Normal), (&[5, 4], F64, Normal)], true, |x| x[0].matmul(&x[1])),
            case("empty inner", &[(&[3, 0], F32, Normal), (&[0, 4], F32, Normal)], false, |x| x[0].matmul(&x[1])),
        ],
    );
}

#[test]
fn layout_ops_match_cpu() {
    run_cases(
        "layout_ops_match_cpu",
        &[
            case("permute", &[(&[2, 3, 4], F32, Normal)], true, |x| x[0].permute(&[2, 0, 1])),
            case("transpose", &[(&[6, 9], F32, Normal)], true, |x| x[0].transpose(0, 1)),
            case("broadcast_to", &[(&[3, 1], F32, Normal)], true, |x| x[0].broadcast_to([2, 3, 4])),
            case("narrow", &[(&[5, 8, 3], F32, Normal)], true, |x| x[0].narrow(1, 2, 4)),
            case("concat", &[(&[2, 3, 4], F32, Normal), (&[2, 5, 4], F32, Normal)], true, |x| {
                Tensor::concat(&[&x[0], &x[1]], 1)
            }),
            case("stack", &[(&[3, 4], F32, Normal), (&[3, 4], F32, Normal)], true, |x| {
                Tensor::stack(&[&x[0], &x[1]], 2)
            }),
            case("reshape then permute", &[(&[4, 6], F32, Normal)], true, |x| {
                x[0].reshape([2, 3, 4])?.permute(&[1, 2, 0])
            }),
            case("permute f64", &[(&[2, 3, 4, 5], F64, Normal)], true, |x| x[0].permute(&[3, 1, 0, 2])),
            case("concat i64", &[(&[2, 2], I64, Ints), (&[2, 3], I64, Ints)], false, |x| {
                Tensor::concat(&[&x[0], &x[1]], -1)
            }),
        ],
    );
}

#[test]
fn softmax_losses_and_casts_match_cpu() {
    run_cases(
        "softmax_losses_and_casts_match_cpu",
        &[
            case("log_softmax", &[(&[16, 100], F32, Normal)], true, |x| x[0].affine(5.0, 0.0)?.log_softmax(-1)),
            case("log_softmax wide rows", &[(&[3, 5000], F32, Normal)], true, |x| x[0].log_softmax(-1)),
            case("softmax axis 0", &[(&[10, 4], F32, Normal)], true, |x| x[0].softmax(0)),
            case("log_softmax f64", &[(&[6, 9], F64, Normal)], true, |x| x[0].log_softmax(1)),
            case("softmax cross-entropy", &[(&[8, 10], F32, Normal), (&[8, 10], F32, Positive)], true, |x| {
                Tensor::softmax_cross_entropy(&x[0], &x[1].softmax(-1)?)?.mean_all()
            }),
            case("sparse softmax cross-entropy", &[(&[32, 100], F32, Normal), (&[32], I64, Labels(100))], true, |x| {
                Tensor::sparse_softmax_cross_entropy(&x[0], &x[1])?.mean_all()
            }),
            case("one_hot", &[(&[4, 3], I64, Labels(6))], false, |x| Tensor::one_hot(&x[0], 6, F32)),
            case("cast f32 f64 f32", &[(&[5, 5], F32, Normal)], true, |x| x[0].cast(F64)?.exp()?.cast(F32)),
            case("cast to i64 and back", &[(&[5, 5], F32, Normal)], false, |x| {
                x[0].mul_scalar(7.0)?.cast(I64)?.cast(F64)
            }),
            case("cast i64 to f32", &[(&[5, 5], I64, Ints)], false, |x| x[0].cast(F32)),
        ],
    );
}

#[test]
fn conv_pool_and_batch_norm_match_cpu() {
    // Convolution through cuDNN, pooling and batch norm through our kernels; more cases in
    // pool_kernels_match_cpu and batch_norm_kernels_match_cpu.
    run_cases(
        "conv_pool_and_batch_norm_match_cpu",
        &[
            case(
                "conv2d same stride 2",
                &[(&[2, 7, 7, 3], F32, Normal), (&[4, 3, 3, 3], F32, Normal), (&[4], F32, Normal)],
                true,
                |x| {
                    x[0].conv2d(
                        &x[1],
                        Some(&x[2]),
                        &Conv2dParams { strides: (2, 2), padding: Padding::Same, ..Default::default() },
                    )
                },
            ),
            case("conv2d valid", &[(&[1, 6, 5, 2], F64, Normal), (&[3, 2, 2, 2], F64, Normal)], true, |x| {
                x[0].conv2d(&x[1], None, &Conv2dParams::default())
            }),
            case("max_pool2d", &[(&[2, 6, 6, 3], F32, Normal)], true, |x| {
                x[0].max_pool2d((2, 2), (1, 1), Padding::Same)
            }),
            case("avg_pool2d", &[(&[2, 5, 5, 2], F32, Normal)], true, |x| {
                x[0].avg_pool2d((2, 2), (2, 2), Padding::Same)
            }),
            case(
                "batch_norm_train",
                &[(&[4, 3, 3, 5], F32, Normal), (&[5], F32, Positive), (&[5], F32, Normal)],
                true,
                |x| Ok(x[0].batch_norm_train(Some(&x[1]), Some(&x[2]), 1e-3)?.0),
            ),
        ],
    );
}

#[test]
fn tf32_matmul_is_close() {
    let Some((_lock, device)) = cuda_or_skip("tf32_matmul_is_close") else { return };
    /// Turns TF32 off again even if the test fails.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            cuda::set_tf32(false);
        }
    }
    let _reset = Reset;
    let mut rng = StdRng::seed_from_u64(7);
    let a = Tensor::rand_normal([256, 512], 0.0, 1.0, F32, &Device::Cpu, &mut rng).unwrap();
    let b = Tensor::rand_normal([512, 128], 0.0, 1.0, F32, &Device::Cpu, &mut rng).unwrap();
    let want = a.matmul(&b).unwrap();
    cuda::set_tf32(true);
    let got = a.to_device(&device).unwrap().matmul(&b.to_device(&device).unwrap()).unwrap();
    assert_close("tf32 matmul", &got, &want, 1e-2);
}

/// A differentiable convolution case.
fn conv_case(name: &'static str, inputs: Vec<(Vec<usize>, DType, Input)>, f: fn(&[Tensor]) -> Result<Tensor>) -> Case {
    Case { name, inputs, f, differentiable: true }
}

/// A convolution with the given options, with a bias when the case has a third input.
fn conv_with(x: &[Tensor], strides: (usize, usize), padding: Padding, dilation: (usize, usize)) -> Result<Tensor> {
    x[0].conv2d(&x[1], x.get(2), &Conv2dParams { strides, padding, dilation, groups: 1 })
}

#[test]
fn conv2d_through_cudnn_matches_cpu() {
    run_cases("conv2d_through_cudnn_matches_cpu", &conv2d_cases());
}

#[test]
fn conv2d_with_measured_algorithms_matches_cpu() {
    // cudnn.benchmark: every geometry's algorithms are chosen by cudnnFind*AlgorithmEx on
    // scratch buffers (the emulator's measurement runs each candidate, and ranks the
    // forward pass differently from its heuristics). Plans of other tests are not reused:
    // measured plans have their own key.
    cuda::set_cudnn_benchmark(true);
    run_cases("conv2d_with_measured_algorithms_matches_cpu", &conv2d_cases());
    cuda::set_cudnn_benchmark(false);
}

/// Forward and all gradients (input, kernel, bias). TF 'same' is asymmetric where the
/// total padding is odd (stride 2 on an even size, a 2x2 kernel at stride 1); cuDNN pads
/// symmetrically, so those cases exercise the explicit pad and the crop. On the
/// emulator, f64 with a dilation has no cuDNN algorithm (the CPU fallback runs).
fn conv2d_cases() -> Vec<Case> {
    let bias = |c: usize, dtype: DType| (vec![c], dtype, Normal);
    let x = |shape: &[usize], dtype: DType| (shape.to_vec(), dtype, Normal);
    vec![
        conv_case("3x3 same stride 1, bias", vec![x(&[2, 5, 5, 3], F32), x(&[4, 3, 3, 3], F32), bias(4, F32)], |t| {
            conv_with(t, (1, 1), Padding::Same, (1, 1))
        }),
        conv_case(
            "3x3 same stride 2 even (asymmetric), bias",
            vec![x(&[2, 6, 6, 3], F32), x(&[4, 3, 3, 3], F32), bias(4, F32)],
            |t| conv_with(t, (2, 2), Padding::Same, (1, 1)),
        ),
        conv_case("3x3 same stride 2 on 7x6", vec![x(&[1, 7, 6, 2], F32), x(&[3, 3, 3, 2], F32)], |t| {
            conv_with(t, (2, 2), Padding::Same, (1, 1))
        }),
        conv_case("2x2 same stride 1 odd (asymmetric)", vec![x(&[2, 5, 5, 2], F32), x(&[3, 2, 2, 2], F32)], |t| {
            conv_with(t, (1, 1), Padding::Same, (1, 1))
        }),
        conv_case("3x3 valid stride 1", vec![x(&[2, 6, 5, 3], F32), x(&[2, 3, 3, 3], F32)], |t| {
            conv_with(t, (1, 1), Padding::Valid, (1, 1))
        }),
        conv_case(
            "3x3 explicit asymmetric, stride (1, 2), bias",
            vec![x(&[1, 5, 6, 2], F32), x(&[3, 3, 3, 2], F32), bias(3, F32)],
            |t| conv_with(t, (1, 2), Padding::Explicit { top: 2, bottom: 0, left: 1, right: 3 }, (1, 1)),
        ),
        conv_case("3x3 dilation 2 same", vec![x(&[1, 7, 7, 2], F32), x(&[3, 3, 3, 2], F32)], |t| {
            conv_with(t, (1, 1), Padding::Same, (2, 2))
        }),
        conv_case(
            "1x1 stride 2 same (shortcut), bias",
            vec![x(&[2, 6, 6, 4], F32), x(&[5, 1, 1, 4], F32), bias(5, F32)],
            |t| conv_with(t, (2, 2), Padding::Same, (1, 1)),
        ),
        conv_case(
            "f64 3x3 same stride 2 even (asymmetric), bias",
            vec![x(&[2, 6, 6, 2], F64), x(&[3, 3, 3, 2], F64), bias(3, F64)],
            |t| conv_with(t, (2, 2), Padding::Same, (1, 1)),
        ),
        conv_case("f64 2x2 valid", vec![x(&[1, 6, 5, 2], F64), x(&[3, 2, 2, 2], F64)], |t| {
            conv_with(t, (1, 1), Padding::Valid, (1, 1))
        }),
        conv_case("f64 1x1 stride 1, bias", vec![x(&[2, 3, 3, 3], F64), x(&[2, 1, 1, 3], F64), bias(2, F64)], |t| {
            conv_with(t, (1, 1), Padding::Valid, (1, 1))
        }),
        conv_case("f64 3x3 explicit asymmetric", vec![x(&[1, 4, 5, 2], F64), x(&[2, 3, 3, 2], F64)], |t| {
            conv_with(t, (1, 1), Padding::Explicit { top: 0, bottom: 2, left: 1, right: 0 }, (1, 1))
        }),
        conv_case(
            "f64 3x3 dilation 2 stride 2 (the CPU fallback on the emulator)",
            vec![x(&[1, 7, 7, 2], F64), x(&[2, 3, 3, 2], F64)],
            |t| conv_with(t, (2, 2), Padding::Same, (2, 2)),
        ),
    ]
}

#[test]
fn tf32_conv2d_is_close_and_plain_f32_stays_exact() {
    let Some((_lock, device)) = cuda_or_skip("tf32_conv2d_is_close_and_plain_f32_stays_exact") else { return };
    /// Turns TF32 off again even if the test fails.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            cuda::set_tf32(false);
        }
    }
    let _reset = Reset;
    let mut rng = StdRng::seed_from_u64(17);
    let x = Tensor::rand_normal([2, 8, 8, 16], 0.0, 1.0, F32, &Device::Cpu, &mut rng).unwrap();
    let k = Tensor::rand_normal([8, 3, 3, 16], 0.0, 1.0, F32, &Device::Cpu, &mut rng).unwrap();
    let params = Conv2dParams { padding: Padding::Same, ..Default::default() };
    let want = x.conv2d(&k, None, &params).unwrap();
    let (xg, kg) = (x.to_device(&device).unwrap(), k.to_device(&device).unwrap());
    cuda::set_tf32(true);
    let tf32 = xg.conv2d(&kg, None, &params).unwrap();
    assert_close("tf32 conv2d", &tf32, &want, 1e-2);
    cuda::set_tf32(false);
    let plain = xg.conv2d(&kg, None, &params).unwrap();
    assert_close("f32 conv2d after tf32", &plain, &want, tolerance(F32));
}

#[test]
fn repeated_conv_step_allocates_only_in_its_first_iteration() {
    let Some((_lock, device)) = cuda_or_skip("repeated_conv_step_allocates_only_in_its_first_iteration") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(19);
    let mut upload = |shape: &[usize]| {
        Tensor::rand_normal(shape.to_vec(), 0.0, 0.1, F32, &Device::Cpu, &mut rng).unwrap().to_device(&device).unwrap()
    };
    let (x, k, b) = (upload(&[2, 6, 6, 3]), upload(&[4, 3, 3, 3]), upload(&[4]));
    let params = Conv2dParams { strides: (2, 2), padding: Padding::Same, ..Default::default() };
    let step = || -> Result<f32> {
        let tape = GradientTape::new();
        tape.watch(&x);
        tape.watch(&k);
        tape.watch(&b);
        let loss = tape.record(|| x.conv2d(&k, Some(&b), &params)?.square()?.mean_all())?;
        let grads = tape.gradient(&loss, &[&x, &k, &b])?;
        let mut total = loss.to_scalar::<f32>()?;
        for g in grads.into_iter().flatten() {
            total += g.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(total)
    };
    let first = step().unwrap();
    let after_first = cuda::memory_stats(0).unwrap();
    for _ in 0..2 {
        assert_eq!(step().unwrap(), first, "the same step gives the same numbers");
    }
    let after = cuda::memory_stats(0).unwrap();
    assert_eq!(after.device_allocations, after_first.device_allocations, "{after_first:?} -> {after:?}");
    assert_eq!(after.in_use, after_first.in_use, "every buffer of a step (workspaces included) is released");
}

/// A small training step: two dense layers, a loss, its gradients.
fn training_step(x: &Tensor, labels: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor) -> Result<f32> {
    let tape = GradientTape::new();
    tape.watch(w1);
    tape.watch(b1);
    tape.watch(w2);
    let loss = tape.record(|| {
        let h = x.matmul(w1)?.add(b1)?.relu()?;
        Tensor::sparse_softmax_cross_entropy(&h.matmul(w2)?, labels)?.mean_all()
    })?;
    let grads = tape.gradient(&loss, &[w1, b1, w2])?;
    let mut total = loss.to_scalar::<f32>()?;
    for g in grads.into_iter().flatten() {
        total += g.sum_all()?.to_scalar::<f32>()?;
    }
    Ok(total)
}

#[test]
fn repeated_workload_allocates_only_in_its_first_iteration() {
    let Some((_lock, device)) = cuda_or_skip("repeated_workload_allocates_only_in_its_first_iteration") else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let mut upload = |shape: [usize; 2]| {
        Tensor::rand_normal(shape, 0.0, 0.1, F32, &Device::Cpu, &mut rng).unwrap().to_device(&device).unwrap()
    };
    let (x, w1, w2) = (upload([64, 300]), upload([300, 128]), upload([128, 10]));
    let b1 = upload([1, 128]).reshape([128]).unwrap();
    let labels = Tensor::from_vec((0..64).map(|i| i % 10).collect::<Vec<i64>>(), [64], &device).unwrap();
    let first = training_step(&x, &labels, &w1, &b1, &w2).unwrap();
    let after_first = cuda::memory_stats(0).unwrap();
    for _ in 0..3 {
        let again = training_step(&x, &labels, &w1, &b1, &w2).unwrap();
        assert_eq!(again, first, "the same step gives the same numbers");
    }
    let after = cuda::memory_stats(0).unwrap();
    assert_eq!(after.device_allocations, after_first.device_allocations, "{after_first:?} -> {after:?}");
    assert!(after.cache_hits > after_first.cache_hits);
    assert_eq!(after.in_use, after_first.in_use, "every buffer of a step is released");
    assert!(after.peak_in_use >= after.in_use && after.reserved >= after.in_use);
    cuda::empty_cache(0).unwrap();
    let emptied = cuda::memory_stats(0).unwrap();
    assert_eq!(emptied.reserved, emptied.in_use, "only live tensors stay reserved: {emptied:?}");
}

#[test]
fn out_of_memory_is_an_error_naming_the_sizes() {
    let Some((_lock, device)) = cuda_or_skip("out_of_memory_is_an_error_naming_the_sizes") else { return };
    let one = Tensor::ones([1, 1], F32, &device).unwrap();
    // 2^40 f32 values (4 TiB), materialised on the device only.
    let err = one.broadcast_to([1 << 20, 1 << 20]).expect_err("4 TiB does not fit");
    match &err {
        Error::OutOfMemory { requested, .. } => assert_eq!(*requested, 4usize << 40),
        other => panic!("expected OutOfMemory, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("4398046511104 bytes") && msg.contains("free"), "{msg}");
    // The device still works afterwards.
    assert_eq!(one.add_scalar(1.0).unwrap().to_vec::<f32>().unwrap(), vec![2.0]);
}

#[test]
fn constants_are_filled_on_the_device() {
    let Some((_lock, device)) = cuda_or_skip("constants_are_filled_on_the_device") else { return };
    for (value, dtype) in [(2.5, F32), (-1.25, F64), (-3.0, I64), (0.0, F32), (7.9, I64)] {
        let got = Tensor::full(value, [3, 70_001], dtype, &device).unwrap();
        let want = Tensor::full(value, [3, 70_001], dtype, &Device::Cpu).unwrap();
        assert_close(&format!("full({value}, {dtype})"), &got, &want, 0.0);
    }
    assert_eq!(Tensor::zeros([0], F32, &device).unwrap().to_vec::<f32>().unwrap(), Vec::<f32>::new());
}

#[test]
fn devices_do_not_mix() {
    let Some((_lock, device)) = cuda_or_skip("devices_do_not_mix") else { return };
    assert_eq!(Device::cuda_if_available(), Device::Cuda(0));
    let a = Tensor::ones([2], F32, &device).unwrap();
    let b = Tensor::ones([2], F32, &Device::Cpu).unwrap();
    assert!(matches!(a.add(&b), Err(Error::DeviceMismatch { .. })));
    assert!(matches!(a.matmul(&b.reshape([2, 1]).unwrap()), Err(Error::DeviceMismatch { .. })));
    let back = a.to_device(&Device::Cpu).unwrap();
    assert_eq!(back.device(), Device::Cpu);
    assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    let missing = Tensor::ones([2], F32, &Device::Cuda(1000));
    assert!(matches!(missing, Err(Error::DeviceUnavailable { .. })), "{missing:?}");
}

#[test]
fn without_a_gpu_cuda_is_an_error_not_a_panic() {
    let _lock = gpu_lock();
    if cuda::ensure_available(0).is_ok() {
        eprintln!("SKIPPED without_a_gpu_cuda_is_an_error_not_a_panic: a GPU is available");
        return;
    }
    assert_eq!(Device::cuda_if_available(), Device::Cpu);
    let err = Tensor::zeros([3], F32, &Device::Cuda(0)).expect_err("no usable GPU");
    assert!(matches!(err, Error::DeviceUnavailable { device: Device::Cuda(0), .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("lib") || msg.contains("device"), "the message names what is missing: {msg}");
    assert!(cuda::synchronize(0).is_err());
}

#[test]
fn pool_kernels_match_cpu() {
    use Padding::{Same, Valid};
    run_cases(
        "pool_kernels_match_cpu",
        &[
            case("max 2x2/1 same", &[(&[2, 6, 6, 3], F32, Normal)], true, |x| x[0].max_pool2d((2, 2), (1, 1), Same)),
            case("max 3x3/2 same odd", &[(&[2, 7, 9, 5], F32, Normal)], true, |x| {
                x[0].max_pool2d((3, 3), (2, 2), Same)
            }),
            case("max 3x3/2 valid odd", &[(&[1, 9, 7, 4], F64, Normal)], true, |x| {
                x[0].max_pool2d((3, 3), (2, 2), Valid)
            }),
            case("max 2x3/2x1 valid", &[(&[3, 5, 6, 2], F64, Normal)], true, |x| {
                x[0].max_pool2d((2, 3), (2, 1), Valid)
            }),
            case("max 3x3/1 same f64", &[(&[1, 4, 5, 1], F64, Normal)], true, |x| {
                x[0].max_pool2d((3, 3), (1, 1), Same)
            }),
            case("avg 2x2/2 same odd", &[(&[2, 5, 5, 2], F32, Normal)], true, |x| {
                x[0].avg_pool2d((2, 2), (2, 2), Same)
            }),
            case("avg 3x3/1 same", &[(&[2, 6, 7, 3], F32, Normal)], true, |x| x[0].avg_pool2d((3, 3), (1, 1), Same)),
            case("avg 3x3/2 valid f64", &[(&[1, 9, 8, 3], F64, Normal)], true, |x| {
                x[0].avg_pool2d((3, 3), (2, 2), Valid)
            }),
            case("avg 2x2/1 valid f64", &[(&[2, 3, 4, 5], F64, Normal)], true, |x| {
                x[0].avg_pool2d((2, 2), (1, 1), Valid)
            }),
            case("global avg", &[(&[3, 5, 3, 4], F32, Normal)], true, |x| x[0].global_avg_pool2d()),
        ],
    );
}

/// Max pooling over many equal values: the gradient goes to the first maximum of each
/// window on both backends.
#[test]
fn max_pool_ties_go_to_the_first_maximum_like_cpu() {
    let Some((_lock, device)) = cuda_or_skip("max_pool_ties_go_to_the_first_maximum_like_cpu") else { return };
    use rand::Rng;
    let mut rng = StdRng::seed_from_u64(7);
    for dtype in [F32, F64] {
        for (pool, stride, padding) in [((2, 2), (1, 1), Padding::Same), ((3, 3), (2, 2), Padding::Same)] {
            let shape = [2, 7, 6, 3];
            let values: Vec<f64> = (0..shape.iter().product()).map(|_| rng.random_range(0..3) as f64).collect();
            let x = Tensor::from_vec(values, shape, &Device::Cpu).unwrap().cast(dtype).unwrap();
            let grads = |x: &Tensor| {
                let tape = GradientTape::new();
                tape.watch(x);
                let y = tape.record(|| x.max_pool2d(pool, stride, padding)).unwrap();
                let w = Tensor::arange(0.0, y.shape().elem_count() as f64, 1.0, dtype, &x.device()).unwrap();
                let w = w.reshape(y.dims().to_vec()).unwrap();
                let dx = tape.gradient_with_output_gradient(&y, &[x], &w).unwrap().remove(0).unwrap();
                (y, dx)
            };
            let (y_cpu, dx_cpu) = grads(&x);
            let (y_gpu, dx_gpu) = grads(&x.to_device(&device).unwrap());
            assert_close("max_pool2d with ties", &y_gpu, &y_cpu, 0.0);
            assert_close("max_pool2d gradient with ties", &dx_gpu, &dx_cpu, 0.0);
        }
    }
}

#[test]
fn batch_norm_kernels_match_cpu() {
    run_cases(
        "batch_norm_kernels_match_cpu",
        &[
            // 390 rows: two partial blocks of 256 rows to merge.
            case(
                "bn 4-D f32",
                &[(&[2, 15, 13, 3], F32, Normal), (&[3], F32, Positive), (&[3], F32, Normal)],
                true,
                |x| Ok(x[0].batch_norm_train(Some(&x[1]), Some(&x[2]), 1e-3)?.0),
            ),
            case("bn 4-D f64 no affine", &[(&[3, 5, 4, 7], F64, Normal)], true, |x| {
                Ok(x[0].batch_norm_train(None, None, 1e-5)?.0)
            }),
            case("bn 2-D f32 gamma only", &[(&[37, 6], F32, Normal), (&[6], F32, Positive)], true, |x| {
                Ok(x[0].batch_norm_train(Some(&x[1]), None, 1e-3)?.0)
            }),
            case("bn 2-D f64", &[(&[600, 2], F64, Normal), (&[2], F64, Positive), (&[2], F64, Normal)], true, |x| {
                Ok(x[0].batch_norm_train(Some(&x[1]), Some(&x[2]), 1e-3)?.0)
            }),
            case("bn batch mean", &[(&[2, 15, 13, 3], F32, Normal)], false, |x| {
                Ok(x[0].batch_norm_train(None, None, 1e-3)?.1)
            }),
            // A large mean against a unit spread: the variance must not cancel.
            case("bn batch var, mean 1000", &[(&[700, 4], F32, Normal)], false, |x| {
                Ok(x[0].add_scalar(1000.0)?.batch_norm_train(None, None, 1e-3)?.2)
            }),
            case("bn batch var f64", &[(&[9, 3, 3, 2], F64, Normal)], false, |x| {
                Ok(x[0].batch_norm_train(None, None, 1e-3)?.2)
            }),
            case(
                "bn inference",
                &[(&[2, 3, 3, 4], F32, Normal), (&[4], F32, Positive), (&[4], F32, Normal), (&[4], F32, Normal)],
                true,
                |x| x[0].batch_norm_infer(Some(&x[1]), Some(&x[2]), &x[3], &x[1].add_scalar(0.5)?, 1e-3),
            ),
            // The fused epilogues, forward and backward (the residual's gradient included).
            case(
                "bn relu 4-D f32",
                &[(&[2, 15, 13, 3], F32, Normal), (&[3], F32, Positive), (&[3], F32, Normal)],
                true,
                |x| Ok(x[0].batch_norm_relu_train(Some(&x[1]), Some(&x[2]), 1e-3)?.0),
            ),
            case("bn relu 2-D f64 no affine", &[(&[600, 5], F64, Normal)], true, |x| {
                Ok(x[0].batch_norm_relu_train(None, None, 1e-3)?.0)
            }),
            case(
                "bn add relu 4-D f32",
                &[
                    (&[2, 15, 13, 3], F32, Normal),
                    (&[3], F32, Positive),
                    (&[3], F32, Normal),
                    (&[2, 15, 13, 3], F32, Normal),
                ],
                true,
                |x| Ok(x[0].batch_norm_add_relu_train(Some(&x[1]), Some(&x[2]), &x[3], 1e-3)?.0),
            ),
            case(
                "bn add relu 4-D f64 gamma only",
                &[(&[3, 5, 4, 7], F64, Normal), (&[7], F64, Positive), (&[3, 5, 4, 7], F64, Normal)],
                true,
                |x| Ok(x[0].batch_norm_add_relu_train(Some(&x[1]), None, &x[2], 1e-3)?.0),
            ),
            case("bn relu batch var", &[(&[700, 4], F32, Normal)], false, |x| {
                Ok(x[0].add_scalar(1000.0)?.batch_norm_relu_train(None, None, 1e-3)?.2)
            }),
            // Many partial blocks per channel (300 > the merge block's 128 threads).
            case(
                "bn add relu, 300 partial blocks",
                &[(&[300, 16, 16, 2], F32, Normal), (&[2], F32, Positive), (&[300, 16, 16, 2], F32, Normal)],
                true,
                |x| Ok(x[0].batch_norm_add_relu_train(Some(&x[1]), None, &x[2], 1e-3)?.0),
            ),
        ],
    );
}

#[test]
fn optimizer_updates_match_cpu() {
    use tapegrad_tensor::optim::{adam_update, sgd_update, AdamStep, SgdStep};
    let Some((_lock, device)) = cuda_or_skip("optimizer_updates_match_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let to_gpu = |t: &Tensor| t.to_device(&device).unwrap();
    let close = |what: &str, g: &Tensor, c: &Tensor, dtype: DType| {
        assert_eq!(g.device(), device, "{what}: device");
        assert_close(what, g, c, tolerance(dtype));
    };
    for dtype in [F32, F64] {
        // An odd length, more than one grid-stride pass of a small grid is not needed here.
        let draw = |rng: &mut StdRng| Tensor::rand_normal([3, 37], 0.0, 1.0, dtype, &Device::Cpu, rng).unwrap();
        let (w, g, s1) = (draw(&mut rng), draw(&mut rng), draw(&mut rng));
        let s2 = draw(&mut rng).square().unwrap();
        for (momentum, nesterov, weight_decay) in [(0.0, false, 0.0), (0.9, false, 0.0), (0.8, true, 0.01)] {
            let step = SgdStep { learning_rate: 0.05, momentum, nesterov, weight_decay };
            for velocity in [None, Some(&s1)] {
                let (wc, vc) = sgd_update(&w, &g, velocity, &step).unwrap();
                let (wg, vg) = sgd_update(&to_gpu(&w), &to_gpu(&g), velocity.map(to_gpu).as_ref(), &step).unwrap();
                let what = format!("sgd {dtype} {step:?} with velocity {}", velocity.is_some());
                close(&what, &wg, &wc, dtype);
                assert_eq!(vc.is_some(), vg.is_some(), "{what}: velocity kept");
                if let (Some(vg), Some(vc)) = (vg, vc) {
                    close(&format!("{what}: velocity"), &vg, &vc, dtype);
                }
            }
        }
        for weight_decay in [0.0, 0.004] {
            let step =
                AdamStep { learning_rate: 0.01, step: 3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay };
            for state in [None, Some((&s1, &s2))] {
                let (m, v) = (state.map(|s| s.0), state.map(|s| s.1));
                let cpu = adam_update(&w, &g, m, v, &step).unwrap();
                let (mg, vg) = (m.map(to_gpu), v.map(to_gpu));
                let gpu = adam_update(&to_gpu(&w), &to_gpu(&g), mg.as_ref(), vg.as_ref(), &step).unwrap();
                let what = format!("adam {dtype} weight decay {weight_decay} with state {}", state.is_some());
                close(&format!("{what}: value"), &gpu.0, &cpu.0, dtype);
                close(&format!("{what}: m"), &gpu.1, &cpu.1, dtype);
                close(&format!("{what}: v"), &gpu.2, &cpu.2, dtype);
            }
        }
    }
}

#[test]
fn multi_tensor_updates_equal_per_parameter_updates_bit_for_bit() {
    use tapegrad_tensor::optim::{
        adam_update, adam_update_many, sgd_update, sgd_update_many, AdamOperands, AdamStep, SgdOperands, SgdStep,
    };
    let Some((_lock, device)) = cuda_or_skip("multi_tensor_updates_equal_per_parameter_updates_bit_for_bit") else {
        return;
    };
    let bits = |t: &Tensor| t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut rng = StdRng::seed_from_u64(21);
    // 45 parameters (two tables of at most 40), sizes across chunk edges, an empty one.
    let sizes: Vec<usize> = (0..45).map(|i| [1, 7, 4096, 4097, 9000, 0, 130][i % 7] + i).collect();
    for dtype in [F32, F64] {
        let draw = |n: usize, rng: &mut StdRng| {
            Tensor::rand_normal([n], 0.0, 1.0, dtype, &Device::Cpu, rng).unwrap().to_device(&device).unwrap()
        };
        let params: Vec<Tensor> = sizes.iter().map(|&n| draw(n, &mut rng)).collect();
        let grads: Vec<Tensor> = sizes.iter().map(|&n| draw(n, &mut rng)).collect();
        // Every other parameter has state already (its second step); the rest start at zero.
        let states: Vec<Option<Tensor>> =
            sizes.iter().enumerate().map(|(i, &n)| (i % 2 == 0).then(|| draw(n, &mut rng).abs().unwrap())).collect();
        for weight_decay in [0.0, 0.01] {
            let step =
                AdamStep { learning_rate: 0.003, step: 3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay };
            let items: Vec<AdamOperands<'_>> = (0..sizes.len())
                .map(|i| AdamOperands {
                    param: &params[i],
                    grad: &grads[i],
                    m: states[i].as_ref(),
                    v: states[i].as_ref(),
                })
                .collect();
            let many = adam_update_many(&items, &step).unwrap();
            for (it, (w, m, v)) in items.iter().zip(&many) {
                let (w1, m1, v1) = adam_update(it.param, it.grad, it.m, it.v, &step).unwrap();
                assert_eq!(w.device(), device);
                assert_eq!(
                    (bits(w), bits(m), bits(v)),
                    (bits(&w1), bits(&m1), bits(&v1)),
                    "adam {dtype} n={}",
                    it.param.elem_count()
                );
            }
        }
        for (momentum, nesterov, weight_decay) in [(0.0, false, 0.0), (0.9, false, 0.0), (0.9, true, 1e-4)] {
            let step = SgdStep { learning_rate: 0.05, momentum, nesterov, weight_decay };
            let items: Vec<SgdOperands<'_>> = (0..sizes.len())
                .map(|i| SgdOperands {
                    param: &params[i],
                    grad: &grads[i],
                    velocity: states[i].as_ref().filter(|_| momentum != 0.0),
                })
                .collect();
            let many = sgd_update_many(&items, &step).unwrap();
            for (it, (w, vel)) in items.iter().zip(&many) {
                let (w1, vel1) = sgd_update(it.param, it.grad, it.velocity, &step).unwrap();
                assert_eq!(bits(w), bits(&w1), "sgd {dtype} momentum {momentum} nesterov {nesterov}");
                assert_eq!(vel.as_ref().map(bits), vel1.as_ref().map(bits), "sgd velocity {dtype}");
            }
        }
    }
    // Mixed devices are an error naming both, before anything is computed.
    let cpu = Tensor::ones([3], F32, &Device::Cpu).unwrap();
    let gpu = cpu.to_device(&device).unwrap();
    let step = SgdStep { learning_rate: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    let err = sgd_update_many(&[SgdOperands { param: &gpu, grad: &cpu, velocity: None }], &step).unwrap_err();
    assert!(err.to_string().contains("cuda") && err.to_string().contains("cpu"), "{err}");
}
