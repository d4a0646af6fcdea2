//! The one error type of the layers crate.

use std::path::PathBuf;

/// Everything that can go wrong in a layer, optimizer, loss, checkpoint or model. Messages
/// name the layer, variable, shape or file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (its message names the op, shapes and dtypes).
    #[error(transparent)]
    Tensor(tapegrad_tensor::Error),
    /// A tensor operation failed inside a layer.
    #[error("layer {layer}: {source}")]
    InLayer {
        /// The layer's name.
        layer: String,
        /// What failed (boxed to keep `Result`s small).
        source: Box<tapegrad_tensor::Error>,
    },
    /// A layer was configured or called wrongly.
    #[error("layer {layer}: {msg}")]
    Layer {
        /// The layer's name.
        layer: String,
        /// What was wrong.
        msg: String,
    },
    /// An optimizer was misused (mismatched lists, a variable of another shape...).
    #[error("optimizer {optimizer}: {msg}")]
    Optimizer {
        /// The optimizer's name.
        optimizer: String,
        /// What was wrong.
        msg: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A checkpoint file is unreadable: truncated, corrupt, or not a tapegrad checkpoint.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A checkpoint does not match the model or optimizer it is loaded into; every
    /// mismatch found is listed.
    #[error("checkpoint {} does not match: {}", path.display(), problems.join("; "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per missing, unexpected or misshaped tensor.
        problems: Vec<String>,
    },
    /// The training loss stopped being finite during `fit` (NaN or infinite). `epoch` and
    /// `step` are 0-based, the step counted within the epoch; on a GPU the loss is read
    /// every few steps, so `step` is the first step at which it was seen.
    #[error(
        "the training loss is {value} at epoch {epoch}, step {step}: stopping (try a lower learning rate; \
         TAPEGRAD_CHECK_NUMERICS=1 names the first op that made a non-finite value)"
    )]
    NonFiniteLoss {
        /// The epoch (0-based).
        epoch: u64,
        /// The step within the epoch (0-based).
        step: u64,
        /// The loss read.
        value: f64,
    },
    /// Reading a dataset or making its batches failed.
    #[error(transparent)]
    Data(#[from] tapegrad_data::DataError),
    /// A collective across data-parallel ranks failed (its message names the rank, the
    /// collective, the shape and dtype).
    #[error(transparent)]
    Distributed(#[from] tapegrad_distributed::Error),
    /// Any other invalid argument, described in words.
    #[error("{0}")]
    Invalid(String),
}

/// The result type of the layers crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a tensor error raised inside the layer `layer`.
    pub fn in_layer(layer: &str, source: tapegrad_tensor::Error) -> Self {
        Error::InLayer { layer: layer.to_string(), source: Box::new(source) }
    }

    /// A configuration or call error of the layer `layer`.
    pub fn layer(layer: &str, msg: impl Into<String>) -> Self {
        Error::Layer { layer: layer.to_string(), msg: msg.into() }
    }
}

/// Lets `?` turn a layer error into a tensor error inside `GradientTape::record`, whose
/// closure returns the tensor crate's `Result`: it travels whole, as
/// [`tapegrad_tensor::Error::External`], and the `?` after `record` unwraps it again.
impl From<Error> for tapegrad_tensor::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(inner) => inner,
            other => tapegrad_tensor::Error::External(Box::new(other)),
        }
    }
}

/// A tensor error becomes [`Error::Tensor`], except a layer error that travelled through
/// a tensor `Result` (see above), which comes back as the variant it was.
impl From<tapegrad_tensor::Error> for Error {
    fn from(e: tapegrad_tensor::Error) -> Self {
        match e {
            tapegrad_tensor::Error::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Tensor(tapegrad_tensor::Error::External(other)),
            },
            other => Error::Tensor(other),
        }
    }
}

/// Adds a layer's name to the errors of tensor ops run inside it.
pub(crate) trait InLayer<T> {
    /// Maps a tensor error to [`Error::InLayer`].
    fn in_layer(self, layer: &str) -> Result<T>;
}

impl<T> InLayer<T> for tapegrad_tensor::Result<T> {
    fn in_layer(self, layer: &str) -> Result<T> {
        self.map_err(|e| Error::in_layer(layer, e))
    }
}
