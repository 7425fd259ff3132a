//! # Staking
//!
//! Stake backs every role in Weft: validators (consensus and audits) and trainers (pipeline
//! stages). Bonded funds are the account's `reserved` balance in the balances pallet, so a
//! bond can neither be spent nor transferred.
//!
//! ## Bonding
//!
//! * `bond(v)` reserves `v` and opens a ledger `{ active: v, unlocking: [] }`; `bond_extra`
//!   adds to `active`.
//! * `unbond(v)` moves `v` from `active` into an unlocking chunk that unlocks at
//!   `now + bonding_period` (chunks with the same unlock block merge; at most
//!   `max_unlocking_chunks`). An account holding a role must keep `active` at or above that
//!   role's minimum bond; it `chill`s first to go lower.
//! * `withdraw_unbonded` unreserves every chunk whose unlock block has come, **unless the
//!   account has a deferred slash pending** (then it waits until the slash is applied or
//!   cancelled).
//! * `rebond(v)` moves up to `v` back from the newest chunks into `active`.
//!
//! ## Roles
//!
//! * `validate(bls_key, proof_of_possession)`: needs `active ≥ min_validator_bond`; the BN254
//!   key must come with a valid proof of possession (see `weft-bls`), which makes rogue-key
//!   attacks on aggregated audit verdicts impossible; one key per account.
//! * `train(peer_id, addrs, capacity)`: needs `active ≥ min_trainer_bond`; `capacity` is how
//!   many stage slots (over all runs) the trainer can serve at once. Peer ids are at most
//!   128 bytes, at most 8 addresses of at most 256 bytes each.
//! * `chill` drops both roles. An account can hold both roles.
//!
//! ## Epochs
//!
//! Block `n` starts an epoch when `n mod epoch_length = 0`. Then (1) the reward points of the
//! closing epoch pay out `epoch_reward` new tokens to the validators pro rata to their points
//! (one point per authored block, one per audit attestation; largest remainder, so the whole
//! reward is paid), and (2) the next active set is chosen: validator candidates whose
//! `active ≥ min_validator_bond`, by active stake descending (ties by account id), at most
//! `max_validators`. The set, with each validator's stake and BLS key, is stored as the epoch's
//! snapshot (kept `history_depth` epochs): audits and emergency votes weigh validators by it.
//!
//! ## Slashing
//!
//! An offence (failed audit, false or missing verdict, equivocation) carries a fraction `f`.
//! At report time the amount is fixed as `⌊f · exposure⌋` where the exposure is the whole
//! ledger (`active` plus everything still unlocking: unbonding funds are slashable), the
//! offender is **chilled at once** (the caller also removes it from its stages), and the slash
//! is queued to apply at `now + slash_defer` blocks, with `slash_defer < bonding_period`.
//!
//! * **Nobody escapes by unbonding.** Funds unbonded after the offence unlock at
//!   `≥ offence + bonding_period > offence + slash_defer`, so they are still in the ledger when
//!   the slash applies; funds that would unlock earlier cannot be withdrawn either, because
//!   `withdraw_unbonded` refuses while a slash is pending.
//! * **Max, not sum, within a span.** Offences are grouped into spans of `span_epochs` epochs
//!   (`span = offence_epoch / span_epochs`). For each (offender, span) the pallet remembers the
//!   largest amount applied so far, `m`; a slash of amount `a` charges only `max(0, a − m)` and
//!   raises `m` to `max(m, a)`. So one fault reported by several auditors, or a burst of faults
//!   in one span, costs the largest slash, not their sum. This is computed when the slash
//!   *applies*, so a slash cancelled by governance never counts.
//! * **Deferral and cancellation.** Governance may cancel a queued slash before it applies.
//! * **Application.** The charge is taken from `active` first, then from the newest unlocking
//!   chunks, burnt from the reserved balance; `reporter_share` of what was burnt is minted to
//!   the reporter (if any).
//! * **One slash, one transaction.** The block hook takes the block's slash queue entry out
//!   of storage and keeps that removal; each slash then applies in its own nested transaction
//!   (`weft_pallet_support::transactional_item`). One that fails with a dispatch error
//!   (inconsistent state) has its writes and events rolled back, is recorded as
//!   `SlashFailed` and stays pending (it is not applied again; governance may cancel it);
//!   the other slashes of the block still apply. A storage fault aborts the hook.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::{PublicKeyBytes, SignatureBytes};
use weft_pallet_balances as balances;
use weft_pallet_support::{
    emit, index, largest_remainder, transactional_item, Deposit, EpochIndex, Failure, Perbill,
    Rewind, SlashId, Transactional,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::units::UNIT;
use weft_primitives::{AccountId, Balance, BlockNumber, DispatchError};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Staking";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::STAKING;
/// Longest trainer peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 128;
/// Most trainer addresses.
pub const MAX_ADDRS: usize = 8;
/// Longest trainer address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

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
        }
    }
}

/// Balances as JSON strings (they exceed 2^53).
pub use weft_primitives::units::balance_string;

/// Funds on their way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockChunk {
    /// Amount.
    pub value: Balance,
    /// First block at which it can be withdrawn.
    pub unlock_at: BlockNumber,
}

/// An account's bond.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Bonded and at stake for roles.
    pub active: Balance,
    /// Unbonding, oldest first; still slashable.
    pub unlocking: Vec<UnlockChunk>,
}

impl Ledger {
    /// active + unlocking: everything reserved by staking, all of it slashable.
    pub fn total(&self) -> Balance {
        self.unlocking
            .iter()
            .fold(self.active, |a, c| a.saturating_add(c.value))
    }
}

/// A validator's registration.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorInfo {
    /// Its BN254 BLS public key (proof of possession checked).
    pub bls_key: PublicKeyBytes,
}

/// A trainer's registration.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerInfo {
    /// Its libp2p peer id (bytes).
    pub peer_id: Vec<u8>,
    /// Its multiaddrs (bytes).
    pub addrs: Vec<Vec<u8>>,
    /// Stage slots it can serve at once, over all runs.
    pub capacity: u32,
}

/// A member of an epoch's validator set.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveValidator {
    /// Account.
    pub account: AccountId,
    /// Active stake when the set was chosen.
    pub stake: Balance,
    /// BLS key.
    pub bls_key: PublicKeyBytes,
}

/// What an offence was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OffenceKind {
    /// A trainer's step failed its audit (or was not revealed).
    #[codec(index = 0)]
    AuditFailed,
    /// An auditor's verdict was contradicted by the settled outcome.
    #[codec(index = 1)]
    FalseVerdict,
    /// An auditor did not attest by the deadline.
    #[codec(index = 2)]
    MissedAttestation,
    /// A validator signed two conflicting blocks or votes.
    #[codec(index = 3)]
    Equivocation,
}

/// A slash waiting for its deferral to end.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSlash {
    /// Who pays.
    pub offender: AccountId,
    /// Amount fixed at report time (before span deduplication).
    pub amount: Balance,
    /// Who gets the reporter share.
    pub reporter: Option<AccountId>,
    /// Epoch of the offence (selects the span).
    pub epoch: EpochIndex,
    /// Block at which it applies.
    pub apply_at: BlockNumber,
    /// What happened.
    pub kind: OffenceKind,
}

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// Ledgers by account.
pub const LEDGER: StorageMap<AccountId, Ledger> = StorageMap::new(PALLET, "Ledger");
/// Validator registrations.
pub const VALIDATORS: StorageMap<AccountId, ValidatorInfo> = StorageMap::new(PALLET, "Validators");
/// Which account registered a BLS key.
pub const BLS_OWNER: StorageMap<PublicKeyBytes, AccountId> = StorageMap::new(PALLET, "BlsOwner");
/// Trainer registrations.
pub const TRAINERS: StorageMap<AccountId, TrainerInfo> = StorageMap::new(PALLET, "Trainers");
/// Validator candidates, sorted by account.
pub const CANDIDATES: StorageValue<Vec<AccountId>> = StorageValue::new(PALLET, "Candidates");
/// The current epoch.
pub const CURRENT_EPOCH: StorageValue<EpochIndex> = StorageValue::new(PALLET, "CurrentEpoch");
/// The current epoch's validator set.
pub const ACTIVE_SET: StorageValue<Vec<ActiveValidator>> = StorageValue::new(PALLET, "ActiveSet");
/// Validator sets of recent epochs.
pub const SNAPSHOTS: StorageMap<EpochIndex, Vec<ActiveValidator>> =
    StorageMap::new(PALLET, "Snapshots");
/// Sum of all ledger totals (= staking's share of reserved balances).
pub const TOTAL_BONDED: StorageValue<Balance> = StorageValue::new(PALLET, "TotalBonded");
/// Sum of all active bonds (the voting stake).
pub const TOTAL_ACTIVE: StorageValue<Balance> = StorageValue::new(PALLET, "TotalActive");
/// Reward points of the current epoch, sorted by account.
pub const POINTS: StorageValue<Vec<(AccountId, u32)>> = StorageValue::new(PALLET, "Points");
/// Deferred slashes.
pub const SLASHES: StorageMap<SlashId, PendingSlash> = StorageMap::new(PALLET, "Slashes");
/// Deferred slashes by the block they apply in.
pub const SLASH_QUEUE: StorageMap<BlockNumber, Vec<SlashId>> =
    StorageMap::new(PALLET, "SlashQueue");
/// The next slash id.
pub const NEXT_SLASH_ID: StorageValue<SlashId> = StorageValue::new(PALLET, "NextSlashId");
/// Number of deferred slashes pending per account.
pub const PENDING_SLASHES: StorageMap<AccountId, u32> = StorageMap::new(PALLET, "PendingSlashes");
/// Largest amount applied per (account, span).
pub const SPAN_MAX: StorageMap<(AccountId, u64), Balance> = StorageMap::new(PALLET, "SpanMax");

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
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: balances::EventSink + Deposit<Event> {}
impl<T: balances::EventSink + Deposit<Event> + ?Sized> Sink for T {}

/// The parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// The ledger of `who`, if bonded.
pub fn ledger(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<Option<Ledger>, StorageError> {
    LEDGER.get(s, who)
}

/// The active bond of `who` (zero when unbonded).
pub fn active_stake(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<Balance, StorageError> {
    Ok(LEDGER.get(s, who)?.map(|l| l.active).unwrap_or(0))
}

/// The current epoch.
pub fn current_epoch(s: &(impl StateReader + ?Sized)) -> Result<EpochIndex, StorageError> {
    Ok(CURRENT_EPOCH.get(s)?.unwrap_or(0))
}

/// The current validator set.
pub fn active_set(s: &(impl StateReader + ?Sized)) -> Result<Vec<ActiveValidator>, StorageError> {
    Ok(ACTIVE_SET.get(s)?.unwrap_or_default())
}

/// The trainer registration of `who`, if any.
pub fn trainer(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<Option<TrainerInfo>, StorageError> {
    TRAINERS.get(s, who)
}

/// Sum of active bonds.
pub fn total_active(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(TOTAL_ACTIVE.get(s)?.unwrap_or(0))
}

/// Sum of ledger totals.
pub fn total_bonded(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(TOTAL_BONDED.get(s)?.unwrap_or(0))
}

/// Whether block `n` starts an epoch.
pub fn is_epoch_start(
    s: &(impl StateReader + ?Sized),
    n: BlockNumber,
) -> Result<bool, StorageError> {
    let len = config(s)?.epoch_length.max(1);
    Ok(n > 0 && n.is_multiple_of(len))
}

/// The deferred slash `id`.
pub fn pending_slash(
    s: &(impl StateReader + ?Sized),
    id: SlashId,
) -> Result<Option<PendingSlash>, StorageError> {
    SLASHES.get(s, &id)
}

/// Writes a ledger and keeps the totals in step with the change from `old`.
fn write_ledger(
    s: &mut (impl Storage + ?Sized),
    who: &AccountId,
    old: &Ledger,
    new: &Ledger,
) -> Result<(), Failure> {
    let tb = total_bonded(s)?
        .checked_sub(old.total())
        .and_then(|t| t.checked_add(new.total()))
        .ok_or(Error::Overflow)?;
    let ta = total_active(s)?
        .checked_sub(old.active)
        .and_then(|t| t.checked_add(new.active))
        .ok_or(Error::Overflow)?;
    TOTAL_BONDED.put(s, &tb);
    TOTAL_ACTIVE.put(s, &ta);
    if new.active == 0 && new.unlocking.is_empty() {
        LEDGER.remove(s, who);
    } else {
        LEDGER.insert(s, who, new);
    }
    Ok(())
}

/// The smallest active bond the roles of `who` require.
fn required_bond(
    s: &(impl StateReader + ?Sized),
    cfg: &Config,
    who: &AccountId,
) -> Result<Balance, StorageError> {
    let mut req = 0;
    if VALIDATORS.get(s, who)?.is_some() {
        req = req.max(cfg.min_validator_bond);
    }
    if TRAINERS.get(s, who)?.is_some() {
        req = req.max(cfg.min_trainer_bond);
    }
    Ok(req)
}

/// `bond`.
pub fn bond(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    value: Balance,
) -> Result<(), Failure> {
    if LEDGER.get(s, who)?.is_some() {
        return Err(Error::AlreadyBonded.into());
    }
    if value == 0 {
        return Err(Error::BadAmount.into());
    }
    balances::reserve(s, ev, who, value)?;
    let new = Ledger {
        active: value,
        unlocking: Vec::new(),
    };
    write_ledger(s, who, &Ledger::default(), &new)?;
    emit(
        ev,
        Event::Bonded {
            who: *who,
            amount: value,
        },
    );
    Ok(())
}

/// `bond_extra`.
pub fn bond_extra(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    value: Balance,
) -> Result<(), Failure> {
    let old = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if value == 0 {
        return Err(Error::BadAmount.into());
    }
    balances::reserve(s, ev, who, value)?;
    let mut new = old.clone();
    new.active = new.active.checked_add(value).ok_or(Error::Overflow)?;
    write_ledger(s, who, &old, &new)?;
    emit(
        ev,
        Event::Bonded {
            who: *who,
            amount: value,
        },
    );
    Ok(())
}

/// `unbond`.
pub fn unbond(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
    value: Balance,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let old = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if value == 0 || value > old.active {
        return Err(Error::BadAmount.into());
    }
    let mut new = old.clone();
    new.active -= value;
    if new.active < required_bond(s, &cfg, who)? {
        return Err(Error::InsufficientBond.into());
    }
    let unlock_at = now.checked_add(cfg.bonding_period).ok_or(Error::Overflow)?;
    match new.unlocking.last_mut() {
        Some(last) if last.unlock_at == unlock_at => {
            last.value = last.value.checked_add(value).ok_or(Error::Overflow)?;
        }
        _ => {
            if new.unlocking.len() >= cfg.max_unlocking_chunks as usize {
                return Err(Error::TooManyChunks.into());
            }
            new.unlocking.push(UnlockChunk { value, unlock_at });
        }
    }
    write_ledger(s, who, &old, &new)?;
    emit(
        ev,
        Event::Unbonded {
            who: *who,
            amount: value,
            unlock_at,
        },
    );
    Ok(())
}

/// `withdraw_unbonded`.
pub fn withdraw_unbonded(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
) -> Result<(), Failure> {
    let old = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if PENDING_SLASHES.get(s, who)?.unwrap_or(0) > 0 {
        return Err(Error::SlashPending.into());
    }
    let mut new = old.clone();
    let mut amount: Balance = 0;
    new.unlocking.retain(|c| {
        if c.unlock_at <= now {
            amount = amount.saturating_add(c.value);
            false
        } else {
            true
        }
    });
    if amount == 0 {
        return Err(Error::NothingToDo.into());
    }
    write_ledger(s, who, &old, &new)?;
    balances::unreserve(s, ev, who, amount)?;
    emit(ev, Event::Withdrawn { who: *who, amount });
    Ok(())
}

/// `rebond`.
pub fn rebond(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    value: Balance,
) -> Result<(), Failure> {
    let old = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if value == 0 {
        return Err(Error::BadAmount.into());
    }
    if old.unlocking.is_empty() {
        return Err(Error::NothingToDo.into());
    }
    let mut new = old.clone();
    let mut left = value;
    while left > 0 {
        let Some(last) = new.unlocking.last_mut() else {
            break;
        };
        let take = left.min(last.value);
        last.value -= take;
        left -= take;
        new.active = new.active.checked_add(take).ok_or(Error::Overflow)?;
        if last.value == 0 {
            new.unlocking.pop();
        }
    }
    let amount = value - left;
    write_ledger(s, who, &old, &new)?;
    emit(ev, Event::Rebonded { who: *who, amount });
    Ok(())
}

/// Drops both roles of `who` (no error if it holds none). Returns whether it held any.
pub fn chill(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
) -> Result<bool, Failure> {
    let mut had = false;
    if let Some(v) = VALIDATORS.get(s, who)? {
        VALIDATORS.remove(s, who);
        BLS_OWNER.remove(s, &v.bls_key);
        let mut c = CANDIDATES.get(s)?.unwrap_or_default();
        if let Ok(i) = c.binary_search(who) {
            c.remove(i);
            CANDIDATES.put(s, &c);
        }
        had = true;
    }
    if TRAINERS.get(s, who)?.is_some() {
        TRAINERS.remove(s, who);
        had = true;
    }
    if had {
        emit(ev, Event::Chilled { who: *who });
    }
    Ok(had)
}

/// `validate`.
pub fn validate(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    bls_key: PublicKeyBytes,
    pop: SignatureBytes,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let l = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if l.active < cfg.min_validator_bond {
        return Err(Error::InsufficientBond.into());
    }
    if let Some(owner) = BLS_OWNER.get(s, &bls_key)? {
        if owner != *who {
            return Err(Error::BlsKeyInUse.into());
        }
    }
    weft_bls::check_registration(&bls_key, &pop).map_err(|_| Error::InvalidBlsKey)?;
    if let Some(old) = VALIDATORS.get(s, who)? {
        BLS_OWNER.remove(s, &old.bls_key);
    }
    let mut c = CANDIDATES.get(s)?.unwrap_or_default();
    if let Err(i) = c.binary_search(who) {
        if c.len() >= cfg.max_candidates as usize {
            return Err(Error::TooManyCandidates.into());
        }
        c.insert(i, *who);
        CANDIDATES.put(s, &c);
    }
    VALIDATORS.insert(s, who, &ValidatorInfo { bls_key });
    BLS_OWNER.insert(s, &bls_key, who);
    emit(ev, Event::ValidatorRegistered { who: *who, bls_key });
    Ok(())
}

/// `train`.
pub fn train(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    info: TrainerInfo,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let l = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if l.active < cfg.min_trainer_bond {
        return Err(Error::InsufficientBond.into());
    }
    if info.peer_id.is_empty()
        || info.peer_id.len() > MAX_PEER_ID_LEN
        || info.addrs.len() > MAX_ADDRS
        || info.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        || info.capacity == 0
    {
        return Err(Error::BadTrainerInfo.into());
    }
    let capacity = info.capacity;
    TRAINERS.insert(s, who, &info);
    emit(
        ev,
        Event::TrainerRegistered {
            who: *who,
            capacity,
        },
    );
    Ok(())
}

/// Reports an offence by `offender` worth `fraction` of its whole ledger. The offender is
/// chilled now; the slash applies after `slash_defer` blocks unless cancelled. Returns the
/// slash id, or `None` when the offender has nothing at stake.
pub fn report_offence(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    offender: &AccountId,
    fraction: Perbill,
    reporter: Option<AccountId>,
    kind: OffenceKind,
) -> Result<Option<SlashId>, Failure> {
    let cfg = config(s)?;
    chill(s, ev, offender)?;
    let exposure = LEDGER.get(s, offender)?.map(|l| l.total()).unwrap_or(0);
    let amount = fraction.mul_floor(exposure);
    if amount == 0 {
        return Ok(None);
    }
    let id = NEXT_SLASH_ID.get(s)?.unwrap_or(0);
    NEXT_SLASH_ID.put(s, &id.checked_add(1).ok_or(Error::Overflow)?);
    let apply_at = now
        .checked_add(cfg.slash_defer.max(1))
        .ok_or(Error::Overflow)?;
    let epoch = current_epoch(s)?;
    SLASHES.insert(
        s,
        &id,
        &PendingSlash {
            offender: *offender,
            amount,
            reporter,
            epoch,
            apply_at,
            kind,
        },
    );
    let mut q = SLASH_QUEUE.get(s, &apply_at)?.unwrap_or_default();
    q.push(id);
    SLASH_QUEUE.insert(s, &apply_at, &q);
    let pending = PENDING_SLASHES
        .get(s, offender)?
        .unwrap_or(0)
        .saturating_add(1);
    PENDING_SLASHES.insert(s, offender, &pending);
    emit(
        ev,
        Event::OffenceReported {
            slash: id,
            offender: *offender,
            kind,
            fraction,
            amount,
            apply_at,
        },
    );
    Ok(Some(id))
}

fn release_pending(s: &mut (impl Storage + ?Sized), who: &AccountId) -> Result<(), StorageError> {
    let n = PENDING_SLASHES.get(s, who)?.unwrap_or(0).saturating_sub(1);
    if n == 0 {
        PENDING_SLASHES.remove(s, who);
    } else {
        PENDING_SLASHES.insert(s, who, &n);
    }
    Ok(())
}

/// Cancels a deferred slash (governance).
pub fn cancel_slash(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: SlashId,
) -> Result<(), Failure> {
    let p = SLASHES.get(s, &id)?.ok_or(Error::UnknownSlash)?;
    SLASHES.remove(s, &id);
    let mut q = SLASH_QUEUE.get(s, &p.apply_at)?.unwrap_or_default();
    q.retain(|x| *x != id);
    if q.is_empty() {
        SLASH_QUEUE.remove(s, &p.apply_at);
    } else {
        SLASH_QUEUE.insert(s, &p.apply_at, &q);
    }
    release_pending(s, &p.offender)?;
    emit(ev, Event::SlashCancelled { slash: id });
    Ok(())
}

/// Applies one deferred slash (max-not-sum within the span, active first, then newest chunks).
fn apply_slash(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: SlashId,
) -> Result<(), Failure> {
    let Some(p) = SLASHES.get(s, &id)? else {
        return Ok(());
    };
    SLASHES.remove(s, &id);
    release_pending(s, &p.offender)?;
    let cfg = config(s)?;
    let span = p.epoch / cfg.span_epochs.max(1);
    let span_key = (p.offender, span);
    let prev_max = SPAN_MAX.get(s, &span_key)?.unwrap_or(0);
    let charge = p.amount.saturating_sub(prev_max);
    SPAN_MAX.insert(s, &span_key, &prev_max.max(p.amount));
    let Some(old) = LEDGER.get(s, &p.offender)? else {
        emit(
            ev,
            Event::Slashed {
                slash: id,
                offender: p.offender,
                amount: 0,
                reporter_reward: 0,
            },
        );
        return Ok(());
    };
    let mut new = old.clone();
    let taken = deduct(&mut new, charge);
    let burnt = balances::slash_reserved(s, ev, &p.offender, taken)?;
    // If the slash reaped the account (left below the existential deposit), its ledger goes too.
    let reserved_now = balances::account(s, &p.offender)?.reserved;
    if reserved_now < new.total() {
        let excess = new.total() - reserved_now;
        deduct(&mut new, excess);
    }
    write_ledger(s, &p.offender, &old, &new)?;
    let mut reward = 0;
    if let Some(r) = p.reporter {
        reward = balances::mint(s, ev, &r, cfg.reporter_share.mul_floor(burnt))?;
    }
    emit(
        ev,
        Event::Slashed {
            slash: id,
            offender: p.offender,
            amount: burnt,
            reporter_reward: reward,
        },
    );
    Ok(())
}

/// Gives `who` reward points if it is in the active set.
pub fn add_points(
    s: &mut (impl Storage + ?Sized),
    who: &AccountId,
    points: u32,
) -> Result<(), StorageError> {
    if !active_set(s)?.iter().any(|v| v.account == *who) {
        return Ok(());
    }
    let mut p = POINTS.get(s)?.unwrap_or_default();
    match p.binary_search_by(|(a, _)| a.cmp(who)) {
        Ok(i) => {
            if let Some(e) = p.get_mut(i) {
                e.1 = e.1.saturating_add(points);
            }
        }
        Err(i) => p.insert(i, (*who, points)),
    }
    POINTS.put(s, &p);
    Ok(())
}

/// Block start: applies the slashes due now, each in its own transaction (a failing one is
/// recorded as [`Event::SlashFailed`]; see the module docs), and credits the author a point.
/// Returns the offenders whose slash applied.
pub fn on_initialize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
    author: &AccountId,
) -> Result<Vec<AccountId>, Failure> {
    let mut slashed = Vec::new();
    if let Some(q) = SLASH_QUEUE.get(s, &now)? {
        SLASH_QUEUE.remove(s, &now);
        for id in q {
            let offender = SLASHES.get(s, &id)?.map(|p| p.offender);
            match transactional_item(s, ev, |s, ev| apply_slash(s, ev, id))? {
                Ok(()) => slashed.extend(offender),
                Err(error) => emit(ev, Event::SlashFailed { slash: id, error }),
            }
        }
    }
    add_points(s, author, 1)?;
    Ok(slashed)
}

/// Chooses the active set from the candidates (see the module docs).
fn elect(
    s: &(impl StateReader + ?Sized),
    cfg: &Config,
) -> Result<Vec<ActiveValidator>, StorageError> {
    let mut set = Vec::new();
    for who in CANDIDATES.get(s)?.unwrap_or_default() {
        let Some(v) = VALIDATORS.get(s, &who)? else {
            continue;
        };
        let stake = active_stake(s, &who)?;
        if stake >= cfg.min_validator_bond && stake > 0 {
            set.push(ActiveValidator {
                account: who,
                stake,
                bls_key: v.bls_key,
            });
        }
    }
    set.sort_by(|a, b| b.stake.cmp(&a.stake).then(a.account.cmp(&b.account)));
    set.truncate(cfg.max_validators as usize);
    Ok(set)
}

/// Epoch start: pays the closing epoch's rewards and elects the next set.
pub fn new_epoch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
) -> Result<EpochIndex, Failure> {
    let cfg = config(s)?;
    let points = POINTS.get(s)?.unwrap_or_default();
    POINTS.kill(s);
    let weights: Vec<(AccountId, u128)> = points.iter().map(|(a, p)| (*a, *p as u128)).collect();
    for (who, amount) in largest_remainder(cfg.epoch_reward, &weights) {
        let paid = balances::mint(s, ev, &who, amount)?;
        if paid > 0 {
            emit(ev, Event::Rewarded { who, amount: paid });
        }
    }
    let epoch = current_epoch(s)?.checked_add(1).ok_or(Error::Overflow)?;
    CURRENT_EPOCH.put(s, &epoch);
    let set = elect(s, &cfg)?;
    // An empty election keeps the previous set: the chain must never lose all validators.
    let set = if set.is_empty() { active_set(s)? } else { set };
    ACTIVE_SET.put(s, &set);
    SNAPSHOTS.insert(s, &epoch, &set);
    if epoch > cfg.history_depth {
        SNAPSHOTS.remove(s, &(epoch - cfg.history_depth - 1));
    }
    emit(
        ev,
        Event::NewEpoch {
            epoch,
            validators: set.len() as u32,
        },
    );
    Ok(epoch)
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
    let set = elect(s, cfg)?;
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
    }
}

/// Takes up to `amount` out of a ledger: from `active` first, then from the newest unlocking
/// chunks (dropping emptied chunks). Returns what was taken.
fn deduct(ledger: &mut Ledger, amount: Balance) -> Balance {
    let mut left = amount;
    let from_active = left.min(ledger.active);
    ledger.active -= from_active;
    left -= from_active;
    while left > 0 {
        let Some(last) = ledger.unlocking.last_mut() else {
            break;
        };
        let take = left.min(last.value);
        last.value -= take;
        left -= take;
        if last.value == 0 {
            ledger.unlocking.pop();
        }
    }
    amount - left
}

#[cfg(test)]
mod tests;
