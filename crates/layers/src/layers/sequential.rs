//! [`Sequential`]: layers applied one after another.

use crate::layer::traced;
use crate::mixed_precision::Policy;
use crate::naming::unique_name;
use crate::{Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// A stack of layers, each fed the previous one's output (Keras' `Sequential`). Its
/// layers are named "0", "1", ... in variable paths, as in PyTorch's `nn.Sequential`.
///
/// Layer fusion: where a layer with a fused ReLU form ([`Layer::call_then_relu`]; a
/// [`BatchNormalization`](crate::BatchNormalization)) is followed by a plain ReLU
/// ([`Layer::is_relu`]: `Activation::relu()`, a `ReLU` without options), the pair runs as
/// one fused op with the same values and gradients; the ReLU layer still appears in
/// summaries with its output shape.
///
/// ```
/// use tapegrad_layers::{Activation, Dense, Layer, Mode, Sequential};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let mlp = Sequential::new().add(Dense::new(16)).add(Activation::relu()).add(Dense::new(3));
/// let y = mlp.call(&tapegrad_tensor::Tensor::ones([4, 8], tapegrad_tensor::DType::F32, &Default::default())?, Mode::Infer)?;
/// assert_eq!(y.dims(), &[4, 3]);
/// assert_eq!(mlp.named_variables()[2].0, "2.kernel");
/// # Ok(())
/// # }
/// ```
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    dtype_policy: Option<Policy>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.layers.iter().map(|l| l.name()).collect();
        f.debug_struct("Sequential").field("name", &self.name).field("layers", &names).finish()
    }
}

impl Sequential {
    /// An empty stack.
    pub fn new() -> Self {
        Sequential { name: unique_name("sequential"), layers: Vec::new(), dtype_policy: None }
    }

    /// A stack of the given layers.
    pub fn from_layers(layers: Vec<Box<dyn Layer>>) -> Self {
        Sequential { layers, ..Self::new() }
    }

    /// The stack with `layer` appended (builder style).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        self.push(layer);
        self
    }

    /// Appends `layer` (Keras' `model.add`).
    pub fn push(&mut self, layer: impl Layer + 'static) {
        self.layers.push(Box::new(layer));
    }

    /// Appends an already boxed layer.
    pub fn push_boxed(&mut self, layer: Box<dyn Layer>) {
        self.layers.push(layer);
    }

    /// The stack's dtype policy (Keras' `dtype=`): the policy of every layer in it that
    /// has none of its own, instead of the global one; see
    /// [`mixed_precision`](crate::mixed_precision).
    pub fn dtype_policy(mut self, policy: Policy) -> Self {
        self.dtype_policy = Some(policy);
        self
    }

    /// The same stack under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack is empty.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Sequential {
    fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = input.clone();
        let mut i = 0;
        while let Some(layer) = self.layers.get(i) {
            // Fused only where the two layers run under the same policy (the same output dtype).
            let same_policy = |next: &dyn Layer| next.policy_override() == layer.policy_override();
            if let Some(relu) = self.layers.get(i + 1).filter(|next| next.is_relu() && same_policy(next.as_ref())) {
                if let Some(fused) = layer.call_then_relu(&x, mode) {
                    x = traced(relu.as_ref(), fused)?;
                    i += 2;
                    continue;
                }
            }
            x = layer.call(&x, mode)?;
            i += 1;
        }
        Ok(x)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    /// Each layer casts its own input (an `Embedding` first keeps its ids as they are).
    fn autocasts_inputs(&self) -> bool {
        false
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        for (i, layer) in self.layers.iter().enumerate() {
            visit(&i.to_string(), layer.as_ref());
        }
    }
}
