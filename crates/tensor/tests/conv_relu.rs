//! `Tensor::conv2d_relu` on the CPU: the same bits as `conv2d` followed by `relu` (f32,
//! f64, bf16, f16; NaN passed through), the same gradients as that sequence, and gradients
//! that match central finite differences in f64.

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{Conv2dParams, DType, Device, GradientTape, Padding, Tensor};

fn random(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(shape, -1.0, 1.0, dtype, &Device::Cpu, &mut rng).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
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

/// The output and the gradients of `sum(f(x, k, b) * w)`.
fn forward_and_gradients(
    f: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> tapegrad_tensor::Result<Tensor>,
    (x, k, b, w): (&Tensor, &Tensor, Option<&Tensor>, &Tensor),
) -> Vec<Tensor> {
    let tape = GradientTape::new();
    let mut sources = vec![x, k];
    sources.extend(b);
    for t in &sources {
        tape.watch(t);
    }
    let y = tape.record(|| f(x, k, b)).unwrap();
    let loss = tape.record(|| y.mul(w)?.sum_all()).unwrap();
    let grads = tape.gradient(&loss, &sources).unwrap();
    let mut out = vec![y];
    out.extend(grads.into_iter().map(|g| g.unwrap()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fused_equals_conv_then_relu_bit_for_bit(
        n in 1usize..3, h in 1usize..9, w in 1usize..9, groups in 1usize..3, ci in 1usize..4, co in 1usize..4,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, padding in padding_strategy(),
        with_bias: bool, dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::BF16), Just(DType::F16)],
        seed: u64,
    ) {
        let (ci, co) = (ci * groups, co * groups);
        let p = Conv2dParams { strides: (stride, stride), padding, groups, ..Default::default() };
        let x = random(&[n, h, w, ci], dtype, seed);
        let k = random(&[co, kh, kw, ci / groups], dtype, seed ^ 1);
        let b = random(&[co], dtype, seed ^ 2);
        let bias = with_bias.then_some(&b);
        let Ok(unfused) = x.conv2d(&k, bias, &p) else {
            prop_assert!(x.conv2d_relu(&k, bias, &p).is_err());
            return Ok(());
        };
        let weights = random(unfused.dims(), dtype, seed ^ 3);
        let fused = forward_and_gradients(|x, k, b| x.conv2d_relu(k, b, &p), (&x, &k, bias, &weights));
        let unfused = forward_and_gradients(|x, k, b| x.conv2d(k, b, &p)?.relu(), (&x, &k, bias, &weights));
        for (what, (f, u)) in ["output", "input gradient", "kernel gradient", "bias gradient"].iter().zip(fused.iter().zip(&unfused)) {
            prop_assert_eq!(f.dtype(), u.dtype());
            prop_assert_eq!(bits(f), bits(u), "{} ({:?}, {:?})", what, dtype, p);
        }
    }

    #[test]
    fn gradients_match_finite_differences(
        n in 1usize..3, h in 2usize..7, w in 2usize..7, ci in 1usize..4, co in 1usize..4,
        k in prop_oneof![Just(1usize), Just(3)], stride in 1usize..3,
        padding in prop_oneof![Just(Padding::Valid), Just(Padding::Same)], with_bias: bool, seed: u64,
    ) {
        let p = Conv2dParams { strides: (stride, stride), padding, ..Default::default() };
        let x = random(&[n, h, w, ci], DType::F64, seed);
        let kernel = random(&[co, k, k, ci], DType::F64, seed ^ 1);
        let b = random(&[co], DType::F64, seed ^ 2);
        let Ok(pre) = x.conv2d(&kernel, with_bias.then_some(&b), &p) else { return Ok(()) };
        // A pre-activation within a step of 0 sits on the ReLU's kink, where central
        // differences straddle two slopes.
        prop_assume!(pre.to_vec_f64().unwrap().iter().all(|v| v.abs() > 1e-4));
        if with_bias {
            check_gradients(|t| t[0].conv2d_relu(&t[1], Some(&t[2]), &p), &[x, kernel, b]).unwrap();
        } else {
            check_gradients(|t| t[0].conv2d_relu(&t[1], None, &p), &[x, kernel]).unwrap();
        }
    }
}

#[test]
fn nan_passes_through_as_through_relu_and_gets_no_gradient() {
    let p = Conv2dParams { padding: Padding::Same, ..Default::default() };
    let mut values = random(&[1, 4, 4, 2], DType::F32, 5).to_vec::<f32>().unwrap();
    values[9] = f32::NAN;
    let x = Tensor::from_vec(values, [1, 4, 4, 2], &Device::Cpu).unwrap();
    let k = random(&[3, 3, 3, 2], DType::F32, 6);
    let b = random(&[3], DType::F32, 7);
    let weights = Tensor::ones([1, 4, 4, 3], DType::F32, &Device::Cpu).unwrap();
    let fused = forward_and_gradients(|x, k, b| x.conv2d_relu(k, b, &p), (&x, &k, Some(&b), &weights));
    let unfused = forward_and_gradients(|x, k, b| x.conv2d(k, b, &p)?.relu(), (&x, &k, Some(&b), &weights));
    let y = fused[0].to_vec::<f32>().unwrap();
    assert!(y.iter().any(|v| v.is_nan()), "the NaN reaches the output");
    assert!(y.contains(&0.0) && y.iter().any(|v| *v > 0.0), "both sides of the ReLU are exercised");
    for (f, u) in fused.iter().zip(&unfused) {
        assert_eq!(bits(f), bits(u));
    }
}

#[test]
fn bad_operands_are_errors_naming_the_op() {
    let x = Tensor::ones([1, 4, 4, 2], DType::F32, &Device::Cpu).unwrap();
    let k = Tensor::ones([3, 3, 3, 2], DType::F32, &Device::Cpu).unwrap();
    let wrong_bias = Tensor::ones([2], DType::F32, &Device::Cpu).unwrap();
    let err = x.conv2d_relu(&k, Some(&wrong_bias), &Conv2dParams::default()).unwrap_err().to_string();
    assert!(err.contains("conv2d") && err.contains("bias"), "{err}");
    let ints = Tensor::ones([1, 4, 4, 2], DType::I64, &Device::Cpu).unwrap();
    assert!(ints.conv2d_relu(&k, None, &Conv2dParams::default()).is_err());
}
