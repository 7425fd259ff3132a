//! # Balances
//!
//! Accounts hold a `free` balance (spendable) and a `reserved` balance (held by other pallets:
//! bonds, deposits), plus the account's `nonce`. Rules:
//!
//! * **Existential deposit (ED).** An account must hold at least ED in total to exist. A
//!   transfer that would create an account with less than ED fails. `transfer` may take the
//!   sender below ED: the remainder ("dust") is burned and the balance becomes zero.
//!   `transfer_keep_alive` refuses to. The nonce record is kept even when the balance is
//!   zero, so a reaped account cannot have its old transactions replayed.
//! * **Fees.** Every extrinsic pays `base + per_byte × length` plus its tip before it is
//!   dispatched, whatever the call's outcome. The base and length fee are burned (removed from
//!   total issuance); the tip goes to the block author. Paying a fee must leave at least ED,
//!   so fees can never reap an account.
//! * **Issuance.** `TotalIssuance` always equals the sum of all free and reserved balances;
//!   only burns (fees, dust) and explicit mints change it.
//!
//! All arithmetic is checked; a call that fails returns its error and, because the runtime runs
//! it in a storage transaction, changes nothing.

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber, Nonce, PalletError};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Balances";

/// An account's record.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
pub struct AccountInfo {
    /// Transactions sent so far; the next must carry this nonce.
    pub nonce: Nonce,
    /// Spendable balance.
    pub free: Balance,
    /// Balance held by other pallets.
    pub reserved: Balance,
}

impl AccountInfo {
    /// free + reserved.
    pub fn total(&self) -> Balance {
        self.free.saturating_add(self.reserved)
    }
}

/// Account records.
pub const ACCOUNTS: StorageMap<AccountId, AccountInfo> = StorageMap::new(PALLET, "Account");
/// Sum of all balances.
pub const TOTAL_ISSUANCE: StorageValue<Balance> = StorageValue::new(PALLET, "TotalIssuance");
/// The existential deposit, set at genesis.
pub const EXISTENTIAL_DEPOSIT: StorageValue<Balance> =
    StorageValue::new(PALLET, "ExistentialDeposit");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Moves `value` to `dest`; the sender may be reaped.
    #[codec(index = 0)]
    Transfer {
        /// Recipient.
        dest: AccountId,
        /// Amount in plancks.
        #[codec(compact)]
        value: Balance,
    },
    /// Moves `value` to `dest`; fails if the sender would drop below the existential deposit.
    #[codec(index = 1)]
    TransferKeepAlive {
        /// Recipient.
        dest: AccountId,
        /// Amount in plancks.
        #[codec(compact)]
        value: Balance,
    },
    /// Moves the whole free balance to `dest` (minus the existential deposit if `keep_alive`).
    #[codec(index = 2)]
    TransferAll {
        /// Recipient.
        dest: AccountId,
        /// Keep the sender alive.
        keep_alive: bool,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A transfer succeeded.
    #[codec(index = 0)]
    Transfer {
        /// Sender.
        from: AccountId,
        /// Recipient.
        to: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// An account came into existence.
    #[codec(index = 1)]
    Endowed {
        /// The account.
        account: AccountId,
        /// Its first balance.
        free_balance: Balance,
    },
    /// An account fell below the existential deposit and its dust was burned.
    #[codec(index = 2)]
    DustLost {
        /// The account.
        account: AccountId,
        /// Burned amount.
        amount: Balance,
    },
    /// A transaction fee was paid.
    #[codec(index = 3)]
    FeePaid {
        /// Payer.
        who: AccountId,
        /// Burned part.
        fee: Balance,
        /// Part paid to the block author.
        tip: Balance,
    },
    /// Balance was reserved.
    #[codec(index = 4)]
    Reserved {
        /// The account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// Reserved balance was released.
    #[codec(index = 5)]
    Unreserved {
        /// The account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// Reserved balance was slashed (burned).
    #[codec(index = 6)]
    Slashed {
        /// The account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// New tokens were issued to an account (staking rewards, reporter rewards).
    #[codec(index = 7)]
    Minted {
        /// The account.
        who: AccountId,
        /// Amount.
        amount: Balance,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Not enough free balance.
    #[codec(index = 0)]
    #[error("InsufficientBalance: the account's free balance is too low")]
    InsufficientBalance,
    /// The transfer would create an account below the existential deposit.
    #[codec(index = 1)]
    #[error("ExistentialDeposit: the recipient would hold less than the existential deposit")]
    ExistentialDeposit,
    /// The sender would drop below the existential deposit.
    #[codec(index = 2)]
    #[error("KeepAlive: the transfer would take the sender below the existential deposit")]
    KeepAlive,
    /// A balance would overflow.
    #[codec(index = 3)]
    #[error("Overflow: a balance would overflow")]
    Overflow,
    /// Not enough reserved balance.
    #[codec(index = 4)]
    #[error("InsufficientReserved: the account's reserved balance is too low")]
    InsufficientReserved,
}

impl PalletError for Error {
    fn index(&self) -> u8 {
        *self as u8
    }
}

/// A pallet failure: a dispatch error, or a storage fault that must abort the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The call is not allowed; the extrinsic fails, the block goes on.
    #[error(transparent)]
    Dispatch(#[from] Error),
    /// The state is unreadable; the block cannot be executed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where emitted events go (the runtime's event log).
pub trait EventSink {
    /// Records an event.
    fn deposit(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    fn deposit(&mut self, event: Event) {
        self.push(event);
    }
}

/// The account record, or an empty one.
pub fn account(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<AccountInfo, StorageError> {
    Ok(ACCOUNTS.get(s, who)?.unwrap_or_default())
}

/// The existential deposit.
pub fn existential_deposit(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(EXISTENTIAL_DEPOSIT.get(s)?.unwrap_or(0))
}

/// Total issuance.
pub fn total_issuance(s: &(impl StateReader + ?Sized)) -> Result<Balance, StorageError> {
    Ok(TOTAL_ISSUANCE.get(s)?.unwrap_or(0))
}

fn write_account(s: &mut (impl Storage + ?Sized), who: &AccountId, info: &AccountInfo) {
    if info.total() == 0 && info.nonce == 0 {
        ACCOUNTS.remove(s, who);
    } else {
        ACCOUNTS.insert(s, who, info);
    }
}

fn burn(s: &mut (impl Storage + ?Sized), amount: Balance) -> Result<(), StorageError> {
    let issuance = total_issuance(s)?;
    TOTAL_ISSUANCE.put(s, &issuance.saturating_sub(amount));
    Ok(())
}

/// Genesis: sets the existential deposit and endows accounts (minting into issuance).
pub fn build_genesis(
    s: &mut (impl Storage + ?Sized),
    existential_deposit: Balance,
    endowed: &[(AccountId, Balance)],
) -> Result<(), Failure> {
    EXISTENTIAL_DEPOSIT.put(s, &existential_deposit);
    let mut issuance = total_issuance(s)?;
    for (who, amount) in endowed {
        let mut info = account(s, who)?;
        info.free = info.free.checked_add(*amount).ok_or(Error::Overflow)?;
        if info.total() < existential_deposit {
            return Err(Error::ExistentialDeposit.into());
        }
        issuance = issuance.checked_add(*amount).ok_or(Error::Overflow)?;
        write_account(s, who, &info);
    }
    TOTAL_ISSUANCE.put(s, &issuance);
    Ok(())
}

/// Increments the nonce of `who`.
pub fn inc_nonce(s: &mut (impl Storage + ?Sized), who: &AccountId) -> Result<(), StorageError> {
    let mut info = account(s, who)?;
    info.nonce = info.nonce.saturating_add(1);
    write_account(s, who, &info);
    Ok(())
}

/// The most `who` can pay in fees and tips now while keeping the existential deposit:
/// `min(free, free + reserved - ed)`. [`can_pay_fee`] holds exactly when `fee + tip` is at
/// most this; the pool sums a sender's queued fees against it.
pub fn fee_budget(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<Balance, StorageError> {
    let ed = existential_deposit(s)?;
    let info = account(s, who)?;
    Ok(info
        .free
        .min(info.free.saturating_add(info.reserved).saturating_sub(ed)))
}

/// Whether `who` can pay `fee + tip` and keep at least the existential deposit.
pub fn can_pay_fee(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
    fee: Balance,
    tip: Balance,
) -> Result<bool, StorageError> {
    let ed = existential_deposit(s)?;
    let info = account(s, who)?;
    Ok(fee
        .checked_add(tip)
        .and_then(|total| info.free.checked_sub(total))
        .is_some_and(|left| left.saturating_add(info.reserved) >= ed))
}

/// Charges `fee` (burned) and `tip` (to `author`) from `who`.
pub fn charge_fee(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    who: &AccountId,
    fee: Balance,
    tip: Balance,
    author: &AccountId,
) -> Result<(), Failure> {
    if !can_pay_fee(s, who, fee, tip)? {
        return Err(Error::InsufficientBalance.into());
    }
    let mut info = account(s, who)?;
    let total = fee.checked_add(tip).ok_or(Error::Overflow)?;
    info.free = info
        .free
        .checked_sub(total)
        .ok_or(Error::InsufficientBalance)?;
    write_account(s, who, &info);
    burn(s, fee)?;
    if tip > 0 {
        // The author receives the tip; if that would leave the author below the existential
        // deposit (a brand-new author with a tiny tip), the tip is burned instead.
        let mut a = account(s, author)?;
        let ed = existential_deposit(s)?;
        match a.free.checked_add(tip) {
            Some(new_free) if new_free.saturating_add(a.reserved) >= ed => {
                a.free = new_free;
                write_account(s, author, &a);
            }
            _ => burn(s, tip)?,
        }
    }
    events.deposit(Event::FeePaid {
        who: *who,
        fee,
        tip,
    });
    Ok(())
}

/// Moves `value` from `from` to `to`.
pub fn transfer(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    from: &AccountId,
    to: &AccountId,
    value: Balance,
    keep_alive: bool,
) -> Result<(), Failure> {
    let ed = existential_deposit(s)?;
    let mut sender = account(s, from)?;
    let remaining = sender
        .free
        .checked_sub(value)
        .ok_or(Error::InsufficientBalance)?;
    if from == to || value == 0 {
        return Ok(());
    }
    let mut dest = account(s, to)?;
    let dest_new = dest.free.checked_add(value).ok_or(Error::Overflow)?;
    let was_dead = dest.total() == 0;
    if dest_new.saturating_add(dest.reserved) < ed {
        return Err(Error::ExistentialDeposit.into());
    }
    let sender_total_after = remaining.saturating_add(sender.reserved);
    let mut dust = 0;
    if sender_total_after < ed {
        // An account holding reserved funds (a bond) cannot be reaped, so it may not drop
        // below the existential deposit either.
        if keep_alive || sender.reserved > 0 {
            return Err(Error::KeepAlive.into());
        }
        dust = remaining;
    }
    sender.free = remaining - dust;
    dest.free = dest_new;
    write_account(s, from, &sender);
    write_account(s, to, &dest);
    if was_dead {
        events.deposit(Event::Endowed {
            account: *to,
            free_balance: dest_new,
        });
    }
    events.deposit(Event::Transfer {
        from: *from,
        to: *to,
        amount: value,
    });
    if dust > 0 {
        burn(s, dust)?;
        events.deposit(Event::DustLost {
            account: *from,
            amount: dust,
        });
    }
    Ok(())
}

/// Moves `amount` from free to reserved.
pub fn reserve(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    who: &AccountId,
    amount: Balance,
) -> Result<(), Failure> {
    let mut info = account(s, who)?;
    info.free = info
        .free
        .checked_sub(amount)
        .ok_or(Error::InsufficientBalance)?;
    info.reserved = info.reserved.checked_add(amount).ok_or(Error::Overflow)?;
    write_account(s, who, &info);
    events.deposit(Event::Reserved { who: *who, amount });
    Ok(())
}

/// Moves `amount` from reserved back to free.
pub fn unreserve(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    who: &AccountId,
    amount: Balance,
) -> Result<(), Failure> {
    let mut info = account(s, who)?;
    info.reserved = info
        .reserved
        .checked_sub(amount)
        .ok_or(Error::InsufficientReserved)?;
    info.free = info.free.checked_add(amount).ok_or(Error::Overflow)?;
    write_account(s, who, &info);
    events.deposit(Event::Unreserved { who: *who, amount });
    Ok(())
}

/// Burns up to `amount` of `who`'s reserved balance; returns what was burned.
pub fn slash_reserved(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    who: &AccountId,
    amount: Balance,
) -> Result<Balance, StorageError> {
    let mut info = account(s, who)?;
    let slashed = amount.min(info.reserved);
    info.reserved -= slashed;
    burn(s, slashed)?;
    if slashed > 0 {
        events.deposit(Event::Slashed {
            who: *who,
            amount: slashed,
        });
    }
    // A slash that leaves less than the existential deposit reaps the account.
    let dust = info.total();
    if dust > 0 && dust < existential_deposit(s)? {
        info.free = 0;
        info.reserved = 0;
        burn(s, dust)?;
        events.deposit(Event::DustLost {
            account: *who,
            amount: dust,
        });
    }
    write_account(s, who, &info);
    Ok(slashed)
}

/// Issues `amount` new tokens into `who`'s free balance (increasing total issuance). Returns
/// what was minted: nothing when the account would still hold less than the existential
/// deposit or a balance would overflow, so minting never creates dust accounts.
pub fn mint(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    who: &AccountId,
    amount: Balance,
) -> Result<Balance, StorageError> {
    if amount == 0 {
        return Ok(0);
    }
    let mut info = account(s, who)?;
    let issuance = total_issuance(s)?;
    let (Some(free), Some(new_issuance)) =
        (info.free.checked_add(amount), issuance.checked_add(amount))
    else {
        return Ok(0);
    };
    if free.saturating_add(info.reserved) < existential_deposit(s)? {
        return Ok(0);
    }
    let was_dead = info.total() == 0;
    info.free = free;
    write_account(s, who, &info);
    TOTAL_ISSUANCE.put(s, &new_issuance);
    if was_dead {
        events.deposit(Event::Endowed {
            account: *who,
            free_balance: free,
        });
    }
    events.deposit(Event::Minted { who: *who, amount });
    Ok(amount)
}

/// Dispatches a call signed by `origin` in block `_now` (the signature every pallet's
/// `dispatch` has; no balances call depends on the block).
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    events: &mut impl EventSink,
    _now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::Transfer { dest, value } => transfer(s, events, origin, dest, *value, false),
        Call::TransferKeepAlive { dest, value } => transfer(s, events, origin, dest, *value, true),
        Call::TransferAll { dest, keep_alive } => {
            let free = account(s, origin)?.free;
            let value = if *keep_alive {
                free.saturating_sub(existential_deposit(s)?)
            } else {
                free
            };
            transfer(s, events, origin, dest, value, *keep_alive)
        }
    }
}

#[cfg(test)]
mod tests;
