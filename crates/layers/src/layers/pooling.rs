//! Pooling layers: [`MaxPool2D`], [`AveragePooling2D`], [`GlobalAveragePooling2D`],
//! [`GlobalMaxPooling2D`].

use super::pair::IntoPair;
use crate::error::InLayer;
use crate::naming::unique_name;
use crate::{Layer, Mode, Result};
use tapegrad_tensor::{Padding, Tensor};

macro_rules! window_pool_layer {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $type_name:literal, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            name: String,
            pool_size: (usize, usize),
            strides: (usize, usize),
            padding: Padding,
        }

        impl $name {
            /// Windows of `pool_size` (one number or `(rows, columns)`), strides equal to
            /// the window, `Padding::Valid` (Keras' defaults).
            pub fn new(pool_size: impl IntoPair) -> Self {
                let pool_size = pool_size.into_pair();
                $name { name: unique_name($prefix), pool_size, strides: pool_size, padding: Padding::Valid }
            }

            /// The strides (one number or `(rows, columns)`).
            pub fn strides(mut self, strides: impl IntoPair) -> Self {
                self.strides = strides.into_pair();
                self
            }

            /// The padding (`Padding::Same` is TF's: extra at the bottom/right).
            pub fn padding(mut self, padding: Padding) -> Self {
                self.padding = padding;
                self
            }

            /// The same layer under another name.
            pub fn named(mut self, name: impl Into<String>) -> Self {
                self.name = name.into();
                self
            }
        }

        impl Layer for $name {
            fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
                input.$op(self.pool_size, self.strides, self.padding).in_layer(&self.name)
            }

            fn name(&self) -> &str {
                &self.name
            }

            fn type_name(&self) -> &str {
                $type_name
            }
        }
    };
}

window_pool_layer!(
    /// Max pooling over NHWC windows (Keras' `layers.MaxPool2D`). The seed's stem uses
    /// `MaxPool2D::new(2).strides(1).padding(Padding::Same)`.
    MaxPool2D,
    "max_pooling2d",
    "MaxPool2D",
    max_pool2d
);

window_pool_layer!(
    /// Average pooling over NHWC windows (Keras' `layers.AveragePooling2D`); with
    /// `Padding::Same`, border windows average only their real elements, as TF.
    AveragePooling2D,
    "average_pooling2d",
    "AveragePooling2D",
    avg_pool2d
);

macro_rules! global_pool_layer {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            name: String,
            keepdims: bool,
        }

        impl $name {
            /// A global pooling layer, `[n, h, w, c] -> [n, c]` (Keras' default
            /// `keepdims=False`).
            pub fn new() -> Self {
                $name { name: unique_name($prefix), keepdims: false }
            }

            /// Whether to keep the pooled axes, giving `[n, 1, 1, c]` (Keras' `keepdims`).
            pub fn keepdims(mut self, keepdims: bool) -> Self {
                self.keepdims = keepdims;
                self
            }

            /// The same layer under another name.
            pub fn named(mut self, name: impl Into<String>) -> Self {
                self.name = name.into();
                self
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Layer for $name {
            fn forward(&self, input: &Tensor, _mode: Mode) -> Result<Tensor> {
                let pooled = input.$op().and_then(|y| {
                    if self.keepdims {
                        let &[n, c] = y.dims() else { unreachable!("global pooling gives [n, c]") };
                        y.reshape([n, 1, 1, c])
                    } else {
                        Ok(y)
                    }
                });
                pooled.in_layer(&self.name)
            }

            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

global_pool_layer!(
    /// The mean over height and width, `[n, h, w, c] -> [n, c]`, or `[n, 1, 1, c]` with
    /// `keepdims(true)` (Keras' `layers.GlobalAveragePooling2D`).
    GlobalAveragePooling2D,
    "global_average_pooling2d",
    global_avg_pool2d
);

global_pool_layer!(
    /// The maximum over height and width, `[n, h, w, c] -> [n, c]`, or `[n, 1, 1, c]` with
    /// `keepdims(true)` (Keras' `layers.GlobalMaxPooling2D`).
    GlobalMaxPooling2D,
    "global_max_pooling2d",
    global_max_pool2d
);
