//! Epochs: boundaries, reward points and payout, and election of the validator set.
//!
//! Block `n` starts an epoch when `n > 0` and `n mod epoch_length = 0` (block 0 is genesis,
//! which elects the epoch-0 set itself). The runtime calls [`on_initialize`] at the start of
//! every block and, in an epoch's first block, [`new_epoch`] right after it.
//!
//! * **Block hook.** [`on_initialize`] applies the slashes due in the block (see the slashing
//!   module) and credits the block's author one reward point. Points are kept only for members
//!   of the current active set, in [`POINTS`], sorted by account; audits add one point per
//!   attestation through [`add_points`]. The author point of an epoch's first block counts
//!   toward the epoch that block closes, since the hook runs before [`new_epoch`].
//! * **Rewards.** [`new_epoch`] first pays `epoch_reward` new tokens to the validators of the
//!   closing epoch pro rata to their points, by largest remainder so the whole reward is paid
//!   (`weft_pallet_support::largest_remainder`: integer quotients, then one unit each to the
//!   largest remainders, ties in account order). No points, no payout. The points are then
//!   cleared.
//! * **Election.** The next active set is the validator candidates whose
//!   `active ≥ min_validator_bond` (and non-zero), by active stake descending, ties by account
//!   id, at most `max_validators`. An empty election keeps the previous set: the chain must
//!   never lose all its validators. The set, with each validator's stake and BLS key, is the
//!   epoch's snapshot in [`SNAPSHOTS`]: audits and emergency votes weigh validators by it.
//!   Snapshots of the last `history_depth + 1` epochs are kept; beginning epoch `e` drops the
//!   one of epoch `e − history_depth − 1`.
//!
//! ## Numbers
//!
//! With the development [`Config`]: `epoch_length` = 10 blocks, `epoch_reward` = 10 UNIT,
//! `max_validators` = 100, `history_depth` = 28 (29 snapshots kept).

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::PublicKeyBytes;
use weft_pallet_balances as balances;
use weft_pallet_support::{emit, largest_remainder, EpochIndex, Failure, Rewind, Transactional};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber};

use crate::{
    active_stake, config, slashing, Config, Error, Event, Sink, CANDIDATES, PALLET, VALIDATORS,
};

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

/// The current epoch.
pub const CURRENT_EPOCH: StorageValue<EpochIndex> = StorageValue::new(PALLET, "CurrentEpoch");
/// The current epoch's validator set.
pub const ACTIVE_SET: StorageValue<Vec<ActiveValidator>> = StorageValue::new(PALLET, "ActiveSet");
/// Validator sets of recent epochs.
pub const SNAPSHOTS: StorageMap<EpochIndex, Vec<ActiveValidator>> =
    StorageMap::new(PALLET, "Snapshots");

/// Reward points of the current epoch, sorted by account.
pub const POINTS: StorageValue<Vec<(AccountId, u32)>> = StorageValue::new(PALLET, "Points");

/// The current epoch.
pub fn current_epoch(s: &(impl StateReader + ?Sized)) -> Result<EpochIndex, StorageError> {
    Ok(CURRENT_EPOCH.get(s)?.unwrap_or(0))
}

/// The current validator set.
pub fn active_set(s: &(impl StateReader + ?Sized)) -> Result<Vec<ActiveValidator>, StorageError> {
    Ok(ACTIVE_SET.get(s)?.unwrap_or_default())
}

/// Whether block `n` starts an epoch.
pub fn is_epoch_start(
    s: &(impl StateReader + ?Sized),
    n: BlockNumber,
) -> Result<bool, StorageError> {
    let len = config(s)?.epoch_length.max(1);
    Ok(n > 0 && n.is_multiple_of(len))
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
/// recorded as [`Event::SlashFailed`]; see the slashing module docs), and credits the author
/// a point.
/// Returns the offenders whose slash applied.
pub fn on_initialize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
    author: &AccountId,
) -> Result<Vec<AccountId>, Failure> {
    let slashed = slashing::apply_due(s, ev, now)?;
    add_points(s, author, 1)?;
    Ok(slashed)
}

/// Chooses the active set from the candidates (see the module docs).
pub(crate) fn elect(
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
