//! BinaryAccuracy, the MeanSquaredError metric and MeanIoU: accumulation over batches,
//! Keras' definitions (mean IoU ignores classes absent from labels and predictions),
//! reset, and errors naming the option and value.

use tapegrad_layers::metrics::{BinaryAccuracy, MeanIoU, MeanSquaredError};
use tapegrad_tensor::{Device, Tensor};

fn f(values: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(values, dims.to_vec(), &Device::Cpu).unwrap()
}

fn i(values: Vec<i64>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(values, dims.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn binary_accuracy_thresholds_and_accumulates() {
    let mut acc = BinaryAccuracy::new();
    assert_eq!(acc.result(), 0.0);
    // 0.7 > 0.5 right, 0.2 right, 0.5 is not above the threshold (wrong for label 1), 0.9 wrong.
    acc.update_state(&f(vec![1.0, 0.0, 1.0, 0.0], &[4, 1]), &f(vec![0.7, 0.2, 0.5, 0.9], &[4, 1])).unwrap();
    assert_eq!(acc.result(), 2.0 / 4.0);
    // Labels [n] against predictions [n, 1], i64 labels.
    acc.update_state(&i(vec![1, 1], &[2]), &f(vec![0.6, 0.8], &[2, 1])).unwrap();
    assert_eq!(acc.result(), 4.0 / 6.0);
    acc.reset_state();
    assert_eq!(acc.result(), 0.0);
    let mut logits = BinaryAccuracy::with_threshold(0.0).unwrap();
    logits.update_state(&f(vec![1.0, 0.0], &[2]), &f(vec![0.1, -3.0], &[2])).unwrap();
    assert_eq!(logits.result(), 1.0);
    let msg = BinaryAccuracy::with_threshold(f64::NAN).unwrap_err().to_string();
    assert!(msg.contains("threshold") && msg.contains("NaN"), "{msg}");
    let msg = acc.update_state(&f(vec![1.0; 3], &[3]), &f(vec![0.0; 4], &[4])).unwrap_err().to_string();
    assert!(msg.contains("[3]") && msg.contains("[4]"), "{msg}");
}

#[test]
fn mean_squared_error_metric_averages_examples_over_batches() {
    let mut mse = MeanSquaredError::new();
    let (a, b) = (vec![0.0f32, 1.0, 2.0, 3.0], vec![1.0f32, 1.0, 0.0, 3.0]);
    mse.update_state(&f(a.clone(), &[2, 2]), &f(b.clone(), &[2, 2])).unwrap();
    mse.update_state(&f(vec![0.0, 0.0], &[1, 2]), &f(vec![2.0, 2.0], &[1, 2])).unwrap();
    let per_example =
        |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| ((p - q) * (p - q)) as f64).sum::<f64>() / 2.0;
    let want = (per_example(&a[..2], &b[..2]) + per_example(&a[2..], &b[2..]) + 4.0) / 3.0;
    assert!((mse.result() - want).abs() < 1e-12, "{} vs {want}", mse.result());
    mse.reset_state();
    assert_eq!(mse.result(), 0.0);
}

/// Mean IoU straight from its definition, for a list of (label, predicted) pairs.
fn reference_iou(pairs: &[(usize, usize)], classes: usize) -> f64 {
    let mut ious = Vec::new();
    for c in 0..classes {
        let tp = pairs.iter().filter(|&&(t, p)| t == c && p == c).count();
        let union = pairs.iter().filter(|&&(t, p)| t == c || p == c).count();
        if union > 0 {
            ious.push(tp as f64 / union as f64);
        }
    }
    ious.iter().sum::<f64>() / ious.len() as f64
}

#[test]
fn mean_iou_accumulates_a_confusion_matrix() {
    let mut iou = MeanIoU::new(4).unwrap();
    assert_eq!(iou.result(), 0.0);
    let (t1, p1) = (vec![0i64, 0, 1, 1, 2, 2], vec![0i64, 1, 1, 1, 2, 0]);
    iou.update_state(&i(t1.clone(), &[2, 3]), &i(p1.clone(), &[2, 3])).unwrap();
    // A second batch as scores over the class axis (argmax): predicts 2, 1.
    let t2 = vec![2i64, 0];
    iou.update_state(&i(t2.clone(), &[2]), &f(vec![0.1, 0.2, 0.6, 0.1, 0.0, 0.9, 0.05, 0.05], &[2, 4])).unwrap();
    let mut pairs: Vec<(usize, usize)> = t1.iter().zip(&p1).map(|(&t, &p)| (t as usize, p as usize)).collect();
    pairs.extend([(2, 2), (0, 1)]);
    // Class 3 never appears, so it does not count.
    assert!((iou.result() - reference_iou(&pairs, 4)).abs() < 1e-12);
    assert_eq!(iou.confusion_matrix()[0], vec![1, 2, 0, 0]);
    iou.reset_state();
    assert_eq!(iou.result(), 0.0);
}

#[test]
fn mean_iou_rejects_bad_options_and_classes() {
    let msg = MeanIoU::new(0).unwrap_err().to_string();
    assert!(msg.contains("num_classes") && msg.contains('0'), "{msg}");
    for huge in [1usize << 40, usize::MAX] {
        let msg = MeanIoU::new(huge).unwrap_err().to_string();
        assert!(msg.contains(&huge.to_string()) && msg.contains("too large"), "{msg}");
    }
    let mut iou = MeanIoU::new(2).unwrap();
    let msg = iou.update_state(&i(vec![0, 5], &[2]), &i(vec![0, 1], &[2])).unwrap_err().to_string();
    assert!(msg.contains("label 5") && msg.contains("0..2"), "{msg}");
    let msg = iou.update_state(&i(vec![0, 1], &[2]), &i(vec![0, 1, 1], &[3])).unwrap_err().to_string();
    assert!(msg.contains("[3]") && msg.contains("[2]"), "{msg}");
}

#[test]
fn mean_iou_ignore_class_leaves_those_pixels_out() {
    // 255 is a "void" label outside the classes, as in segmentation datasets.
    let mut iou = MeanIoU::new(3).unwrap().ignore_class(255);
    let (t, p) = (vec![0i64, 255, 1, 2, 255, 2], vec![0i64, 1, 1, 0, 2, 2]);
    iou.update_state(&i(t.clone(), &[6]), &i(p.clone(), &[6])).unwrap();
    let pairs: Vec<(usize, usize)> =
        t.iter().zip(&p).filter(|(&t, _)| t != 255).map(|(&t, &p)| (t as usize, p as usize)).collect();
    assert!((iou.result() - reference_iou(&pairs, 3)).abs() < 1e-12);
    // Ignoring a real class drops its pixels, and its row stays empty.
    let mut iou = MeanIoU::new(3).unwrap().ignore_class(1);
    iou.update_state(&i(vec![0, 1, 2], &[3]), &i(vec![0, 0, 2], &[3])).unwrap();
    assert_eq!(iou.confusion_matrix()[1], vec![0, 0, 0]);
    assert!((iou.result() - 1.0).abs() < 1e-12, "{}", iou.result());
    // Without ignore_class, 255 is an error, and nothing of the batch is counted.
    let mut iou = MeanIoU::new(3).unwrap();
    assert!(iou.update_state(&i(vec![0, 255], &[2]), &i(vec![0, 0], &[2])).is_err());
    assert_eq!(iou.confusion_matrix()[0], vec![0, 0, 0]);
}
