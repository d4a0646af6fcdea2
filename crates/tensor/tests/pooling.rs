//! max_pool2d, avg_pool2d, global_avg_pool2d: forward against direct loops, gradients
//! against finite differences, ties, and errors.

use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{DType, Device, Error, GradientTape, Padding, Tensor};

/// Distinct values (a shuffled grid 0.01 apart), so that no two elements of a window are
/// within a finite-difference step of each other.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let len: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..len).map(|i| i as f64 * 0.01 - 1.0).collect();
    v.shuffle(&mut StdRng::seed_from_u64(seed));
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Output size and padding before, along one axis, by TF's rules.
fn axis(input: usize, k: usize, stride: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            Some((out, ((out - 1) * stride + k).saturating_sub(input) / 2))
        }
        _ => (input >= k).then(|| ((input - k) / stride + 1, 0)),
    }
}

/// Direct max or average pooling over the real elements of each window.
fn naive_pool(x: &Tensor, k: (usize, usize), s: (usize, usize), padding: Padding, max: bool) -> Option<Tensor> {
    let &[n, h, w, c] = x.dims() else { panic!("4-D") };
    let (oh, pt) = axis(h, k.0, s.0, padding)?;
    let (ow, pl) = axis(w, k.1, s.1, padding)?;
    let xv = x.to_vec::<f64>().unwrap();
    let mut out = Vec::with_capacity(n * oh * ow * c);
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut vals = Vec::new();
                    for ky in 0..k.0 {
                        for kx in 0..k.1 {
                            let iy = (oy * s.0 + ky) as isize - pt as isize;
                            let ix = (ox * s.1 + kx) as isize - pl as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                vals.push(xv[((b * h + iy as usize) * w + ix as usize) * c + ch]);
                            }
                        }
                    }
                    out.push(if max {
                        vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                    } else {
                        vals.iter().sum::<f64>() / vals.len() as f64
                    });
                }
            }
        }
    }
    Some(Tensor::from_vec(out, [n, oh, ow, c], &Device::Cpu).unwrap())
}

fn same_or_valid() -> impl Strategy<Value = Padding> {
    prop_oneof![Just(Padding::Valid), Just(Padding::Same)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn forward_matches_direct_loops(
        n in 1usize..3, h in 1usize..8, w in 1usize..8, c in 1usize..5,
        k in (1usize..4, 1usize..4), s in (1usize..3, 1usize..3), padding in same_or_valid(), seed: u64,
    ) {
        let x = distinct(&[n, h, w, c], seed);
        for max in [true, false] {
            let got = if max { x.max_pool2d(k, s, padding) } else { x.avg_pool2d(k, s, padding) };
            match naive_pool(&x, k, s, padding, max) {
                Some(expected) => {
                    let got = got.unwrap();
                    prop_assert_eq!(got.dims(), expected.dims());
                    for (a, b) in got.to_vec::<f64>().unwrap().iter().zip(expected.to_vec::<f64>().unwrap()) {
                        prop_assert!((a - b).abs() < 1e-12);
                    }
                }
                None => prop_assert!(got.is_err()),
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences(
        n in 1usize..3, h in 2usize..7, w in 2usize..7, c in 1usize..4,
        k in prop_oneof![Just((2usize, 2usize)), Just((3, 3)), Just((1, 2))], stride in 1usize..3,
        padding in same_or_valid(), seed: u64,
    ) {
        let x = distinct(&[n, h, w, c], seed);
        if naive_pool(&x, k, (stride, stride), padding, true).is_none() {
            return Ok(());
        }
        let s = (stride, stride);
        check_gradients(|t| t[0].max_pool2d(k, s, padding), std::slice::from_ref(&x)).unwrap();
        check_gradients(|t| t[0].avg_pool2d(k, s, padding), std::slice::from_ref(&x)).unwrap();
        check_gradients(|t| t[0].global_avg_pool2d(), &[x]).unwrap();
    }
}

#[test]
fn max_pool_gradient_goes_to_the_first_of_tied_maxima() {
    // One 2x2 window of equal values, and overlapping stride-1 windows sharing a maximum.
    let x = Tensor::from_vec(vec![5.0f64; 4], [1, 2, 2, 1], &Device::Cpu).unwrap();
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.max_pool2d((2, 2), (2, 2), Padding::Valid)?.sum_all()).unwrap();
    assert_eq!(tape.gradient(&y, &[&x]).unwrap()[0].as_ref().unwrap().to_vec::<f64>().unwrap(), [1.0, 0.0, 0.0, 0.0]);

    let x = Tensor::from_vec(vec![1.0f64, 9.0, 2.0], [1, 1, 3, 1], &Device::Cpu).unwrap();
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.max_pool2d((1, 2), (1, 1), Padding::Same)?.sum_all()).unwrap();
    // Windows [1, 9], [9, 2], [2, pad]: the 9 collects two gradients, padding none.
    assert_eq!(tape.gradient(&y, &[&x]).unwrap()[0].as_ref().unwrap().to_vec::<f64>().unwrap(), [0.0, 2.0, 1.0]);
}

#[test]
fn average_pooling_divides_by_real_elements_only() {
    let x = Tensor::ones([1, 3, 3, 2], DType::F32, &Device::Cpu).unwrap();
    let y = x.avg_pool2d((2, 2), (2, 2), Padding::Same).unwrap();
    assert_eq!(y.dims(), &[1, 2, 2, 2]);
    assert!(y.to_vec::<f32>().unwrap().iter().all(|&v| v == 1.0));
}

#[test]
fn max_pool_gradient_is_not_differentiable_again() {
    let x = distinct(&[1, 4, 4, 1], 0);
    let outer = GradientTape::new();
    outer.watch(&x);
    let g = outer
        .record(|| {
            let inner = GradientTape::new();
            inner.watch(&x);
            let y = inner.record(|| x.max_pool2d((2, 2), (2, 2), Padding::Valid)?.square()?.sum_all())?;
            inner.gradient(&y, &[&x])?[0].clone().unwrap().sum_all()
        })
        .unwrap();
    let err = outer.gradient(&g, &[&x]).unwrap_err().to_string();
    assert!(err.contains("not differentiable"), "{err}");
}

fn message(r: tapegrad_tensor::Result<Tensor>) -> String {
    match r {
        Err(e @ Error::Invalid { .. }) => e.to_string(),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn bad_operands_are_reported_with_their_shapes() {
    let x = distinct(&[2, 4, 4, 3], 0);
    let m = message(x.max_pool2d((5, 2), (1, 1), Padding::Valid));
    assert!(m.contains("(5, 2)") && m.contains("height") && m.contains("larger"), "{m}");
    let m = message(x.avg_pool2d((2, 2), (1, 0), Padding::Same));
    assert!(m.contains("strides") && m.contains("(1, 0)"), "{m}");
    let m = message(distinct(&[4, 4, 3], 0).max_pool2d((2, 2), (1, 1), Padding::Same));
    assert!(m.contains("4-D") && m.contains("[4, 4, 3]"), "{m}");
    let m = message(x.max_pool2d((2, 2), (1, 1), Padding::Explicit { top: 2, bottom: 0, left: 0, right: 0 }));
    assert!(m.contains("smaller than the pool size"), "{m}");
    let m = message(distinct(&[2, 4], 0).global_avg_pool2d());
    assert!(m.contains("[2, 4]"), "{m}");
}
