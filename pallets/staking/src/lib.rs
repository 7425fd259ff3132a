//! # Staking
//!
//! Stake backs every role in Weft: validators (consensus and audits) and trainers (pipeline
//! stages). Bonded funds are the account's `reserved` balance in the balances pallet, so a
//! bond can neither be spent nor transferred.
//!
//! The pallet is split by concern; each module's docs give its rules and numbers, and every
//! public item is re-exported here, at the crate root, which is its only public path:
//!
//! * `ledger`: `bond`, `bond_extra`, `unbond`, `withdraw_unbonded`, `rebond`; the [`Ledger`]
//!   of each account and the bonded and active totals.
//! * `roles`: `validate` (BN254 key with proof of possession, the candidate list), `train`
//!   (peer id, addresses, capacity) and `chill`; the minimum bond each role requires.
//! * `slashing`: `report_offence` (amount fixed at report time, offender chilled), the
//!   deferred slash queue, max-not-sum per span, the deduction from a ledger, and
//!   `cancel_slash` by governance.
//! * `epochs`: epoch boundaries, reward points and their payout, election of the validator
//!   set by stake, and the block hooks [`on_initialize`] and [`new_epoch`].
//!
//! This file holds what they share: the [`Config`], the [`Call`]s and their [`dispatch`], the
//! [`Event`]s, the [`Error`]s, the event [`Sink`] and genesis.
//!
//! ## In short
//!
//! An account bonds funds, takes a role when its active bond reaches the role's minimum, and
//! unbonds through a waiting period of `bonding_period` blocks. Every epoch the validators
//! are paid `epoch_reward` by their points and the next set is elected by stake. An offence
//! chills the offender at once and slashes a fraction of its whole ledger `slash_defer`
//! blocks later (`slash_defer < bonding_period`, so unbonding is no escape), charging within
//! a span only the largest of its slashes; governance may cancel a slash until it applies.
//! All arithmetic is on integers and all stored lists are kept sorted, so every node computes
//! the same state.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::{PublicKeyBytes, SignatureBytes};
use weft_pallet_balances as balances;
use weft_pallet_support::{index, Deposit, EpochIndex, Failure, Perbill, SlashId};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageValue};
use weft_primitives::units::UNIT;
use weft_primitives::{AccountId, Balance, BlockNumber, DispatchError};

mod epochs;
pub mod equivocation;
mod ledger;
mod roles;
mod slashing;

pub use epochs::{
    active_set, add_points, current_epoch, is_epoch_start, new_epoch, on_initialize,
    ActiveValidator, ACTIVE_SET, CURRENT_EPOCH, POINTS, SNAPSHOTS,
};
pub use ledger::{
    active_stake, bond, bond_extra, ledger, rebond, total_active, total_bonded, unbond,
    withdraw_unbonded, Ledger, UnlockChunk, LEDGER, TOTAL_ACTIVE, TOTAL_BONDED,
};
pub use roles::{
    chill, train, trainer, validate, TrainerInfo, ValidatorInfo, BLS_OWNER, CANDIDATES, MAX_ADDRS,
    MAX_ADDR_LEN, MAX_PEER_ID_LEN, TRAINERS, VALIDATORS,
};
pub use slashing::{
    applied_slash, cancel_slash, pending_slash, report_offence, AppliedSlash, OffenceKind,
    PendingSlash, APPLIED_SLASHES, NEXT_SLASH_ID, PENDING_SLASHES, SLASHES, SLASH_QUEUE, SPAN_MAX,
};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Staking";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::STAKING;

/// Parameters, set at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Blocks per epoch.
    pub epoch_length: BlockNumber,
    /// Blocks from `unbond` until the funds can be withdrawn.
    pub bonding_period: BlockNumber,
    /// Blocks from an offence report until its slash applies; less than `bonding_period`.
    pub slash_defer: BlockNumber,
    /// Epochs per slashing span.
    pub span_epochs: EpochIndex,
    /// Smallest active bond of a validator.
    #[serde(with = "balance_string")]
    pub min_validator_bond: Balance,
    /// Smallest active bond of a trainer.
    #[serde(with = "balance_string")]
    pub min_trainer_bond: Balance,
    /// Most unlocking chunks per ledger.
    pub max_unlocking_chunks: u32,
    /// Share of a slash paid to the reporter.
    pub reporter_share: Perbill,
    /// Size of the active validator set.
    pub max_validators: u32,
    /// Most validator candidates.
    pub max_candidates: u32,
    /// New tokens paid to validators per epoch.
    #[serde(with = "balance_string")]
    pub epoch_reward: Balance,
    /// Epochs of validator snapshots kept.
    pub history_depth: EpochIndex,
    /// Share of its whole ledger a validator loses for signing two conflicting votes or
    /// proposals at one height and round.
    pub equivocation_slash: Perbill,
}

impl Default for Config {
    /// Development values: 10-block epochs, 60-block bonding period, 30-block slash deferral.
    fn default() -> Self {
        Config {
            epoch_length: 10,
            bonding_period: 60,
            slash_defer: 30,
            span_epochs: 6,
            min_validator_bond: 1_000 * UNIT,
            min_trainer_bond: 100 * UNIT,
            max_unlocking_chunks: 32,
            reporter_share: Perbill::from_percent(10),
            max_validators: 100,
            max_candidates: 1_000,
            epoch_reward: 10 * UNIT,
            history_depth: 28,
            equivocation_slash: Perbill::from_percent(10),
        }
    }
}

/// Balances as JSON strings (they exceed 2^53).
pub use weft_primitives::units::balance_string;

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Opens a ledger bonding `value`.
    #[codec(index = 0)]
    Bond {
        /// Amount.
        #[codec(compact)]
        value: Balance,
    },
    /// Adds `value` to the active bond.
    #[codec(index = 1)]
    BondExtra {
        /// Amount.
        #[codec(compact)]
        value: Balance,
    },
    /// Starts unbonding `value`.
    #[codec(index = 2)]
    Unbond {
        /// Amount.
        #[codec(compact)]
        value: Balance,
    },
    /// Withdraws all unlocked chunks.
    #[codec(index = 3)]
    WithdrawUnbonded,
    /// Moves up to `value` back from unlocking into the active bond.
    #[codec(index = 4)]
    Rebond {
        /// Amount.
        #[codec(compact)]
        value: Balance,
    },
    /// Drops all roles.
    #[codec(index = 5)]
    Chill,
    /// Becomes a validator candidate.
    #[codec(index = 6)]
    Validate {
        /// BN254 public key (compressed G2).
        bls_key: PublicKeyBytes,
        /// Signature of the key over itself under the proof-of-possession domain.
        proof_of_possession: SignatureBytes,
    },
    /// Becomes a trainer.
    #[codec(index = 7)]
    Train {
        /// libp2p peer id bytes.
        peer_id: Vec<u8>,
        /// Multiaddr bytes.
        addrs: Vec<Vec<u8>>,
        /// Stage slots it can serve.
        capacity: u32,
    },
    /// Reports a validator that signed two conflicting votes or proposals; anyone may report,
    /// and the reporter gets `reporter_share` of the slash.
    #[codec(index = 8)]
    ReportEquivocation {
        /// The two signed messages.
        evidence: weft_finality::Equivocation,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// Funds were bonded.
    #[codec(index = 0)]
    Bonded {
        /// Account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// Funds started unbonding.
    #[codec(index = 1)]
    Unbonded {
        /// Account.
        who: AccountId,
        /// Amount.
        amount: Balance,
        /// Unlock block.
        unlock_at: BlockNumber,
    },
    /// Unlocked funds were withdrawn.
    #[codec(index = 2)]
    Withdrawn {
        /// Account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// Unbonding funds were bonded again.
    #[codec(index = 3)]
    Rebonded {
        /// Account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// Roles were dropped.
    #[codec(index = 4)]
    Chilled {
        /// Account.
        who: AccountId,
    },
    /// A validator registered.
    #[codec(index = 5)]
    ValidatorRegistered {
        /// Account.
        who: AccountId,
        /// BLS key.
        bls_key: PublicKeyBytes,
    },
    /// A trainer registered.
    #[codec(index = 6)]
    TrainerRegistered {
        /// Account.
        who: AccountId,
        /// Capacity.
        capacity: u32,
    },
    /// An offence was reported; its slash is deferred.
    #[codec(index = 7)]
    OffenceReported {
        /// Slash id.
        slash: SlashId,
        /// Offender.
        offender: AccountId,
        /// Kind.
        kind: OffenceKind,
        /// Fraction.
        fraction: Perbill,
        /// Amount.
        amount: Balance,
        /// Block at which it applies.
        apply_at: BlockNumber,
    },
    /// A deferred slash applied.
    #[codec(index = 8)]
    Slashed {
        /// Slash id.
        slash: SlashId,
        /// Offender.
        offender: AccountId,
        /// Burnt (after the span's maximum was deducted).
        amount: Balance,
        /// Paid to the reporter.
        reporter_reward: Balance,
    },
    /// Governance cancelled a deferred slash.
    #[codec(index = 9)]
    SlashCancelled {
        /// Slash id.
        slash: SlashId,
    },
    /// A new epoch began.
    #[codec(index = 10)]
    NewEpoch {
        /// Its number.
        epoch: EpochIndex,
        /// Validators in its set.
        validators: u32,
    },
    /// Epoch rewards were paid.
    #[codec(index = 11)]
    Rewarded {
        /// Validator.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// A deferred slash failed to apply in its block; its writes and events were rolled back
    /// and it stays pending (it is not applied again; governance may still cancel it).
    #[codec(index = 12)]
    SlashFailed {
        /// Slash id.
        slash: SlashId,
        /// Why.
        error: DispatchError,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// A ledger already exists; use `bond_extra`.
    #[codec(index = 0)]
    #[error("AlreadyBonded: the account already has a ledger")]
    AlreadyBonded,
    /// No ledger.
    #[codec(index = 1)]
    #[error("NotBonded: the account has no ledger")]
    NotBonded,
    /// The active bond would be below the minimum of a role held (or sought).
    #[codec(index = 2)]
    #[error("InsufficientBond: the active bond is below the role's minimum")]
    InsufficientBond,
    /// Too many unlocking chunks.
    #[codec(index = 3)]
    #[error("TooManyChunks: too many unlocking chunks; withdraw first")]
    TooManyChunks,
    /// Zero amount, or more than there is.
    #[codec(index = 4)]
    #[error("BadAmount: zero, or more than is bonded")]
    BadAmount,
    /// A deferred slash is pending.
    #[codec(index = 5)]
    #[error("SlashPending: a deferred slash is pending for this account")]
    SlashPending,
    /// The BLS key or its proof of possession is invalid.
    #[codec(index = 6)]
    #[error("InvalidBlsKey: bad BLS key or proof of possession")]
    InvalidBlsKey,
    /// The BLS key belongs to another account.
    #[codec(index = 7)]
    #[error("BlsKeyInUse: the BLS key is registered by another account")]
    BlsKeyInUse,
    /// The candidate list is full.
    #[codec(index = 8)]
    #[error("TooManyCandidates: the validator candidate list is full")]
    TooManyCandidates,
    /// The trainer's peer id or addresses are too long, or capacity is zero.
    #[codec(index = 9)]
    #[error("BadTrainerInfo: peer id or addresses too long, or zero capacity")]
    BadTrainerInfo,
    /// Arithmetic overflow.
    #[codec(index = 10)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
    /// Nothing to withdraw or rebond.
    #[codec(index = 11)]
    #[error("NothingToDo: nothing is unlocking or unlocked")]
    NothingToDo,
    /// Unknown slash.
    #[codec(index = 12)]
    #[error("UnknownSlash: no such deferred slash")]
    UnknownSlash,
    /// The equivocation evidence does not verify.
    #[codec(index = 13)]
    #[error("InvalidEvidence: the two messages do not prove an equivocation by that validator")]
    InvalidEvidence,
    /// The evidence is older than the kept validator-set snapshots (or from the future).
    #[codec(index = 14)]
    #[error("EvidenceOutOfRange: no validator-set snapshot for that height")]
    EvidenceOutOfRange,
    /// This equivocation was already reported.
    #[codec(index = 15)]
    #[error("AlreadyReported: this equivocation was already reported")]
    AlreadyReported,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: balances::EventSink + Deposit<Event> {}
impl<T: balances::EventSink + Deposit<Event> + ?Sized> Sink for T {}

/// The parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// A bonded account at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenesisStaker {
    /// Account (must be endowed with at least `bond`).
    pub account: AccountId,
    /// Bond.
    #[serde(with = "balance_string")]
    pub bond: Balance,
    /// Validator registration: key and proof of possession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<(PublicKeyBytes, SignatureBytes)>,
    /// Trainer registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<TrainerInfo>,
}

/// Genesis: stores the parameters, bonds the stakers, registers their roles and elects the
/// epoch-0 set.
pub fn build_genesis(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    cfg: &Config,
    stakers: &[GenesisStaker],
) -> Result<(), Failure> {
    CONFIG.put(s, cfg);
    CURRENT_EPOCH.put(s, &0);
    for st in stakers {
        bond(s, ev, &st.account, st.bond)?;
        if let Some((k, p)) = st.validator {
            validate(s, ev, &st.account, k, p)?;
        }
        if let Some(t) = &st.trainer {
            train(s, ev, &st.account, t.clone())?;
        }
    }
    let set = epochs::elect(s, cfg)?;
    ACTIVE_SET.put(s, &set);
    SNAPSHOTS.insert(s, &0, &set);
    Ok(())
}

/// Dispatches a call signed by `origin`.
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::Bond { value } => bond(s, ev, origin, *value),
        Call::BondExtra { value } => bond_extra(s, ev, origin, *value),
        Call::Unbond { value } => unbond(s, ev, now, origin, *value),
        Call::WithdrawUnbonded => withdraw_unbonded(s, ev, now, origin),
        Call::Rebond { value } => rebond(s, ev, origin, *value),
        Call::Chill => chill(s, ev, origin).map(|_| ()),
        Call::Validate {
            bls_key,
            proof_of_possession,
        } => validate(s, ev, origin, *bls_key, *proof_of_possession),
        Call::Train {
            peer_id,
            addrs,
            capacity,
        } => train(
            s,
            ev,
            origin,
            TrainerInfo {
                peer_id: peer_id.clone(),
                addrs: addrs.clone(),
                capacity: *capacity,
            },
        ),
        Call::ReportEquivocation { evidence } => {
            equivocation::report(s, ev, now, origin, evidence).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests;
