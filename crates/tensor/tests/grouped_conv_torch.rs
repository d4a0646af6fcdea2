//! Agreement with PyTorch: grouped and depthwise conv2d outputs and gradients in f32
//! against `fixtures/grouped_conv.txt`, written by
//! `fixtures/make_grouped_conv_fixtures.py` (see its docstring for the format and how TF's
//! 'same' padding was given to PyTorch).

use std::collections::HashMap;
use tapegrad_tensor::{Conv2dParams, Device, GradientTape, Padding, Tensor};

const FIXTURES: &str = include_str!("fixtures/grouped_conv.txt");

struct Case {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

/// The cases of the fixture file, by name.
fn load() -> HashMap<String, Case> {
    let mut cases: HashMap<String, Case> = HashMap::new();
    let mut lines = FIXTURES.lines().filter(|l| !l.starts_with('#'));
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("meta") => {
                let name = words.next().expect("case name").to_string();
                let meta = words.map(|w| w.split_once('=').expect("key=value")).map(|(k, v)| (k.into(), v.into()));
                cases.insert(name, Case { tensors: HashMap::new(), meta: meta.collect() });
            }
            Some("tensor") => {
                let (name, key) = words.next().expect("tensor name").split_once('.').expect("case.key");
                let rank: usize = words.next().expect("rank").parse().unwrap();
                let dims: Vec<usize> = words.map(|d| d.parse().unwrap()).collect();
                assert_eq!(dims.len(), rank, "{name}.{key}");
                let values: Vec<f32> =
                    lines.next().expect("values").split_whitespace().map(|v| v.parse().unwrap()).collect();
                let t = Tensor::from_vec(values, dims, &Device::Cpu).unwrap();
                cases.get_mut(name).expect("meta before tensors").tensors.insert(key.to_string(), t);
            }
            other => panic!("unexpected line start {other:?}"),
        }
    }
    cases
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

#[test]
fn grouped_and_depthwise_conv2d_match_pytorch() {
    let cases = load();
    assert_eq!(cases.len(), 6, "every case of the script is present");
    for (name, case) in &cases {
        let t = |key: &str| case.tensors[key].clone();
        let num = |key: &str| case.meta[key].parse::<usize>().unwrap();
        let (stride, dilation) = (num("stride"), num("dilation"));
        let padding = if case.meta["padding"] == "same" { Padding::Same } else { Padding::Valid };
        let p =
            Conv2dParams { strides: (stride, stride), padding, dilation: (dilation, dilation), groups: num("groups") };
        let (x, k, b, dy) = (t("x"), t("k"), t("b"), t("dy"));
        let tape = GradientTape::new();
        for s in [&x, &k, &b] {
            tape.watch(s);
        }
        let y = tape.record(|| x.conv2d(&k, Some(&b), &p)).unwrap();
        assert_agrees(&format!("{name}.y"), &y, &t("y"));
        let grads = tape.gradient_with_output_gradient(&y, &[&x, &k, &b], &dy).unwrap();
        for (key, g) in ["dx", "dk", "db"].iter().zip(grads) {
            assert_agrees(&format!("{name}.{key}"), &g.unwrap(), &t(key));
        }
    }
}
