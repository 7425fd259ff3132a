//! # Ownership
//!
//! Verified work earns *contribution units* in the run; units are ownership of the model.
//! Owners receive the run's *credentials*, which pay for inference.
//!
//! ## Contribution units (risk-adjusted)
//!
//! Each credited step (a commitment that passed its audit, or was not selected for one) earns
//! its trainer, with `b = base_units`, `H = early_horizon`, `E = early_bonus`,
//! `B = loss_bonus`, `g = loss_gain` from the run's [`weft_pallet_runs::RiskSchedule`] and all
//! fractions in parts per billion (10⁹ = 1):
//!
//! ```text
//! early = E · (H − min(step, H)) / H                       (0 when H = 0)
//! r     = (ema_before − loss) · 10⁹ / ema_before           (0 unless loss < ema_before)
//! lossb = B · min(10⁹, r · g) / 10⁹
//! units = b · (10⁹ + early + lossb) / 10⁹                  (integer division, rounded down)
//! ```
//!
//! * **Early work earns more** because it carries more risk: the run may never produce a
//!   useful model, the first steps shape everything after them, and early contributors wait
//!   longest for inference demand. With the defaults (`E = 100 %`, `H = 10 000`) step 0 earns
//!   twice what step 10 000 and later earn, decaying linearly.
//! * **Loss-reducing work earns more**: `loss` is the loss the last stage committed for that
//!   step (fixed point × 10⁶), `ema_before` the run's exponential moving average of committed
//!   losses just before it (`ema ← (7·ema + loss) / 8`). A step that lowers the loss by 1 %
//!   with `g = 10` earns `B · 10 %` more. The bonus is capped at `B`, so a faked loss can gain
//!   at most `B` per step — and the fake is slashed when audited.
//! * Every stage of step `t` gets the same loss bonus: the pipeline improves the loss together.
//!
//! ## Shares
//!
//! A run's owners hold `units(a)`; `total_units` is their sum. The share of `a` is
//! `units(a) / total_units`, exposed as [`Perbill`]s computed with the largest-remainder method
//! so that they sum to exactly one (10⁹ parts). Units are transferable (`transfer_units`).
//!
//! ## Credentials
//!
//! Per run, credentials are an integer token. At each epoch boundary of a run that is not
//! halted, `credentials_per_epoch` new credentials *plus* every credential redeemed since the
//! last boundary are distributed to the owners pro rata to units with the largest-remainder
//! method (no dust: the parts sum to exactly the amount). `redeem_credential` burns credentials
//! from the holder into the run's re-issue pool — that is the "credential circle": redemption
//! pays the owners. `total issued = Σ balances + re-issue pool` always holds; only minting
//! raises it.
//!
//! ## Escrow (inference requests)
//!
//! The inference pallet holds credentials of an open request in *escrow* here
//! ([`escrow_credentials`]), then either pays them into the re-issue pool
//! ([`charge_escrow`]) or gives them back ([`release_escrow`]); see [`escrow`]. With escrow,
//! `total issued = Σ balances + Σ escrowed + re-issue pool`. A *finished* run mints nothing
//! more, but its pool is still re-issued at every epoch boundary ([`finished_pooled_runs`]).

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_runs as runs;
use weft_pallet_support::{
    emit, index, largest_remainder, shares, Deposit, Failure, Perbill, RunId, Step,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, BlockNumber, Hash};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Ownership";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::OWNERSHIP;
/// Step losses older than this many steps are pruned.
pub const LOSS_HISTORY: u64 = 1_024;
const PPB: u128 = 1_000_000_000;

/// Parameters, set at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Most owners per run reachable by transfers (credits always land).
    pub max_owners_per_run: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_owners_per_run: 1_024,
        }
    }
}

/// A committed loss of a step with the moving average before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepLoss {
    /// The loss × 10⁶.
    pub loss: u64,
    /// The run's loss average × 10⁶ before this step.
    pub ema_before: u64,
}

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// Units per (run, owner).
pub const UNITS: StorageMap<(RunId, AccountId), u128> = StorageMap::new(PALLET, "Units");
/// Units per run.
pub const TOTAL_UNITS: StorageMap<RunId, u128> = StorageMap::new(PALLET, "TotalUnits");
/// Owners per run, sorted.
pub const OWNERS: StorageMap<RunId, Vec<AccountId>> = StorageMap::new(PALLET, "Owners");
/// Credentials per (run, holder).
pub const CREDENTIALS: StorageMap<(RunId, AccountId), u128> =
    StorageMap::new(PALLET, "Credentials");
/// Credentials ever minted per run (= balances + re-issue pool).
pub const CREDENTIAL_ISSUANCE: StorageMap<RunId, u128> =
    StorageMap::new(PALLET, "CredentialIssuance");
/// Redeemed credentials waiting to be re-issued to owners.
pub const REISSUE_POOL: StorageMap<RunId, u128> = StorageMap::new(PALLET, "ReissuePool");
/// The run's loss moving average × 10⁶.
pub const LOSS_EMA: StorageMap<RunId, u64> = StorageMap::new(PALLET, "LossEma");
/// Committed losses per (run, step).
pub const STEP_LOSS: StorageMap<(RunId, Step), StepLoss> = StorageMap::new(PALLET, "StepLoss");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Sends credentials of `run` to `dest`.
    #[codec(index = 0)]
    TransferCredentials {
        /// Run.
        run: RunId,
        /// Recipient.
        dest: AccountId,
        /// Amount.
        #[codec(compact)]
        amount: u128,
    },
    /// Redeems credentials for inference: burnt now, re-issued to the owners at the next epoch.
    #[codec(index = 1)]
    RedeemCredential {
        /// Run.
        run: RunId,
        /// Amount.
        #[codec(compact)]
        amount: u128,
        /// The inference request this pays for.
        request: Hash,
    },
    /// Sends ownership units of `run` to `dest`.
    #[codec(index = 2)]
    TransferUnits {
        /// Run.
        run: RunId,
        /// Recipient.
        dest: AccountId,
        /// Units.
        #[codec(compact)]
        amount: u128,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A step's contribution was credited.
    #[codec(index = 0)]
    Credited {
        /// Run.
        run: RunId,
        /// Trainer.
        who: AccountId,
        /// Step.
        step: Step,
        /// Units earned.
        units: u128,
    },
    /// Credentials were minted (new plus re-issued) to the owners.
    #[codec(index = 1)]
    CredentialsMinted {
        /// Run.
        run: RunId,
        /// Newly issued.
        minted: u128,
        /// Re-issued from redemptions.
        reissued: u128,
        /// Owners paid.
        owners: u32,
    },
    /// Credentials moved.
    #[codec(index = 2)]
    CredentialsTransferred {
        /// Run.
        run: RunId,
        /// Sender.
        from: AccountId,
        /// Recipient.
        to: AccountId,
        /// Amount.
        amount: u128,
    },
    /// Credentials were redeemed.
    #[codec(index = 3)]
    CredentialRedeemed {
        /// Run.
        run: RunId,
        /// Holder.
        who: AccountId,
        /// Amount.
        amount: u128,
        /// Request.
        request: Hash,
    },
    /// Units moved.
    #[codec(index = 4)]
    UnitsTransferred {
        /// Run.
        run: RunId,
        /// Sender.
        from: AccountId,
        /// Recipient.
        to: AccountId,
        /// Units.
        amount: u128,
    },
    /// A trainer caught cheating lost every unit it held in the run.
    #[codec(index = 5)]
    UnitsForfeited {
        /// Run.
        run: RunId,
        /// The trainer.
        who: AccountId,
        /// Units removed from it (and from the run's total).
        units: u128,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Not enough credentials or units.
    #[codec(index = 0)]
    #[error("Insufficient: not enough credentials or units")]
    Insufficient,
    /// Zero amount.
    #[codec(index = 1)]
    #[error("ZeroAmount: amount must be positive")]
    ZeroAmount,
    /// The run cannot serve inference now (halted, paused or not training).
    #[codec(index = 2)]
    #[error("NotServing: the run is halted, paused or not training")]
    NotServing,
    /// The run has too many owners for a new one.
    #[codec(index = 3)]
    #[error("TooManyOwners: the run has too many owners")]
    TooManyOwners,
    /// Overflow.
    #[codec(index = 4)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: Deposit<Event> {}
impl<T: Deposit<Event> + ?Sized> Sink for T {}

/// Parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// Units of `who` in `run`.
pub fn units(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    who: &AccountId,
) -> Result<u128, StorageError> {
    Ok(UNITS.get(s, &(run, *who))?.unwrap_or(0))
}

/// Total units of `run`.
pub fn total_units(s: &(impl StateReader + ?Sized), run: RunId) -> Result<u128, StorageError> {
    Ok(TOTAL_UNITS.get(s, &run)?.unwrap_or(0))
}

/// Owners of `run`.
pub fn owners(s: &(impl StateReader + ?Sized), run: RunId) -> Result<Vec<AccountId>, StorageError> {
    Ok(OWNERS.get(s, &run)?.unwrap_or_default())
}

/// Credentials of `who` in `run`.
pub fn credentials(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    who: &AccountId,
) -> Result<u128, StorageError> {
    Ok(CREDENTIALS.get(s, &(run, *who))?.unwrap_or(0))
}

/// Credentials ever issued for `run`.
pub fn credential_issuance(
    s: &(impl StateReader + ?Sized),
    run: RunId,
) -> Result<u128, StorageError> {
    Ok(CREDENTIAL_ISSUANCE.get(s, &run)?.unwrap_or(0))
}

/// Redeemed credentials of `run` waiting for re-issue.
pub fn reissue_pool(s: &(impl StateReader + ?Sized), run: RunId) -> Result<u128, StorageError> {
    Ok(REISSUE_POOL.get(s, &run)?.unwrap_or(0))
}

/// The owners' shares of `run`, summing to exactly one (largest remainder).
pub fn shares_of(
    s: &(impl StateReader + ?Sized),
    run: RunId,
) -> Result<Vec<(AccountId, Perbill)>, StorageError> {
    let mut w = Vec::new();
    for o in owners(s, run)? {
        w.push((o, units(s, run, &o)?));
    }
    Ok(shares(&w))
}

/// Units a credited step earns (the formula in the module docs).
pub fn step_units(risk: &runs::RiskSchedule, step: Step, loss: Option<StepLoss>) -> u128 {
    let early = if risk.early_horizon == 0 {
        0
    } else {
        let left = risk.early_horizon - step.min(risk.early_horizon);
        (risk.early_bonus.parts() as u128) * (left as u128) / (risk.early_horizon as u128)
    };
    let lossb = match loss {
        Some(l) if l.ema_before > 0 && l.loss < l.ema_before => {
            let r = ((l.ema_before - l.loss) as u128) * PPB / (l.ema_before as u128);
            let scaled = r.saturating_mul(risk.loss_gain as u128).min(PPB);
            (risk.loss_bonus.parts() as u128) * scaled / PPB
        }
        _ => 0,
    };
    (risk.base_units as u128).saturating_mul(PPB + early + lossb) / PPB
}

/// Records the loss the last stage committed for `step` (and updates the moving average).
pub fn record_loss(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    step: Step,
    loss: u64,
) -> Result<(), StorageError> {
    if STEP_LOSS.get(s, &(run, step))?.is_some() {
        return Ok(());
    }
    let ema = LOSS_EMA.get(s, &run)?;
    let ema_before = ema.unwrap_or(0);
    let next = match ema {
        None => loss,
        Some(e) => ((e as u128 * 7 + loss as u128) / 8) as u64,
    };
    LOSS_EMA.insert(s, &run, &next);
    STEP_LOSS.insert(s, &(run, step), &StepLoss { loss, ema_before });
    if step >= LOSS_HISTORY {
        STEP_LOSS.remove(s, &(run, step - LOSS_HISTORY));
    }
    Ok(())
}

/// Forgets the loss of `step` (its commitment was voided).
pub fn void_loss(s: &mut (impl Storage + ?Sized), run: RunId, step: Step) {
    STEP_LOSS.remove(s, &(run, step));
}

fn add_units(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    who: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    let u = units(s, run, who)?;
    let total = total_units(s, run)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    if u == 0 && amount > 0 {
        let mut o = owners(s, run)?;
        if let Err(i) = o.binary_search(who) {
            o.insert(i, *who);
            OWNERS.insert(s, &run, &o);
        }
    }
    UNITS.insert(
        s,
        &(run, *who),
        &u.checked_add(amount).ok_or(Error::Overflow)?,
    );
    TOTAL_UNITS.insert(s, &run, &total);
    Ok(())
}

/// Credits a verified (or unaudited) step of `who`.
pub fn credit(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    who: &AccountId,
    step: Step,
) -> Result<u128, Failure> {
    let r = runs::get(s, run)?;
    let loss = STEP_LOSS.get(s, &(run, step))?;
    let amount = step_units(&r.params.risk, step, loss);
    if amount > 0 {
        add_units(s, run, who, amount)?;
    }
    emit(
        ev,
        Event::Credited {
            run,
            who: *who,
            step,
            units: amount,
        },
    );
    Ok(amount)
}

/// Removes every unit `who` holds in `run` (a failed audit: the cheater loses its whole
/// contribution, not only the failed step). The units leave the total, so every other
/// owner's share grows in proportion. Returns the units removed.
pub fn forfeit(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    who: &AccountId,
) -> Result<u128, Failure> {
    let u = units(s, run, who)?;
    if u == 0 {
        return Ok(0);
    }
    let total = total_units(s, run)?.saturating_sub(u);
    UNITS.remove(s, &(run, *who));
    TOTAL_UNITS.insert(s, &run, &total);
    let mut o = owners(s, run)?;
    o.retain(|x| x != who);
    OWNERS.insert(s, &run, &o);
    emit(
        ev,
        Event::UnitsForfeited {
            run,
            who: *who,
            units: u,
        },
    );
    Ok(u)
}

/// `transfer_units`.
pub fn transfer_units(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    from: &AccountId,
    to: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    if amount == 0 {
        return Err(Error::ZeroAmount.into());
    }
    let have = units(s, run, from)?;
    let left = have.checked_sub(amount).ok_or(Error::Insufficient)?;
    if from == to {
        return Ok(());
    }
    let mut o = owners(s, run)?;
    if let Err(i) = o.binary_search(to) {
        if o.len() >= config(s)?.max_owners_per_run as usize && left > 0 {
            return Err(Error::TooManyOwners.into());
        }
        o.insert(i, *to);
    }
    if left == 0 {
        o.retain(|x| x != from);
        UNITS.remove(s, &(run, *from));
    } else {
        UNITS.insert(s, &(run, *from), &left);
    }
    OWNERS.insert(s, &run, &o);
    let dest = units(s, run, to)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    UNITS.insert(s, &(run, *to), &dest);
    emit(
        ev,
        Event::UnitsTransferred {
            run,
            from: *from,
            to: *to,
            amount,
        },
    );
    Ok(())
}

pub(crate) fn set_credentials(
    s: &mut (impl Storage + ?Sized),
    run: RunId,
    who: &AccountId,
    v: u128,
) {
    if v == 0 {
        CREDENTIALS.remove(s, &(run, *who));
    } else {
        CREDENTIALS.insert(s, &(run, *who), &v);
    }
}

/// `transfer_credentials`.
pub fn transfer_credentials(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    from: &AccountId,
    to: &AccountId,
    amount: u128,
) -> Result<(), Failure> {
    if amount == 0 {
        return Err(Error::ZeroAmount.into());
    }
    let left = credentials(s, run, from)?
        .checked_sub(amount)
        .ok_or(Error::Insufficient)?;
    if from != to {
        let dest = credentials(s, run, to)?
            .checked_add(amount)
            .ok_or(Error::Overflow)?;
        set_credentials(s, run, from, left);
        set_credentials(s, run, to, dest);
    }
    emit(
        ev,
        Event::CredentialsTransferred {
            run,
            from: *from,
            to: *to,
            amount,
        },
    );
    Ok(())
}

/// `redeem_credential`.
pub fn redeem_credential(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    who: &AccountId,
    amount: u128,
    request: Hash,
) -> Result<(), Failure> {
    if amount == 0 {
        return Err(Error::ZeroAmount.into());
    }
    if !runs::get(s, run)?.is_training() {
        return Err(Error::NotServing.into());
    }
    let left = credentials(s, run, who)?
        .checked_sub(amount)
        .ok_or(Error::Insufficient)?;
    reissue_pool(s, run)?
        .checked_add(amount)
        .ok_or(Error::Overflow)?;
    escrow::add_to_pool(s, run, amount)?;
    set_credentials(s, run, who, left);
    emit(
        ev,
        Event::CredentialRedeemed {
            run,
            who: *who,
            amount,
            request,
        },
    );
    Ok(())
}

/// Epoch boundary for one run: mints `credentials_per_epoch` and re-issues the pool to the
/// owners (nothing while halted or ownerless). A finished run mints nothing but still has its
/// pool re-issued (the runtime calls this for [`finished_pooled_runs`]).
pub fn mint_epoch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
) -> Result<(), Failure> {
    let r = runs::get(s, run)?;
    if r.status == runs::RunStatus::Halted {
        return Ok(());
    }
    let total = total_units(s, run)?;
    if total == 0 {
        return Ok(());
    }
    let minted = if r.status == runs::RunStatus::Finished {
        0
    } else {
        r.params.credentials_per_epoch
    };
    let reissued = reissue_pool(s, run)?;
    let amount = minted.checked_add(reissued).ok_or(Error::Overflow)?;
    if amount == 0 {
        return Ok(());
    }
    let mut weights = Vec::new();
    for o in owners(s, run)? {
        weights.push((o, units(s, run, &o)?));
    }
    let owners_paid = weights.len() as u32;
    for (who, part) in largest_remainder(amount, &weights) {
        if part > 0 {
            let v = credentials(s, run, &who)?
                .checked_add(part)
                .ok_or(Error::Overflow)?;
            set_credentials(s, run, &who, v);
        }
    }
    escrow::clear_pool(s, run)?;
    let issuance = credential_issuance(s, run)?
        .checked_add(minted)
        .ok_or(Error::Overflow)?;
    CREDENTIAL_ISSUANCE.insert(s, &run, &issuance);
    emit(
        ev,
        Event::CredentialsMinted {
            run,
            minted,
            reissued,
            owners: owners_paid,
        },
    );
    Ok(())
}

/// Genesis: parameters.
pub fn build_genesis(s: &mut (impl Storage + ?Sized), cfg: &Config) {
    CONFIG.put(s, cfg);
}

/// Dispatches a call signed by `origin`.
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    _now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::TransferCredentials { run, dest, amount } => {
            transfer_credentials(s, ev, *run, origin, dest, *amount)
        }
        Call::RedeemCredential {
            run,
            amount,
            request,
        } => redeem_credential(s, ev, *run, origin, *amount, *request),
        Call::TransferUnits { run, dest, amount } => {
            transfer_units(s, ev, *run, origin, dest, *amount)
        }
    }
}

pub mod escrow;
pub use escrow::{
    charge_escrow, escrow_credentials, escrowed, finished_pooled_runs, pooled_runs, release_escrow,
    ESCROWED, POOLED_RUNS,
};

#[cfg(test)]
mod tests;
