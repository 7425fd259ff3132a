//! Bonding: each account's [`Ledger`] and the calls that move funds into and out of it.
//!
//! Bonded funds are the account's `reserved` balance in the balances pallet. A ledger is
//! `{ active, unlocking }`: `active` backs the account's roles and its voting weight;
//! `unlocking` is a list of chunks `{ value, unlock_at }`, oldest first, on their way out.
//! [`Ledger::total`] (active plus every chunk) is exactly what staking holds reserved for the
//! account, and all of it is slashable (see the slashing module).
//!
//! * `bond(v)` reserves `v` and opens a ledger `{ active: v, unlocking: [] }`; `bond_extra`
//!   adds to `active`. Zero amounts are refused (`BadAmount`).
//! * `unbond(v)` moves `v` from `active` into an unlocking chunk that unlocks at
//!   `now + bonding_period` (chunks with the same unlock block merge; at most
//!   `max_unlocking_chunks`). An account holding a role must keep `active` at or above that
//!   role's minimum bond (the larger of the two when it holds both); it `chill`s first to go
//!   lower.
//! * `withdraw_unbonded` unreserves every chunk whose unlock block has come, **unless the
//!   account has a deferred slash pending** (then it waits until the slash is applied or
//!   cancelled).
//! * `rebond(v)` moves up to `v` back from the newest chunks into `active` (partly emptying
//!   the oldest chunk it reaches); it rebonds what there is when `v` exceeds it.
//!
//! ## Totals
//!
//! [`TOTAL_BONDED`] is the sum of all ledger totals (staking's share of reserved balances)
//! and [`TOTAL_ACTIVE`] the sum of all active bonds (the voting stake). Every ledger change
//! goes through `write_ledger`, which moves both totals by the difference between the old and
//! the new ledger with checked arithmetic (an inconsistency is an `Overflow` error, never a
//! wrap) and removes a ledger left with nothing in it.
//!
//! ## Numbers
//!
//! With the development [`Config`](crate::Config): `bonding_period` = 60 blocks (six 10-block
//! epochs) and `max_unlocking_chunks` = 32 (unbonding in 32 different blocks fills the
//! ledger; the next `unbond` in a new block fails with `TooManyChunks` until a chunk is
//! withdrawn). `bonding_period` must exceed `slash_defer` (30 blocks) for unbonding to be no
//! escape from a slash.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_balances as balances;
use weft_pallet_support::{emit, Failure};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber};

use crate::roles::required_bond;
use crate::{config, Error, Event, Sink, PALLET, PENDING_SLASHES};

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

/// Ledgers by account.
pub const LEDGER: StorageMap<AccountId, Ledger> = StorageMap::new(PALLET, "Ledger");

/// Sum of all ledger totals (= staking's share of reserved balances).
pub const TOTAL_BONDED: StorageValue<Balance> = StorageValue::new(PALLET, "TotalBonded");
/// Sum of all active bonds (the voting stake).
pub const TOTAL_ACTIVE: StorageValue<Balance> = StorageValue::new(PALLET, "TotalActive");

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

/// Sum of active bonds.
pub fn total_active(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(TOTAL_ACTIVE.get(s)?.unwrap_or(0))
}

/// Sum of ledger totals.
pub fn total_bonded(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(TOTAL_BONDED.get(s)?.unwrap_or(0))
}

/// Writes a ledger and keeps the totals in step with the change from `old`.
pub(crate) fn write_ledger(
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
