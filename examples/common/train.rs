//! The examples' training: `Trainer::fit` (Adam on the softmax cross-entropy of every
//! target, one per image or one per pixel; accuracy, and mean IoU for segmentation),
//! validated on the test set after every epoch, reported by [`Report`].

use super::cli::CommonArgs;
use super::data::Batches;
use super::report::MetricsFile;
use super::{AnyResult, Stop};
use std::time::Instant;
use tapegrad::layers::losses::CrossEntropy;
use tapegrad::layers::optimizers::Adam;
use tapegrad::layers::training::{
    Callback, CallbackContext, FitOptions, Logs, SparseCategoricalAccuracy, SparseMeanIoU, Trainer,
};
use tapegrad::layers::{Error, InputSpec, Layer};

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
/// `--epochs`, printing a line per epoch and writing `--metrics`. A non-finite training
/// loss is [`Stop::NonFiniteLoss`] (exit code 3).
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

    let loss_fn = CrossEntropy::from_logits();
    let mut trainer = Trainer::new(model, Adam::new(args.lr), move |y, logits| loss_fn.sparse(y, logits))
        .device(device)
        .metric(SparseCategoricalAccuracy::new());
    if scoring == Scoring::MeanIou {
        trainer = trainer.metric(SparseMeanIoU::new(test.num_classes())?);
    }
    let mut report = Report::new(args.metrics.as_deref().map(MetricsFile::create).transpose()?);
    let options = FitOptions::new().epochs(args.epochs).validation_data(test).verbose(0).callback(&mut report);
    let history = trainer.fit(train, options).map_err(|e| match e {
        Error::NonFiniteLoss { .. } => Box::new(Stop::NonFiniteLoss(e.to_string())) as Box<dyn std::error::Error>,
        other => other.into(),
    })?;
    let column = |name: &str| history.get(name).unwrap_or(&[]).to_vec();
    let (losses, accuracies, ious) = (column("loss"), column("val_accuracy"), column("val_mean_iou"));
    Ok(losses
        .iter()
        .zip(&accuracies)
        .enumerate()
        .map(|(i, (&train_loss, &test_acc))| EpochResult { train_loss, test_acc, mean_iou: ious.get(i).copied() })
        .collect())
}

/// The examples' per-epoch output: the line `epoch N (S s): train loss .., train
/// accuracy .., test loss .., [mean IoU .., ]test accuracy ..` and one JSON object in
/// `--metrics` (`epoch`, `steps`, `train_loss`, `train_acc`, `test_loss`, `test_acc`,
/// [`mean_iou`,] `seconds` and `images_per_sec` of the training part of the epoch).
pub struct Report {
    file: Option<MetricsFile>,
    steps: u64,
    images: u64,
    started: Option<Instant>,
    seconds: f64,
}

impl Report {
    /// A report that also writes to `file`.
    pub fn new(file: Option<MetricsFile>) -> Self {
        Report { file, steps: 0, images: 0, started: None, seconds: 0.0 }
    }
}

impl Callback for Report {
    fn on_epoch_begin(&mut self, _: &mut CallbackContext<'_>, _: u64) -> tapegrad::layers::Result<()> {
        self.images = 0;
        self.started = Some(Instant::now());
        Ok(())
    }

    fn on_train_batch_end(&mut self, _: &mut CallbackContext<'_>, _: u64, logs: &Logs) -> tapegrad::layers::Result<()> {
        self.steps += 1;
        self.images += logs.get("size").unwrap_or(0.0) as u64;
        Ok(())
    }

    fn on_test_begin(&mut self, _: &mut CallbackContext<'_>) -> tapegrad::layers::Result<()> {
        // Training time only: the test pass is not part of the throughput.
        self.seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        Ok(())
    }

    fn on_epoch_end(&mut self, _: &mut CallbackContext<'_>, epoch: u64, logs: &Logs) -> tapegrad::layers::Result<()> {
        let get = |name: &str| logs.get(name).unwrap_or(f64::NAN);
        let (train_loss, train_acc) = (get("loss"), get("accuracy"));
        let (test_loss, test_acc, mean_iou) = (get("val_loss"), get("val_accuracy"), logs.get("val_mean_iou"));
        let seconds = self.seconds;
        let iou = mean_iou.map(|v| format!(", mean IoU {v:.4}")).unwrap_or_default();
        println!(
            "epoch {epoch} ({seconds:.1} s): train loss {train_loss:.4}, train accuracy {train_acc:.4}, \
             test loss {test_loss:.4}{iou}, test accuracy {test_acc:.4}"
        );
        if let Some(file) = &self.file {
            let mut fields = vec![
                ("epoch", epoch as f64),
                ("steps", self.steps as f64),
                ("train_loss", train_loss),
                ("train_acc", train_acc),
                ("test_loss", test_loss),
                ("test_acc", test_acc),
            ];
            if let Some(v) = mean_iou {
                fields.push(("mean_iou", v));
            }
            fields.extend([("seconds", seconds), ("images_per_sec", self.images as f64 / seconds)]);
            file.append(&fields).map_err(|source| Error::Io { path: file.path().to_path_buf(), source })?;
        }
        Ok(())
    }
}
