//! conv2d: forward against a direct loop, gradients against finite differences (first
//! and second order), and the errors of bad operands.

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{Conv2dParams, DType, Device, Error, GradientTape, Padding, Tensor};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &Device::Cpu, &mut rng).unwrap()
}

/// The padding before/after and output size along one axis, by TF's rules, written out
/// independently of the library.
fn axis(
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    height: bool,
) -> Option<(usize, usize)> {
    let extent = (k - 1) * dilation + 1;
    let (before, after) = match padding {
        Padding::Valid => (0, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + extent).saturating_sub(input);
            (total / 2, total - total / 2)
        }
        Padding::Explicit { top, bottom, left, right } => {
            if height {
                (top, bottom)
            } else {
                (left, right)
            }
        }
    };
    let padded = input + before + after;
    (padded >= extent).then(|| ((padded - extent) / stride + 1, before))
}

/// A direct seven-loop convolution, the reference.
fn naive_conv(x: &Tensor, k: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Option<Tensor> {
    let (&[n, h, w, ci], &[co, kh, kw, _]) = (x.dims(), k.dims()) else { panic!("4-D") };
    let (oh, pt) = axis(h, kh, p.strides.0, p.dilation.0, p.padding, true)?;
    let (ow, pl) = axis(w, kw, p.strides.1, p.dilation.1, p.padding, false)?;
    let (xv, kv) = (x.to_vec::<f64>().unwrap(), k.to_vec::<f64>().unwrap());
    let bv = bias.map(|b| b.to_vec::<f64>().unwrap());
    let mut out = vec![0.0; n * oh * ow * co];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let mut acc = bv.as_ref().map_or(0.0, |bv| bv[o]);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * p.strides.0 + ky * p.dilation.0) as isize - pt as isize;
                            let ix = (ox * p.strides.1 + kx * p.dilation.1) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for c in 0..ci {
                                acc += xv[((b * h + iy as usize) * w + ix as usize) * ci + c]
                                    * kv[((o * kh + ky) * kw + kx) * ci + c];
                            }
                        }
                    }
                    out[((b * oh + oy) * ow + ox) * co + o] = acc;
                }
            }
        }
    }
    Some(Tensor::from_vec(out, [n, oh, ow, co], &Device::Cpu).unwrap())
}

fn padding_strategy() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::Valid),
        Just(Padding::Same),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3).prop_map(|(top, bottom, left, right)| Padding::Explicit {
            top,
            bottom,
            left,
            right
        }),
    ]
}

fn assert_close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims());
    for (i, (x, y)) in a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()).enumerate() {
        assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn forward_matches_direct_loops(
        n in 1usize..3, h in 1usize..8, w in 1usize..8, ci in 1usize..5, co in 1usize..5,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
        padding in padding_strategy(), with_bias: bool, seed: u64,
    ) {
        let x = random(&[n, h, w, ci], seed);
        let k = random(&[co, kh, kw, ci], seed ^ 1);
        let b = random(&[co], seed ^ 2);
        let bias = with_bias.then_some(&b);
        let p = Conv2dParams { strides: (sh, sw), padding, dilation: (dh, dw), groups: 1 };
        match naive_conv(&x, &k, bias, &p) {
            Some(expected) => assert_close(&x.conv2d(&k, bias, &p).unwrap(), &expected),
            None => prop_assert!(x.conv2d(&k, bias, &p).is_err()),
        }
        // f32 agrees with f64 (the same kernels, another element type).
        if let Some(expected) = naive_conv(&x, &k, bias, &p) {
            let (x32, k32, b32) = (x.cast(DType::F32).unwrap(), k.cast(DType::F32).unwrap(), b.cast(DType::F32).unwrap());
            let got = x32.conv2d(&k32, with_bias.then_some(&b32), &p).unwrap().to_vec_f64().unwrap();
            for (g, e) in got.iter().zip(expected.to_vec_f64().unwrap()) {
                prop_assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()));
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences(
        n in 1usize..3, h in 2usize..7, w in 2usize..7, ci in 1usize..4, co in 1usize..4,
        k in prop_oneof![Just(1usize), Just(3)], stride in 1usize..3,
        padding in prop_oneof![Just(Padding::Valid), Just(Padding::Same)], with_bias: bool, seed: u64,
    ) {
        let p = Conv2dParams { strides: (stride, stride), padding, ..Default::default() };
        let x = random(&[n, h, w, ci], seed);
        let kernel = random(&[co, k, k, ci], seed ^ 1);
        let b = random(&[co], seed ^ 2);
        if naive_conv(&x, &kernel, None, &p).is_none() {
            return Ok(());
        }
        if with_bias {
            check_gradients(|t| t[0].conv2d(&t[1], Some(&t[2]), &p), &[x, kernel, b]).unwrap();
        } else {
            check_gradients(|t| t[0].conv2d(&t[1], None, &p), &[x, kernel]).unwrap();
        }
    }
}

#[test]
fn same_padding_at_stride_2_on_odd_size_pads_bottom_right() {
    // 5 -> 3 at stride 2 with a 3x3 kernel: total padding 2, one each side; 15 -> 8 with a
    // 3x3 kernel: total 2; 4 -> 2 with 3x3: total 1, all at the bottom/right.
    let p = Conv2dParams { strides: (2, 2), padding: Padding::Same, ..Default::default() };
    let x = Tensor::arange(1.0, 17.0, 1.0, DType::F64, &Device::Cpu).unwrap().reshape([1, 4, 4, 1]).unwrap();
    let k = Tensor::ones([1, 3, 3, 1], DType::F64, &Device::Cpu).unwrap();
    let y = x.conv2d(&k, None, &p).unwrap();
    // Windows start at rows/cols 0 and 2 (no top/left padding): sums of the 3x3 blocks.
    assert_eq!(y.to_vec::<f64>().unwrap(), vec![54.0, 45.0, 72.0, 54.0]);
    assert_eq!(random(&[1, 15, 15, 2], 0).conv2d(&random(&[4, 3, 3, 2], 1), None, &p).unwrap().dims(), &[1, 8, 8, 4]);
}

#[test]
fn second_order_gradients_match_finite_differences() {
    let p = Conv2dParams { strides: (2, 1), padding: Padding::Same, ..Default::default() };
    let x = random(&[1, 5, 4, 2], 3);
    let k = random(&[3, 3, 3, 2], 4);
    // The gradient of sum(conv(x, k)^2) with respect to x and k, differentiated again.
    let grad = |t: &[Tensor]| -> tapegrad_tensor::Result<Tensor> {
        let tape = GradientTape::new();
        tape.watch(&t[0]);
        tape.watch(&t[1]);
        let loss = tape.record(|| t[0].conv2d(&t[1], None, &p)?.square()?.sum_all())?;
        let g = tape.gradient(&loss, &[&t[0], &t[1]])?;
        let (gx, gk) = (g[0].clone().unwrap(), g[1].clone().unwrap());
        gx.sum_all()?.add(&gk.square()?.sum_all()?)
    };
    check_gradients(grad, &[x, k]).unwrap();
}

fn message(r: tapegrad_tensor::Result<Tensor>) -> String {
    match r {
        Err(e @ Error::Invalid { .. }) => e.to_string(),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn bad_operands_are_reported_with_their_shapes() {
    let x = random(&[2, 8, 8, 3], 0);
    let p = Conv2dParams::default();
    let m = message(x.conv2d(&random(&[4, 3, 3, 5], 1), None, &p));
    assert!(m.contains("[2, 8, 8, 3]") && m.contains("[4, 3, 3, 5]") && m.contains("3 channels"), "{m}");
    let m = message(x.conv2d(&random(&[4, 9, 3, 3], 1), None, &p));
    assert!(m.contains("larger than the padded input") && m.contains("[4, 9, 3, 3]"), "{m}");
    let m = message(x.conv2d(&random(&[4, 3, 3, 3], 1), None, &Conv2dParams { strides: (0, 1), ..p }));
    assert!(m.contains("strides") && m.contains("(0, 1)"), "{m}");
    let m = message(random(&[8, 8, 3], 0).conv2d(&random(&[4, 3, 3, 3], 1), None, &p));
    assert!(m.contains("4-D") && m.contains("[8, 8, 3]"), "{m}");
    let m = message(x.conv2d(&random(&[4, 3, 3, 3], 1), Some(&random(&[5], 2)), &p));
    assert!(m.contains("bias") && m.contains("[5]") && m.contains("[4]"), "{m}");
    let m = message(x.conv2d(&random(&[4, 3, 3, 3], 1), None, &Conv2dParams { dilation: (1, 0), ..p }));
    assert!(m.contains("dilation"), "{m}");
    assert!(matches!(
        x.conv2d(&random(&[4, 3, 3, 3], 1).cast(DType::F32).unwrap(), None, &p),
        Err(Error::DTypeMismatch { .. })
    ));
}

#[test]
fn gradients_with_many_input_channels_match_finite_differences() {
    // 16+ input channels take the stride-1 route that runs the input gradient as a
    // convolution with the flipped kernel; cover 'same', 'valid', asymmetric and dilated.
    for (i, (padding, dilation)) in [
        (Padding::Same, (1, 1)),
        (Padding::Valid, (1, 1)),
        (Padding::Explicit { top: 0, bottom: 2, left: 1, right: 0 }, (1, 1)),
        (Padding::Same, (2, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let p = Conv2dParams { padding, dilation, ..Default::default() };
        let (x, k) = (random(&[1, 8, 7, 16], 10 + i as u64), random(&[2, 3, 3, 16], 20 + i as u64));
        check_gradients(|t| t[0].conv2d(&t[1], None, &p), &[x, k]).unwrap();
    }
}

#[test]
fn a_large_batch_in_chunks_equals_image_by_image() {
    // Large enough (over 2M column elements) that the batch is cut into several chunks of
    // images; each image alone is one chunk. Outputs and all gradients must agree. Stride 2
    // takes the GEMM + col2im route for the input gradient, stride 1 the flipped kernel.
    for (batch, stride) in [(8, 1), (32, 2)] {
        let p = Conv2dParams { strides: (stride, stride), padding: Padding::Same, ..Default::default() };
        let (x, k, b) = (random(&[batch, 24, 24, 64], 1), random(&[8, 3, 3, 64], 2), random(&[8], 3));
        let out = 24 / stride;
        let dy = random(&[batch, out, out, 8], 4);
        let run = |x: &Tensor, dy: &Tensor| {
            let tape = GradientTape::new();
            for t in [x, &k, &b] {
                tape.watch(t);
            }
            let y = tape.record(|| x.conv2d(&k, Some(&b), &p)).unwrap();
            let g = tape.gradient_with_output_gradient(&y, &[x, &k, &b], dy).unwrap();
            (y, g.into_iter().map(Option::unwrap).collect::<Vec<_>>())
        };
        let (y, g) = run(&x, &dy);
        let per_image: Vec<_> =
            (0..batch).map(|i| run(&x.narrow(0, i, 1).unwrap(), &dy.narrow(0, i, 1).unwrap())).collect();
        let ys: Vec<&Tensor> = per_image.iter().map(|r| &r.0).collect();
        assert_close(&y, &Tensor::concat(&ys, 0).unwrap());
        let dxs: Vec<&Tensor> = per_image.iter().map(|r| &r.1[0]).collect();
        assert_close(&g[0], &Tensor::concat(&dxs, 0).unwrap());
        for (j, total) in g.iter().enumerate().skip(1) {
            let mut sum = per_image[0].1[j].clone();
            for r in &per_image[1..] {
                sum = sum.add(&r.1[j]).unwrap();
            }
            assert_close(total, &sum);
        }
    }
}
