//! What Tendermint nodes send each other besides consensus votes (whose encoding is
//! `weft_consensus::ConsensusMessage`). SCALE, explicit indices.
//!
//! * Gossip topic `consensus`: [`ConsensusGossip`], a consensus message with the number of
//!   times this node sent it. Gossip drops a message it has seen (ids are content hashes),
//!   so a re-broadcast (Malachite re-sends its votes every 5 s while a height is stuck, for
//!   peers that were down when they were first sent) must be new bytes: `attempt` makes it
//!   so, and relays forward each attempt once.
//! * Gossip topic `proposal`: [`BlockProposal`], the body of a block a proposer proposed; the
//!   signed proposal itself (height, round, hash) travels on the `consensus` topic. A body is
//!   used only if a validly signed proposal names its hash, and at most
//!   [`MAX_BODIES_PER_HEIGHT`] are kept per height.
//! * Gossip topic `tx`: a transaction's SCALE bytes.
//! * Request-response `sync`: [`SyncRequest`] → [`SyncResponse`]. A response carries at most
//!   [`MAX_BLOCKS_PER_RESPONSE`] finalized blocks with their certificates, and stops early
//!   once it reaches [`MAX_RESPONSE_BYTES`].

use crate::consensus::Justification;
use parity_scale_codec::{Decode, Encode};
use weft_primitives::Hash;
use weft_runtime::Block;

/// Most blocks in one sync response.
pub const MAX_BLOCKS_PER_RESPONSE: u32 = 64;
/// Byte budget of one sync response (the network refuses larger ones).
pub const MAX_RESPONSE_BYTES: usize = 12 * 1024 * 1024;
/// Most proposed block bodies kept for one height (each must match a signed proposal).
pub const MAX_BODIES_PER_HEIGHT: usize = 16;

/// A consensus message on the gossip topic.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ConsensusGossip {
    /// How many times the sender sent this message before.
    pub attempt: u32,
    /// The message (`weft_consensus::ConsensusMessage::to_bytes`).
    pub message: Vec<u8>,
}

/// A proposed block's body, gossiped by its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlockProposal {
    /// The round it is proposed in.
    pub round: u32,
    /// The block; its header names height and proposer.
    pub block: Block,
}

/// A sync request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncRequest {
    /// What is your finalized head?
    #[codec(index = 0)]
    Status,
    /// Finalized blocks from `from` on, at most `max`.
    #[codec(index = 1)]
    Blocks {
        /// First height.
        from: u64,
        /// Most blocks wanted (capped at [`MAX_BLOCKS_PER_RESPONSE`]).
        max: u32,
    },
}

/// A sync response.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncResponse {
    /// The responder's finalized head.
    #[codec(index = 0)]
    Status {
        /// Its height.
        finalized: u64,
        /// Its hash.
        hash: Hash,
    },
    /// Consecutive finalized blocks with their certificates.
    #[codec(index = 1)]
    Blocks(Vec<(Block, Justification)>),
}
