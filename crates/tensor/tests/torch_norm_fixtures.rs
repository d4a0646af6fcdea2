//! Agreement with PyTorch: `layer_norm` and `group_norm` outputs and gradients (x,
//! weight, bias) against `fixtures/torch_norm.txt`, written by
//! `fixtures/make_norm_fixtures.py` (PyTorch's F.layer_norm and F.group_norm, the latter
//! on the channels-second permutation of our channels-last input; epsilon 1e-3). Checked
//! in f32 and in f64 (from the same f32 inputs).

use std::collections::HashMap;
use tapegrad_tensor::{DType, Device, GradientTape, Tensor};

const FIXTURES: &str = include_str!("fixtures/torch_norm.txt");

struct Fixtures {
    tensors: HashMap<String, Tensor>,
    metas: Vec<(String, HashMap<String, String>)>,
}

impl Fixtures {
    fn load() -> Self {
        let (mut tensors, mut metas) = (HashMap::new(), Vec::new());
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
                    metas.push((case, kv));
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

    fn get(&self, case: &str, name: &str, dtype: DType) -> Tensor {
        let t = self.tensors.get(&format!("{case}.{name}")).unwrap_or_else(|| panic!("no tensor {case}.{name}"));
        t.cast(dtype).unwrap()
    }
}

/// `|ours - torch| <= 1e-5 * (|torch| + rms(torch))`: relative, with the tensor's own scale
/// standing in near zero.
fn assert_agrees(what: &str, ours: &Tensor, torch: &Tensor) {
    assert_eq!(ours.dims(), torch.dims(), "{what}: shape");
    let (a, b) = (ours.to_vec_f64().unwrap(), torch.to_vec_f64().unwrap());
    let rms = (b.iter().map(|v| v.powi(2)).sum::<f64>() / b.len().max(1) as f64).sqrt();
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        let tol = 1e-5 * (y.abs() + rms);
        assert!((x - y).abs() <= tol, "{what}[{i}]: ours {x} vs torch {y} (tolerance {tol:e})");
    }
}

#[test]
fn layer_and_group_norm_match_pytorch() {
    let f = Fixtures::load();
    assert_eq!(f.metas.len(), 10, "every case of the script");
    for dtype in [DType::F32, DType::F64] {
        for (case, meta) in &f.metas {
            let x = f.get(case, "x", dtype);
            let affine = meta["affine"] == "1";
            let (w, b) = if affine {
                (Some(f.get(case, "weight", dtype)), Some(f.get(case, "bias", dtype)))
            } else {
                (None, None)
            };
            let tape = GradientTape::new();
            let mut sources = vec![&x];
            sources.extend(w.as_ref());
            sources.extend(b.as_ref());
            for s in &sources {
                tape.watch(s);
            }
            let y = tape
                .record(|| match meta["op"].as_str() {
                    "layer_norm" => x.layer_norm(meta["first_axis"].parse().unwrap(), w.as_ref(), b.as_ref(), 1e-3),
                    "group_norm" => x.group_norm(meta["groups"].parse().unwrap(), w.as_ref(), b.as_ref(), 1e-3),
                    other => panic!("op {other}"),
                })
                .unwrap();
            let what = |name: &str| format!("{case} {dtype:?} {name}");
            assert_agrees(&what("y"), &y, &f.get(case, "y", dtype));
            let grads = tape.gradient_with_output_gradient(&y, &sources, &f.get(case, "dy", dtype)).unwrap();
            let names: &[&str] = if affine { &["dx", "dweight", "dbias"] } else { &["dx"] };
            assert_eq!(grads.len(), names.len());
            for (g, name) in grads.iter().zip(names) {
                assert_agrees(&what(name), g.as_ref().expect("a gradient"), &f.get(case, name, dtype));
            }
        }
    }
}
