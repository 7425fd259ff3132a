//! Tendermint finality for many validators.
//!
//! The decision itself is Malachite's Tendermint (`weft-consensus`, an IO-free state machine
//! driven input → outputs); this module is everything around it that touches the world:
//!
//! * [`service`]: one task that owns the engine and feeds it gossip, validated block bodies
//!   and fired timers, and carries out its outputs: write-ahead-log appends (synced before any
//!   broadcast that follows them), broadcasts, timers, building a block when this node
//!   proposes, committing the decided block with its certificate, and starting the next height
//!   with the validator set read from the new state.
//! * [`sync`]: a node that is behind (restarted, or new) fetches finalized blocks with their
//!   certificates from a peer and imports them, each verified against the set of its height
//!   and re-executed to the same state root; it answers the same requests from others.
//! * [`verify`]: the [`crate::consensus::ConsensusEngine`] of Tendermint chains: certificate
//!   checks for block import, `import-blocks` and RPC.
//! * [`signing_state`]: the double-sign guard's record beside the keys, outside the
//!   database, so that a validator whose database is lost never signs twice at a height.
//! * [`wal`]: the write-ahead log in rocksdb. [`wire`]: gossip and sync encodings.
//!   [`status`]: peers and sync state for `system_health` / `system_peers`.

pub mod proof;
pub mod service;
pub mod signing_state;
pub mod status;
pub mod sync;
pub mod verify;
pub mod wal;
pub mod wire;

pub use service::{BftConfig, BftService};
pub use status::NetworkStatus;
pub use verify::{justification, validator_set, TendermintVerifier};
