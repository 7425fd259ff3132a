//! # weft-stage-net
//!
//! The stage network of a Weft trainer: everything between a stage's compute and its
//! partners, its auditors and its disk, without libtorch. Tensors travel and rest here as
//! bytes ([`weft_primitives::tensor::WireTensor`], canonical byte streams); turning them into
//! `tch` tensors is the ML core's adapter (`weft_ml::tensor`). That keeps this crate small,
//! testable and fuzzable on its own: the wire decoders are a cargo-fuzz target that does not
//! link libtorch.
//!
//! Modules:
//! * [`wire`]: the SCALE messages between trainers and from auditors, validated on receipt.
//! * [`topology`]: who trains which stage and who audits it ([`topology::PeerTable`]).
//! * [`access`]: who may fetch a stage's reveals (auditor hellos signed with BLS).
//! * [`protocol`]: the stage protocol as a pure state machine (input → effects): inbox,
//!   validation, retries, resend log.
//! * [`link`]: the driver of the protocol: libp2p transmissions, timers, waits.
//! * [`store`]: the on-disk store of committed tensors and the reveal answers from it.
//! * [`journal`]: the last committed step, written atomically.
//! * [`recovery`]: where a stage restarted after a crash stands.
//! * [`reveal_server`]: serving reveals after training has finished.
//! * [`reveal_fetch`]: the auditor's side: hello and chunk-by-chunk verified fetching.
//! * [`files`]: durable file writes.
//! * [`desk`]: what answers requests outside the pipeline protocol (reveals, inference).
//! * [`replica_desk`]: replicas that average: answering the other replicas' update requests.
//! * [`inference`]: inference across stage holders: messages, request bodies, the router.
//!
//! Depends on `weft-primitives`, `weft-p2p`, `weft-bls` and tokio; never on tch or on the
//! chain client.

pub mod access;
pub mod desk;
pub mod error;
pub mod files;
pub mod inference;
pub mod journal;
pub mod link;
pub mod protocol;
pub mod recovery;
pub mod replica_desk;
pub mod reveal_fetch;
pub mod reveal_server;
pub mod store;
pub mod topology;
pub mod wire;

pub use error::{Error, Result};
