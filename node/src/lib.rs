//! # weft-node
//!
//! The Weft node: it opens the chain database, builds or imports blocks, keeps a transaction
//! pool, serves JSON-RPC and Prometheus metrics. The pieces:
//!
//! * [`db`]: rocksdb with column families; one atomic write batch per block.
//! * [`watermark`]: the finalized watermark outside the database (lost writes are caught).
//! * [`state`]: the Jellyfish Merkle state tree (blake3) over rocksdb; state roots and proofs.
//! * [`chain`]: genesis, block building and import, reads of blocks and state.
//! * [`consensus`]: the seam between block import and a consensus engine, and the dev engine.
//! * [`pool`]: the transaction pool.
//! * [`authorship`]: the block production loop of a validator.
//! * [`rpc`]: the JSON-RPC server.
//! * [`inference`]: the `inference_*` methods: serving-step choice, payment, routing.
//! * [`metrics`]: Prometheus metrics.
//! * [`chain_spec`]: chain specifications.
//! * [`service`]: wires the pieces together for `weft-node` runs.
//! * [`commands`]: the subcommands (`key`, `build-spec`, `purge-chain`, `export-blocks`,
//!   `import-blocks`, `benchmark`).

pub mod authorship;
pub mod bft;
pub mod chain;
pub mod chain_spec;
pub mod cli;
pub mod commands;
pub mod consensus;
pub mod db;
pub mod entry;
pub mod inference;
pub mod metrics;
pub mod pool;
pub mod rpc;
pub mod service;
pub mod state;
pub mod watermark;
