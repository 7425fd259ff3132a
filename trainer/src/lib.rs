//! The Weft trainer library: the model, pipeline-parallel training of one stage, data
//! assignment, the optimiser, commitments to tensors, and checkpoints.
//!
//! A contributor trains one stage of a shared GPT-style transformer; every step it
//! commits Merkle roots of what it received, computed and sent ([`commit`]), and keeps the
//! tensors so that an auditor can recompute the step. Everything that an auditor must be
//! able to redo — parameter initialisation ([`model`]), the batch of a step ([`data`]),
//! the update ([`optim`]) — is a deterministic function of public numbers.
//!
//! Modules:
//! * [`config`]: model and training configuration (JSON), device selection.
//! * [`model`]: the transformer, cut into [`model::Stage`]s with stage-independent init.
//! * [`data`]: token sources and counter-based batch assignment.
//! * [`optim`]: explicit AdamW, learning-rate schedule, gradient clipping.
//! * [`commit`]: canonical tensor bytes, chunked blake3 Merkle roots, step commitments.
//! * [`pipeline`]: the per-stage worker (forward / backward / update) and an in-process
//!   pipeline driver.
//! * [`checkpoint`]: atomic safetensors checkpoints of a stage.
//! * [`wire`]: SCALE-framed tensors and the pipeline / reveal messages, validated on receipt.
//! * [`peer`]: one stage as its own process, talking to its neighbours over libp2p.
//! * [`store`]: the on-disk store of committed tensors, the reveal server, the journal.
//! * [`chain`]: typed reads of chain state (runs, slots, peers, auditors, commitments).
//! * [`submit`]: exactly-once submission of step commitments to the chain.
//! * [`metrics`]: Prometheus metrics, their HTTP responder, and the progress display.
//! * [`audit`]: recomputation of a revealed step within a tolerance, and reveal fetching.
//! * [`service`]: the chain-driven trainer (`weft-trainer train`) and auditor
//!   (`weft-trainer audit`).

pub mod audit;
pub mod chain;
pub mod checkpoint;
pub mod commit;
pub mod config;
pub mod data;
pub mod error;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod peer;
pub mod pipeline;
pub mod service;
pub mod store;
pub mod submit;
pub mod wire;

pub use error::{Error, Result};
