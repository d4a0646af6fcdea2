//! Agreement with PyTorch: conv2d_transpose (Keras' 'same'/'valid', output_padding,
//! dilation, PyTorch's explicit padding), pad (reflect, constant) and resize (nearest,
//! bilinear) outputs and gradients in f32 against `fixtures/upsample_ops.txt`, written by
//! `fixtures/make_upsample_fixtures.py` (its docstring says how Keras' geometry was given
//! to PyTorch).

use std::collections::HashMap;
use tapegrad_tensor::{Conv2dTransposeParams, Device, GradientTape, Interpolation, PadMode, Padding, Tensor};

const FIXTURES: &str = include_str!("fixtures/upsample_ops.txt");

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

    fn cases(&self, prefix: &str) -> Vec<String> {
        let mut c: Vec<String> = self.metas.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        c.sort();
        c
    }
}

/// `|ours - torch| <= 1e-5 * (|torch| + rms(torch))`.
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
fn conv2d_transpose_matches_pytorch() {
    let fx = Fixtures::load();
    let cases = fx.cases("ct_");
    assert_eq!(cases.len(), 8);
    for case in &cases {
        let (x, k, dy) = (fx.get(case, "x"), fx.get(case, "kernel"), fx.get(case, "dy"));
        let bias = (fx.meta(case, "bias") == "1").then(|| fx.get(case, "bias"));
        let stride: usize = fx.meta(case, "stride").parse().unwrap();
        let dilation: usize = fx.meta(case, "dilation").parse().unwrap();
        let op: i64 = fx.meta(case, "output_padding").parse().unwrap();
        let padding = match fx.meta(case, "padding") {
            "same" => Padding::Same,
            "valid" => Padding::Valid,
            _ => Padding::Explicit { top: 1, bottom: 1, left: 1, right: 1 },
        };
        let params = Conv2dTransposeParams {
            strides: (stride, stride),
            padding,
            output_padding: (op >= 0).then_some((op as usize, op as usize)),
            dilation: (dilation, dilation),
        };
        let y = x.conv2d_transpose(&k, bias.as_ref(), &params).unwrap();
        assert_agrees(&format!("{case}.y"), &y, &fx.get(case, "y"));
        let mut sources = vec![&x, &k];
        sources.extend(bias.as_ref());
        let grads = gradients(&sources, &dy, || x.conv2d_transpose(&k, bias.as_ref(), &params));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
        assert_agrees(&format!("{case}.dkernel"), &grads[1], &fx.get(case, "dkernel"));
        if bias.is_some() {
            assert_agrees(&format!("{case}.dbias"), &grads[2], &fx.get(case, "dbias"));
        }
    }
}

#[test]
fn pad_matches_pytorch() {
    let fx = Fixtures::load();
    for case in ["pad_reflect_nhwc", "pad_constant_rank3"] {
        let pads: Vec<(usize, usize)> = fx
            .meta(case, "pads")
            .split(',')
            .map(|p| {
                let (b, a) = p.split_once(':').unwrap();
                (b.parse().unwrap(), a.parse().unwrap())
            })
            .collect();
        let mode = match fx.meta(case, "mode") {
            "reflect" => PadMode::Reflect,
            _ => PadMode::Constant(fx.meta(case, "value").parse().unwrap()),
        };
        let (x, dy) = (fx.get(case, "x"), fx.get(case, "dy"));
        assert_agrees(&format!("{case}.y"), &x.pad(&pads, mode).unwrap(), &fx.get(case, "y"));
        let grads = gradients(&[&x], &dy, || x.pad(&pads, mode));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
    }
}

#[test]
fn resize_matches_pytorch() {
    let fx = Fixtures::load();
    let cases = fx.cases("resize_");
    assert_eq!(cases.len(), 4);
    for case in &cases {
        let factors = (fx.meta(case, "fh").parse().unwrap(), fx.meta(case, "fw").parse().unwrap());
        let interp = if fx.meta(case, "mode") == "bilinear" { Interpolation::Bilinear } else { Interpolation::Nearest };
        let (x, dy) = (fx.get(case, "x"), fx.get(case, "dy"));
        assert_agrees(&format!("{case}.y"), &x.resize(factors, interp).unwrap(), &fx.get(case, "y"));
        let grads = gradients(&[&x], &dy, || x.resize(factors, interp));
        assert_agrees(&format!("{case}.dx"), &grads[0], &fx.get(case, "dx"));
    }
}
