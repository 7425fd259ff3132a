//! The `System` pallet: block number, block hashes, timestamps, the event log, remarks.

use crate::EventRecord;
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_primitives::storage::StorageValue;
use weft_primitives::{AccountId, BlockNumber, Hash, Moment};

/// The pallet's name in storage keys.
pub const PALLET: &str = "System";

/// Height of the last executed block.
pub const NUMBER: StorageValue<BlockNumber> = StorageValue::new(PALLET, "Number");
/// Timestamp of the last executed block.
pub const TIMESTAMP: StorageValue<Moment> = StorageValue::new(PALLET, "Timestamp");
/// Hashes of recent blocks (the last [`crate::limits::BLOCK_HASH_COUNT`]), and of genesis.
pub use weft_pallet_support::blocks::BLOCK_HASH;
/// Author of the last executed block.
pub const AUTHOR: StorageValue<AccountId> = StorageValue::new(PALLET, "Author");
/// Events of the last executed block.
pub const EVENTS: StorageValue<Vec<EventRecord>> = StorageValue::new(PALLET, "Events");
/// The chain's name, set at genesis (shown by `system_chain`).
pub const CHAIN_NAME: StorageValue<Vec<u8>> = StorageValue::new(PALLET, "ChainName");
/// Per-block randomness `R(n)`, kept for the last [`crate::limits::BLOCK_HASH_COUNT`] blocks.
/// See [`weft_pallet_support::randomness`] for its construction and its bias.
pub use weft_pallet_support::randomness::RANDOMNESS;

/// System calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Records a remark (its hash goes into an event); useful for anchoring data.
    #[codec(index = 0)]
    Remark {
        /// The bytes, at most 1 KiB.
        remark: Vec<u8>,
    },
}

/// System events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// An extrinsic's call succeeded.
    #[codec(index = 0)]
    ExtrinsicSuccess,
    /// An extrinsic's call failed; its writes were rolled back, the fee stays paid.
    #[codec(index = 1)]
    ExtrinsicFailed {
        /// Why.
        error: weft_primitives::DispatchError,
    },
    /// A remark was made.
    #[codec(index = 2)]
    Remarked {
        /// By whom.
        who: AccountId,
        /// blake3 of the remark.
        hash: Hash,
    },
    /// A pallet's block hook failed; its writes and events were rolled back.
    #[codec(index = 3)]
    HookFailed {
        /// Why.
        error: weft_primitives::DispatchError,
    },
}

/// Errors of system calls. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// The remark is longer than 1 KiB.
    #[codec(index = 0)]
    #[error("RemarkTooLong: a remark is at most 1024 bytes")]
    RemarkTooLong,
}

impl weft_primitives::PalletError for Error {
    fn index(&self) -> u8 {
        *self as u8
    }
}

/// Longest remark.
pub const MAX_REMARK_LEN: usize = 1024;
