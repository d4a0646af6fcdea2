//! Agreement with PyTorch: forward values and input gradients of the activation ops
//! (gelu both ways, silu, mish, elu, leaky_relu, hard_sigmoid, hard_swish, softplus,
//! softsign, relu6, erf, log1p, expm1) against `fixtures/activation_ops.txt`, written in
//! float64 by `fixtures/make_activation_fixtures.py`. f64 must agree to rounding; f32
//! forward values to f32 precision.

mod common;

use common::assert_close;
use std::collections::HashMap;
use tapegrad_tensor::{DType, Device, GradientTape, Result, Tensor};

const FIXTURES: &str = include_str!("fixtures/activation_ops.txt");

fn load() -> HashMap<String, Tensor> {
    let mut tensors = HashMap::new();
    let mut lines = FIXTURES.lines().filter(|l| !l.starts_with('#'));
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("tensor"), "unexpected line {line:?}");
        let name = words.next().expect("tensor name").to_string();
        let rank: usize = words.next().expect("rank").parse().expect("rank");
        let dims: Vec<usize> = words.map(|d| d.parse().expect("dim")).collect();
        assert_eq!(dims.len(), rank, "{name}");
        let values: Vec<f64> =
            lines.next().expect("values").split_whitespace().map(|v| v.parse().expect("value")).collect();
        tensors.insert(name, Tensor::from_vec(values, dims, &Device::Cpu).expect("fixture tensor"));
    }
    tensors
}

type Activation = fn(&Tensor) -> Result<Tensor>;

/// Each fixture's name and our function; log1p and expm1 were given `|x|` and
/// `min(x, 20)` by the script, to stay in their domain and range.
const CASES: &[(&str, Activation)] = &[
    ("gelu", |x| x.gelu(false)),
    ("gelu_tanh", |x| x.gelu(true)),
    ("silu", |x| x.silu()),
    ("mish", |x| x.mish()),
    ("elu", |x| x.elu(1.0)),
    ("elu_alpha", |x| x.elu(0.7)),
    ("leaky_relu", |x| x.leaky_relu(0.3)),
    ("hard_sigmoid", |x| x.hard_sigmoid()),
    ("hard_swish", |x| x.hard_swish()),
    ("softplus", |x| x.softplus()),
    ("softsign", |x| x.softsign()),
    ("relu6", |x| x.relu6()),
    ("erf", |x| x.erf()),
    ("log1p", |x| x.abs()?.log1p()),
    ("expm1", |x| x.clamp(-1e300, 20.0)?.expm1()),
];

#[test]
fn activations_match_pytorch_in_f64() -> Result<()> {
    let fx = load();
    let (x, dy) = (&fx["act.x"], &fx["act.dy"]);
    for (name, f) in CASES {
        let tape = GradientTape::new();
        tape.watch(x);
        let (y, loss) = tape.record(|| {
            let y = f(x)?;
            let loss = y.mul(dy)?.sum_all()?;
            Ok((y, loss))
        })?;
        let dx = tape.gradient(&loss, &[x])?.remove(0).expect("x is watched");
        eprintln!("checking {name}");
        assert_close(&y.to_vec_f64()?, &fx[&format!("act.{name}.y")].to_vec_f64()?, 1e-13);
        // PyTorch's hardsigmoid/hardswish backward scale by `1.0f / 6.0f`, a float
        // constant even in f64, so those gradients agree only to f32 precision.
        let tol = if name.starts_with("hard_") { 1e-7 } else { 1e-12 };
        assert_close(&dx.to_vec_f64()?, &fx[&format!("act.{name}.dx")].to_vec_f64()?, tol);
    }
    Ok(())
}

#[test]
fn activations_match_pytorch_in_f32() -> Result<()> {
    let fx = load();
    let x = fx["act.x"].cast(DType::F32)?;
    for (name, f) in CASES {
        let want = fx[&format!("act.{name}.y")].to_vec_f64()?;
        eprintln!("checking {name}");
        assert_close(&f(&x)?.to_vec_f64()?, &want, 3e-6);
    }
    Ok(())
}
