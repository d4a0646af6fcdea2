//! A small CNN, defined and trained through the public API only: the pattern for models
//! other than the flagship's ResNet.
//!
//! ```text
//! cargo run --release --example small_cnn -- --synthetic 4000 --epochs 3
//! cargo run --release --example small_cnn -- --data-dir ./data --dataset cifar10
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tapegrad::data::{self, CifarKind, DataLoader, LabelKind, LoaderConfig, Split};
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::{
    losses, metrics, Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, InputSpec, Layer, MaxPool2D,
    Mode, Padding, Sequential,
};
use tapegrad::{Device, GradientTape};

/// Trains a 4-convolution CNN on a CIFAR-format folder or on synthetic images.
#[derive(Parser)]
struct Args {
    /// Folder holding the CIFAR binary files (or the extracted archive's folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `cifar10` or `cifar100` (fine labels).
    #[arg(long, default_value = "cifar10")]
    dataset: String,
    /// Train on N generated images instead of files.
    #[arg(long)]
    synthetic: Option<usize>,
    #[arg(long, default_value_t = 5)]
    epochs: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// conv-bn-relu twice, pool, twice more, pool, then a small dense head.
fn small_cnn(classes: usize) -> Result<Sequential, Box<dyn std::error::Error>> {
    let block = |filters| {
        Sequential::new()
            .add(Conv2D::new(filters, 3).padding(Padding::Same).use_bias(false))
            .add(BatchNormalization::new())
            .add(Activation::relu())
    };
    Ok(Sequential::new()
        .add(block(32))
        .add(block(32))
        .add(MaxPool2D::new(2))
        .add(block(64))
        .add(block(64))
        .add(MaxPool2D::new(2))
        .add(Flatten::new())
        .add(Dense::new(128))
        .add(Activation::relu())
        .add(Dropout::new(0.3)?)
        .add(Dense::new(classes)))
}

impl Args {
    /// Checks the values before anything is loaded; the error names the option and value.
    fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("--epochs 0: must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size 0: must be at least 1".into());
        }
        if self.synthetic == Some(0) {
            return Err("--synthetic 0: must be at least 1 image".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(format!("--lr {}: must be a finite number >= 0", self.lr));
        }
        Ok(())
    }
}

/// Exit codes: 0 done, 1 an error, 2 a bad command line, 3 a non-finite loss (training
/// stops at the first one).
fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Trains and evaluates; `Ok(false)` when the loss stopped being finite.
fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    tapegrad::layers::random::set_seed(args.seed);
    let (kind, classes) = match args.dataset.as_str() {
        "cifar10" => (CifarKind::Cifar10, 10),
        "cifar100" => (CifarKind::Cifar100, 100),
        other => return Err(format!("--dataset {other}: expected cifar10 or cifar100").into()),
    };
    let (train, test) = match (args.synthetic, &args.data_dir) {
        (Some(n), _) => (data::synthetic(n, classes, args.seed)?, data::synthetic(n / 5 + 1, classes, args.seed + 1)?),
        (None, Some(dir)) => (
            data::load_cifar(dir, kind, Split::Train, LabelKind::Fine)?,
            data::load_cifar(dir, kind, Split::Test, LabelKind::Fine)?,
        ),
        (None, None) => return Err("pass --data-dir DIR or --synthetic N".into()),
    };
    let train = DataLoader::new(train, LoaderConfig::new(args.batch_size).shuffle(args.seed))?;
    let test = DataLoader::new(test, LoaderConfig::new(args.batch_size))?;

    // A GPU when one is usable (built with `--features cuda`), else the CPU.
    let device = Device::cuda_if_available();
    let model = small_cnn(classes)?;
    model.build(&InputSpec::new([args.batch_size, 32, 32, 3]).with_device(device))?;
    println!("{}", model.summary(&InputSpec::new([args.batch_size, 32, 32, 3]))?);
    let mut optimizer = Adam::new(args.lr);
    for epoch in 0..args.epochs {
        let mut loss_mean = metrics::Mean::new();
        for batch in train.epoch(epoch)? {
            let (x, y) = batch.into_tensors(&device)?;
            let tape = GradientTape::new();
            let loss =
                tape.record(|| losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true))?;
            let grads = tape.gradient(&loss, &model.trainable_variables())?;
            optimizer.apply_gradients(&grads, &model.trainable_variables())?;
            let loss = loss.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                eprintln!("error: the training loss is {loss} in epoch {epoch}: stopping");
                return Ok(false);
            }
            loss_mean.update_state(loss);
        }
        let mut accuracy = metrics::Accuracy::new();
        for batch in test.epoch(0)? {
            let (x, y) = batch.into_tensors(&device)?;
            accuracy.update_state(&y, &model.call(&x, Mode::Infer)?)?;
        }
        println!("epoch {epoch}: train loss {:.4}, test accuracy {:.4}", loss_mean.result(), accuracy.result());
    }
    Ok(true)
}
