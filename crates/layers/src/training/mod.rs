//! Keras' training API: [`Trainer::fit`], [`Trainer::evaluate`], [`Trainer::predict`], with
//! [`Callback`]s, for any [`Layer`](crate::Layer).
//!
//! ```no_run
//! use tapegrad_data::{synthetic, DataLoader, LoaderConfig};
//! use tapegrad_layers::training::{EarlyStopping, FitOptions, SparseCategoricalAccuracy, Trainer};
//! use tapegrad_layers::{losses, optimizers::Adam, Conv2D, Dense, Flatten, Sequential};
//! # fn main() -> tapegrad_layers::Result<()> {
//! let model = Sequential::new().add(Conv2D::new(16, 3)).add(Flatten::new()).add(Dense::new(10));
//! let train = DataLoader::new(synthetic(2000, 10, 0)?, LoaderConfig::new(64).shuffle(0))?;
//! let mut trainer = Trainer::new(&model, Adam::new(1e-3), |y, p| losses::sparse_categorical_crossentropy(y, p, true))
//!     .metric(SparseCategoricalAccuracy::new());
//! let history = trainer.fit(
//!     &train,
//!     FitOptions::new().epochs(10).validation_split(0.1).callback(EarlyStopping::new().patience(2)),
//! )?;
//! println!("{:?}", history.get("val_accuracy"));
//! # Ok(())
//! # }
//! ```
//!
//! - Data: any [`DataSource`] ([`tapegrad_data::DataLoader`], [`TensorDataset`], or a
//!   program's own).
//! - Metrics accumulate on the device ([`Metric`]); the loss is read back every step on the
//!   CPU and every `sync_every` steps on a GPU, so a GPU step does not wait for the host.
//! - A non-finite training loss stops `fit` with
//!   [`Error::NonFiniteLoss`](crate::Error::NonFiniteLoss) (epoch and step), unless
//!   [`TerminateOnNaN`] asks to stop cleanly instead.
//! - At the first validation, `fit` warns once (stderr, and [`History::warnings`]) when a
//!   batch-normalization layer has seen fewer than about `1 / (1 - momentum)` updates.
//! - [`train_step`] is one step of a hand-written loop; [`GraphedStep`] one replayed as a
//!   CUDA graph (`FitOptions::cuda_graph` in `fit`).
//!
//! The flagship example keeps its explicit `GradientTape` loop, as the seed program does.

mod bn_warning;
mod callback;
mod callbacks;
mod data;
mod data_parallel;
mod graphed;
mod history;
mod logs;
mod metric;
mod monitor;
mod options;
mod step;
mod trainer;

pub use callback::{Callback, CallbackContext, FitParams};
pub use callbacks::{
    CSVLogger, EarlyStopping, JsonlLogger, LearningRateScheduler, ModelCheckpoint, ProgressLogger, ReduceLROnPlateau,
    TerminateOnNaN,
};
pub use data::{split_loader, BatchIter, DataSource, TensorDataset};
pub use data_parallel::{broadcast_model, data_parallel_step_with};
pub use graphed::{GraphedStep, GraphedStepStats};
pub use history::History;
pub use logs::Logs;
pub use metric::{Metric, SparseCategoricalAccuracy, SparseMeanIoU};
pub use monitor::MonitorMode;
pub use options::FitOptions;
pub use step::{train_step, train_step_with};
pub use trainer::Trainer;
