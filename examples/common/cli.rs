//! The options every CNN example takes (the flagship's data options and its `--metrics`).

use super::AnyResult;
use clap::ValueEnum;
use std::path::PathBuf;
use tapegrad::Device;

/// Data, training length, seed, metrics file and device; flattened into each example's
/// own options with `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Folder holding the CIFAR binary files (or the folder holding the extracted archive's folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The dataset in --data-dir.
    #[arg(long, value_enum, default_value_t = DatasetKind::Cifar10)]
    pub dataset: DatasetKind,
    /// Train on N generated images instead of files.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,
    /// Number of passes over the training set.
    #[arg(long, default_value_t = 5)]
    pub epochs: u64,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of weights, data generation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write one JSON object per epoch to this file (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// The CIFAR datasets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100, fine labels.
    Cifar100,
}

impl DatasetKind {
    /// The number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Cifar10 => 10,
            DatasetKind::Cifar100 => 100,
        }
    }
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

impl CommonArgs {
    /// Checks what clap cannot: sizes that must be positive.
    pub fn validate(&self) -> AnyResult<()> {
        let usage = |msg: String| Err(Box::new(super::Stop::Usage(msg)) as Box<dyn std::error::Error>);
        if self.epochs == 0 {
            return usage("--epochs 0: train for at least one epoch".into());
        }
        if self.batch_size == 0 {
            return usage("--batch-size 0: a batch needs at least one image".into());
        }
        if self.synthetic == Some(0) {
            return usage("--synthetic 0: generate at least one image".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return usage(format!("--lr {}: the learning rate must be a finite number above 0", self.lr));
        }
        Ok(())
    }

    /// The device `--device` names; `cuda` fails with the reason when no GPU is usable.
    pub fn device(&self) -> AnyResult<Device> {
        Ok(match self.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => {
                let device = Device::Cuda(0);
                // Fails with a clear message (no driver, no GPU, or built without `cuda`).
                tapegrad::Tensor::zeros([1], tapegrad::DType::F32, &device)?;
                device
            }
            DeviceKind::Auto => Device::cuda_if_available(),
        })
    }
}
