//! The flagship's command line. Defaults are the seed program's.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Trains the seed ResNet on CIFAR-100 (or CIFAR-10, or synthetic data) with a GradientTape loop.
#[derive(Parser, Debug, Clone)]
#[command(name = "resnet_cifar100", version)]
pub struct Args {
    /// The network: the seed's ResNet18/34, or the common CIFAR ResNet18 variant.
    #[arg(long, value_enum, default_value_t = Arch::Resnet18)]
    pub arch: Arch,
    /// Number of passes over the training set.
    #[arg(long, default_value_t = 20)]
    pub epochs: u64,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Weight decay (SGD: L2 added to the gradient; AdamW: decoupled).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule over the whole run.
    #[arg(long, value_enum, default_value_t = Schedule::Constant)]
    pub schedule: Schedule,
    /// Random crops (4-pixel padding) and horizontal flips of training images.
    #[arg(long)]
    pub augment: bool,
    /// Label smoothing of the cross-entropy loss.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Where the CIFAR files are (the folder holding the .bin files, or the folder holding
    /// the extracted archive's folder). Default: $TAPEGRAD_DATA or ./data, downloading there if
    /// the files are missing.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The dataset.
    #[arg(long, value_enum, default_value_t = DatasetKind::Cifar100)]
    pub dataset: DatasetKind,
    /// Train on N generated images with learnable structure instead (no download).
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,
    /// Stop after this many training steps in all (for smoke tests); a checkpoint is written.
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
    /// Seed of weights, shuffling and augmentation.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Where checkpoints (last.safetensors, best.safetensors) go.
    #[arg(long, default_value = "runs/resnet_cifar100")]
    pub checkpoint_dir: PathBuf,
    /// Continue from <checkpoint-dir>/last.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Only evaluate <checkpoint-dir>/best.safetensors (or last, with --resume) on the test set.
    #[arg(long)]
    pub eval_only: bool,
    /// Append one JSON object per epoch here (default <checkpoint-dir>/metrics.jsonl); the loss
    /// and accuracy curves are drawn beside it (.svg).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
}

/// Network architectures.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// The seed's ResNet18 ([2,2,2,2] blocks).
    Resnet18,
    /// The seed's ResNet34 ([3,4,6,3] blocks).
    Resnet34,
    /// ResNet18 as usually adapted to CIFAR (3x3 stride-1 stem, no max-pool, no conv biases).
    Resnet18Cifar,
}

/// Optimizers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Adam (Keras defaults).
    Adam,
    /// SGD with momentum 0.9 (Nesterov).
    Sgd,
    /// Adam with decoupled weight decay.
    Adamw,
}

/// Learning-rate schedules.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Cosine decay to 0 after a linear warm-up over the first epoch.
    Cosine,
    /// One-cycle (up, then down) over the whole run.
    Onecycle,
}

/// Datasets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// CIFAR-100, fine labels.
    Cifar100,
    /// CIFAR-10.
    Cifar10,
}

/// Devices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs `--features cuda`).
    Cuda,
    /// CUDA if available, else the CPU.
    Auto,
}

impl Args {
    /// The metrics file.
    pub fn metrics_path(&self) -> PathBuf {
        self.metrics.clone().unwrap_or_else(|| self.checkpoint_dir.join("metrics.jsonl"))
    }
}
