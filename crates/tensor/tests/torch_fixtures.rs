//! Agreement with PyTorch: conv2d, pooling and batch norm outputs and gradients in f32
//! against `fixtures/torch_ops.txt`, written by `fixtures/make_torch_fixtures.py` (see its
//! docstring for the format and how TF's 'same' padding was given to PyTorch).

use std::collections::HashMap;
use tapegrad_tensor::{Conv2dParams, Device, GradientTape, Padding, Tensor};

const FIXTURES: &str = include_str!("fixtures/torch_ops.txt");

struct Fixtures {
    tensors: HashMap<String, Tensor>,
    metas: HashMap<String, HashMap<String, String>>,
}

impl Fixtures {
    fn load() -> Self {
        let (mut tensors, mut metas) = (HashMap::new(), HashMap::new());
        let mut lines = FIXTURES.lines().filter(|l| !l.starts_with('#'));
        while let Some(line) = lines.next() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("meta") => {
                    let case = words.next().expect("case name").to_string();
                    let kv = words
                        .map(|w| {
                            let (k, v) = w.split_once('=').expect("key=value");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    metas.insert(case, kv);
                }
                Some("tensor") => {
                    let name = words.next().expect("tensor name").to_string();
                    let rank: usize = words.next().expect("rank").parse().unwrap();
                    let dims: Vec<usize> = words.map(|d| d.parse().unwrap()).collect();
                    assert_eq!(dims.len(), rank, "{name}");
                    let values: Vec<f32> =
                        lines.next().expect("values").split_whitespace().map(|v| v.parse().unwrap()).collect();
                    tensors.insert(name, Tensor::from_vec(values, dims, &Device::Cpu).unwrap());
                }
                other => panic!("unexpected line start {other:?}"),
            }
        }
        Fixtures { tensors, metas }
    }

    fn get(&self, case: &str, name: &str) -> Tensor {
        self.tensors.get(&format!("{case}.{name}")).unwrap_or_else(|| panic!("no tensor {case}.{name}")).clone()
    }

    fn meta(&self, case: &str, key: &str) -> &str {
        &self.metas[case][key]
    }

    fn padding(&self, case: &str) -> Padding {
        match self.meta(case, "padding") {
            "same" => Padding::Same,
            "valid" => Padding::Valid,
            other => panic!("padding {other}"),
        }
    }

    fn usize(&self, case: &str, key: &str) -> usize {
        self.meta(case, key).parse().unwrap()
    }
}

/// `|ours - torch| <= 1e-5 * (|torch| + rms(torch))`: relative, with the tensor's own scale
/// standing in near zero.
fn assert_agrees(what: &str, ours: &Tensor, torch: &Tensor) {
    assert_eq!(ours.dims(), torch.dims(), "{what}: shape");
    let (a, b) = (ours.to_vec::<f32>().unwrap(), torch.to_vec::<f32>().unwrap());
    let rms = (b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / b.len().max(1) as f64).sqrt();
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        let tol = 1e-5 * ((y as f64).abs() + rms);
        assert!(((x - y) as f64).abs() <= tol, "{what}[{i}]: ours {x} vs torch {y} (tolerance {tol:e})");
    }
}

/// Gradients of `sum(f(sources) * dy)` with respect to the sources.
fn gradients(sources: &[&Tensor], dy: &Tensor, f: impl FnOnce() -> tapegrad_tensor::Result<Tensor>) -> Vec<Tensor> {
    let tape = GradientTape::new();
    for s in sources {
        tape.watch(s);
    }
    let y = tape.record(f).unwrap();
    let grads = tape.gradient_with_output_gradient(&y, sources, dy).unwrap();
    grads.into_iter().map(|g| g.expect("every source has a gradient")).collect()
}

#[test]
fn conv2d_matches_pytorch() {
    let fx = Fixtures::load();
    for case in ["conv_s2_same_even", "conv_s2_same_odd", "conv_1x1_s2_same_odd", "conv_3x3_valid"] {
        let (x, k, dy) = (fx.get(case, "x"), fx.get(case, "kernel"), fx.get(case, "dy"));
        let bias = (fx.usize(case, "bias") == 1).then(|| fx.get(case, "bias"));
        let stride = fx.usize(case, "stride");
        let params = Conv2dParams { strides: (stride, stride), padding: fx.padding(case), ..Default::default() };
        let y = x.conv2d(&k, bias.as_ref(), &params).unwrap();
        assert_agrees(&format!("{case}.y"), &y, &fx.get(case, "y"));
        let mut sources = vec![&x, &k];
        sources.extend(bias.as_ref());
        let grads = gradients(&sources, &dy, || x.conv2d(&k, bias.as_ref(), &params));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
        assert_agrees(&format!("{case}.dkernel"), &grads[1], &fx.get(case, "dkernel"));
        if bias.is_some() {
            assert_agrees(&format!("{case}.dbias"), &grads[2], &fx.get(case, "dbias"));
        }
    }
}

#[test]
fn pooling_matches_pytorch() {
    let fx = Fixtures::load();
    for case in ["max_2x2_s1_same", "max_3x3_s2_valid", "avg_2x2_s2_same_odd", "avg_3x3_s1_same", "global_avg"] {
        let (x, dy) = (fx.get(case, "x"), fx.get(case, "dy"));
        let pool = |x: &Tensor| match fx.meta(case, "kind") {
            "global_avg" => x.global_avg_pool2d(),
            kind => {
                let (k, s) = (fx.usize(case, "pool"), fx.usize(case, "stride"));
                if kind == "max" {
                    x.max_pool2d((k, k), (s, s), fx.padding(case))
                } else {
                    x.avg_pool2d((k, k), (s, s), fx.padding(case))
                }
            }
        };
        assert_agrees(&format!("{case}.y"), &pool(&x).unwrap(), &fx.get(case, "y"));
        let grads = gradients(&[&x], &dy, || pool(&x));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
    }
}

#[test]
fn batch_norm_training_matches_pytorch() {
    let fx = Fixtures::load();
    for case in ["bn_nhwc", "bn_2d"] {
        let (x, gamma, beta, dy) = (fx.get(case, "x"), fx.get(case, "gamma"), fx.get(case, "beta"), fx.get(case, "dy"));
        let eps: f64 = fx.meta(case, "epsilon").parse().unwrap();
        let (y, mean, var) = x.batch_norm_train(Some(&gamma), Some(&beta), eps).unwrap();
        assert_agrees(&format!("{case}.y"), &y, &fx.get(case, "y"));
        assert_agrees(&format!("{case}.mean"), &mean, &fx.get(case, "mean"));
        assert_agrees(&format!("{case}.var"), &var, &fx.get(case, "var"));
        let grads = gradients(&[&x, &gamma, &beta], &dy, || Ok(x.batch_norm_train(Some(&gamma), Some(&beta), eps)?.0));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
        assert_agrees(&format!("{case}.dgamma"), &grads[1], &fx.get(case, "dgamma"));
        assert_agrees(&format!("{case}.dbeta"), &grads[2], &fx.get(case, "dbeta"));
    }
}
