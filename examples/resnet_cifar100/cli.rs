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
    /// Capture the training step (forward, loss, gradients, optimizer update) as a CUDA graph
    /// once and replay it at every later step. A step that cannot be replayed
    /// (the last, partial batch) runs eagerly and says why. Needs a GPU.
    #[arg(long)]
    pub cuda_graph: bool,
    /// The precision of the computation (Keras' dtype policies): f32; bf16 (mixed_bfloat16:
    /// layers compute in bf16, variables, batch norm, softmax and the loss stay f32); f16
    /// (mixed_float16, with a LossScaleOptimizer's dynamic loss scaling).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
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
    /// Data-parallel training, one process per rank started by `mpirun -np N`:
    /// `--batch-size` is per rank, rank 0 writes checkpoints and metrics.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub distributed: Option<DistributedKind>,
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

/// Computation precisions (`--precision`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32 (the policy "float32").
    F32,
    /// Mixed bfloat16 (the policy "mixed_bfloat16").
    Bf16,
    /// Mixed float16 (the policy "mixed_float16") with dynamic loss scaling.
    F16,
}

impl Precision {
    /// The Keras dtype policy.
    pub fn policy(self) -> tapegrad::layers::mixed_precision::Policy {
        use tapegrad::layers::mixed_precision::Policy;
        match self {
            Precision::F32 => Policy::FLOAT32,
            Precision::Bf16 => Policy::MIXED_BFLOAT16,
            Precision::F16 => Policy::MIXED_FLOAT16,
        }
    }
}

/// Data-parallel backends.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributedKind {
    /// MPI collectives on host copies of the gradients (needs `--features mpi`).
    Mpi,
    /// NCCL, one GPU per rank (the local rank's), gradients reduced on the GPUs (needs
    /// `--features mpi,nccl`).
    Nccl,
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

/// A command-line value outside what the option accepts, naming the option and the value.
fn reject(option: &str, value: impl std::fmt::Display, need: &str) -> String {
    format!("{option} {value}: {need}")
}

impl Args {
    /// Checks every option's value before anything is loaded or trained; the error names
    /// the option and its value.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err(reject("--batch-size", 0, "must be at least 1"));
        }
        if self.epochs == 0 {
            return Err(reject("--epochs", 0, "must be at least 1"));
        }
        if self.max_steps == Some(0) {
            return Err(reject("--max-steps", 0, "must be at least 1 (a checkpoint is written after the last step)"));
        }
        if self.cuda_graph && self.device == DeviceKind::Cpu {
            return Err(reject("--cuda-graph", "with --device cpu", "needs a GPU (--device cuda or auto)"));
        }
        if self.cuda_graph && self.distributed.is_some() {
            return Err(reject(
                "--cuda-graph",
                "with --distributed",
                "is not supported yet (the gradient all-reduce runs outside a captured step); drop one",
            ));
        }
        if self.synthetic == Some(0) {
            return Err(reject("--synthetic", 0, "must be at least 1 image"));
        }
        let non_negative = [("--lr", self.lr), ("--weight-decay", self.weight_decay)];
        for (option, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(reject(option, value, "must be a finite number >= 0"));
            }
        }
        let smoothing = self.label_smoothing;
        if !(0.0..=1.0).contains(&smoothing) {
            return Err(reject("--label-smoothing", smoothing, "must be in [0, 1]"));
        }
        if let Some(metrics) = &self.metrics {
            if metrics.is_dir() {
                return Err(reject("--metrics", metrics.display(), "is a directory; give a file path"));
            }
        }
        if self.checkpoint_dir.exists() && !self.checkpoint_dir.is_dir() {
            let dir = self.checkpoint_dir.display();
            return Err(reject("--checkpoint-dir", dir, "exists and is not a directory"));
        }
        Ok(())
    }

    /// The number of steps of the whole run, or an error naming `--epochs` when it
    /// overflows (a schedule over a wrapped step count would train at a wrong rate).
    pub fn total_steps(&self, steps_per_epoch: u64) -> Result<u64, String> {
        steps_per_epoch.checked_mul(self.epochs).ok_or_else(|| {
            reject(
                "--epochs",
                self.epochs,
                &format!("times {steps_per_epoch} steps per epoch overflows the step count"),
            )
        })
    }

    /// Creates the checkpoint directory and proves it writable (by writing and removing
    /// a probe file), so that a bad place fails before the first epoch, naming the path.
    pub fn prepare_checkpoint_dir(&self) -> Result<(), String> {
        let dir = &self.checkpoint_dir;
        let fail = |what: &str, e: std::io::Error| format!("--checkpoint-dir {}: {what}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create it", e))?;
        let probe = dir.join(format!(".write-test-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| fail("cannot write there", e))?;
        std::fs::remove_file(&probe).map_err(|e| fail("cannot remove a file there", e))?;
        if let Some(parent) = self.metrics.as_deref().and_then(std::path::Path::parent) {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("--metrics: cannot create the folder {}: {e}", parent.display()))?;
            }
        }
        Ok(())
    }
}
