//! Turning the command line into a device, data, a model, an optimizer and a loss.

use crate::cli::{Arch, Args, DatasetKind, DeviceKind, OptimizerKind, Precision, Schedule};
use crate::AnyResult;
use tapegrad::data::{self, Augment, CifarKind, Dataset, LabelKind, Split};
use tapegrad::layers::losses::CrossEntropy;
use tapegrad::layers::mixed_precision::LossScaleOptimizer;
use tapegrad::layers::models::{self, ResNet};
use tapegrad::layers::optimizers::schedules::{Constant, CosineDecay, OneCycle};
use tapegrad::layers::optimizers::{Adam, AdamW, LearningRate, Optimizer, Sgd};
use tapegrad::layers::Layer;
use tapegrad::Device;

pub fn device(kind: DeviceKind) -> AnyResult<Device> {
    Ok(match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => {
            let device = Device::Cuda(0);
            // Fails with a clear message (no driver, no GPU, or built without `cuda`).
            tapegrad::Tensor::zeros([1], tapegrad::DType::F32, &device)?;
            device
        }
        DeviceKind::Auto => {
            let device = Device::cuda_if_available();
            if cfg!(feature = "cuda") && device.is_cpu() {
                if let Err(e) = tapegrad::tensor::cuda::ensure_available(0) {
                    eprintln!("training on the CPU: {e}");
                }
            }
            device
        }
    })
}

/// The training and test sets: generated with `--synthetic`, else read from `--data-dir`
/// (or the cache directory, downloading the archive there if it is missing).
pub fn datasets(args: &Args) -> AnyResult<(Dataset, Dataset)> {
    let classes = match args.dataset {
        DatasetKind::Cifar100 => 100,
        DatasetKind::Cifar10 => 10,
    };
    if let Some(n) = args.synthetic {
        if n == 0 {
            return Err("--synthetic needs at least one image".into());
        }
        let test_n = (n / 5).max(args.batch_size.min(n));
        return Ok((data::synthetic(n, classes, args.seed)?, data::synthetic(test_n, classes, args.seed + 1)?));
    }
    let kind = match args.dataset {
        DatasetKind::Cifar100 => CifarKind::Cifar100,
        DatasetKind::Cifar10 => CifarKind::Cifar10,
    };
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            let cache = data::default_cache_dir();
            data::ensure_cifar(kind, &cache).map_err(|e| {
                format!("{e}\n(or point --data-dir at a folder holding the files, or train on --synthetic N images)")
            })?
        }
    };
    let load = |split| {
        data::load_cifar(&dir, kind, split, LabelKind::Fine).map_err(|e| {
            format!("{e}\n(pass --data-dir DIR with the CIFAR files, or --synthetic N to train without them)")
        })
    };
    Ok((load(Split::Train)?, load(Split::Test)?))
}

pub fn model(arch: Arch, classes: usize) -> Box<dyn Layer> {
    match arch {
        Arch::Resnet18 => Box::new(ResNet::seed([2, 2, 2, 2], classes)),
        Arch::Resnet34 => Box::new(ResNet::seed([3, 4, 6, 3], classes)),
        Arch::Resnet18Cifar => Box::new(models::resnet18_cifar(classes)),
    }
}

pub fn augment(args: &Args) -> Augment {
    if args.augment {
        Augment::standard()
    } else {
        Augment::default()
    }
}

/// The optimizer with its schedule; `total_steps` is the length of the whole run.
pub fn optimizer(args: &Args, total_steps: u64) -> AnyResult<Box<dyn Optimizer>> {
    let total_steps = total_steps.max(1);
    let lr: LearningRate = match args.schedule {
        Schedule::Constant => Constant(args.lr).into(),
        Schedule::Cosine => {
            let warmup = (total_steps / args.epochs.max(1)).min(total_steps / 2);
            CosineDecay::new(args.lr, total_steps).warmup(warmup, 0.0).into()
        }
        Schedule::Onecycle => OneCycle::new(args.lr, total_steps).into(),
    };
    let optimizer: Box<dyn Optimizer> = match args.optimizer {
        OptimizerKind::Adam => Box::new(Adam::new(lr)),
        OptimizerKind::Adamw => Box::new(AdamW::new(lr).weight_decay(args.weight_decay)),
        OptimizerKind::Sgd => Box::new(Sgd::new(lr).momentum(0.9).nesterov(true).weight_decay(args.weight_decay)),
    };
    // f16 gradients underflow without loss scaling (Keras wraps the optimizer the same way).
    Ok(match args.precision {
        Precision::F16 => Box::new(LossScaleOptimizer::new(optimizer)),
        Precision::F32 | Precision::Bf16 => optimizer,
    })
}

pub fn loss(args: &Args) -> CrossEntropy {
    CrossEntropy::from_logits().label_smoothing(args.label_smoothing)
}
