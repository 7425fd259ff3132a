//! Credentials held in escrow for inference requests, and the re-issue of finished runs.
//!
//! The ownership pallet stays the single ledger of credentials. An inference request (the
//! inference pallet) moves credentials out of the holder's balance into *escrow*:
//!
//! ```text
//! credentials(run, holder) ──escrow_credentials──▶ escrowed(run, holder)
//! escrowed(run, holder)    ──release_escrow──────▶ credentials(run, holder)   (refund)
//! escrowed(run, holder)    ──charge_escrow───────▶ reissue_pool(run)          (payment)
//! ```
//!
//! so `credential_issuance(run) = Σ credentials + Σ escrowed + reissue_pool` always holds. A
//! charge pays the owners exactly as `redeem_credential` does: the pool is re-issued pro rata
//! to units at the next epoch boundary.
//!
//! ## Finished runs
//!
//! A finished run leaves the runs pallet's active list, so the per-run epoch work
//! ([`crate::mint_epoch`]) no longer reaches it, yet its model is what holders want to use.
//! Every run whose pool is not empty is listed in [`POOLED_RUNS`]; at each epoch boundary the
//! runtime calls [`crate::mint_epoch`] for the listed runs that are finished
//! ([`finished_pooled_runs`]), which re-issues their pool without minting new credentials.
//! The list is bounded by the number of runs with a non-empty pool.

use crate::{credentials, set_credentials, Error, REISSUE_POOL};
use weft_pallet_runs as runs;
use weft_pallet_support::{Failure, RunId};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::AccountId;

/// Credentials in escrow per (run, holder).
pub const ESCROWED: StorageMap<(RunId, AccountId), u128> =
    StorageMap::new(crate::PALLET, "Escrowed");
/// Runs whose re-issue pool is not empty, ascending.
pub const POOLED_RUNS: StorageValue<Vec<RunId>> = StorageValue::new(crate::PALLET, "PooledRuns");

/// Credentials of `who` in `run` held in escrow.
pub fn escrowed(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    who: &AccountId,
) -> Result<u128, StorageError> {
    Ok(ESCROWED.get(s, &(run, *who))?.unwrap_or(0))
}

/// Runs whose re-issue pool is not empty.
pub fn pooled_runs(s: &(impl StateReader + ?Sized)) -> Result<Vec<RunId>, StorageError> {
    Ok(POOLED_RUNS.get(s)?.unwrap_or_default())
}

/// The runs of [`pooled_runs`] that are finished: the epoch boundary re-issues their pools.
pub fn finished_pooled_runs(s: &(impl StateReader + ?Sized)) -> Result<Vec<RunId>, StorageError> {
    let mut out = Vec::new();
    for run in pooled_runs(s)? {
        if let Some(r) = runs::run(s, run)? {
            if r.status == runs::RunStatus::Finished {
                out.push(run);
            }
        }
    }
    Ok(out)
}

/// What stays in `who`'s escrow in `run` once `amount` leaves it (`Insufficient` if less is
/// held); nothing is written.
fn escrow_less(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    who: &AccountId,
    amount: u128,
) -> Result<u128, Failure> {
    Ok(escrowed(s, run, who)?
        .checked_sub(amount)
        .ok_or(Error::Insufficient)?)
}

fn set_escrowed(s: &mut (impl Storage + ?Sized), run: RunId, who: &AccountId, v: u128) {
    if v == 0 {
        ESCROWED.remove(s, &(run, *who));
    } else {
        ESCROWED.insert(s, &(run, *who), &v);
    }
}

/// Adds `amount` to the re-issue pool of `run` (and lists the run in [`POOLED_RUNS`]).
pub(crate) fn add_to_pool(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    amount: u128,
) -> Result<(), Failure> {
    let pool = crate::reissue_pool(s, run)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    REISSUE_POOL.insert(s, &run, &pool);
    if pool > 0 {
        let mut pooled = pooled_runs(s)?;
        if let Err(i) = pooled.binary_search(&run) {
            pooled.insert(i, run);
            POOLED_RUNS.put(s, &pooled);
        }
    }
    Ok(())
}

/// Empties the re-issue pool of `run` (it was re-issued).
pub(crate) fn clear_pool(s: &mut (impl Storage + ?Sized), run: RunId) -> Result<(), Failure> {
    REISSUE_POOL.remove(s, &run);
    let mut pooled = pooled_runs(s)?;
    if let Ok(i) = pooled.binary_search(&run) {
        pooled.remove(i);
        if pooled.is_empty() {
            POOLED_RUNS.kill(s);
        } else {
            POOLED_RUNS.put(s, &pooled);
        }
    }
    Ok(())
}

/// Moves `amount` credentials of `who` in `run` into escrow. Fails with `ZeroAmount`,
/// `Insufficient` (fewer credentials than `amount`) or `Overflow`, changing nothing.
pub fn escrow_credentials(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    who: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    if amount == 0 {
        return Err(Error::ZeroAmount.into());
    }
    let left = credentials(s, run, who)?
        .checked_sub(amount)
        .ok_or(Error::Insufficient)?;
    let held = escrowed(s, run, who)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    set_credentials(s, run, who, left);
    set_escrowed(s, run, who, held);
    Ok(())
}

/// Returns `amount` escrowed credentials of `who` in `run` to its balance (a refund). Fails
/// with `Insufficient` (less in escrow) or `Overflow`, changing nothing; zero is a no-op.
pub fn release_escrow(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    who: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    if amount == 0 {
        return Ok(());
    }
    let held = escrow_less(s, run, who, amount)?;
    let back = credentials(s, run, who)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    set_escrowed(s, run, who, held);
    set_credentials(s, run, who, back);
    Ok(())
}

/// Pays `amount` escrowed credentials of `who` in `run` into the run's re-issue pool (the
/// owners receive them pro rata at the next epoch boundary). Fails with `Insufficient` or
/// `Overflow`, changing nothing; zero is a no-op.
pub fn charge_escrow(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    who: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    if amount == 0 {
        return Ok(());
    }
    let held = escrow_less(s, run, who, amount)?;
    add_to_pool(s, run, amount)?;
    set_escrowed(s, run, who, held);
    Ok(())
}
