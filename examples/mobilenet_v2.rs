//! A small MobileNetV2 for 32x32 images, defined and trained through the public API only.
//!
//! ```text
//! cargo run --release --example mobilenet_v2 -- --synthetic 4000 --epochs 3
//! cargo run --release --example mobilenet_v2 -- --data-dir ./data --dataset cifar100 --alpha 1.0 --metrics mnv2.jsonl
//! ```
//!
//! The network is Keras' `MobileNetV2` (Sandler et al., 2018) adapted to CIFAR's size as
//! usual: the stem and the second stage keep stride 1 (32 -> 32 -> 32 -> 16 -> 8 -> 4
//! instead of ImageNet's 224 -> 7). Each inverted residual block expands the channels six
//! times with a 1x1 convolution, filters each channel with a 3x3 depthwise convolution,
//! projects back with a linear 1x1 convolution (no activation: the linear bottleneck) and
//! adds its input when shapes allow; activations are ReLU6. `--alpha` scales every width as
//! Keras' `alpha` does (0.5 by default, to train quickly on a CPU). The command line, data
//! and training loop are the CNN examples' shared ones (`examples/common/`).

// Each example uses a part of the shared code.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use common::{cli::CommonArgs, train::Scoring, AnyResult, BN_MOMENTUM};
use std::process::ExitCode;
use tapegrad::layers::unique_name;
use tapegrad::layers::{
    Add, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, GlobalAveragePooling2D, Layer, Mode, Padding, ReLU,
    Result, Sequential,
};
use tapegrad::Tensor;

/// Trains a small MobileNetV2 on a CIFAR-format folder or on synthetic images.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Width multiplier of every layer (Keras' `alpha`).
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
}

/// The blocks of MobileNetV2: (expansion, output channels, blocks, first block's stride).
/// The second stage's stride is 1 here (2 in the ImageNet network), as for 32x32 inputs.
const STAGES: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// Keras' `_make_divisible`: channels rounded to a multiple of 8, never below 90% of `v`.
fn make_divisible(v: f64) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

/// Convolution (no bias: BN follows) and batch norm, then ReLU6 unless `linear`.
fn conv_bn(conv: impl Layer + 'static, linear: bool) -> Sequential {
    let block = Sequential::new().add(conv).add(BatchNormalization::new().momentum(BN_MOMENTUM));
    if linear {
        block
    } else {
        block.add(ReLU::relu6())
    }
}

/// Expand (1x1) - depthwise 3x3 - linear project (1x1), plus the input when the block
/// keeps the shape.
struct InvertedResidual {
    name: String,
    expand: Option<Sequential>,
    depthwise: Sequential,
    project: Sequential,
    add: Option<Add>,
}

impl InvertedResidual {
    fn new(in_channels: usize, expansion: usize, out_channels: usize, stride: usize) -> Self {
        let hidden = in_channels * expansion;
        InvertedResidual {
            name: unique_name("inverted_residual"),
            expand: (expansion != 1).then(|| conv_bn(Conv2D::new(hidden, 1).use_bias(false), false)),
            depthwise: conv_bn(DepthwiseConv2D::new(3).strides(stride).padding(Padding::Same).use_bias(false), false),
            project: conv_bn(Conv2D::new(out_channels, 1).use_bias(false), true),
            add: (stride == 1 && in_channels == out_channels).then(Add::new),
        }
    }
}

impl Layer for InvertedResidual {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = match &self.expand {
            Some(expand) => expand.call(x, mode)?,
            None => x.clone(),
        };
        let h = self.project.call(&self.depthwise.call(&h, mode)?, mode)?;
        match &self.add {
            Some(add) => add.call_many(&[x, &h], mode),
            None => Ok(h),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        if let Some(expand) = &self.expand {
            visit("expand", expand);
        }
        visit("depthwise", &self.depthwise);
        visit("project", &self.project);
        if let Some(add) = &self.add {
            visit("add", add);
        }
    }
}

/// Stem, the inverted residual blocks, a 1x1 convolution to the last width, global
/// average pooling and the classifier (logits).
fn mobilenet_v2(alpha: f64, classes: usize) -> Sequential {
    let stem = make_divisible(32.0 * alpha);
    let mut model = Sequential::new().add(conv_bn(Conv2D::new(stem, 3).padding(Padding::Same).use_bias(false), false));
    let mut channels = stem;
    for (expansion, filters, blocks, stride) in STAGES {
        let out = make_divisible(filters as f64 * alpha);
        for i in 0..blocks {
            model.push(InvertedResidual::new(channels, expansion, out, if i == 0 { stride } else { 1 }));
            channels = out;
        }
    }
    // Keras keeps 1280 for alpha <= 1 and widens it above.
    let last = if alpha > 1.0 { make_divisible(1280.0 * alpha) } else { 1280 };
    model
        .add(conv_bn(Conv2D::new(last, 1).use_bias(false), false))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(classes))
}

fn run(args: Args) -> AnyResult<()> {
    args.common.validate()?;
    if !(args.alpha.is_finite() && args.alpha > 0.0) {
        return Err(format!("--alpha {}: the width multiplier must be positive", args.alpha).into());
    }
    tapegrad::layers::random::set_seed(args.common.seed);
    let (train, test) = common::data::classification(&args.common)?;
    let model = mobilenet_v2(args.alpha, train.num_classes());
    common::train::fit(&model, &train, &test, &args.common, Scoring::Accuracy)?;
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
