//! The native bf16 and f16 CUDA kernels (two-byte loads, f32 math exactly as the f32
//! kernels do it, one rounding when storing) of reductions, arg-reductions, max and average
//! pooling, gather and scatter_add, padding and resizing, forward and backward. Each op is
//! checked bit for bit against
//! - the same op through f32 on the same device (cast, f32 op, cast back), on any values:
//!   the native kernels must compute exactly what the widened path computed before them;
//! - the CPU (which computes bf16 and f16 through f32), on multiples of 1/8 whose f32 sums
//!   are exact in any order, with NaN, infinities, signed zeros and a signaling NaN mixed in.
//!
//! Odd sizes throughout, so that no launch divides evenly into blocks, chunks or windows.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` and passes;
//! `REQUIRE_GPU=1` (set by scripts/cuda-emu/run.sh) makes that a failure.
#![cfg(feature = "cuda")]

mod common;

use common::bits::assert_same_bits;
use tapegrad_tensor::testing::cuda_or_skip;
use tapegrad_tensor::{DType, Device, GradientTape, Interpolation, PadMode, Padding, Result, Tensor};

const CPU: Device = Device::Cpu;
const LOW: [DType; 2] = [DType::BF16, DType::F16];

/// Multiples of 1/8 in [-4, 4]: exact in bf16 and f16, and every f32 sum of a few thousand
/// of them (or of their products with the dyadic weights used here) is exact.
fn grid(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 + seed * 11) % 65) as f32 / 8.0 - 4.0).collect()
}

/// Deterministic values in about [-2, 2) with a few larger ones (sums of them round).
fn noise(n: usize, seed: u32) -> Vec<f32> {
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

/// `v` with NaN, a signaling NaN, infinities and signed zeros at scattered positions.
fn with_specials(mut v: Vec<f32>) -> Vec<f32> {
    let specials = [f32::NAN, f32::from_bits(0x7F80_0001), f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
    let n = v.len();
    for (k, s) in specials.into_iter().enumerate() {
        for at in [k * 131 + 7, k * 977 + 3 * n / 5] {
            if n > 0 {
                v[at % n] = s;
            }
        }
    }
    v
}

/// A CPU tensor of `dtype` holding `v` (rounded once from f32).
fn tensor(v: Vec<f32>, shape: &[usize], dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &CPU)?.cast(dtype)
}

fn assert_same(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    assert_same_bits(what, got, want, ("natively", "in the reference"))
}

/// An op on several inputs (the float ones of a 16-bit dtype, indices in i64).
type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// Runs `f` on `inputs` moved to `device` (natively in their 16-bit dtype) and checks it
/// bit for bit against `f` on the inputs widened to f32 on the device with its float result
/// rounded back, and, if `cpu`, against `f` on the CPU.
fn check(device: &Device, what: &str, inputs: &[Tensor], f: &Op, cpu: bool) -> Result<()> {
    let on_device: Vec<Tensor> = inputs.iter().map(|t| t.to_device(device)).collect::<Result<_>>()?;
    let got = f(&on_device).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.device(), *device, "{what}: the result stays on the device");
    let low = inputs[0].dtype();
    assert!(got.dtype() == low || got.dtype() == DType::I64, "{what}: result dtype {}", got.dtype());
    let widened: Vec<Tensor> = on_device
        .iter()
        .map(|t| if t.dtype() == low { t.cast(DType::F32) } else { Ok(t.clone()) })
        .collect::<Result<_>>()?;
    let mut reference = f(&widened)?;
    if reference.dtype() == DType::F32 {
        reference = reference.cast(low)?;
    }
    assert_same(&format!("{what} vs through f32"), &got, &reference)?;
    if cpu {
        assert_same(&format!("{what} vs CPU"), &got, &f(inputs)?)?;
    }
    Ok(())
}

/// `f(x)` and, as a second op, the gradient of `sum(f(x) * w)` with respect to `x` for a
/// fixed `w` of multiples of 1/8 (exact in every dtype): the backward kernel's check.
fn with_gradient(f: impl Fn(&Tensor) -> Result<Tensor> + Clone + 'static) -> [Op; 2] {
    let g = f.clone();
    let grad = move |t: &[Tensor]| -> Result<Tensor> {
        let x = &t[0];
        let tape = GradientTape::new();
        tape.watch(x);
        let y = tape.record(|| g(x))?;
        let w = tensor(grid(y.elem_count(), 5), y.dims(), x.dtype())?.to_device(&x.device())?;
        let grads = tape.gradient_with_output_gradient(&y, &[x], &w)?;
        Ok(grads.into_iter().next().flatten().expect("x takes part"))
    };
    [Box::new(move |t: &[Tensor]| f(&t[0])), Box::new(grad)]
}

#[test]
fn reductions_are_native_and_exact() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("reductions_are_native_and_exact") else { return Ok(()) };
    // (name, shape, op): one pass in rows and in columns, split rows (a long row in chunks),
    // split columns, two passes, every axis, only axes of size 1 (a copy), an empty axis.
    let cases: Vec<(&str, Vec<usize>, Op)> = vec![
        ("sum middle", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].sum(&[1], true))),
        ("sum last", vec![7, 333], Box::new(|t: &[Tensor]| t[0].sum(&[-1], false))),
        ("sum long rows", vec![3, 20_001], Box::new(|t: &[Tensor]| t[0].sum(&[1], false))),
        ("sum long column", vec![3001, 5], Box::new(|t: &[Tensor]| t[0].sum(&[0], false))),
        ("sum outer and inner", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].sum(&[0, 2], false))),
        ("sum all", vec![5, 13, 7], Box::new(|t: &[Tensor]| t[0].sum_all())),
        ("sum of size-1 axes", vec![5, 1, 3], Box::new(|t: &[Tensor]| t[0].sum(&[1], false))),
        ("sum of an empty axis", vec![3, 0], Box::new(|t: &[Tensor]| t[0].sum(&[1], false))),
        ("mean", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].mean(&[-1], false))),
        ("max middle", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].max(&[1], false))),
        ("max long rows", vec![3, 20_001], Box::new(|t: &[Tensor]| t[0].max(&[1], true))),
        ("max of size-1 axes", vec![5, 1, 3], Box::new(|t: &[Tensor]| t[0].max(&[1], false))),
        ("min outer and inner", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].min(&[0, 2], true))),
        ("min long column", vec![3001, 5], Box::new(|t: &[Tensor]| t[0].min(&[0], false))),
        ("argmax middle", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].argmax(1))),
        ("argmax long rows", vec![3, 20_001], Box::new(|t: &[Tensor]| t[0].argmax(-1))),
        ("argmin first", vec![4, 51, 6], Box::new(|t: &[Tensor]| t[0].argmin(0))),
    ];
    for dtype in LOW {
        for (seed, (name, shape, f)) in cases.iter().enumerate() {
            let n = shape.iter().product();
            let what = format!("{name} {shape:?} {dtype}");
            check(&device, &format!("{what} on noise"), &[tensor(noise(n, seed as u32), shape, dtype)?], f, false)?;
            let exact = tensor(with_specials(grid(n, seed)), shape, dtype)?;
            check(&device, &format!("{what} with specials"), &[exact], f, true)?;
        }
        // Rows of ties and of -0 / +0 only: the first index wins, and a max of zeros keeps
        // the first zero's sign, as on the CPU.
        let ties = tensor([0.0, -0.0, 0.0, 1.5, 1.5, -1.5, -1.5, 1.5].repeat(5), &[5, 8], dtype)?;
        for (name, f) in [
            ("argmax ties", Box::new(|t: &[Tensor]| t[0].argmax(1)) as Op),
            ("argmin ties", Box::new(|t: &[Tensor]| t[0].argmin(1))),
            ("max of zeros", Box::new(|t: &[Tensor]| t[0].narrow(1, 0, 3)?.max(&[1], false))),
        ] {
            check(&device, &format!("{name} {dtype}"), std::slice::from_ref(&ties), &f, true)?;
        }
    }
    Ok(())
}

#[test]
fn pooling_is_native_and_exact() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("pooling_is_native_and_exact") else { return Ok(()) };
    let geometries =
        [((3, 3), (2, 2), Padding::Same), ((2, 2), (2, 2), Padding::Valid), ((3, 2), (1, 1), Padding::Same)];
    let shape = [2, 7, 9, 3];
    for dtype in LOW {
        for (g, (size, strides, padding)) in geometries.into_iter().enumerate() {
            let ops = [
                ("max_pool2d", with_gradient(move |x| x.max_pool2d(size, strides, padding))),
                ("avg_pool2d", with_gradient(move |x| x.avg_pool2d(size, strides, padding))),
            ];
            for (name, [forward, backward]) in ops {
                let what = format!("{name} {size:?} {strides:?} {padding:?} {dtype}");
                let noisy = tensor(noise(2 * 7 * 9 * 3, g as u32), &shape, dtype)?;
                // Ties in every window: the gradient goes to the first maximum.
                let exact =
                    tensor(with_specials(grid(2 * 7 * 9 * 3, g).iter().map(|v| v.round()).collect()), &shape, dtype)?;
                for (kind, f) in [("forward", &forward), ("backward", &backward)] {
                    check(&device, &format!("{what} {kind} on noise"), std::slice::from_ref(&noisy), f, true)?;
                    check(&device, &format!("{what} {kind} with specials"), std::slice::from_ref(&exact), f, true)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gather_and_scatter_add_are_native_and_exact() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("gather_and_scatter_add_are_native_and_exact") else { return Ok(()) };
    // Indices that repeat, so that scatter_add sums several rows per output row.
    let ids: Vec<i64> = (0..23).map(|i| (i * 7 % 11) as i64).collect();
    let ids = Tensor::from_vec(ids, [23], &CPU)?;
    let [gather, gather_grad] = with_gradient({
        let ids = ids.clone();
        move |t| t.gather(&ids.to_device(&t.device())?)
    });
    let scatter: Op = Box::new(|t: &[Tensor]| Tensor::scatter_add(&t[0], &t[1], 13));
    for dtype in LOW {
        for (i, values) in [noise(11 * 3 * 5, 1), with_specials(grid(11 * 3 * 5, 1))].into_iter().enumerate() {
            let table = tensor(values, &[11, 3, 5], dtype)?;
            check(&device, &format!("gather {dtype} ({i})"), std::slice::from_ref(&table), &gather, true)?;
            check(&device, &format!("gather gradient {dtype} ({i})"), &[table], &gather_grad, true)?;
        }
        for (i, values) in [noise(23 * 7, 2), with_specials(grid(23 * 7, 2))].into_iter().enumerate() {
            let inputs = [tensor(values, &[23, 7], dtype)?, ids.clone()];
            check(&device, &format!("scatter_add {dtype} ({i})"), &inputs, &scatter, true)?;
        }
    }
    Ok(())
}

/// A named padding: the (before, after) pads of each axis and the mode.
type PadCase = (&'static str, Vec<(usize, usize)>, PadMode);

#[test]
fn pad_is_native_and_exact() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("pad_is_native_and_exact") else { return Ok(()) };
    let pads: [PadCase; 4] = [
        ("zero", vec![(0, 0), (1, 2), (3, 0), (0, 0)], PadMode::Constant(0.0)),
        // 0.1 rounds to f32 and then to 16 bits, as the f32 kernel on widened input does.
        ("constant 0.1", vec![(1, 0), (2, 3), (0, 2), (1, 1)], PadMode::Constant(0.1)),
        ("constant -1e6", vec![(0, 1), (0, 0), (2, 1), (0, 0)], PadMode::Constant(-1e6)),
        ("reflect", vec![(0, 0), (4, 2), (1, 5), (0, 0)], PadMode::Reflect),
    ];
    for dtype in LOW {
        for (name, p, mode) in pads.iter().cloned() {
            let [forward, backward] = with_gradient(move |x| x.pad(&p, mode));
            for (i, values) in [noise(2 * 5 * 7 * 3, 3), with_specials(grid(2 * 5 * 7 * 3, 3))].into_iter().enumerate()
            {
                let x = tensor(values, &[2, 5, 7, 3], dtype)?;
                check(&device, &format!("{name} pad {dtype} ({i})"), std::slice::from_ref(&x), &forward, true)?;
                check(&device, &format!("{name} pad gradient {dtype} ({i})"), &[x], &backward, true)?;
            }
        }
    }
    Ok(())
}

#[test]
fn resize_is_native_and_exact() -> Result<()> {
    let Some((_lock, device)) = cuda_or_skip("resize_is_native_and_exact") else { return Ok(()) };
    for dtype in LOW {
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            for factors in [(2, 2), (1, 4), (3, 1)] {
                let [forward, backward] = with_gradient(move |x| x.resize(factors, interpolation));
                let nearest = interpolation == Interpolation::Nearest;
                // Nearest copies (and its gradient sums multiples of 1/8): exact on any input.
                // Bilinear with factors 2 and 4 has dyadic weights: exact products and sums
                // of multiples of 1/8, so the CPU's order of operations does not matter; the
                // other cases are checked against the widened path only.
                let n = 2 * 5 * 3 * 3;
                let inputs = [
                    ("noise", noise(n, 4), nearest),
                    ("grid", grid(n, 4), nearest || factors != (3, 1)),
                    ("specials", with_specials(grid(n, 4)), nearest),
                ];
                for (kind, values, cpu) in inputs {
                    let what = format!("resize {interpolation:?} {factors:?} {dtype} on {kind}");
                    let x = tensor(values, &[2, 5, 3, 3], dtype)?;
                    check(&device, &what, std::slice::from_ref(&x), &forward, cpu)?;
                    check(&device, &format!("{what}: gradient"), &[x], &backward, cpu)?;
                }
            }
        }
    }
    Ok(())
}
