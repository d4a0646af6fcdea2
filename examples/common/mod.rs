//! What the CNN examples (`small_cnn`, `mobilenet_v2`, `unet`) share: the command line
//! ([`cli`]), the data ([`data`], [`segmentation`]), the training through `Trainer::fit`
//! ([`train`]) and the per-epoch metrics file ([`report`]). Each example includes this folder with
//! `#[path = "common/mod.rs"] mod common;` and keeps only its model.

pub mod cli;
pub mod data;
pub mod report;
pub mod segmentation;
pub mod train;

use std::process::ExitCode;

/// Errors of any kind, printed by [`exit_code`].
pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The batch-norm momentum of the examples' models, instead of Keras' 0.99.
///
/// A moving statistic after `n` training steps is `momentum^n * initial + (1 - momentum) *
/// sum of momentum^k * batch_{n-k}`: the initial value (mean 0, variance 1) keeps the weight
/// `momentum^n`, and the batches of the last `1 / (1 - momentum)` steps make most of the
/// rest. With 0.99, 189 steps (`small_cnn --synthetic 4000 --epochs 3` at batch 64) leave
/// 0.99^189 = 0.15 of the initial value, and the average spans the last ~100 steps, taken
/// while the weights were still changing fast: the statistics used at inference are not the
/// trained network's, and test accuracy looks broken while the training loss is near 0.
/// With 0.9 the initial value weighs 0.9^63 = 0.001 after one such epoch, and the average
/// spans the last ~10 steps. (0.9 is also PyTorch's default, whose `momentum=0.1` is the
/// new batch's weight.)
pub const BN_MOMENTUM: f64 = 0.9;

/// Why an example stopped early, for its exit code: 2 a bad command line, 3 a non-finite
/// training loss (training stops at the first one; nothing non-finite is written).
#[derive(Debug)]
pub enum Stop {
    /// An option's value is unusable; the message names the option and the value.
    Usage(String),
    /// The training loss stopped being finite.
    NonFiniteLoss(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Usage(msg) | Stop::NonFiniteLoss(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Stop {}

/// Runs an example's `run`, printing an error as `error: ...`. Exit codes: 0 done, 1 an
/// error, 2 a bad command line, 3 a non-finite training loss.
pub fn exit_code(result: AnyResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e.downcast_ref::<Stop>() {
                Some(Stop::Usage(_)) => ExitCode::from(2),
                Some(Stop::NonFiniteLoss(_)) => ExitCode::from(3),
                None => ExitCode::FAILURE,
            }
        }
    }
}
