//! Block headers and blocks.
//!
//! A header commits to its parent, its height, the state root after executing the block
//! (a Jellyfish Merkle tree root over all storage), the Merkle root of its extrinsics, the
//! author's timestamp, the author, and a digest where consensus engines put their data
//! (seals, certificates). The block hash is blake3 of the SCALE-encoded header.

use crate::{blake3_256, merkle, AccountId, BlockNumber, Hash, Moment};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Four bytes naming a consensus engine in digest items, e.g. `*b"dev0"`.
pub type EngineId = [u8; 4];

/// One entry of a header digest. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DigestItem {
    /// Data a consensus engine attaches before sealing (e.g. the round, the proposer).
    #[codec(index = 0)]
    PreRuntime {
        /// The engine.
        engine: EngineId,
        /// Engine-defined bytes.
        data: Vec<u8>,
    },
    /// A consensus message (e.g. a validator-set change).
    #[codec(index = 1)]
    Consensus {
        /// The engine.
        engine: EngineId,
        /// Engine-defined bytes.
        data: Vec<u8>,
    },
    /// Free-form bytes.
    #[codec(index = 2)]
    Other(Vec<u8>),
}

/// The header digest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct Digest {
    /// The items in order.
    pub logs: Vec<DigestItem>,
}

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Hash of the parent header; zero for genesis.
    pub parent_hash: Hash,
    /// Height; genesis is 0.
    pub number: BlockNumber,
    /// Root of the state after this block.
    pub state_root: Hash,
    /// Merkle root of the hashes of this block's extrinsics.
    pub extrinsics_root: Hash,
    /// The author's clock, milliseconds since the Unix epoch; never below the parent's.
    pub timestamp: Moment,
    /// The validator that built the block.
    pub author: AccountId,
    /// Consensus data.
    pub digest: Digest,
}

impl Header {
    /// The block hash: blake3 of the encoded header.
    pub fn hash(&self) -> Hash {
        blake3_256(&self.encode())
    }
}

/// A block: a header and its extrinsics.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Block<Extrinsic> {
    /// The header.
    pub header: Header,
    /// The extrinsics, in execution order.
    pub extrinsics: Vec<Extrinsic>,
}

/// The extrinsics root over encoded extrinsics.
pub fn extrinsics_root<T: AsRef<[u8]>>(encoded: &[T]) -> Hash {
    merkle::root(encoded)
}
