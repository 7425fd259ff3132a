//! The ML core's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the ML core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model, training or device configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration file is not valid JSON for its type.
    #[error("cannot parse configuration {path}: {error}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file could not be read or written.
    #[error("i/o error on {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A data source is unusable (empty, too short, malformed).
    #[error("data: {0}")]
    Data(String),
    /// A tensor does not have the shape or kind the caller promised.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The pipeline was driven out of order (e.g. backward before forward).
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A checkpoint does not match the stage it is loaded into.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A step cannot be audited (an unsupported configuration, malformed reveal sizes).
    #[error("audit: {0}")]
    Audit(String),
    /// A step's I/O failed (a partner, the network, the store): the driver's error, carried
    /// through the step schedule.
    #[error("step i/o: {0}")]
    StepIo(String),
    /// A loss cannot be committed (not finite, negative, or too large for fixed point).
    #[error("loss {0} cannot be committed")]
    Loss(f64),
    /// Inference: the positions requested do not fit the context (the learned position
    /// embedding has `limit` = `seq_len` rows).
    #[error("context full: {len} positions requested, the model's context is {limit}")]
    ContextFull {
        /// Positions the request needs (cached plus new).
        len: usize,
        /// The context length (`seq_len`).
        limit: usize,
    },
    /// Inference: a token id is not in the vocabulary.
    #[error("token id {token} is not in the vocabulary 0..{vocab}")]
    TokenOutOfRange {
        /// The offending id.
        token: i64,
        /// The vocabulary size.
        vocab: i64,
    },
    /// Inference: a generation request has an empty prompt.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Inference: a prompt is longer than the context.
    #[error("prompt of {len} tokens is longer than the context of {limit}")]
    PromptTooLong {
        /// Prompt length.
        len: usize,
        /// The context length (`seq_len`).
        limit: usize,
    },
    /// Inference: invalid sampling parameters, stop sequences or logits.
    #[error("sampling: {0}")]
    Sampling(String),
    /// Inference: a KV cache does not belong to the stage, batch or stages it is used with.
    #[error("kv cache: {0}")]
    Cache(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
