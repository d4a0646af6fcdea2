//! The arithmetic of one optimizer step: the tensor crate's fused updates (one pass over
//! the elements; on CUDA one kernel launch per variable, or per 40 variables for the
//! `*_many` forms the optimizers use), which follow Keras' formulas exactly; each function
//! documents its formulas.

pub use tapegrad_tensor::optim::{
    adam_update, adam_update_many, sgd_update, sgd_update_many, AdamOperands, AdamStep, SgdOperands, SgdStep,
};
