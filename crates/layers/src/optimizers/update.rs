//! The arithmetic of one optimizer step for one variable: the tensor crate's fused updates
//! (one pass over the elements, one kernel launch on CUDA), which follow Keras' formulas
//! exactly; each function documents its formulas.

pub use tapegrad_tensor::optim::{adam_update, sgd_update, AdamStep, SgdStep};
