//! pad, resize and conv2d_transpose on CUDA against the CPU backend: forward and
//! gradients (through GradientTape), f32 and f64, and the same errors on both backends.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure (as cuda_ops.rs).
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use tapegrad_tensor::testing::cuda_or_skip;
use tapegrad_tensor::{
    Conv2dTransposeParams, DType, Device, GradientTape, Interpolation, PadMode, Padding, Result, Tensor,
};

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// The output and the gradients of `sum(f(xs) * w)` with respect to every input.
fn run(f: &Op, xs: &[Tensor], w: &Tensor) -> (Tensor, Vec<Tensor>) {
    let tape = GradientTape::new();
    for x in xs {
        tape.watch(x);
    }
    let y = tape.record(|| f(xs)).unwrap();
    let grads = tape.gradient_with_output_gradient(&y, &xs.iter().collect::<Vec<_>>(), w).unwrap();
    (y, grads.into_iter().map(|g| g.expect("a gradient")).collect())
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (a, b) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * (y.abs() + scale), "{what}[{i}]: cuda {x} vs cpu {y}");
    }
}

/// Runs `f` on inputs of `shapes` on both backends and compares output and gradients.
fn compare(device: Device, name: &str, dtype: DType, shapes: &[&[usize]], f: Op) {
    let mut rng = StdRng::seed_from_u64(7);
    let cpu: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::rand_normal(s.to_vec(), 0.0, 1.0, dtype, &Device::Cpu, &mut rng).unwrap())
        .collect();
    let gpu: Vec<Tensor> = cpu.iter().map(|t| t.to_device(&device).unwrap()).collect();
    let y = f(&cpu).unwrap_or_else(|e| panic!("{name} on cpu: {e}"));
    let w = Tensor::rand_normal(y.shape().clone(), 0.0, 1.0, dtype, &Device::Cpu, &mut rng).unwrap();
    let (y_cpu, g_cpu) = run(&f, &cpu, &w);
    let (y_gpu, g_gpu) = run(&f, &gpu, &w.to_device(&device).unwrap());
    assert_eq!(y_gpu.device(), device, "{name}: output device");
    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
    assert_close(&format!("{name} forward"), &y_gpu, &y_cpu, tol);
    for (i, (gg, gc)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        assert_eq!(gg.device(), device, "{name}: gradient {i} device");
        assert_close(&format!("{name} gradient {i}"), gg, gc, tol);
    }
}

#[test]
fn pad_matches_cpu() {
    let Some((_lock, device)) = cuda_or_skip("pad_matches_cpu") else { return };
    for dtype in [DType::F32, DType::F64] {
        let nhwc: &[usize] = &[2, 5, 6, 3];
        compare(
            device,
            "zero pad",
            dtype,
            &[nhwc],
            Box::new(|x| x[0].pad(&[(0, 0), (1, 2), (3, 0), (0, 0)], PadMode::Constant(0.0))),
        );
        compare(
            device,
            "constant pad",
            dtype,
            &[&[3, 4, 2]],
            Box::new(|x| x[0].pad(&[(1, 0), (2, 3), (0, 2)], PadMode::Constant(-1.5))),
        );
        compare(
            device,
            "reflect pad",
            dtype,
            &[nhwc],
            Box::new(|x| x[0].pad(&[(0, 0), (4, 2), (1, 5), (0, 0)], PadMode::Reflect)),
        );
        compare(
            device,
            "reflect pad every axis",
            dtype,
            &[&[3, 4, 3, 5]],
            Box::new(|x| x[0].pad(&[(1, 2), (3, 1), (2, 2), (4, 1)], PadMode::Reflect)),
        );
        compare(
            device,
            "reflect pad twice",
            dtype,
            &[&[7]],
            Box::new(|x| x[0].pad(&[(6, 6)], PadMode::Reflect)?.square()),
        );
    }
}

#[test]
fn resize_matches_cpu() {
    let Some((_lock, device)) = cuda_or_skip("resize_matches_cpu") else { return };
    for dtype in [DType::F32, DType::F64] {
        for interp in [Interpolation::Nearest, Interpolation::Bilinear] {
            for factors in [(2, 2), (3, 1), (1, 4)] {
                let name = format!("resize {interp:?} {factors:?}");
                compare(
                    device,
                    &name,
                    dtype,
                    &[&[2, 5, 3, 4]],
                    Box::new(move |x| x[0].resize(factors, interp)?.square()),
                );
            }
        }
    }
}

#[test]
fn resize_backward_is_deterministic() {
    let Some((_lock, device)) = cuda_or_skip("resize_backward_is_deterministic") else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let x = Tensor::rand_normal([2, 16, 16, 8], 0.0, 1.0, DType::F32, &device, &mut rng).unwrap();
    let w = Tensor::rand_normal([2, 32, 32, 8], 0.0, 1.0, DType::F32, &device, &mut rng).unwrap();
    let f: Op = Box::new(|x| x[0].resize((2, 2), Interpolation::Bilinear));
    let first = run(&f, std::slice::from_ref(&x), &w).1[0].to_vec::<f32>().unwrap();
    let second = run(&f, std::slice::from_ref(&x), &w).1[0].to_vec::<f32>().unwrap();
    assert_eq!(first, second);
}

#[test]
fn conv2d_transpose_matches_cpu() {
    let Some((_lock, device)) = cuda_or_skip("conv2d_transpose_matches_cpu") else { return };
    let cases: &[(usize, usize, Padding, Option<usize>)] = &[
        (2, 2, Padding::Valid, None),
        (3, 2, Padding::Same, None),
        (3, 2, Padding::Same, Some(0)),
        (3, 2, Padding::Valid, Some(1)),
        (4, 2, Padding::Same, None),
    ];
    for dtype in [DType::F32, DType::F64] {
        for &(k, s, padding, op) in cases {
            let params = Conv2dTransposeParams {
                strides: (s, s),
                padding,
                output_padding: op.map(|o| (o, o)),
                ..Default::default()
            };
            let name = format!("conv2d_transpose k={k} s={s} {padding:?} op={op:?} {dtype}");
            compare(
                device,
                &name,
                dtype,
                &[&[2, 4, 5, 3], &[3, k, k, 4], &[4]],
                Box::new(move |x| x[0].conv2d_transpose(&x[1], Some(&x[2]), &params)),
            );
        }
    }
}

#[test]
fn errors_are_the_cpus() {
    let Some((_lock, device)) = cuda_or_skip("errors_are_the_cpus") else { return };
    let x = Tensor::zeros([1, 3, 3, 2], DType::F32, &device).unwrap();
    let e = x.pad(&[(0, 0), (3, 0), (0, 0), (0, 0)], PadMode::Reflect).unwrap_err().to_string();
    assert!(e.contains("reflect padding (3, 0)") && e.contains("size 3"), "{e}");
    let e = x.resize((2, 0), Interpolation::Bilinear).unwrap_err().to_string();
    assert!(e.contains("(2, 0)"), "{e}");
    let k = Tensor::zeros([2, 3, 3, 4], DType::F32, &device).unwrap();
    let params = Conv2dTransposeParams { strides: (2, 2), output_padding: Some((2, 2)), ..Default::default() };
    let e = x.conv2d_transpose(&k, None, &params).unwrap_err().to_string();
    assert!(e.contains("output_padding (2, 2)"), "{e}");
}
