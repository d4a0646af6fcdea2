//! Grouped and depthwise conv2d: forward against direct loops (f64 and f32), gradients
//! against finite differences in f64 (first and second order), and the errors of bad
//! group counts.

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{Conv2dParams, DType, Device, Padding, Tensor};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F64, &Device::Cpu, &mut rng).unwrap()
}

/// Padding before and output size along one axis by TF's rules, written out
/// independently of the library; `None` where the kernel does not fit.
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
            let total = ((input.div_ceil(stride) - 1) * stride + extent).saturating_sub(input);
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

/// A direct grouped convolution: output channel `o` of group `o / (co / groups)` reads
/// input channels `group * ci / groups ..`.
fn naive_grouped(x: &Tensor, k: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Option<Tensor> {
    let (&[n, h, w, ci], &[co, kh, kw, cg]) = (x.dims(), k.dims()) else { panic!("4-D") };
    let og = co / p.groups;
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
                            for c in 0..cg {
                                let input_channel = (o / og) * cg + c;
                                acc += xv[((b * h + iy as usize) * w + ix as usize) * ci + input_channel]
                                    * kv[((o * kh + ky) * kw + kx) * cg + c];
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

/// `(groups, channels per group, outputs per group)`: depthwise (one channel per group,
/// any multiplier) as often as general groups.
fn groups_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![(2usize..6, Just(1usize), 1usize..4), (1usize..4, 1usize..4, 1usize..4)]
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f64) {
    assert_eq!(a.dims(), b.dims());
    for (i, (x, y)) in a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn forward_matches_direct_loops(
        n in 1usize..3, h in 1usize..8, w in 1usize..8, (groups, cg, og) in groups_strategy(),
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
        padding in padding_strategy(), with_bias: bool, seed: u64,
    ) {
        let (ci, co) = (groups * cg, groups * og);
        let x = random(&[n, h, w, ci], seed);
        let k = random(&[co, kh, kw, cg], seed ^ 1);
        let b = random(&[co], seed ^ 2);
        let bias = with_bias.then_some(&b);
        let p = Conv2dParams { strides: (sh, sw), padding, dilation: (dh, dw), groups };
        let Some(expected) = naive_grouped(&x, &k, bias, &p) else {
            prop_assert!(x.conv2d(&k, bias, &p).is_err());
            return Ok(());
        };
        assert_close(&x.conv2d(&k, bias, &p).unwrap(), &expected, 1e-10);
        let (x32, k32, b32) = (x.cast(DType::F32).unwrap(), k.cast(DType::F32).unwrap(), b.cast(DType::F32).unwrap());
        assert_close(&x32.conv2d(&k32, with_bias.then_some(&b32), &p).unwrap(), &expected, 1e-5);
    }

    #[test]
    fn gradients_match_finite_differences(
        n in 1usize..3, h in 2usize..7, w in 2usize..7, (groups, cg, og) in groups_strategy(),
        k in prop_oneof![Just(1usize), Just(3)], stride in 1usize..3, dilation in 1usize..3,
        padding in padding_strategy(), with_bias: bool, seed: u64,
    ) {
        let p = Conv2dParams { strides: (stride, stride), padding, dilation: (dilation, dilation), groups };
        let x = random(&[n, h, w, groups * cg], seed);
        let kernel = random(&[groups * og, k, k, cg], seed ^ 1);
        let b = random(&[groups * og], seed ^ 2);
        if naive_grouped(&x, &kernel, None, &p).is_none() {
            return Ok(());
        }
        if with_bias {
            check_gradients(|t| t[0].conv2d(&t[1], Some(&t[2]), &p), &[x, kernel, b]).unwrap();
        } else {
            check_gradients(|t| t[0].conv2d(&t[1], None, &p), &[x, kernel]).unwrap();
        }
    }

    #[test]
    fn second_order_gradients_match_finite_differences(
        (groups, cg, og) in groups_strategy(), stride in 1usize..3, seed: u64,
    ) {
        // The gradient rules of the three primitives call each other with the same groups.
        let p = Conv2dParams { strides: (stride, stride), padding: Padding::Same, groups, ..Default::default() };
        let x = random(&[1, 4, 5, groups * cg], seed);
        let kernel = random(&[groups * og, 3, 3, cg], seed ^ 1);
        check_gradients(
            |t| {
                let tape = tapegrad_tensor::GradientTape::new();
                let (xs, ks) = (t[0].clone(), t[1].clone());
                tape.watch(&xs);
                tape.watch(&ks);
                let y = tape.record(|| xs.conv2d(&ks, None, &p)?.square()?.sum_all())?;
                let grads = tape.gradient(&y, &[&xs, &ks])?;
                let (gx, gk) = (grads[0].clone().unwrap(), grads[1].clone().unwrap());
                gx.square()?.sum_all()?.add(&gk.square()?.sum_all()?)
            },
            &[x, kernel],
        )
        .unwrap();
    }
}

#[test]
fn depthwise_kernel_gradient_is_the_same_on_every_run() {
    let p = Conv2dParams { strides: (2, 2), padding: Padding::Same, groups: 32, ..Default::default() };
    let x = random(&[16, 9, 9, 32], 3).cast(DType::F32).unwrap();
    let k = random(&[32, 3, 3, 1], 4).cast(DType::F32).unwrap();
    let grad = || {
        let tape = tapegrad_tensor::GradientTape::new();
        tape.watch(&k);
        let y = tape.record(|| x.conv2d(&k, None, &p)?.sum_all()).unwrap();
        tape.gradient(&y, &[&k]).unwrap()[0].clone().unwrap().to_vec::<f32>().unwrap()
    };
    let first = grad();
    for _ in 0..5 {
        assert_eq!(grad(), first);
    }
}

fn message(r: tapegrad_tensor::Result<Tensor>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_group_counts_are_clear_errors() {
    let x = random(&[1, 5, 5, 6], 1);
    let p = |groups| Conv2dParams { groups, ..Default::default() };
    let m = message(x.conv2d(&random(&[4, 3, 3, 6], 2), None, &p(0)));
    assert!(m.contains("groups must be at least 1"), "{m}");
    let m = message(x.conv2d(&random(&[4, 3, 3, 1], 2), None, &p(4)));
    assert!(m.contains("groups = 4") && m.contains("input channels (6"), "{m}");
    let m = message(x.conv2d(&random(&[4, 3, 3, 2], 2), None, &p(3)));
    assert!(m.contains("groups = 3") && m.contains("output channels (4"), "{m}");
    let m = message(x.conv2d(&random(&[6, 3, 3, 3], 2), None, &p(3)));
    assert!(m.contains("6 channels") && m.contains("expects 9"), "{m}");
}
