//! Ready-made models: the seed's ResNet18/34 and the common CIFAR ResNet variant.

mod resnet;

pub use resnet::{resnet18, resnet18_cifar, resnet34, resnet34_cifar, BasicBlock, ResNet};
