//! Cross-entropy losses against direct computations, and their gradients.

use tapegrad_layers::losses::{self, CrossEntropy, Reduction};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{DType, Device, Result, Tensor};

const LOGITS: [f64; 8] = [1.0, -2.0, 0.5, 3.0, 0.0, 0.1, -0.3, 2.0];

fn logits() -> Tensor {
    Tensor::from_vec(LOGITS.to_vec(), [2, 4], &Device::Cpu).unwrap()
}

fn labels() -> Tensor {
    Tensor::from_vec(vec![3i64, 1], [2], &Device::Cpu).unwrap()
}

/// -sum(target * log_softmax(row)), with targets smoothed by `s`.
fn reference(smoothing: f64) -> Vec<f64> {
    let labels = [3usize, 1];
    (0..2)
        .map(|r| {
            let row = &LOGITS[r * 4..r * 4 + 4];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            (0..4)
                .map(|c| {
                    let target = if c == labels[r] { 1.0 } else { 0.0 } * (1.0 - smoothing) + smoothing / 4.0;
                    -target * (row[c] - lse)
                })
                .sum()
        })
        .collect()
}

#[test]
fn sparse_and_one_hot_cross_entropy_from_logits() -> Result<()> {
    let want = reference(0.0);
    let mean = (want[0] + want[1]) / 2.0;
    let sparse = losses::sparse_categorical_crossentropy(&labels(), &logits(), true)?.to_scalar::<f64>()?;
    assert!((sparse - mean).abs() < 1e-12);
    let one_hot = Tensor::one_hot(&labels(), 4, DType::F64)?;
    let dense = losses::categorical_crossentropy(&one_hot, &logits(), true)?.to_scalar::<f64>()?;
    assert!((dense - mean).abs() < 1e-12);
    let per_example = CrossEntropy::from_logits().reduction(Reduction::None).sparse(&labels(), &logits())?;
    let got = per_example.to_vec::<f64>()?;
    assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12);
    let sum = CrossEntropy::from_logits().reduction(Reduction::Sum).sparse(&labels(), &logits())?;
    assert!((sum.to_scalar::<f64>()? - want[0] - want[1]).abs() < 1e-12);
    Ok(())
}

#[test]
fn label_smoothing_matches_keras() -> Result<()> {
    let want = reference(0.1);
    let mean = (want[0] + want[1]) / 2.0;
    let loss = CrossEntropy::from_logits().label_smoothing(0.1);
    assert!((loss.sparse(&labels(), &logits())?.to_scalar::<f64>()? - mean).abs() < 1e-12);
    let one_hot = Tensor::one_hot(&labels(), 4, DType::F64)?;
    assert!((loss.categorical(&one_hot, &logits())?.to_scalar::<f64>()? - mean).abs() < 1e-12);
    assert!(CrossEntropy::from_logits().label_smoothing(1.5).sparse(&labels(), &logits()).is_err());
    Ok(())
}

#[test]
fn cross_entropy_from_probabilities() -> Result<()> {
    let probs = logits().softmax(-1)?;
    let got = losses::sparse_categorical_crossentropy(&labels(), &probs, false)?.to_scalar::<f64>()?;
    let want = reference(0.0);
    assert!((got - (want[0] + want[1]) / 2.0).abs() < 1e-9);
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let smooth = CrossEntropy::from_logits().label_smoothing(0.2);
    check_gradients(|xs| smooth.sparse(&labels(), &xs[0]), &[logits()])?;
    check_gradients(|xs| losses::sparse_categorical_crossentropy(&labels(), &xs[0], true), &[logits()])?;
    let probs = logits().softmax(-1)?;
    check_gradients(|xs| losses::sparse_categorical_crossentropy(&labels(), &xs[0], false), &[probs])?;
    Ok(())
}

#[test]
fn mismatched_labels_are_reported() {
    let bad = Tensor::from_vec(vec![1i64, 2, 3], [3], &Device::Cpu).unwrap();
    let err = losses::sparse_categorical_crossentropy(&bad, &logits(), true).unwrap_err().to_string();
    assert!(err.contains("[3]") && err.contains("[2, 4]"), "{err}");
    let err = CrossEntropy::from_logits().label_smoothing(0.1).sparse(&bad, &logits()).unwrap_err().to_string();
    assert!(err.contains("[3]") && err.contains("[2, 4]"), "{err}");
}
