//! The stage network's error type.

use std::path::PathBuf;

/// Everything that can go wrong between stages, in the store or in recovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("i/o error on {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The network failed or a peer misbehaved.
    #[error("network: {0}")]
    Network(String),
    /// A peer table is invalid.
    #[error("peer table: {0}")]
    Peers(String),
    /// The tensor store or the journal is missing, undecodable or inconsistent.
    #[error("store: {0}")]
    Store(String),
    /// A stage's settings cannot work (retention, checkpoint interval, stage count).
    #[error("invalid configuration: {0}")]
    Config(String),
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
