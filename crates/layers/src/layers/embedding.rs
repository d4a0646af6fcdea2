//! [`Embedding`]: integer ids to dense vectors, a lookup in a trained table.

use super::get_or_build;
use crate::error::InLayer;
use crate::initializers::{Fans, Initializer};
use crate::mixed_precision::Policy;
use crate::naming::unique_name;
use crate::{Error, InputSpec, Layer, Mode, Result};
use std::sync::OnceLock;
use tapegrad_tensor::{DType, Device, Shape, Tensor, Variable};

/// Maps integer ids in `0..input_dim` to vectors of `output_dim` (Keras'
/// `layers.Embedding`): `[batch, ...] -> [batch, ..., output_dim]`. The table
/// `embeddings` is `[input_dim, output_dim]`, drawn uniform on `[-0.05, 0.05)` (Keras'
/// default), so the layer has `input_dim * output_dim` parameters. Ids are i64; float
/// inputs are cast (as Keras casts them), which is also what `summary()` traces. An id
/// outside the vocabulary is an error naming the layer and the id, on every device. The
/// gradient is a deterministic scatter-add into the rows that were looked up.
///
/// ```
/// use tapegrad_layers::{Embedding, Layer, Mode};
/// use tapegrad_tensor::{Device, Tensor};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let embed = Embedding::new(10, 4);
/// let ids = Tensor::from_vec(vec![1i64, 2, 9, 0, 0, 3], [2, 3], &Device::Cpu)?;
/// assert_eq!(embed.call(&ids, Mode::Infer)?.dims(), &[2, 3, 4]);
/// assert_eq!(embed.count_params().trainable, 40);
/// let bad = Tensor::from_vec(vec![10i64], [1, 1], &Device::Cpu)?;
/// assert!(embed.call(&bad, Mode::Infer).unwrap_err().to_string().contains("index 10"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Embedding {
    name: String,
    input_dim: usize,
    output_dim: usize,
    initializer: Initializer,
    dtype: DType,
    dtype_policy: Option<Policy>,
    embeddings: OnceLock<Variable>,
}

impl Embedding {
    /// A table of `input_dim` ids (the vocabulary size) by `output_dim` features, with
    /// Keras' defaults (uniform on `[-0.05, 0.05)`, f32).
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding {
            name: unique_name("embedding"),
            input_dim,
            output_dim,
            initializer: Initializer::RandomUniform { low: -0.05, high: 0.05 },
            dtype: DType::F32,
            dtype_policy: None,
            embeddings: OnceLock::new(),
        }
    }

    /// The table's initializer (Keras' `embeddings_initializer`).
    pub fn embeddings_initializer(mut self, init: Initializer) -> Self {
        self.initializer = init;
        self
    }

    /// The table's dtype (f32 unless set; the ids' dtype says nothing about it).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The layer's own dtype policy (Keras' `dtype=`): under a mixed policy the table stays
    /// in its variable dtype (f32) and is read in the compute dtype, so the looked-up
    /// vectors come out in bf16 or f16; the ids are never cast to it (see
    /// [`mixed_precision`](crate::mixed_precision)). Without one the layer follows the
    /// layer it is called in, or the global policy.
    ///
    /// ```
    /// use tapegrad_layers::mixed_precision::Policy;
    /// use tapegrad_layers::{Embedding, Layer, Mode};
    /// use tapegrad_tensor::{DType, Device, Tensor};
    /// # fn main() -> tapegrad_layers::Result<()> {
    /// let embed = Embedding::new(10, 4).dtype_policy(Policy::MIXED_BFLOAT16);
    /// let ids = Tensor::from_vec(vec![1i64, 9], [2], &Device::Cpu)?;
    /// assert_eq!(embed.call(&ids, Mode::Infer)?.dtype(), DType::BF16);
    /// assert_eq!(embed.embeddings().unwrap().value_untracked().dtype(), DType::F32);
    /// # Ok(())
    /// # }
    /// ```
    pub fn dtype_policy(mut self, policy: Policy) -> Self {
        self.dtype_policy = Some(policy);
        self
    }

    /// The same layer under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The table `[input_dim, output_dim]`, once built.
    pub fn embeddings(&self) -> Option<&Variable> {
        self.embeddings.get()
    }

    fn built(&self, device: &Device) -> Result<&Variable> {
        get_or_build(&self.embeddings, || {
            if self.input_dim == 0 || self.output_dim == 0 {
                return Err(Error::layer(
                    &self.name,
                    format!(
                        "input_dim ({}) and output_dim ({}) must both be positive",
                        self.input_dim, self.output_dim
                    ),
                ));
            }
            let shape = Shape::new(&[self.input_dim, self.output_dim]);
            let table = self.initializer.initialize_for(
                (&self.name, "embeddings"),
                &shape,
                Fans::dense(self.input_dim, self.output_dim),
                self.dtype,
                device,
            )?;
            Ok(Variable::new(format!("{}/embeddings", self.name), table, true))
        })
    }
}

impl Layer for Embedding {
    fn autocasts_inputs(&self) -> bool {
        false
    }

    fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
        let table = self.built(&input.device())?;
        let ids =
            if input.dtype() == DType::I64 { input.clone() } else { input.cast(DType::I64).in_layer(&self.name)? };
        crate::mixed_precision::read_variable(table).and_then(|t| t.gather(&ids)).in_layer(&self.name)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn policy_override(&self) -> Option<Policy> {
        self.dtype_policy
    }

    fn build(&self, input: &InputSpec) -> Result<()> {
        self.built(&input.device).map(|_| ())
    }

    fn visit_variables(&self, visit: &mut dyn FnMut(&str, &Variable)) {
        if let Some(v) = self.embeddings.get() {
            visit("embeddings", v);
        }
    }
}
