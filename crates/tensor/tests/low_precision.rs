//! bf16 and f16 on the CPU: storage, casts (against `half`'s conversions, specials
//! included), ops (against the same op in f32, rounded once), the gradient of a cast, and
//! the errors of the ops that refuse them.

use tapegrad_tensor::half::{bf16, f16};
use tapegrad_tensor::optim::{sgd_update, SgdStep};
use tapegrad_tensor::{Conv2dParams, DType, Device, Error, GradientTape, PadMode, Padding, Result, Tensor};

const CPU: Device = Device::Cpu;
const LOW: [DType; 2] = [DType::BF16, DType::F16];

/// Values that exercise the rounding: ties, overflow, subnormals, specials.
fn special_f32() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        1.0 / 3.0,
        std::f32::consts::PI,
        1.0 + 1.0 / 256.0,  // bf16 tie: to even (1.0)
        1.0 + 3.0 / 256.0,  // bf16 tie: to even (up)
        1.0 + 1.0 / 2048.0, // f16 tie: to even (1.0)
        1.0 + 3.0 / 2048.0, // f16 tie: to even (up)
        65504.0,            // f16's largest finite
        65519.0,            // rounds down to 65504 in f16
        65520.0,            // halfway to 65536: f16 infinity
        1e5,                // beyond f16: infinity
        -1e5,               // -infinity
        f32::MAX,           // beyond bf16's largest finite: infinity
        f32::MIN_POSITIVE,  // a bf16 normal, an f16 zero
        1e-40,              // an f32 and bf16 subnormal
        6.0e-8,             // about f16's smallest subnormal (5.96e-8)
        2.0f32.powi(-25),   // half f16's smallest subnormal: a tie, to 0
        1e-8,               // below f16's range: 0
        3.0e-5,             // an f16 subnormal
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]
}

/// Asserts two f32 slices are equal bit for bit, NaN matching any NaN.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{what}[{i}]: got {g:e}, want {w:e}");
    }
}

/// Values `f32 -> dtype -> f32` as `half` converts them.
fn half_round(v: &[f32], dtype: DType) -> Vec<f32> {
    v.iter()
        .map(|&x| match dtype {
            DType::BF16 => bf16::from_f32(x).to_f32(),
            DType::F16 => f16::from_f32(x).to_f32(),
            other => panic!("not a 16-bit dtype: {other}"),
        })
        .collect()
}

/// Deterministic values in about [-2, 2) with a few larger ones.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let u = (s >> 8) as f32 / (1u32 << 24) as f32;
            if i % 17 == 5 {
                (u - 0.5) * 300.0
            } else {
                (u - 0.5) * 4.0
            }
        })
        .collect()
}

fn tensor(n_dims: &[usize], seed: u32) -> Result<Tensor> {
    Tensor::from_vec(values(n_dims.iter().product(), seed), n_dims, &CPU)
}

#[test]
fn dtype_names_sizes_and_kinds() {
    assert_eq!((DType::BF16.size_in_bytes(), DType::F16.size_in_bytes()), (2, 2));
    assert_eq!((DType::BF16.to_string(), DType::F16.to_string()), ("bf16".to_string(), "f16".to_string()));
    assert_eq!((DType::BF16.keras_name(), DType::F16.keras_name()), ("bfloat16", "float16"));
    assert_eq!(DType::F32.keras_name(), "float32");
    assert!(DType::BF16.is_float() && DType::F16.is_float());
    assert!(DType::BF16.is_low_precision() && !DType::F32.is_low_precision() && !DType::I64.is_low_precision());
}

#[test]
fn storage_round_trips_bit_for_bit() -> Result<()> {
    let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let t = Tensor::from_vec(b.clone(), [256, 256], &CPU)?;
    assert_eq!(t.dtype(), DType::BF16);
    let back: Vec<u16> = t.to_vec::<bf16>()?.iter().map(|x| x.to_bits()).collect();
    assert_eq!(back, (0..=u16::MAX).collect::<Vec<_>>());
    let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let t = Tensor::from_vec(h, [65536], &CPU)?;
    assert_eq!(t.dtype(), DType::F16);
    assert!(matches!(t.to_vec::<f32>(), Err(Error::DTypeMismatch { .. })));
    assert_eq!(Tensor::scalar(bf16::from_f32(1.5), &CPU)?.to_scalar::<bf16>()?.to_f32(), 1.5);
    assert_eq!(Tensor::full(0.1, [3], DType::F16, &CPU)?.to_vec::<f16>()?, vec![f16::from_f32(0.1); 3]);
    Ok(())
}

#[test]
fn casts_from_f32_round_as_half_does() -> Result<()> {
    let v = special_f32();
    let x = Tensor::from_vec(v.clone(), [v.len()], &CPU)?;
    for dtype in LOW {
        let low = x.cast(dtype)?;
        assert_eq!(low.dtype(), dtype);
        assert_same(&low.cast(DType::F32)?.to_vec::<f32>()?, &half_round(&v, dtype), &format!("f32 -> {dtype}"));
    }
    // The overflow and underflow cases named, not only "as half does".
    let f = |x: f32| -> Result<f32> { Tensor::scalar(x, &CPU)?.cast(DType::F16)?.cast(DType::F32)?.to_scalar() };
    assert_eq!(f(65519.0)?, 65504.0);
    assert_eq!(f(65520.0)?, f32::INFINITY);
    assert_eq!(f(-1e5)?, f32::NEG_INFINITY);
    assert_eq!(f(2.0f32.powi(-25))?, 0.0);
    assert_eq!(f(3.0 * 2.0f32.powi(-25))?, 2.0f32.powi(-23));
    assert!(f(f32::NAN)?.is_nan());
    let g = |x: f32| -> Result<f32> { Tensor::scalar(x, &CPU)?.cast(DType::BF16)?.cast(DType::F32)?.to_scalar() };
    assert_eq!(g(1.0 + 1.0 / 256.0)?, 1.0);
    assert_eq!(g(1.0 + 3.0 / 256.0)?, 1.0 + 4.0 / 256.0);
    assert_eq!(g(f32::MAX)?, f32::INFINITY);
    assert_eq!(g(1e-40)?, bf16::from_f32(1e-40).to_f32());
    assert!(g(1e-40)? > 0.0, "bf16 keeps f32's subnormal range");
    Ok(())
}

#[test]
fn every_16_bit_value_widens_exactly_and_narrows_back() -> Result<()> {
    let b = Tensor::from_vec((0..=u16::MAX).map(bf16::from_bits).collect::<Vec<_>>(), [65536], &CPU)?;
    let h = Tensor::from_vec((0..=u16::MAX).map(f16::from_bits).collect::<Vec<_>>(), [65536], &CPU)?;
    for (t, dtype) in [(&b, DType::BF16), (&h, DType::F16)] {
        let wide = t.cast(DType::F32)?.to_vec::<f32>()?;
        let want: Vec<f32> = (0..=u16::MAX)
            .map(
                |bits| {
                    if dtype == DType::BF16 {
                        bf16::from_bits(bits).to_f32()
                    } else {
                        f16::from_bits(bits).to_f32()
                    }
                },
            )
            .collect();
        assert_same(&wide, &want, &format!("{dtype} -> f32"));
        let wide64 = t.cast(DType::F64)?.to_vec::<f64>()?;
        assert!(wide64.iter().zip(&want).all(|(a, b)| *a == *b as f64 || (a.is_nan() && b.is_nan())));
        // f32 and f64 back to the 16-bit type give the same bits (NaNs stay NaN).
        for via in [DType::F32, DType::F64] {
            let back = t.cast(via)?.cast(dtype)?.cast(DType::F32)?.to_vec::<f32>()?;
            assert_same(&back, &want, &format!("{dtype} -> {via} -> {dtype}"));
        }
    }
    // Across: bf16 -> f16 rounds the (exact) f32 value once, f16 -> bf16 likewise.
    let across = b.cast(DType::F16)?.cast(DType::F32)?.to_vec::<f32>()?;
    let want: Vec<f32> = (0..=u16::MAX).map(|bits| f16::from_f32(bf16::from_bits(bits).to_f32()).to_f32()).collect();
    assert_same(&across, &want, "bf16 -> f16");
    let across = h.cast(DType::BF16)?.cast(DType::F32)?.to_vec::<f32>()?;
    let want: Vec<f32> = (0..=u16::MAX).map(|bits| bf16::from_f32(f16::from_bits(bits).to_f32()).to_f32()).collect();
    assert_same(&across, &want, "f16 -> bf16");
    Ok(())
}

#[test]
fn casts_from_f64_round_once() -> Result<()> {
    // Just above a halfway point, the excess only in the f64's low 32 mantissa bits: a
    // correct rounding goes up; dropping those bits first would see a tie and go to even.
    let bf = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
    let hf = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    let t = Tensor::from_vec(vec![bf, hf, -bf, 1e300, -1e-300, f64::NAN], [6], &CPU)?;
    let b = t.cast(DType::BF16)?.cast(DType::F64)?.to_vec::<f64>()?;
    assert_eq!(&b[..5], &[1.0 + 2f64.powi(-7), 1.0, -(1.0 + 2f64.powi(-7)), f64::INFINITY, -0.0]);
    assert!(b[4].is_sign_negative() && b[5].is_nan());
    let h = t.cast(DType::F16)?.cast(DType::F64)?.to_vec::<f64>()?;
    assert_eq!(&h[..4], &[1.0 + 2f64.powi(-8), 1.0 + 2f64.powi(-10), -(1.0 + 2f64.powi(-8)), f64::INFINITY]);
    // f64 values that are exact in f32 round as f32 does.
    let v: Vec<f64> = special_f32().into_iter().map(f64::from).collect();
    for dtype in LOW {
        let got = Tensor::from_vec(v.clone(), [v.len()], &CPU)?.cast(dtype)?.cast(DType::F32)?.to_vec::<f32>()?;
        assert_same(&got, &half_round(&special_f32(), dtype), &format!("f64 -> {dtype}"));
    }
    // Element::from_f64 (used by `full`) rounds the same way.
    assert_eq!(Tensor::full(bf, [1], DType::BF16, &CPU)?.to_vec::<bf16>()?[0].to_f64(), 1.0 + 2f64.powi(-7));
    Ok(())
}

#[test]
fn integer_casts_truncate_and_round() -> Result<()> {
    let x = Tensor::from_vec(vec![2.75f32, -2.75, 300.0], [3], &CPU)?;
    for dtype in LOW {
        assert_eq!(x.cast(dtype)?.cast(DType::I64)?.to_vec::<i64>()?, vec![2, -2, 300]);
        let i = Tensor::from_vec(vec![3i64, -7, 257], [3], &CPU)?.cast(dtype)?.cast(DType::F32)?.to_vec::<f32>()?;
        assert_eq!(i, half_round(&[3.0, -7.0, 257.0], dtype), "i64 -> {dtype}");
    }
    Ok(())
}

/// Runs `op` on the low-precision inputs and, as the reference, on the same values in f32
/// with the result rounded once; they must agree bit for bit (the CPU computes 16-bit ops
/// exactly so).
fn check_op(name: &str, inputs: &[&Tensor], op: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    for dtype in LOW {
        let low: Vec<Tensor> = inputs.iter().map(|t| t.cast(dtype)).collect::<Result<_>>()?;
        let wide: Vec<Tensor> = low.iter().map(|t| t.cast(DType::F32)).collect::<Result<_>>()?;
        let got = op(&low)?;
        assert_eq!(got.dtype(), dtype, "{name} on {dtype}: dtype");
        let want = op(&wide)?;
        assert_eq!(got.dims(), want.dims(), "{name} on {dtype}: shape");
        let want = half_round(&want.to_vec::<f32>()?, dtype);
        assert_same(&got.cast(DType::F32)?.to_vec::<f32>()?, &want, &format!("{name} on {dtype}"));
    }
    Ok(())
}

#[test]
fn elementwise_ops_round_once() -> Result<()> {
    let x = tensor(&[3, 1, 5], 1)?;
    let y = tensor(&[4, 5], 2)?;
    check_op("exp", &[&x], |t| t[0].exp())?;
    check_op("sigmoid", &[&x], |t| t[0].sigmoid())?;
    check_op("relu", &[&x], |t| t[0].relu())?;
    check_op("affine", &[&x], |t| t[0].affine(0.3, 0.1))?;
    check_op("add (broadcast)", &[&x, &y], |t| t[0].add(&t[1]))?;
    check_op("mul (broadcast)", &[&x, &y], |t| t[0].mul(&t[1]))?;
    check_op("div (broadcast)", &[&x, &y], |t| t[0].div(&t[1]))?;
    check_op("maximum", &[&y, &y.affine(-1.0, 0.0)?], |t| t[0].maximum(&t[1]))?;
    check_op("gt", &[&x, &y], |t| t[0].gt(&t[1]))?;
    // Overflow to infinity happens where the f32 result exceeds the 16-bit range.
    check_op("square (overflows f16)", &[&Tensor::from_vec(vec![300.0f32, 1e3, -2.0], [3], &CPU)?], |t| t[0].square())?;
    Ok(())
}

#[test]
fn reductions_accumulate_in_f32() -> Result<()> {
    let x = tensor(&[4, 33, 5], 3)?;
    check_op("sum(1)", &[&x], |t| t[0].sum(&[1], false))?;
    check_op("sum(0, 2)", &[&x], |t| t[0].sum(&[0, 2], true))?;
    check_op("mean(1)", &[&x], |t| t[0].mean(&[1], false))?;
    check_op("mean_all", &[&x], |t| t[0].mean_all())?;
    check_op("max(2)", &[&x], |t| t[0].max(&[2], false))?;
    check_op("log_softmax", &[&x], |t| t[0].log_softmax(-1))?;
    // 4096 ones sum to 4096 exactly in f32; a bf16 accumulator would stall at 256.
    let ones = Tensor::ones([4096], DType::BF16, &CPU)?;
    assert_eq!(ones.sum(&[0], false)?.cast(DType::F32)?.to_vec::<f32>()?, vec![4096.0]);
    for dtype in LOW {
        assert_eq!(
            x.cast(dtype)?.argmax(1)?.to_vec::<i64>()?,
            x.cast(dtype)?.cast(DType::F32)?.argmax(1)?.to_vec::<i64>()?
        );
    }
    Ok(())
}

#[test]
fn layout_ops_move_values_unchanged() -> Result<()> {
    let x = tensor(&[2, 3, 4], 4)?;
    let y = tensor(&[2, 1, 4], 5)?;
    check_op("reshape", &[&x], |t| t[0].reshape([6, 4]))?;
    check_op("transpose", &[&x], |t| t[0].transpose(0, 2))?;
    check_op("permute", &[&x], |t| t[0].permute(&[1, 2, 0]))?;
    check_op("narrow", &[&x], |t| t[0].narrow(2, 1, 2))?;
    check_op("concat", &[&x, &y], |t| Tensor::concat(&[&t[0], &t[1]], 1))?;
    check_op("broadcast_to", &[&y], |t| t[0].broadcast_to([2, 3, 4]))?;
    check_op("pad constant", &[&x], |t| t[0].pad(&[(0, 0), (1, 2), (0, 1)], PadMode::Constant(0.5)))?;
    check_op("pad reflect", &[&x], |t| t[0].pad(&[(0, 0), (1, 1), (2, 0)], PadMode::Reflect))?;
    Ok(())
}

#[test]
fn matmul_accumulates_in_f32_and_rounds_once() -> Result<()> {
    let a = tensor(&[5, 70], 6)?;
    let b = tensor(&[70, 3], 7)?;
    check_op("matmul", &[&a, &b], |t| t[0].matmul(&t[1]))?;
    check_op("batched matmul", &[&tensor(&[2, 3, 9], 8)?, &tensor(&[2, 9, 4], 9)?], |t| t[0].matmul(&t[1]))?;
    // Against f64 products of the rounded inputs: within one ulp of the 16-bit result
    // (plus f32's own rounding, far below that).
    for dtype in LOW {
        let (la, lb) = (a.cast(dtype)?, b.cast(dtype)?);
        let got = la.matmul(&lb)?.cast(DType::F64)?.to_vec::<f64>()?;
        let want = la.cast(DType::F64)?.matmul(&lb.cast(DType::F64)?)?.to_vec::<f64>()?;
        let mantissa_bits = if dtype == DType::BF16 { 8 } else { 11 };
        for (g, w) in got.iter().zip(&want) {
            let ulp = 2f64.powi(w.abs().log2().floor() as i32 + 1 - mantissa_bits);
            assert!((g - w).abs() <= ulp, "matmul on {dtype}: got {g}, want {w} (ulp {ulp})");
        }
    }
    Ok(())
}

#[test]
fn convolution_and_pooling_compute_in_f32() -> Result<()> {
    let x = tensor(&[2, 6, 6, 3], 10)?;
    let k = tensor(&[4, 3, 3, 3], 11)?.affine(0.2, 0.0)?;
    let params = Conv2dParams { padding: Padding::Same, ..Default::default() };
    check_op("conv2d", &[&x, &k], |t| t[0].conv2d(&t[1], None, &params))?;
    check_op("max_pool2d", &[&x], |t| t[0].max_pool2d((2, 2), (2, 2), Padding::Valid))?;
    check_op("avg_pool2d", &[&x], |t| t[0].avg_pool2d((2, 2), (2, 2), Padding::Valid))?;
    Ok(())
}

#[test]
fn cast_gradient_is_the_cast_back() -> Result<()> {
    for dtype in LOW {
        // f32 source through a 16-bit computation: the gradient arrives as f32.
        let x = tensor(&[3, 4], 12)?;
        let tape = GradientTape::new();
        tape.watch(&x);
        let loss = tape.record(|| x.cast(dtype)?.mul_scalar(3.0)?.cast(DType::F32)?.sum(&[0, 1], false))?;
        let g = tape.gradient(&loss, &[&x])?.remove(0).expect("x is used");
        assert_eq!(g.dtype(), DType::F32);
        assert_eq!(g.to_vec::<f32>()?, vec![3.0; 12]);

        // A 16-bit source computed on in f32: the gradient is rounded to the source dtype.
        let w = x.cast(dtype)?;
        let tape = GradientTape::new();
        tape.watch(&w);
        let loss = tape.record(|| w.cast(DType::F32)?.square()?.sum(&[0, 1], false))?;
        let g = tape.gradient(&loss, &[&w])?.remove(0).expect("w is used");
        assert_eq!(g.dtype(), dtype);
        let want = half_round(&w.cast(DType::F32)?.mul_scalar(2.0)?.to_vec::<f32>()?, dtype);
        assert_same(&g.cast(DType::F32)?.to_vec::<f32>()?, &want, &format!("d/dw sum(w^2) on {dtype}"));
    }
    Ok(())
}

#[test]
fn gradients_flow_through_16_bit_ops() -> Result<()> {
    // matmul and a broadcast add on bf16, the gradient against the f32 one within the
    // rounding of a few bf16 steps.
    let a = tensor(&[4, 6], 13)?;
    let b = tensor(&[6, 3], 14)?;
    let grad = |dtype: DType| -> Result<Vec<f32>> {
        let (la, lb) = (a.cast(dtype)?, b.cast(dtype)?);
        let tape = GradientTape::new();
        tape.watch(&la);
        let loss = tape.record(|| la.matmul(&lb)?.relu()?.sum(&[0, 1], false))?;
        let g = tape.gradient(&loss, &[&la])?.remove(0).expect("a is used");
        assert_eq!(g.dtype(), dtype);
        g.cast(DType::F32)?.to_vec::<f32>()
    };
    let reference = grad(DType::F32)?;
    for (dtype, tol) in [(DType::BF16, 0.05), (DType::F16, 0.01)] {
        for (g, r) in grad(dtype)?.iter().zip(&reference) {
            assert!((g - r).abs() <= tol * (1.0 + r.abs()), "{dtype}: {g} vs {r}");
        }
    }
    Ok(())
}

#[test]
fn refusals_name_the_op_and_dtype() -> Result<()> {
    for dtype in LOW {
        let x = tensor(&[4, 3], 15)?.cast(dtype)?;
        let err = x.batch_norm_train(None, None, 1e-3).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedDType { op: "batch_norm_train", dtype: d, .. } if d == dtype),
            "{err:?}"
        );
        assert!(err.to_string().contains("cast bf16 and f16 to f32 first"), "{err}");
        let step = SgdStep { learning_rate: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let err = sgd_update(&x, &x, None, &step).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "sgd_update", .. }), "{err:?}");
        // Operands of different dtypes are a mismatch, not a silent widening.
        let f = tensor(&[4, 3], 16)?;
        assert!(matches!(x.add(&f), Err(Error::DTypeMismatch { .. })));
        assert!(matches!(x.matmul(&f.transpose(0, 1)?), Err(Error::DTypeMismatch { .. })));
        let other = if dtype == DType::BF16 { DType::F16 } else { DType::BF16 };
        assert!(matches!(x.mul(&f.cast(other)?), Err(Error::DTypeMismatch { .. })));
    }
    Ok(())
}

/// Built without `cuda`, a bf16/f16 tensor cannot move to a CUDA device, as no tensor can
/// (built with it, tests/cuda_low_precision.rs checks bf16 and f16 on CUDA against the CPU,
/// and that batch norm and optimizer updates refuse them there too).
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_is_unavailable_without_the_feature() -> Result<()> {
    for dtype in LOW {
        let x = tensor(&[2, 2], 17)?.cast(dtype)?;
        let err = x.to_device(&Device::Cuda(0)).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err:?}");
        let err = Tensor::zeros([2], dtype, &Device::Cuda(0)).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err:?}");
    }
    Ok(())
}
