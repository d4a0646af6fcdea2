//! MSE, MAE, Huber, binary cross-entropy and KL divergence: values and gradients against
//! PyTorch (crates/tensor/tests/fixtures/activation_ops.txt, written in f64 by
//! make_activation_fixtures.py with Keras' argument order and reductions), gradients
//! against finite differences, Keras' probability clipping, and errors.

use std::collections::HashMap;
use tapegrad_layers::losses::{
    self, BinaryCrossentropy, Huber, KLDivergence, MeanAbsoluteError, MeanSquaredError, Reduction,
};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{Device, GradientTape, Result, Tensor};

const FIXTURES: &str = include_str!("../../tensor/tests/fixtures/activation_ops.txt");

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

#[track_caller]
fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * (1.0 + e.abs()), "{what}: element {i}: {a} vs expected {e}");
    }
}

type Loss = fn(Reduction, &Tensor, &Tensor) -> Result<Tensor>;

/// Fixture case, its labels and predictions, and our loss.
const CASES: &[(&str, &str, &str, Loss)] = &[
    ("mse", "labels", "logits", |r, y, p| MeanSquaredError::new().reduction(r).call(y, p)),
    ("mae", "labels", "logits", |r, y, p| MeanAbsoluteError::new().reduction(r).call(y, p)),
    ("huber", "labels", "logits", |r, y, p| Huber::new().reduction(r).call(y, p)),
    ("huber_half", "labels", "logits", |r, y, p| Huber::new().delta(0.5).reduction(r).call(y, p)),
    ("bce", "hard", "probs", |r, y, p| BinaryCrossentropy::new().reduction(r).call(y, p)),
    ("bce_soft", "labels", "probs", |r, y, p| BinaryCrossentropy::new().reduction(r).call(y, p)),
    ("bce_logits", "labels", "logits", |r, y, p| BinaryCrossentropy::from_logits().reduction(r).call(y, p)),
    ("kl", "dist_labels", "dist_preds", |r, y, p| KLDivergence::new().reduction(r).call(y, p)),
];

#[test]
fn losses_match_pytorch_with_keras_reductions() -> Result<()> {
    let fx = load();
    let dy = &fx["loss.dy"];
    for (name, labels, predictions, loss) in CASES {
        let (y, p) = (&fx[&format!("loss.{labels}")], &fx[&format!("loss.{predictions}")]);
        for (reduction, key) in [(Reduction::Mean, "mean"), (Reduction::Sum, "sum"), (Reduction::None, "none")] {
            let tape = GradientTape::new();
            tape.watch(p);
            let (value, objective) = tape.record(|| {
                let value = loss(reduction, y, p)?;
                let objective = if reduction == Reduction::None { value.mul(dy)?.sum_all()? } else { value.clone() };
                Ok((value, objective))
            })?;
            let grad = tape.gradient(&objective, &[p])?.remove(0).expect("watched");
            let what = format!("{name} {key}");
            let want = &fx[&format!("loss.{name}.{key}.value")];
            assert_eq!(value.dims(), want.dims(), "{what}: shape");
            assert_close(&what, &value.to_vec_f64()?, &want.to_vec_f64()?, 1e-12);
            assert_close(&what, &grad.to_vec_f64()?, &fx[&format!("loss.{name}.{key}.grad")].to_vec_f64()?, 1e-12);
        }
    }
    Ok(())
}

fn t(values: Vec<f64>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(values, dims.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let labels = t(vec![0.2, 0.9, 0.0, 1.0, 0.4, 0.7], &[2, 3]);
    let preds = t(vec![0.3, -1.7, 0.45, 2.2, -0.6, 0.05], &[2, 3]);
    let probs = preds.sigmoid()?;
    check_gradients(|x| losses::mean_squared_error(&labels, &x[0]), std::slice::from_ref(&preds))?;
    check_gradients(|x| losses::mean_absolute_error(&labels, &x[0]), std::slice::from_ref(&preds))?;
    check_gradients(|x| losses::huber(&labels, &x[0], 1.0), std::slice::from_ref(&preds))?;
    check_gradients(|x| losses::binary_crossentropy(&labels, &x[0], true), std::slice::from_ref(&preds))?;
    check_gradients(|x| losses::binary_crossentropy(&labels, &x[0], false), std::slice::from_ref(&probs))?;
    let dist = labels.softmax(-1)?;
    check_gradients(|x| losses::kl_divergence(&dist, &x[0]), &[preds.softmax(-1)?])?;
    Ok(())
}

#[test]
fn probabilities_are_clipped_as_keras_and_logits_are_stable() -> Result<()> {
    let eps = 1e-7f64;
    // A confident wrong prediction costs -log(eps), not infinity.
    let loss = losses::binary_crossentropy(&t(vec![1.0, 0.0], &[1, 2]), &t(vec![0.0, 1.0], &[1, 2]), false)?;
    assert_close("clipped bce", &loss.to_vec_f64()?, &[-eps.ln()], 1e-9);
    // Huge logits: softplus(x) - x y, no overflow.
    let loss = losses::binary_crossentropy(&t(vec![1.0, 0.0], &[1, 2]), &t(vec![-800.0, 800.0], &[1, 2]), true)?;
    assert_close("large logits", &loss.to_vec_f64()?, &[800.0], 1e-12);
    // Labels [n] against predictions [n, 1], as Keras.
    let a = losses::mean_squared_error(&t(vec![1.0, 2.0], &[2]), &t(vec![0.0, 0.0], &[2, 1]))?;
    assert_close("[n] labels", &a.to_vec_f64()?, &[2.5], 1e-15);
    Ok(())
}

#[test]
fn bad_inputs_are_errors_naming_them() {
    let (a, b) = (t(vec![0.0; 6], &[2, 3]), t(vec![0.0; 4], &[2, 2]));
    let msg = losses::mean_squared_error(&a, &b).unwrap_err().to_string();
    assert!(msg.contains("mean_squared_error") && msg.contains("[2, 3]") && msg.contains("[2, 2]"), "{msg}");
    let msg = losses::huber(&a, &a, 0.0).unwrap_err().to_string();
    assert!(msg.contains("huber") && msg.contains("delta") && msg.contains('0'), "{msg}");
    let msg = BinaryCrossentropy::new().label_smoothing(1.5).call(&a, &a).unwrap_err().to_string();
    assert!(msg.contains("label_smoothing") && msg.contains("1.5"), "{msg}");
}
