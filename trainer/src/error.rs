//! The trainer's error type: the ML core's and the stage network's errors, plus what only
//! the chain-driven services meet.

/// Everything that can go wrong in a trainer or an auditor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model, the data, the optimiser or a recomputation failed.
    #[error(transparent)]
    Ml(#[from] weft_ml::Error),
    /// The stage network, the tensor store, the journal or a file failed.
    #[error(transparent)]
    Net(#[from] weft_stage_net::Error),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Settings that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A step replayed from the store after a restart does not reproduce its commitment.
    #[error("replay: {0}")]
    Replay(String),
    /// Chain state is missing, undecodable or inconsistent, or the node failed.
    #[error("chain: {0}")]
    Chain(String),
    /// Training stopped on purpose (unassigned, run finished, operator).
    #[error("stopped: {0}")]
    Stopped(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
