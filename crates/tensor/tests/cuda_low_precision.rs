//! bf16 and f16 on CUDA against the CPU: storage, casts, elementwise and layout ops bit
//! for bit (both compute in f32 and round once to nearest even), reductions, matrix
//! products, convolutions, pooling, softmax and gradients within a tolerance where the
//! order of f32 accumulation differs, and the ops that still refuse them.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` and passes;
//! `REQUIRE_GPU=1` (set by scripts/cuda-emu/run.sh) makes that a failure.
#![cfg(feature = "cuda")]

mod common;

use common::bits::{assert_same_bits, bits};
use tapegrad_tensor::half::{bf16, f16};
use tapegrad_tensor::optim::{sgd_update, SgdStep};
use tapegrad_tensor::testing::cuda_or_skip;
use tapegrad_tensor::{Conv2dParams, DType, Device, Error, GradientTape, PadMode, Padding, Result, Tensor};

const CPU: Device = Device::Cpu;
const LOW: [DType; 2] = [DType::BF16, DType::F16];

/// Values that exercise the rounding (ties, overflow, subnormals, specials), as in
/// tests/low_precision.rs.
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
        -f32::MAX,
        f32::MIN_POSITIVE, // a bf16 normal, an f16 zero
        1e-40,             // an f32 and bf16 subnormal
        6.0e-8,            // about f16's smallest subnormal (5.96e-8)
        2.0f32.powi(-25),  // half f16's smallest subnormal: a tie, to 0
        1e-8,              // below f16's range: 0
        3.0e-5,            // an f16 subnormal
        -3.0e-5,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001), // a signaling NaN: narrowed to a quiet one
        f32::from_bits(0xFFC1_2345), // a NaN with a payload
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]
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

/// A CPU tensor of `dtype` with [`values`], rounded once from f32.
fn tensor(shape: &[usize], seed: u32, dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed), shape, &CPU)?.cast(dtype)
}

/// Asserts a CUDA result equals the CPU's bit for bit (NaN matching any NaN), dtype and
/// shape included.
fn assert_same(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    assert_same_bits(what, got, want, ("on CUDA", "on the CPU"))
}

/// The position of a 16-bit float on the number line in units in the last place
/// (consecutive values differ by 1; +0 and -0 are both 0).
fn ordinal(bits: u16) -> i64 {
    let magnitude = (bits & 0x7FFF) as i64;
    if bits & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Asserts a CUDA result is within `ulps` units in the last place of the CPU's (for ops
/// whose f32 math may differ in the last f32 bit between a GPU's and the host's library),
/// NaN where the CPU has NaN.
fn assert_ulps(what: &str, got: &Tensor, want: &Tensor, ulps: i64) -> Result<()> {
    assert_eq!((got.dtype(), got.dims()), (want.dtype(), want.dims()), "{what}: dtype and shape");
    let (g, w) = (bits(got)?, bits(want)?);
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if a == u64::MAX || b == u64::MAX {
            assert_eq!(a, b, "{what}[{i}]: NaN on one device only");
            continue;
        }
        let d = (ordinal(a as u16) - ordinal(b as u16)).abs();
        assert!(d <= ulps, "{what}[{i}]: bits {a:#x} on CUDA, {b:#x} on the CPU ({d} ulps apart)");
    }
    Ok(())
}

/// Asserts `|got - want| <= tol * (1 + |want|)` (or equality) elementwise (accumulations in another order).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    assert_eq!((got.dtype(), got.dims()), (want.dtype(), want.dims()), "{what}: dtype and shape");
    let g = got.to_device(&CPU)?.cast(DType::F64)?.to_vec::<f64>()?;
    let w = want.cast(DType::F64)?.to_vec::<f64>()?;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        // Equal infinities (an f16 overflow on both devices) pass.
        assert!(a == b || (a - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: {a} on CUDA, {b} on the CPU");
    }
    Ok(())
}

/// The tolerance of a result accumulated in f32 in another order and rounded once: two
/// units of the format's precision relative to the value (bf16 keeps 8 bits, f16 11).
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2.0 / 256.0
    } else {
        2.0 / 2048.0
    }
}

/// Runs `f` on the CPU inputs and on their copies on `device`.
fn both(inputs: &[Tensor], device: &Device, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<(Tensor, Tensor)> {
    let on_device = inputs.iter().map(|t| t.to_device(device)).collect::<Result<Vec<_>>>()?;
    let got = f(&on_device)?;
    assert_eq!(got.device(), *device, "the result stays on the device");
    Ok((got, f(inputs)?))
}

#[test]
fn storage_and_fill_round_trip_bit_for_bit() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("storage_and_fill_round_trip_bit_for_bit") else { return Ok(()) };
    // Every bit pattern, NaNs included, uploads and downloads unchanged.
    let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let back = Tensor::from_vec(b.clone(), [256, 256], &CPU)?.to_device(&device)?.to_vec::<bf16>()?;
    assert!(back.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "bf16 round trip");
    let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let back = Tensor::from_vec(h.clone(), [65536], &CPU)?.to_device(&device)?.to_vec::<f16>()?;
    assert!(back.iter().zip(&h).all(|(x, y)| x.to_bits() == y.to_bits()), "f16 round trip");
    for dtype in LOW {
        for value in [0.1, -2.5, 65519.0, 1e6, 0.0, -0.0, f64::NAN, 1.0 + 1.0 / 256.0 + 1e-12] {
            let got = Tensor::full(value, [3, 5], dtype, &device)?;
            assert_same(&format!("full({value}) {dtype}"), &got, &Tensor::full(value, [3, 5], dtype, &CPU)?)?;
        }
        let zeros = Tensor::zeros([1000], dtype, &device)?;
        assert_same(&format!("zeros {dtype}"), &zeros, &Tensor::zeros([1000], dtype, &CPU)?)?;
        assert_same(
            &format!("empty {dtype}"),
            &Tensor::zeros([0, 3], dtype, &device)?,
            &Tensor::zeros([0, 3], dtype, &CPU)?,
        )?;
    }
    Ok(())
}

#[test]
fn casts_match_cpu_bit_for_bit() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("casts_match_cpu_bit_for_bit") else { return Ok(()) };
    let mut v = special_f32();
    v.extend(values(300, 1));
    let f32s = Tensor::from_vec(v.clone(), [v.len()], &CPU)?;
    // f64 values just above and below halfway points far below f32's precision: one
    // rounding differs from rounding to f32 first.
    let mut w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    for base in [1.0 + 1.0 / 256.0, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 65520.0, 2f64.powi(-25)] {
        w.extend([base, base + base * 1e-12, base - base * 1e-12, -base - base * 1e-12]);
    }
    w.extend([1e300, -1e300, 1e-300, f64::MAX]);
    let f64s = Tensor::from_vec(w.clone(), [w.len()], &CPU)?;
    let ints: Vec<i64> = vec![0, 1, -1, 257, 65519, 65520, (1 << 24) + 1, (1 << 53) + 1, 3 << 60, i64::MAX, i64::MIN];
    let i64s = Tensor::from_vec(ints.clone(), [ints.len()], &CPU)?;
    let mut sources = vec![f32s.clone(), f64s, i64s];
    for dtype in LOW {
        sources.push(f32s.cast(dtype)?);
    }
    // Every 16-bit value, as a source too.
    sources.push(Tensor::from_vec((0..=u16::MAX).map(bf16::from_bits).collect::<Vec<_>>(), [65536], &CPU)?);
    sources.push(Tensor::from_vec((0..=u16::MAX).map(f16::from_bits).collect::<Vec<_>>(), [65536], &CPU)?);
    for src in &sources {
        let on_device = src.to_device(&device)?;
        for to in [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16] {
            if !(src.dtype().is_low_precision() || to.is_low_precision()) {
                continue;
            }
            let what = format!("cast {} ({} values) to {to}", src.dtype(), src.elem_count());
            assert_same(&what, &on_device.cast(to)?, &src.cast(to)?)?;
        }
    }
    // A NaN stays a quiet NaN when narrowed, payload or not.
    let nans =
        Tensor::from_vec(vec![f32::NAN, f32::from_bits(0x7F80_0001), f32::from_bits(0xFFC1_2345)], [3], &device)?;
    for b in nans.cast(DType::BF16)?.to_vec::<bf16>()? {
        assert!(b.is_nan() && b.to_bits() & 0x0040 != 0, "bf16 {:#x} is a quiet NaN", b.to_bits());
    }
    for h in nans.cast(DType::F16)?.to_vec::<f16>()? {
        assert!(h.is_nan() && h.to_bits() & 0x0200 != 0, "f16 {:#x} is a quiet NaN", h.to_bits());
    }
    Ok(())
}

/// Unary ops whose f32 result is correctly rounded on any device (IEEE operations), so
/// the rounded 16-bit results are identical.
type Op = (&'static str, fn(&Tensor) -> Result<Tensor>);
/// A named binary op.
type Two = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>);
/// A named op on several inputs.
type Many = (&'static str, fn(&[Tensor]) -> Result<Tensor>);
const EXACT_UNARY: [Op; 11] = [
    ("neg", |x| x.neg()),
    ("abs", |x| x.abs()),
    ("relu", |x| x.relu()),
    ("square", |x| x.square()),
    ("sqrt", |x| x.abs()?.sqrt()),
    ("recip", |x| x.recip()),
    ("sign", |x| x.sign()),
    ("clamp", |x| x.clamp(-0.5, 0.7)),
    ("affine", |x| x.affine(1.5, -0.25)),
    ("mul_scalar", |x| x.mul_scalar(3.0)),
    ("leaky_relu", |x| x.leaky_relu(0.2)),
];

/// Unary ops through library functions (exp, tanh, ...), which a GPU computes to within
/// an f32 ulp or two of the host's: at most one 16-bit ulp apart after rounding.
const LIBRARY_UNARY: [Op; 9] = [
    ("exp", |x| x.exp()),
    ("log", |x| x.abs()?.log()),
    ("tanh", |x| x.tanh()),
    ("sigmoid", |x| x.sigmoid()),
    ("powf", |x| x.abs()?.powf(2.5)),
    ("gelu", |x| x.gelu(false)),
    ("silu", |x| x.silu()),
    ("softplus", |x| x.softplus()),
    ("erf", |x| x.erf()),
];

#[test]
fn elementwise_ops_match_cpu() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("elementwise_ops_match_cpu") else { return Ok(()) };
    let mut v = special_f32();
    v.extend(values(700, 2));
    for dtype in LOW {
        let x = Tensor::from_vec(v.clone(), [v.len()], &CPU)?.cast(dtype)?;
        let xs = [x];
        for (name, f) in EXACT_UNARY {
            let (got, want) = both(&xs, &device, |t| f(&t[0]))?;
            assert_same(&format!("{name} {dtype}"), &got, &want)?;
        }
        for (name, f) in LIBRARY_UNARY {
            let (got, want) = both(&xs, &device, |t| f(&t[0]))?;
            assert_ulps(&format!("{name} {dtype}"), &got, &want, 1)?;
        }
        // Binary ops: same shapes, a scalar, and broadcasts (a bias row, a column).
        let shapes: [(&[usize], &[usize]); 4] =
            [(&[7, 33], &[7, 33]), (&[7, 33], &[]), (&[64, 130], &[130]), (&[3, 1, 5], &[4, 1])];
        for (i, (ls, rs)) in shapes.into_iter().enumerate() {
            let a = tensor(ls, 10 + i as u32, dtype)?;
            let b = tensor(rs, 20 + i as u32, dtype)?;
            let ops: [Two; 12] = [
                ("add", |a, b| a.add(b)),
                ("sub", |a, b| a.sub(b)),
                ("mul", |a, b| a.mul(b)),
                ("div", |a, b| a.div(b)),
                ("maximum", |a, b| a.maximum(b)),
                ("minimum", |a, b| a.minimum(b)),
                ("equal", |a, b| a.equal(b)),
                ("not_equal", |a, b| a.not_equal(b)),
                ("lt", |a, b| a.lt(b)),
                ("le", |a, b| a.le(b)),
                ("gt", |a, b| a.gt(b)),
                ("ge", |a, b| a.ge(b)),
            ];
            for (name, f) in ops {
                let (got, want) = both(&[a.clone(), b.clone()], &device, |t| f(&t[0], &t[1]))?;
                assert_same(&format!("{name} {dtype} {ls:?} with {rs:?}"), &got, &want)?;
            }
        }
        // NaN and infinities through binary ops (a NaN on the left wins maximum/minimum).
        let sv = special_f32();
        let s = Tensor::from_vec(sv.clone(), [sv.len()], &CPU)?.cast(dtype)?;
        let r = Tensor::from_vec(sv.iter().rev().copied().collect::<Vec<_>>(), [sv.len()], &CPU)?.cast(dtype)?;
        for (name, f) in [
            ("add", Tensor::add as fn(&Tensor, &Tensor) -> Result<Tensor>),
            ("mul", Tensor::mul),
            ("maximum", Tensor::maximum),
            ("div", Tensor::div),
        ] {
            let (got, want) = both(&[s.clone(), r.clone()], &device, |t| f(&t[0], &t[1]))?;
            assert_same(&format!("{name} {dtype} specials"), &got, &want)?;
        }
        // A bf16 op refuses an operand of another dtype, as on the CPU.
        let other = tensor(&[7, 33], 1, DType::F32)?.to_device(&device)?;
        let err = tensor(&[7, 33], 2, dtype)?.to_device(&device)?.add(&other).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{err:?}");
    }
    Ok(())
}

#[test]
fn layout_ops_move_values_unchanged() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("layout_ops_move_values_unchanged") else { return Ok(()) };
    // Bit patterns that a conversion would change (NaN payloads, subnormals).
    for dtype in LOW {
        let raw: Vec<u16> = (0..2 * 3 * 4 * 5).map(|i| (i * 2713 + 0x7C01) as u16).collect();
        let x = match dtype {
            DType::BF16 => {
                Tensor::from_vec(raw.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>(), [2, 3, 4, 5], &CPU)?
            }
            _ => Tensor::from_vec(raw.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>(), [2, 3, 4, 5], &CPU)?,
        };
        let y = tensor(&[2, 3, 7, 5], 3, dtype)?;
        let ops: [Many; 9] = [
            ("permute", |t| t[0].permute(&[3, 1, 0, 2])),
            ("transpose", |t| t[0].transpose(1, 3)),
            ("narrow", |t| t[0].narrow(2, 1, 2)),
            ("broadcast_to", |t| t[0].narrow(0, 0, 1)?.broadcast_to([3, 3, 4, 5])),
            ("reshape", |t| t[0].permute(&[1, 0, 2, 3])?.reshape([6, 20])),
            ("concat", |t| Tensor::concat(&[&t[0], &t[1]], 2)),
            ("stack", |t| Tensor::stack(&[&t[0], &t[0]], 1)),
            ("permute and reshape", |t| t[0].permute(&[3, 2, 1, 0])?.reshape([20, 6])),
            ("pad", |t| t[0].pad(&[(0, 0), (1, 2), (0, 1), (2, 0)], PadMode::Constant(0.0))),
        ];
        for (name, f) in ops {
            let (got, want) = both(&[x.clone(), y.clone()], &device, f)?;
            assert_eq!(bits(&got)?, bits(&want)?, "{name} {dtype}");
            // Bit for bit, NaN payloads included.
            let raw_of = |t: &Tensor| -> Result<Vec<u16>> {
                let t = t.to_device(&CPU)?;
                Ok(if dtype == DType::BF16 {
                    t.to_vec::<bf16>()?.iter().map(|b| b.to_bits()).collect()
                } else {
                    t.to_vec::<f16>()?.iter().map(|b| b.to_bits()).collect()
                })
            };
            assert_eq!(raw_of(&got)?, raw_of(&want)?, "{name} {dtype}: raw bits");
        }
    }
    Ok(())
}

#[test]
fn reductions_accumulate_in_f32() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("reductions_accumulate_in_f32") else { return Ok(()) };
    for dtype in LOW {
        let x = tensor(&[4, 50, 6], 4, dtype)?;
        let long = tensor(&[3, 20_000], 5, dtype)?;
        let xs = [x.clone(), long];
        let sums: [Many; 5] = [
            ("sum middle", |t| t[0].sum(&[1], true)),
            ("sum outer and inner", |t| t[0].sum(&[0, 2], false)),
            ("sum all", |t| t[0].sum_all()),
            ("mean", |t| t[0].mean(&[-1], false)),
            ("long rows", |t| t[1].sum(&[1], false)),
        ];
        for (name, f) in sums {
            let (got, want) = both(&xs, &device, f)?;
            assert_close(&format!("{name} {dtype}"), &got, &want, tolerance(dtype))?;
        }
        // Max, min and their indices pick an element: exact.
        let picks: [Many; 4] = [
            ("max", |t| t[0].max(&[1], false)),
            ("min", |t| t[0].min(&[0, 2], true)),
            ("argmax", |t| t[0].argmax(1)),
            ("argmin", |t| t[1].argmin(-1)),
        ];
        for (name, f) in picks {
            let (got, want) = both(&xs, &device, f)?;
            assert_same(&format!("{name} {dtype}"), &got, &want)?;
        }
        // 4096 ones: an f32 accumulation is exact where a bf16 one would stop at 256.
        let ones = Tensor::ones([4096], dtype, &device)?;
        assert_eq!(ones.sum_all()?.cast(DType::F32)?.to_scalar::<f32>()?, 4096.0, "{dtype}");
    }
    Ok(())
}

#[test]
fn matmul_accumulates_in_f32_through_cublas() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("matmul_accumulates_in_f32_through_cublas") else { return Ok(()) };
    type Mm = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let cases: [(&str, &[usize], &[usize], Mm); 6] = [
        ("2-D", &[5, 7], &[7, 3], |a, b| a.matmul(b)),
        ("batched", &[4, 5, 7], &[4, 7, 3], |a, b| a.matmul(b)),
        ("shared rhs", &[4, 5, 7], &[7, 3], |a, b| a.matmul(b)),
        ("lhs transposed", &[7, 5], &[7, 3], |a, b| a.matmul_transposed(b, true, false)),
        ("both transposed, batched", &[2, 7, 5], &[2, 3, 7], |a, b| a.matmul_transposed(b, true, true)),
        ("larger", &[64, 300], &[300, 48], |a, b| a.matmul(b)),
    ];
    for dtype in LOW {
        for (i, (name, ls, rs, f)) in cases.into_iter().enumerate() {
            let (a, b) = (tensor(ls, 30 + i as u32, dtype)?, tensor(rs, 40 + i as u32, dtype)?);
            let (got, want) = both(&[a.clone(), b.clone()], &device, |t| f(&t[0], &t[1]))?;
            assert_close(&format!("matmul {name} {dtype}"), &got, &want, tolerance(dtype))?;
            // Against the f32 product rounded once: within one unit of the 16-bit format
            // (the f32 sums differ only in their order).
            let reference = f(&a.cast(DType::F32)?, &b.cast(DType::F32)?)?.cast(dtype)?;
            assert_ulps(&format!("matmul {name} {dtype} vs f32"), &got, &reference, 1)?;
        }
        // Products and sums exact in f32 (multiples of 1/16 up to 4, 64 terms): the f32 sum
        // is the same in any order, so its one rounding to 16 bits must match the CPU's
        // bit for bit (a truncating or twice-rounding GEMM would not).
        let grid = |n: usize, seed: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..n).map(|i| ((i * 37 + seed * 11) % 129) as f32 / 16.0 - 4.0).collect();
            Tensor::from_vec(v, [n], &CPU)?.cast(dtype)
        };
        let (a, b) = (grid(3 * 40 * 64, 1)?.reshape([3, 40, 64])?, grid(3 * 64 * 24, 2)?.reshape([3, 64, 24])?);
        let (got, want) = both(&[a, b], &device, |t| t[0].matmul(&t[1]))?;
        assert_same(&format!("matmul of exact sums {dtype}"), &got, &want)?;
        // 2048 products of 1 * 1: exact only if the sum is kept in f32.
        let ones = Tensor::ones([2, 2048], dtype, &device)?;
        let p = ones.matmul_transposed(&ones, false, true)?.cast(DType::F32)?.to_vec::<f32>()?;
        assert_eq!(p, vec![2048.0; 4], "{dtype}");
    }
    Ok(())
}

/// Sets `TAPEGRAD_CUDA_NO_CPU_FALLBACK=1` while it lives (tests hold the GPU lock, so no
/// other test sees it): a convolution cuDNN cannot run in bf16/f16 fails instead of
/// quietly running on the CPU.
struct NoCpuFallback(Option<String>);

impl NoCpuFallback {
    const VAR: &'static str = "TAPEGRAD_CUDA_NO_CPU_FALLBACK";

    fn new() -> NoCpuFallback {
        let old = std::env::var(Self::VAR).ok();
        std::env::set_var(Self::VAR, "1");
        NoCpuFallback(old)
    }
}

impl Drop for NoCpuFallback {
    fn drop(&mut self) {
        match &self.0 {
            Some(v) => std::env::set_var(Self::VAR, v),
            None => std::env::remove_var(Self::VAR),
        }
    }
}

#[test]
fn conv_pool_softmax_and_friends_compute_in_f32() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("conv_pool_softmax_and_friends_compute_in_f32") else { return Ok(()) };
    // The convolutions run in cuDNN with 16-bit tensors, not on the CPU.
    let _no_fallback = NoCpuFallback::new();
    for dtype in LOW {
        let x = tensor(&[2, 7, 7, 3], 50, dtype)?;
        let k = tensor(&[4, 3, 3, 3], 51, dtype)?.mul_scalar(0.3)?;
        let bias = tensor(&[4], 52, dtype)?;
        let logits = tensor(&[8, 100], 53, dtype)?;
        let xs = [x, k, bias, logits];
        let accumulating: [Many; 5] = [
            ("conv2d same stride 2", |t| {
                let p = Conv2dParams { strides: (2, 2), padding: Padding::Same, ..Default::default() };
                t[0].conv2d(&t[1], Some(&t[2]), &p)
            }),
            ("conv2d valid dilated", |t| {
                t[0].conv2d(&t[1], None, &Conv2dParams { dilation: (2, 1), ..Default::default() })
            }),
            ("avg_pool2d", |t| t[0].avg_pool2d((2, 2), (2, 2), Padding::Same)),
            ("log_softmax", |t| t[3].log_softmax(-1)),
            ("softmax", |t| t[3].softmax(0)),
        ];
        for (name, f) in accumulating {
            let (got, want) = both(&xs, &device, f)?;
            assert_close(&format!("{name} {dtype}"), &got, &want, tolerance(dtype))?;
        }
        let picks: [Many; 2] = [
            ("max_pool2d", |t| t[0].max_pool2d((3, 3), (2, 2), Padding::Same)),
            ("reflect pad", |t| t[0].pad(&[(0, 0), (2, 1), (1, 2), (0, 0)], PadMode::Reflect)),
        ];
        for (name, f) in picks {
            let (got, want) = both(&xs, &device, f)?;
            assert_same(&format!("{name} {dtype}"), &got, &want)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_cpu() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("gradients_match_cpu") else { return Ok(()) };
    let _no_fallback = NoCpuFallback::new();
    for dtype in LOW {
        let inputs = [
            tensor(&[2, 6, 6, 3], 60, dtype)?,
            tensor(&[4, 3, 3, 3], 61, dtype)?.mul_scalar(0.3)?,
            tensor(&[4], 62, dtype)?,
            tensor(&[36, 5], 63, dtype)?.mul_scalar(0.2)?,
        ];
        let run = |on: &Device| -> Result<Vec<Tensor>> {
            let t: Vec<Tensor> = inputs.iter().map(|x| x.to_device(on)).collect::<Result<_>>()?;
            let tape = GradientTape::new();
            for v in &t {
                tape.watch(v);
            }
            let loss = tape.record(|| {
                let p = Conv2dParams { padding: Padding::Same, ..Default::default() };
                let h = t[0].conv2d(&t[1], Some(&t[2]), &p)?.relu()?.max_pool2d((2, 2), (2, 2), Padding::Valid)?;
                let h = h.reshape([2, 36])?.matmul(&t[3])?.log_softmax(-1)?;
                h.mean_all()?.neg()
            })?;
            let grads = tape.gradient(&loss, &t.iter().collect::<Vec<_>>())?;
            let mut out = vec![loss];
            for g in grads {
                let g = g.expect("every input is used");
                assert_eq!((g.dtype(), g.device()), (dtype, *on), "gradients keep dtype and device");
                out.push(g);
            }
            Ok(out)
        };
        let (got, want) = (run(&device)?, run(&CPU)?);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Several roundings to 16 bits on the way back: a looser bound than one op's.
            assert_close(&format!("gradient {i} {dtype}"), g, w, 4.0 * tolerance(dtype))?;
        }
    }
    Ok(())
}

/// Batch norm and optimizer updates keep their statistics and variables in f32 under
/// mixed precision: CUDA refuses bf16/f16 for them with the CPU's error.
#[test]
fn statistics_and_updates_refuse_16_bit_as_on_the_cpu() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("statistics_and_updates_refuse_16_bit_as_on_the_cpu") else {
        return Ok(());
    };
    for dtype in LOW {
        let x = tensor(&[4, 3], 70, dtype)?.to_device(&device)?;
        let err = x.batch_norm_train(None, None, 1e-3).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedDType { op: "batch_norm_train", dtype: d, .. } if d == dtype),
            "{err:?}"
        );
        assert!(err.to_string().contains("cast bf16 and f16 to f32 first"), "{err}");
        let step = SgdStep { learning_rate: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let err = sgd_update(&x, &x, None, &step).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "sgd_update", dtype: d, .. } if d == dtype), "{err:?}");
        // The tensor stays usable.
        assert_same("after the refusals", &x.neg()?, &tensor(&[4, 3], 70, dtype)?.neg()?)?;
    }
    Ok(())
}
