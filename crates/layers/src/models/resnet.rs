//! ResNet18/34: the seed's layout (`shared/seed/resnet_cifar100_tf.py`) and the common
//! CIFAR variant.
//!
//! [`BasicBlock`] is written the way a user writes a composite layer: a public struct of
//! layers implementing [`Layer`], with `call` spelling out the seed's forward pass.

use crate::layer::traced;
use crate::mixed_precision::Policy;
use crate::naming::unique_name;
use crate::{
    Activation, Add, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, Layer, MaxPool2D, Mode, Padding,
    Result, Sequential,
};
use tapegrad_tensor::Tensor;

/// The residual block: conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus a shortcut (the
/// identity, or a projection when the block downsamples or changes width), then ReLU of
/// the sum.
pub struct BasicBlock {
    name: String,
    /// First 3x3 convolution; carries the block's stride.
    pub conv1: Conv2D,
    /// Batch norm after `conv1`.
    pub bn1: BatchNormalization,
    /// ReLU after `bn1`.
    pub relu: Activation,
    /// Second 3x3 convolution, stride 1.
    pub conv2: Conv2D,
    /// Batch norm after `conv2`.
    pub bn2: BatchNormalization,
    /// The projection shortcut; `None` is the identity.
    pub shortcut: Option<Box<dyn Layer>>,
    /// Sums the shortcut and the residual branch (no variables).
    pub add: Add,
}

impl BasicBlock {
    /// The seed's block: convolutions with bias and 'same' padding, and a 1x1 convolution
    /// (with bias, no BN) as shortcut when `stride != 1`.
    pub fn new(filters: usize, stride: usize) -> Self {
        let shortcut: Option<Box<dyn Layer>> = if stride != 1 {
            Some(Box::new(Conv2D::new(filters, 1).strides(stride).padding(Padding::Same)))
        } else {
            None
        };
        BasicBlock {
            name: unique_name("basic_block"),
            conv1: Conv2D::new(filters, 3).strides(stride).padding(Padding::Same),
            bn1: BatchNormalization::new(),
            relu: Activation::relu(),
            conv2: Conv2D::new(filters, 3).strides(1).padding(Padding::Same),
            bn2: BatchNormalization::new(),
            shortcut,
            add: Add::new(),
        }
    }

    /// The usual CIFAR ResNet block: convolutions without bias, and a shortcut of a 1x1
    /// convolution (no bias) and BN when `stride != 1` or `in_channels != filters`.
    pub fn cifar(in_channels: usize, filters: usize, stride: usize) -> Self {
        let shortcut: Option<Box<dyn Layer>> = if stride != 1 || in_channels != filters {
            Some(Box::new(
                Sequential::new()
                    .add(Conv2D::new(filters, 1).strides(stride).use_bias(false))
                    .add(BatchNormalization::new()),
            ))
        } else {
            None
        };
        BasicBlock {
            name: unique_name("basic_block"),
            conv1: Conv2D::new(filters, 3).strides(stride).padding(Padding::Same).use_bias(false),
            bn1: BatchNormalization::new(),
            relu: Activation::relu(),
            conv2: Conv2D::new(filters, 3).padding(Padding::Same).use_bias(false),
            bn2: BatchNormalization::new(),
            shortcut,
            add: Add::new(),
        }
    }
}

impl Layer for BasicBlock {
    fn forward(&self, inputs: &Tensor, mode: Mode) -> Result<Tensor> {
        // bn1 - relu and bn2 - add - relu each run as one fused op (the values and gradients
        // of the separate layers, bit for bit); `relu` and `add` are traced for summaries.
        let out = self.conv1.call(inputs, mode)?;
        let out = traced(&self.relu, self.bn1.call_relu(&out, mode))?;
        let out = self.conv2.call(&out, mode)?;
        let shortcut = match &self.shortcut {
            Some(projection) => projection.call(inputs, mode)?,
            None => inputs.clone(),
        };
        traced(&self.add, self.bn2.call_add_relu(&out, &shortcut, mode))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("conv1", &self.conv1);
        visit("bn1", &self.bn1);
        visit("relu", &self.relu);
        visit("conv2", &self.conv2);
        visit("bn2", &self.bn2);
        if let Some(shortcut) = &self.shortcut {
            visit("shortcut", shortcut.as_ref());
        }
        visit("add", &self.add);
    }
}

/// A ResNet of four stages of [`BasicBlock`]s (64/128/256/512 filters), a stem
/// (`preprocess`), global average pooling and a Dense head producing logits.
pub struct ResNet {
    name: String,
    dtype_policy: Option<Policy>,
    /// The stem.
    pub preprocess: Sequential,
    /// Stage 1 (64 filters).
    pub layer1: Sequential,
    /// Stage 2 (128 filters).
    pub layer2: Sequential,
    /// Stage 3 (256 filters).
    pub layer3: Sequential,
    /// Stage 4 (512 filters).
    pub layer4: Sequential,
    /// `[b, h, w, 512] -> [b, 512]`.
    pub avgpool: GlobalAveragePooling2D,
    /// `[b, 512] -> [b, classes]` logits.
    pub fc: Dense,
}

const STAGE_FILTERS: [usize; 4] = [64, 128, 256, 512];

impl ResNet {
    /// The seed's ResNet: stem 3x3 conv (64, 'valid', with bias) - BN - ReLU - 2x2 max-pool
    /// (stride 1, 'same'); every stage's first block has stride 2 (the first stage's too),
    /// so a 32x32 input goes 30 -> 15 -> 8 -> 4 -> 2.
    pub fn seed(blocks_per_stage: [usize; 4], num_classes: usize) -> Self {
        let preprocess = Sequential::new()
            .add(Conv2D::new(64, 3).strides(1))
            .add(BatchNormalization::new())
            .add(Activation::relu())
            .add(MaxPool2D::new(2).strides(1).padding(Padding::Same));
        let stage = |filters: usize, blocks: usize| {
            let mut stage = Sequential::new();
            stage.push(BasicBlock::new(filters, 2));
            for _ in 1..blocks {
                stage.push(BasicBlock::new(filters, 1));
            }
            stage
        };
        Self::assemble(preprocess, num_classes, |i| stage(STAGE_FILTERS[i], blocks_per_stage[i]))
    }

    /// The common CIFAR ResNet (as in the "pytorch-cifar" family): stem 3x3 conv (64,
    /// stride 1, 'same', no bias) - BN - ReLU and no max-pool; stage strides 1, 2, 2, 2
    /// (32 -> 32 -> 16 -> 8 -> 4); convolutions without bias; projection shortcuts with BN.
    pub fn cifar(blocks_per_stage: [usize; 4], num_classes: usize) -> Self {
        let preprocess = Sequential::new()
            .add(Conv2D::new(64, 3).padding(Padding::Same).use_bias(false))
            .add(BatchNormalization::new())
            .add(Activation::relu());
        let strides = [1, 2, 2, 2];
        Self::assemble(preprocess, num_classes, |i| {
            let in_channels = if i == 0 { 64 } else { STAGE_FILTERS[i - 1] };
            let mut stage = Sequential::new();
            stage.push(BasicBlock::cifar(in_channels, STAGE_FILTERS[i], strides[i]));
            for _ in 1..blocks_per_stage[i] {
                stage.push(BasicBlock::cifar(STAGE_FILTERS[i], STAGE_FILTERS[i], 1));
            }
            stage
        })
    }

    /// The model's dtype policy (Keras' `dtype=`), as [`Sequential::dtype_policy`]: the
    /// policy of every layer inside it that has none of its own, instead of the global one.
    /// Under `"mixed_bfloat16"` or `"mixed_float16"` the convolutions, the head and the
    /// logits compute in the 16-bit dtype, batch norm normalises in f32, and every variable
    /// stays f32; see [`mixed_precision`](crate::mixed_precision).
    ///
    /// ```
    /// use tapegrad_layers::mixed_precision::Policy;
    /// use tapegrad_layers::models::ResNet;
    /// use tapegrad_layers::{Layer, Mode};
    /// use tapegrad_tensor::{DType, Device, Tensor};
    /// # fn main() -> tapegrad_layers::Result<()> {
    /// let model = ResNet::cifar([1, 1, 1, 1], 10).dtype_policy(Policy::MIXED_BFLOAT16);
    /// let logits = model.call(&Tensor::ones([1, 8, 8, 3], DType::F32, &Device::Cpu)?, Mode::Infer)?;
    /// assert_eq!(logits.dtype(), DType::BF16);
    /// assert!(model.variables().iter().all(|v| v.value_untracked().dtype() == DType::F32));
    /// # Ok(())
    /// # }
    /// ```
    pub fn dtype_policy(mut self, policy: Policy) -> Self {
        self.dtype_policy = Some(policy);
        self
    }

    /// Puts the stem, the four stages and the head together.
    fn assemble(preprocess: Sequential, num_classes: usize, mut stage: impl FnMut(usize) -> Sequential) -> Self {
        ResNet {
            name: unique_name("res_net"),
            dtype_policy: None,
            preprocess,
            layer1: stage(0),
            layer2: stage(1),
            layer3: stage(2),
            layer4: stage(3),
            avgpool: GlobalAveragePooling2D::new(),
            fc: Dense::new(num_classes),
        }
    }
}

impl Layer for ResNet {
    fn forward(&self, inputs: &Tensor, mode: Mode) -> Result<Tensor> {
        let out = self.preprocess.call(inputs, mode)?;
        let out = self.layer1.call(&out, mode)?;
        let out = self.layer2.call(&out, mode)?;
        let out = self.layer3.call(&out, mode)?;
        let out = self.layer4.call(&out, mode)?;
        let out = self.avgpool.call(&out, mode)?; // [b, 512]
        self.fc.call(&out, mode) // [b, classes] logits
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("preprocess", &self.preprocess);
        visit("layer1", &self.layer1);
        visit("layer2", &self.layer2);
        visit("layer3", &self.layer3);
        visit("layer4", &self.layer4);
        visit("avgpool", &self.avgpool);
        visit("fc", &self.fc);
    }
}

/// The seed's ResNet18 (blocks [2, 2, 2, 2]) with `num_classes` outputs; the seed uses 100
/// (CIFAR-100), where its summary reports 11,227,300 trainable and 7,808 non-trainable
/// parameters.
pub fn resnet18(num_classes: usize) -> ResNet {
    ResNet::seed([2, 2, 2, 2], num_classes)
}

/// The seed's ResNet34 (blocks [3, 4, 6, 3]) with `num_classes` outputs; at 100 its summary
/// reports 21,339,172 trainable and 15,232 non-trainable parameters.
pub fn resnet34(num_classes: usize) -> ResNet {
    ResNet::seed([3, 4, 6, 3], num_classes)
}

/// The CIFAR-variant ResNet18 ([`ResNet::cifar`]) with `num_classes` outputs.
pub fn resnet18_cifar(num_classes: usize) -> ResNet {
    ResNet::cifar([2, 2, 2, 2], num_classes)
}

/// The CIFAR-variant ResNet34 ([`ResNet::cifar`]) with `num_classes` outputs.
pub fn resnet34_cifar(num_classes: usize) -> ResNet {
    ResNet::cifar([3, 4, 6, 3], num_classes)
}
