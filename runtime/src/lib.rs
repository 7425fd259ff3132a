//! # weft-runtime
//!
//! The state transition function of Weft: `state + block → new state + events`, pure and
//! deterministic. No clocks, no floats, no I/O, no hash-map iteration: it reads committed
//! state through [`weft_primitives::storage::StateReader`] and returns a change set that the
//! node writes into its state tree.
//!
//! ## Executing a block
//!
//! 1. **Initialise** ([`executive::BlockBuilder::new`]): the header's number must follow the
//!    stored one and its timestamp must not go back. The parent hash is recorded in
//!    `System::BlockHash`, so mortal transactions can sign a recent block's hash. Then the
//!    **`on_initialize` hooks** run, each in its own storage transaction (a hook that fails
//!    is rolled back and recorded as `System::HookFailed`; the block goes on):
//!    * the block randomness `R(n) = blake3("weft-randomness/v1" ‖ R(n−1) ‖ parent_hash)` is
//!      stored in `System::Randomness` (see [`support::randomness`] for its bias);
//!    * staking applies the deferred slashes due at `n` and gives the author a reward point;
//!    * at an epoch boundary (`n mod epoch_length = 0`): staking pays the epoch's rewards and
//!      elects the next validator set; then, per active run, ownership mints the epoch's
//!      credentials (and re-issues redeemed ones), runs counts the epoch, and stages reassigns
//!      trainers and auditors; then ownership re-issues the pools of finished runs (paid
//!      inference), one hook per run;
//!    * work selects the commitments due at `n` for audit (or credits them);
//!    * governance expires proposals whose voting ended and enacts those due;
//!    * inference refunds the requests that expire at `n` unsettled.
//!
//!    All hook work is bounded: queues keyed by block number, and loops over bounded lists
//!    (active runs, a run's candidates, the validator set) only at epoch boundaries.
//!
//!    A hook that drains a queue keyed by block number (staking's slashes, work's
//!    selections and deadlines, governance's expiries and enactments, inference's expiries)
//!    keeps the queue
//!    entry's removal and processes each item in its own nested transaction: a failing item
//!    is rolled back (writes and events) and recorded by the pallet's own failure event
//!    (`SlashFailed`, `SelectionFailed`, `AuditCloseFailed`, `ExpiryFailed`,
//!    `EnactmentAborted`, `RefundFailed`), and the other items go on. Otherwise one bad item would roll back
//!    the whole hook, removal included, and the rest of its queue would never run. The
//!    epoch work is already one hook per active run.
//! 2. **Apply each extrinsic** ([`executive::BlockBuilder::apply`]): check the format version,
//!    the size, the validity window, the signature (over the genesis hash and the era's birth
//!    hash as this chain knows them), the nonce (must equal the account's) and that the fee can
//!    be paid. A transaction that fails these checks is *invalid*: a block containing it is
//!    rejected, and a block author skips it. Then the fee is charged and the nonce bumped,
//!    and the call runs in a storage transaction: if it fails, its writes are rolled back and
//!    an `ExtrinsicFailed` event records why; fee and nonce stay paid.
//! 3. **Finalise**: the **`on_finalize` hook** closes the audits whose attestation deadline is
//!    this block (so attestations in this block still count); then the block's events are
//!    stored under `System::Events` (so they are covered by the state root and readable over
//!    RPC), and old block hashes and randomness are pruned.
//!
//! Calls are dispatched by the explicit index of [`RuntimeCall`]'s variants; those indices,
//! like every SCALE layout here, are stable (see the layout tests).

mod dispatch;
pub mod executive;
pub mod genesis;
pub mod system;

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_primitives::{Balance, UncheckedExtrinsic};

pub use executive::{
    validate_transaction, BlockBuilder, BlockError, BlockOutcome, InvalidTransaction,
    ValidTransaction,
};
pub use genesis::{build_genesis, GenesisConfig, GenesisValidator, ProtocolGenesis};
pub use weft_bls as bls;
pub use weft_pallet_balances as balances;
pub use weft_pallet_governance as governance;
pub use weft_pallet_inference as inference;
pub use weft_pallet_ownership as ownership;
pub use weft_pallet_runs as runs;
pub use weft_pallet_stages as stages;
pub use weft_pallet_staking as staking;
pub use weft_pallet_support as support;
pub use weft_pallet_work as work;

/// The runtime's version; changes to encodings or rules bump `spec_version`.
pub const SPEC_NAME: &str = "weft";
/// The version of the state transition rules.
pub const SPEC_VERSION: u32 = 1;

/// Fees: what each extrinsic pays before dispatch. The base and length fee are burned; the tip
/// goes to the author.
pub mod fees {
    use super::Balance;
    use weft_primitives::units::UNIT;

    /// Flat fee per extrinsic: 0.001 WEFT.
    pub const BASE_FEE: Balance = UNIT / 1_000;
    /// Fee per encoded byte: 0.000001 WEFT.
    pub const BYTE_FEE: Balance = UNIT / 1_000_000;

    /// The fee (without tip) of an extrinsic of `len` encoded bytes.
    pub fn fee_for_length(len: usize) -> Balance {
        BASE_FEE.saturating_add(BYTE_FEE.saturating_mul(len as Balance))
    }
}

/// Block limits.
pub mod limits {
    /// Most extrinsics in one block.
    pub const MAX_EXTRINSICS_PER_BLOCK: usize = 20_000;
    /// Block hashes kept in state for mortal transactions (longest era period).
    pub const BLOCK_HASH_COUNT: u64 = 4096;
    /// Largest era period accepted.
    pub const MAX_ERA_PERIOD: u64 = BLOCK_HASH_COUNT;
    /// How far ahead of the account's nonce the pool accepts future transactions.
    pub const MAX_FUTURE_NONCES: u64 = 64;
}

/// Every call the runtime dispatches, by pallet. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeCall {
    /// System calls.
    #[codec(index = 0)]
    System(system::Call),
    /// Balances calls.
    #[codec(index = 1)]
    Balances(balances::Call),
    /// Staking calls.
    #[codec(index = 2)]
    Staking(staking::Call),
    /// Runs calls.
    #[codec(index = 3)]
    Runs(runs::Call),
    /// Stages calls.
    #[codec(index = 4)]
    Stages(stages::Call),
    /// Work calls.
    #[codec(index = 5)]
    Work(work::Call),
    /// Ownership calls.
    #[codec(index = 6)]
    Ownership(ownership::Call),
    /// Governance calls.
    #[codec(index = 7)]
    Governance(governance::Call),
    /// Inference calls.
    #[codec(index = 8)]
    Inference(inference::Call),
}

impl RuntimeCall {
    /// The pallet index of the call (its variant index).
    pub fn pallet_index(&self) -> u8 {
        use support::index;
        match self {
            RuntimeCall::System(_) => index::SYSTEM,
            RuntimeCall::Balances(_) => index::BALANCES,
            RuntimeCall::Staking(_) => index::STAKING,
            RuntimeCall::Runs(_) => index::RUNS,
            RuntimeCall::Stages(_) => index::STAGES,
            RuntimeCall::Work(_) => index::WORK,
            RuntimeCall::Ownership(_) => index::OWNERSHIP,
            RuntimeCall::Governance(_) => index::GOVERNANCE,
            RuntimeCall::Inference(_) => index::INFERENCE,
        }
    }
}

/// Every event the runtime emits, by pallet. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeEvent {
    /// System events.
    #[codec(index = 0)]
    System(system::Event),
    /// Balances events.
    #[codec(index = 1)]
    Balances(balances::Event),
    /// Staking events.
    #[codec(index = 2)]
    Staking(staking::Event),
    /// Runs events.
    #[codec(index = 3)]
    Runs(runs::Event),
    /// Stages events.
    #[codec(index = 4)]
    Stages(stages::Event),
    /// Work events.
    #[codec(index = 5)]
    Work(work::Event),
    /// Ownership events.
    #[codec(index = 6)]
    Ownership(ownership::Event),
    /// Governance events.
    #[codec(index = 7)]
    Governance(governance::Event),
    /// Inference events.
    #[codec(index = 8)]
    Inference(inference::Event),
}

/// When in the block an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// While applying the extrinsic with this index.
    #[codec(index = 0)]
    ApplyExtrinsic(u32),
    /// At block initialisation or finalisation.
    #[codec(index = 1)]
    Block,
}

/// An event with the phase it happened in.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct EventRecord {
    /// When.
    pub phase: Phase,
    /// What.
    pub event: RuntimeEvent,
}

/// The extrinsic type of this runtime.
pub type Extrinsic = UncheckedExtrinsic<RuntimeCall>;
/// The block type of this runtime.
pub type Block = weft_primitives::Block<Extrinsic>;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod inference_tests;
#[cfg(test)]
mod tests;
