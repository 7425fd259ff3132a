//! # weft-trainer
//!
//! The trainer and auditor services of Weft: they join the ML core (`weft-ml`: model,
//! worker, commitments, recomputation) and the stage network (`weft-stage-net`: wire,
//! link, store, journal, reveals) to the chain (JSON-RPC reads and extrinsic submission).
//!
//! A contributor trains one stage of a shared GPT-style transformer; every step it commits
//! the Merkle roots of what it received, computed and sent, and keeps the tensors so that an
//! auditor can recompute the step.
//!
//! Modules:
//! * [`adversary`]: dishonest trainers as library mocks (for tests and the simulation).
//! * [`stage`]: one stage as its own process over libp2p: the step over the network, crash
//!   recovery by replay from the store, the training loop.
//! * [`chain`]: typed reads of chain state (runs, slots, peers, auditors, commitments).
//! * [`submit`]: exactly-once submission of step commitments to the chain.
//! * [`metrics`]: Prometheus metrics, their HTTP responder, and the progress display.
//! * [`serve`]: serving inference from a stage holder (sessions, KV caches, payments).
//! * [`service`]: the chain-driven trainer (`weft-trainer train`) and auditor
//!   (`weft-trainer audit`), one file each.
//!
//! Crate borders (one way): `weft-trainer` → `weft-ml` → tch, primitives;
//! `weft-trainer` → `weft-stage-net` → p2p, bls, primitives. `weft-ml` and `weft-stage-net`
//! never see each other: tensors cross between them as [`weft_primitives::tensor::WireTensor`]
//! and canonical bytes, converted by `weft_ml::tensor`.

pub mod adversary;
pub mod chain;
pub mod error;
pub mod metrics;
pub mod serve;
pub mod service;
pub mod stage;
pub mod submit;

pub use error::{Error, Result};
pub use weft_ml as ml;
pub use weft_stage_net as net;
