//! The examples' training loop: Adam on the softmax cross-entropy of every target (one per
//! image, or one per pixel), evaluated in inference mode after every epoch.

use super::cli::CommonArgs;
use super::data::Batches;
use super::report::MetricsFile;
use super::{AnyResult, Stop};

/// How often a GPU run reads the loss to stop at a non-finite one.
const LOSS_CHECK_EVERY: u64 = 25;
use std::time::Instant;
use tapegrad::layers::losses::CrossEntropy;
use tapegrad::layers::metrics;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::{InputSpec, Layer, Mode};
use tapegrad::{Device, GradientTape, Tensor};

/// What the test set is scored with besides loss and accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// Loss and accuracy only.
    Accuracy,
    /// Also the mean intersection-over-union of the classes (segmentation).
    MeanIou,
}

/// The figures of one epoch.
#[derive(Clone, Debug)]
pub struct EpochResult {
    /// Mean training loss.
    pub train_loss: f64,
    /// Test accuracy (per pixel for segmentation).
    pub test_acc: f64,
    /// Mean IoU over the classes, when scored.
    pub mean_iou: Option<f64>,
}

/// Builds `model` for `train`'s images on the device, prints its summary, and trains it for
/// `--epochs`, printing a line per epoch and writing `--metrics`.
pub fn fit(
    model: &dyn Layer,
    train: &Batches,
    test: &Batches,
    args: &CommonArgs,
    scoring: Scoring,
) -> AnyResult<Vec<EpochResult>> {
    let device = args.device()?;
    let [h, w, c] = train.image_shape();
    model.build(&InputSpec::new([args.batch_size, h, w, c]).with_device(device))?;
    println!("{}", tapegrad::layers::summary(model, &InputSpec::new([args.batch_size, h, w, c]))?);

    let metrics_file = args.metrics.as_deref().map(MetricsFile::create).transpose()?;
    let loss_fn = CrossEntropy::from_logits();
    let mut optimizer = Adam::new(args.lr);
    let (mut history, mut steps) = (Vec::new(), 0u64);
    for epoch in 0..args.epochs {
        let start = Instant::now();
        // Sums stay on the device until the epoch ends (reading a value waits for it).
        let mut sums: Option<(Tensor, Tensor)> = None;
        let (mut seen, mut images) = (0usize, 0usize);
        for batch in train.epoch(epoch, &device)? {
            let (x, y) = batch?;
            let tape = GradientTape::new();
            let (loss, logits) = tape.record(|| {
                let logits = model.call(&x, Mode::Train)?;
                Ok((loss_fn.sparse(&y, &logits)?, logits))
            })?;
            let variables = model.trainable_variables();
            let grads = tape.gradient(&loss, &variables)?;
            optimizer.apply_gradients(&grads, &variables)?;

            // Reading the loss waits for the device: every step on the CPU (free), every
            // LOSS_CHECK_EVERY steps on a GPU, so the host keeps queueing ahead.
            if device == Device::Cpu || steps % LOSS_CHECK_EVERY == 0 {
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(Box::new(Stop::NonFiniteLoss(format!(
                        "the training loss is {value} at epoch {epoch}, step {steps}: stopping \
                         (try a lower --lr; TAPEGRAD_CHECK_NUMERICS=1 names the first op that made it)"
                    ))));
                }
            }
            let n = y.elem_count();
            let batch_sums = (loss.mul_scalar(n as f64)?, correct_count(&y, &logits)?);
            sums = Some(match sums.take() {
                Some((l, k)) => (l.add(&batch_sums.0)?, k.add(&batch_sums.1)?),
                None => batch_sums,
            });
            seen += n;
            images += x.dims()[0];
            steps += 1;
        }
        let (loss_sum, correct) = match sums {
            Some((l, k)) => (l.to_scalar::<f32>()? as f64, k.to_scalar::<i64>()? as f64),
            None => (f64::NAN, f64::NAN),
        };
        let seconds = start.elapsed().as_secs_f64();
        let (train_loss, train_acc) = (loss_sum / seen as f64, correct / seen as f64);
        if !train_loss.is_finite() {
            return Err(Box::new(Stop::NonFiniteLoss(format!(
                "the training loss is {train_loss} over epoch {epoch}: stopping"
            ))));
        }
        let score = evaluate(model, test, &device, &loss_fn, scoring)?;

        let iou = score.mean_iou.map(|v| format!(", mean IoU {v:.4}")).unwrap_or_default();
        println!(
            "epoch {epoch} ({seconds:.1} s): train loss {train_loss:.4}, train accuracy {train_acc:.4}, \
             test loss {:.4}{iou}, test accuracy {:.4}",
            score.loss, score.accuracy
        );
        if let Some(file) = &metrics_file {
            let mut fields = vec![
                ("epoch", epoch as f64),
                ("steps", steps as f64),
                ("train_loss", train_loss),
                ("train_acc", train_acc),
                ("test_loss", score.loss),
                ("test_acc", score.accuracy),
            ];
            if let Some(v) = score.mean_iou {
                fields.push(("mean_iou", v));
            }
            fields.extend([("seconds", seconds), ("images_per_sec", images as f64 / seconds)]);
            file.append(&fields)?;
        }
        history.push(EpochResult { train_loss, test_acc: score.accuracy, mean_iou: score.mean_iou });
    }
    Ok(history)
}

/// The number of targets whose logit is highest at the target class, as an i64 scalar on
/// the device; logits `[..., classes]`, targets of the logits' shape without its last axis.
fn correct_count(targets: &Tensor, logits: &Tensor) -> AnyResult<Tensor> {
    let classes = logits.dims()[logits.rank() - 1];
    let n = targets.elem_count();
    Ok(metrics::correct_count_tensor(&targets.reshape([n])?, &logits.reshape([n, classes])?)?)
}

/// Test-set figures.
struct Score {
    loss: f64,
    accuracy: f64,
    mean_iou: Option<f64>,
}

/// Loss, accuracy and (when asked) mean IoU over `test`, in inference mode.
fn evaluate(
    model: &dyn Layer,
    test: &Batches,
    device: &Device,
    loss_fn: &CrossEntropy,
    scoring: Scoring,
) -> AnyResult<Score> {
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
    let mut iou = metrics::MeanIoU::new(test.num_classes())?;
    for batch in test.epoch(0, device)? {
        let (x, y) = batch?;
        let logits = model.call(&x, Mode::Infer)?;
        let n = y.elem_count();
        loss_sum += loss_fn.sparse(&y, &logits)?.to_scalar::<f32>()? as f64 * n as f64;
        correct += correct_count(&y, &logits)?.to_scalar::<i64>()? as usize;
        seen += n;
        if scoring == Scoring::MeanIou {
            iou.update_state(&y, &logits)?;
        }
    }
    let seen_f = seen.max(1) as f64;
    let mean_iou = (scoring == Scoring::MeanIou).then(|| iou.result());
    Ok(Score { loss: loss_sum / seen_f, accuracy: correct as f64 / seen_f, mean_iou })
}
