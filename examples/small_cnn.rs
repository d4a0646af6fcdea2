//! A small CNN, defined and trained through the public API only: the pattern for models
//! other than the flagship's ResNet.
//!
//! ```text
//! cargo run --release --example small_cnn -- --synthetic 4000 --epochs 3
//! cargo run --release --example small_cnn -- --data-dir ./data --dataset cifar10 --metrics small_cnn.jsonl
//! ```
//!
//! The command line, data and training loop are the CNN examples' shared ones
//! (`examples/common/`); this file holds the model.

// Each example uses a part of the shared code.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::{cli::CommonArgs, train::Scoring, AnyResult, BN_MOMENTUM};
use std::process::ExitCode;
use tapegrad::layers::{
    Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Padding, Sequential,
};

/// Trains a 4-convolution CNN on a CIFAR-format folder or on synthetic images.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// conv-bn-relu twice, pool, twice more, pool, then a small dense head.
fn small_cnn(classes: usize) -> AnyResult<Sequential> {
    let block = |filters| {
        Sequential::new()
            .add(Conv2D::new(filters, 3).padding(Padding::Same).use_bias(false))
            .add(BatchNormalization::new().momentum(BN_MOMENTUM))
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
        .add(Dropout::new(0.3))
        .add(Dense::new(classes)))
}

fn run(args: Args) -> AnyResult<()> {
    let args = args.common;
    args.validate()?;
    tapegrad::layers::random::set_seed(args.seed);
    let (train, test) = common::data::classification(&args)?;
    let model = small_cnn(train.num_classes())?;
    common::train::fit(&model, &train, &test, &args, Scoring::Accuracy)?;
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
