//! The built-in callbacks, with Keras' names and behaviour.

mod csv_logger;
mod early_stopping;
mod jsonl_logger;
mod learning_rate_scheduler;
mod log_file;
mod model_checkpoint;
mod progress;
mod reduce_lr_on_plateau;
mod terminate_on_nan;

pub use csv_logger::CSVLogger;
pub use early_stopping::EarlyStopping;
pub use jsonl_logger::JsonlLogger;
pub use learning_rate_scheduler::LearningRateScheduler;
pub use model_checkpoint::ModelCheckpoint;
pub use progress::ProgressLogger;
pub use reduce_lr_on_plateau::ReduceLROnPlateau;
pub use terminate_on_nan::TerminateOnNaN;
