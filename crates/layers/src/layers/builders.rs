//! The builder methods that the weighted layers share, written once: a layer's `impl`
//! invokes [`weight_builders!`] and gets `use_bias`, `activation`, `bias_initializer`,
//! `dtype_policy` and `named` (and `kernel_initializer` with `weight_builders!(kernel_initializer)`), each
//! setting the field of the same name.

/// Expands, inside a layer's `impl`, to its shared builder methods.
macro_rules! weight_builders {
    (kernel_initializer) => {
        /// The kernel's initializer.
        pub fn kernel_initializer(mut self, init: $crate::initializers::Initializer) -> Self {
            self.kernel_initializer = init;
            self
        }

        $crate::layers::builders::weight_builders!();
    };
    () => {
        /// Whether to add a bias.
        pub fn use_bias(mut self, use_bias: bool) -> Self {
            self.use_bias = use_bias;
            self
        }

        /// The activation applied to the output.
        pub fn activation(mut self, activation: $crate::layers::activation::ActivationFn) -> Self {
            self.activation = activation;
            self
        }

        /// The bias's initializer.
        pub fn bias_initializer(mut self, init: $crate::initializers::Initializer) -> Self {
            self.bias_initializer = init;
            self
        }

        /// The layer's own dtype policy (Keras' `dtype=` argument), instead of its caller's
        /// or the global one: see [`mixed_precision`](crate::mixed_precision).
        pub fn dtype_policy(mut self, policy: $crate::mixed_precision::Policy) -> Self {
            self.dtype_policy = Some(policy);
            self
        }

        /// The same layer under another name.
        pub fn named(mut self, name: impl Into<String>) -> Self {
            self.name = name.into();
            self
        }
    };
}

pub(crate) use weight_builders;
