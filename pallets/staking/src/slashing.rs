//! Slashing: offence reports, the deferred slash queue and its application.
//!
//! An offence (failed audit, false or missing verdict, equivocation) carries a fraction `f`.
//! At report time the amount is fixed as `⌊f · exposure⌋` where the exposure is the whole
//! ledger (`active` plus everything still unlocking: unbonding funds are slashable), the
//! offender is **chilled at once** (the caller also removes it from its stages), and the slash
//! is queued to apply at `now + slash_defer` blocks (at least one block later), with
//! `slash_defer < bonding_period`. A zero amount queues nothing.
//!
//! * **Nobody escapes by unbonding.** Funds unbonded after the offence unlock at
//!   `≥ offence + bonding_period > offence + slash_defer`, so they are still in the ledger when
//!   the slash applies; funds that would unlock earlier cannot be withdrawn either, because
//!   `withdraw_unbonded` refuses while a slash is pending ([`PENDING_SLASHES`] counts them
//!   per account).
//! * **Max, not sum, within a span.** Offences are grouped into spans of `span_epochs` epochs
//!   (`span = offence_epoch / span_epochs`). For each (offender, span) the pallet remembers the
//!   largest amount applied so far, `m` ([`SPAN_MAX`]); a slash of amount `a` charges only
//!   `max(0, a − m)` and raises `m` to `max(m, a)`. So one fault reported by several
//!   auditors, or a burst of faults in one span, costs the largest slash, not their sum. This
//!   is computed when the slash *applies*, so a slash cancelled by governance never counts.
//! * **Deferral and cancellation.** Governance may cancel a queued slash before it applies
//!   (`cancel_slash`, which also takes it out of its block's queue).
//! * **Application.** The charge is taken from `active` first, then from the newest unlocking
//!   chunks (`deduct`), burnt from the reserved balance; `reporter_share` of what was burnt is
//!   minted to the reporter (if any). If the burn reaped the account (left below the
//!   existential deposit), the ledger is cut down to what is still reserved.
//! * **One slash, one transaction.** The block hook takes the block's slash queue entry out
//!   of storage and keeps that removal; each slash then applies in its own nested transaction
//!   (`weft_pallet_support::transactional_item`). One that fails with a dispatch error
//!   (inconsistent state) has its writes and events rolled back, is recorded as
//!   [`Event::SlashFailed`] and stays pending (it is not applied again; governance may cancel
//!   it); the other slashes of the block still apply. A storage fault aborts the hook.
//! * **A record of what applied.** An applied slash moves from [`SLASHES`] to
//!   [`APPLIED_SLASHES`] with what was burnt, the reporter's reward and the block, so that
//!   the history of slashes stays readable from state (the dashboard, `weft_appliedSlashes`).
//!
//! ## Numbers
//!
//! With the development [`Config`](crate::Config): `slash_defer` = 30 blocks against a
//! `bonding_period` of 60; `span_epochs` = 6, i.e. spans of 60 blocks with 10-block epochs;
//! `reporter_share` = 10% of what is burnt. Fractions are [`Perbill`] (parts per billion),
//! rounded down; all arithmetic is on integers.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_balances as balances;
use weft_pallet_support::{
    emit, transactional_item, EpochIndex, Failure, Perbill, Rewind, SlashId, Transactional,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber};

use crate::ledger::write_ledger;
use crate::{chill, config, current_epoch, Error, Event, Ledger, Sink, LEDGER, PALLET};

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
    /// A trainer committed a root other than the one it sealed for its pipeline neighbour
    /// (or committed inputs that nobody sealed).
    #[codec(index = 4)]
    PipelineContradiction,
    /// A trainer committed an update root other than the one it sealed for another replica
    /// of its stage (replicas that average).
    #[codec(index = 5)]
    ReplicaContradiction,
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

/// Deferred slashes.
pub const SLASHES: StorageMap<SlashId, PendingSlash> = StorageMap::new(PALLET, "Slashes");
/// Deferred slashes by the block they apply in.
pub const SLASH_QUEUE: StorageMap<BlockNumber, Vec<SlashId>> =
    StorageMap::new(PALLET, "SlashQueue");
/// The next slash id.
pub const NEXT_SLASH_ID: StorageValue<SlashId> = StorageValue::new(PALLET, "NextSlashId");
/// A slash that applied: what was reported and what it took.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSlash {
    /// The slash as it was queued.
    pub slash: PendingSlash,
    /// What was burnt from the offender (after the span's maximum; at most its ledger).
    pub burnt: Balance,
    /// What was minted to the reporter.
    pub reporter_reward: Balance,
    /// The block it applied in.
    pub applied_at: BlockNumber,
}

/// Slashes that applied, by id.
pub const APPLIED_SLASHES: StorageMap<SlashId, AppliedSlash> =
    StorageMap::new(PALLET, "AppliedSlashes");
/// Number of deferred slashes pending per account.
pub const PENDING_SLASHES: StorageMap<AccountId, u32> = StorageMap::new(PALLET, "PendingSlashes");
/// Largest amount applied per (account, span).
pub const SPAN_MAX: StorageMap<(AccountId, u64), Balance> = StorageMap::new(PALLET, "SpanMax");

/// The deferred slash `id`.
pub fn pending_slash(
    s: &(impl StateReader + ?Sized),
    id: SlashId,
) -> Result<Option<PendingSlash>, StorageError> {
    SLASHES.get(s, &id)
}

/// The slash `id`, if it applied.
pub fn applied_slash(
    s: &(impl StateReader + ?Sized),
    id: SlashId,
) -> Result<Option<AppliedSlash>, StorageError> {
    APPLIED_SLASHES.get(s, &id)
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
    now: BlockNumber,
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
        let offender = p.offender;
        record_applied(s, id, p, 0, 0, now);
        emit(
            ev,
            Event::Slashed {
                slash: id,
                offender,
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
    let offender = p.offender;
    record_applied(s, id, p, burnt, reward, now);
    emit(
        ev,
        Event::Slashed {
            slash: id,
            offender,
            amount: burnt,
            reporter_reward: reward,
        },
    );
    Ok(())
}

fn record_applied(
    s: &mut (impl Storage + ?Sized),
    id: SlashId,
    slash: PendingSlash,
    burnt: Balance,
    reporter_reward: Balance,
    applied_at: BlockNumber,
) {
    let record = AppliedSlash {
        slash,
        burnt,
        reporter_reward,
        applied_at,
    };
    APPLIED_SLASHES.insert(s, &id, &record);
}

/// Applies the slashes queued for block `now`, each in its own transaction (a failing one is
/// recorded as [`Event::SlashFailed`]; see the module docs). Returns the offenders whose slash
/// applied.
pub(crate) fn apply_due(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
) -> Result<Vec<AccountId>, Failure> {
    let mut slashed = Vec::new();
    if let Some(q) = SLASH_QUEUE.get(s, &now)? {
        SLASH_QUEUE.remove(s, &now);
        for id in q {
            let offender = SLASHES.get(s, &id)?.map(|p| p.offender);
            match transactional_item(s, ev, |s, ev| apply_slash(s, ev, id, now))? {
                Ok(()) => slashed.extend(offender),
                Err(error) => emit(ev, Event::SlashFailed { slash: id, error }),
            }
        }
    }
    Ok(slashed)
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
