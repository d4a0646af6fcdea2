//! A small U-Net, defined and trained through the public API only, on a segmentation task
//! it generates: 32x32 images of rectangles, discs and triangles on noisy backgrounds, with
//! the class of every pixel (background, rectangle, disc, triangle). It reports pixel
//! accuracy (`test accuracy`) and the mean IoU of the four classes.
//!
//! ```text
//! cargo run --release --example unet -- --synthetic 2000 --epochs 5
//! cargo run --release --example unet -- --data-dir ./data --dataset cifar10 --metrics unet.jsonl
//! cargo run --release --example unet -- --upsampling bilinear
//! ```
//!
//! With `--data-dir`, the shapes are drawn on CIFAR images (training images for the
//! training set, test images for the test set) instead of generated backgrounds;
//! `--synthetic N` sets the number of training images (2000 by default; a fifth as many
//! for the test). The encoder halves the resolution twice (32 -> 16 -> 8); the decoder
//! doubles it back with `Conv2DTranspose` (or `UpSampling2D` and a convolution) and
//! concatenates the encoder's features at each resolution (`Concatenate`), the U-Net's skip
//! connections. The command line, data and training loop are the CNN examples' shared ones
//! (`examples/common/`).

// Each example uses a part of the shared code.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use clap::{Parser, ValueEnum};
use common::data::Batches;
use common::{cli::CommonArgs, segmentation, train::Scoring, AnyResult, BN_MOMENTUM};
use std::process::ExitCode;
use tapegrad::data::Split;
use tapegrad::layers::{
    Activation, BatchNormalization, Concatenate, Conv2D, Conv2DTranspose, Interpolation, Layer, MaxPool2D, Mode,
    Padding, Result, Sequential, UpSampling2D,
};
use tapegrad::Tensor;

/// Trains a small U-Net on generated shapes (optionally drawn on CIFAR images).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Filters of the first level (doubled at each level down).
    #[arg(long, default_value_t = 16)]
    base_filters: usize,
    /// How the decoder doubles the resolution.
    #[arg(long, value_enum, default_value_t = Upsampling::Transpose)]
    upsampling: Upsampling,
}

/// The decoder's upsampling.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Upsampling {
    /// A learned 2x2 transposed convolution with stride 2.
    Transpose,
    /// Bilinear `UpSampling2D` by 2, then a 3x3 convolution.
    Bilinear,
}

/// conv3x3-BN-ReLU twice: the work at each level.
fn conv_block(filters: usize) -> Sequential {
    let mut block = Sequential::new();
    for _ in 0..2 {
        block.push(Conv2D::new(filters, 3).padding(Padding::Same).use_bias(false));
        block.push(BatchNormalization::new().momentum(BN_MOMENTUM));
        block.push(Activation::relu());
    }
    block
}

/// Doubles the resolution to `filters` channels.
fn upsample(filters: usize, kind: Upsampling) -> Sequential {
    match kind {
        Upsampling::Transpose => Sequential::new().add(Conv2DTranspose::new(filters, 2).strides(2)),
        Upsampling::Bilinear => Sequential::new()
            .add(UpSampling2D::new(2).interpolation(Interpolation::Bilinear))
            .add(Conv2D::new(filters, 3).padding(Padding::Same)),
    }
}

/// Two levels down, a bottleneck, two levels up with skip connections, and a 1x1
/// convolution giving per-pixel logits.
struct UNet {
    down1: Sequential,
    pool1: MaxPool2D,
    down2: Sequential,
    pool2: MaxPool2D,
    bottleneck: Sequential,
    up2: Sequential,
    concat2: Concatenate,
    decode2: Sequential,
    up1: Sequential,
    concat1: Concatenate,
    decode1: Sequential,
    head: Conv2D,
}

impl UNet {
    fn new(base: usize, classes: usize, upsampling: Upsampling) -> Self {
        UNet {
            down1: conv_block(base),
            pool1: MaxPool2D::new(2),
            down2: conv_block(2 * base),
            pool2: MaxPool2D::new(2),
            bottleneck: conv_block(4 * base),
            up2: upsample(2 * base, upsampling),
            concat2: Concatenate::new(-1),
            decode2: conv_block(2 * base),
            up1: upsample(base, upsampling),
            concat1: Concatenate::new(-1),
            decode1: conv_block(base),
            head: Conv2D::new(classes, 1),
        }
    }
}

impl Layer for UNet {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let skip1 = self.down1.call(x, mode)?; // [b, 32, 32, base]
        let skip2 = self.down2.call(&self.pool1.call(&skip1, mode)?, mode)?; // [b, 16, 16, 2 base]
        let deepest = self.bottleneck.call(&self.pool2.call(&skip2, mode)?, mode)?; // [b, 8, 8, 4 base]
        let up = self.up2.call(&deepest, mode)?; // [b, 16, 16, 2 base]
        let up = self.decode2.call(&self.concat2.call_many(&[&up, &skip2], mode)?, mode)?;
        let up = self.up1.call(&up, mode)?; // [b, 32, 32, base]
        let up = self.decode1.call(&self.concat1.call_many(&[&up, &skip1], mode)?, mode)?;
        self.head.call(&up, mode) // [b, 32, 32, classes] logits
    }

    fn name(&self) -> &str {
        "unet"
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("down1", &self.down1);
        visit("pool1", &self.pool1);
        visit("down2", &self.down2);
        visit("pool2", &self.pool2);
        visit("bottleneck", &self.bottleneck);
        visit("up2", &self.up2);
        visit("concat2", &self.concat2);
        visit("decode2", &self.decode2);
        visit("up1", &self.up1);
        visit("concat1", &self.concat1);
        visit("decode1", &self.decode1);
        visit("head", &self.head);
    }
}

/// The generated training and test sets, on CIFAR backgrounds when `--data-dir` is given.
fn datasets(args: &CommonArgs) -> AnyResult<(Batches, Batches)> {
    let n = args.synthetic.unwrap_or(2000);
    let test_n = (n / 5).max(args.batch_size.min(n));
    let backgrounds = |split| args.data_dir.as_ref().map(|_| common::data::cifar(args, split)).transpose();
    let train = segmentation::generate(n, args.seed, backgrounds(Split::Train)?.as_ref())?;
    let test = segmentation::generate(test_n, args.seed + 1, backgrounds(Split::Test)?.as_ref())?;
    Ok((
        Batches::segmentation(train, args.batch_size, Some(args.seed))?,
        Batches::segmentation(test, args.batch_size, None)?,
    ))
}

fn run(args: Args) -> AnyResult<()> {
    args.common.validate()?;
    if args.base_filters == 0 {
        return Err("--base-filters 0: each level needs at least one filter".into());
    }
    tapegrad::layers::random::set_seed(args.common.seed);
    let (train, test) = datasets(&args.common)?;
    let model = UNet::new(args.base_filters, train.num_classes(), args.upsampling);
    common::train::fit(&model, &train, &test, &args.common, Scoring::MeanIou)?;
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
