//! Grouped and depthwise conv2d on CUDA (cuDNN with a group count) against the CPU
//! backend: forward, input gradient and kernel gradient (and the bias gradient), at
//! strides 1 and 2, TF 'same' (asymmetric at stride 2), 'valid' and explicit padding,
//! dilation, in f32 and f64.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use tapegrad_tensor::testing::cuda_device_or_skip;
use tapegrad_tensor::{Conv2dParams, DType, Device, GradientTape, Padding, Tensor};

/// The output and the gradients of `sum(conv2d(x, k, b) * weights)` for x, k, b.
fn forward_and_gradients(x: &Tensor, k: &Tensor, b: &Tensor, w: &Tensor, p: &Conv2dParams) -> Vec<Vec<f64>> {
    let tape = GradientTape::new();
    for t in [x, k, b] {
        tape.watch(t);
    }
    let y = tape.record(|| x.conv2d(k, Some(b), p)).unwrap();
    let loss = tape.record(|| y.mul(w)?.sum_all()).unwrap();
    let grads = tape.gradient(&loss, &[x, k, b]).unwrap();
    let mut out = vec![y.to_vec_f64().unwrap()];
    out.extend(grads.into_iter().map(|g| g.unwrap().to_vec_f64().unwrap()));
    out
}

#[test]
fn grouped_and_depthwise_convolutions_match_cpu() {
    let Some(device) = cuda_device_or_skip("grouped_and_depthwise_convolutions_match_cpu") else { return };
    let same = Padding::Same;
    let explicit = Padding::Explicit { top: 2, bottom: 0, left: 1, right: 1 };
    // (input [n, h, w, c], groups, outputs, kernel, stride, dilation, padding, dtype)
    let cases = [
        ([2, 8, 8, 6], 6, 6, 3, 2, 1, same, DType::F32), // depthwise, TF 'same' asymmetric
        ([2, 7, 7, 4], 4, 8, 3, 1, 1, same, DType::F32), // depthwise, multiplier 2
        ([1, 9, 8, 6], 3, 6, 3, 2, 1, Padding::Valid, DType::F32),
        ([2, 6, 6, 8], 2, 4, 3, 1, 2, same, DType::F32), // grouped, dilated
        ([1, 6, 7, 4], 2, 6, 2, 1, 1, explicit, DType::F64),
        ([1, 8, 8, 3], 3, 3, 3, 2, 1, same, DType::F64),
    ];
    let mut rng = StdRng::seed_from_u64(7);
    for (i, (shape, groups, outputs, k, stride, dilation, padding, dtype)) in cases.into_iter().enumerate() {
        let p = Conv2dParams { strides: (stride, stride), padding, dilation: (dilation, dilation), groups };
        let normal =
            |dims: &[usize], rng: &mut StdRng| Tensor::rand_normal(dims, 0.0, 1.0, dtype, &Device::Cpu, rng).unwrap();
        let x = normal(&shape, &mut rng);
        let kernel = normal(&[outputs, k, k, shape[3] / groups], &mut rng);
        let bias = normal(&[outputs], &mut rng);
        let out_dims = x.conv2d(&kernel, None, &p).unwrap().dims().to_vec();
        let weights = normal(&out_dims, &mut rng);
        let cpu = forward_and_gradients(&x, &kernel, &bias, &weights, &p);
        let up = |t: &Tensor| t.to_device(&device).unwrap();
        let gpu = forward_and_gradients(&up(&x), &up(&kernel), &up(&bias), &up(&weights), &p);
        let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
        for (what, (c, g)) in
            ["output", "input gradient", "kernel gradient", "bias gradient"].iter().zip(cpu.iter().zip(&gpu))
        {
            assert_eq!(c.len(), g.len(), "case {i} {what}");
            for (j, (a, b)) in c.iter().zip(g).enumerate() {
                assert!(
                    (a - b).abs() <= tol * (1.0 + a.abs()),
                    "case {i} ({p:?}) {what} element {j}: cpu {a} vs cuda {b}"
                );
            }
        }
    }
}
