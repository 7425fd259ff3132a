//! # weft-ml
//!
//! The ML core of a Weft trainer: the model, pipeline-parallel training of one stage, data
//! assignment, the optimiser, commitments to tensors, checkpoints and audit recomputation.
//! It depends on tch and `weft-primitives` only: no network, no tokio, no chain client. The
//! stage network (`weft-stage-net`) moves its tensors as bytes; the trainer binaries
//! (`weft-trainer`) join the two and talk to the chain.
//!
//! A contributor trains one stage of a shared GPT-style transformer; every step it
//! commits Merkle roots of what it received, computed and sent ([`commit`]), and keeps the
//! tensors so that an auditor can recompute the step ([`audit`]). Everything that an auditor
//! must be able to redo — parameter initialisation ([`model`]), the batch of a step
//! ([`data`]), the update ([`optim`]) — is a deterministic function of public numbers.
//!
//! Modules:
//! * [`config`]: model and training configuration (JSON), device selection.
//! * [`model`]: the transformer, cut into [`model::Stage`]s with stage-independent init.
//! * [`data`]: token sources and counter-based batch assignment.
//! * [`optim`]: explicit AdamW, learning-rate schedule, gradient clipping.
//! * [`aggregate`]: the replicas' robust, bit-exact aggregation (coordinate-wise trimmed
//!   mean).
//! * [`commit`]: canonical tensor bytes, chunked blake3 Merkle roots, the committed loss.
//! * [`tensor`]: the adapter between `tch` tensors and their wire form.
//! * [`pipeline`]: the per-stage worker (forward / backward / update) and an in-process
//!   pipeline driver.
//! * [`checkpoint`]: atomic safetensors checkpoints of a stage.
//! * [`audit`]: recomputation of a revealed step within a tolerance.
//! * [`infer`]: inference for serving: a per-session KV cache per stage, the cached
//!   incremental forward, deterministic sampling and local generation.

pub mod aggregate;
pub mod audit;
pub mod checkpoint;
pub mod commit;
pub mod compute;
pub mod config;
pub mod data;
pub mod error;
pub mod infer;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod tensor;
pub mod worker;

pub use error::{Error, Result};
