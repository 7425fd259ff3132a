//! # Governance
//!
//! Stake-weighted decisions about runs — the protocol's off switch for a model nobody owns
//! alone (the "No-Off problem") — and about deferred slashes.
//!
//! ## Proposals
//!
//! Any account with an active bond may `propose` an action, reserving `proposal_deposit`
//! (returned when the proposal passes or expires):
//!
//! | action | passes when aye stake exceeds | enacted |
//! |---|---|---|
//! | `HaltRun` | the run's `halt_threshold` (e.g. 1/3) of all active stake | `enactment_delay` blocks after passing |
//! | `ResumeRun` | the run's `resume_threshold` (e.g. 2/3) | after the delay |
//! | `SetRunParams` | the run's `resume_threshold` | after the delay |
//! | `CancelSlash` | `cancel_slash_threshold` (e.g. 1/2) | at once, so it lands inside the slash deferral |
//!
//! The runs pallet guarantees `halt_threshold ≤ resume_threshold`: **stopping is never harder
//! than starting**. Votes are weighed when tallied, by the voter's *current* active bond,
//! against the current total active bond; a voter who unbonds loses its weight, so stake
//! cannot vote and then walk away. The tally runs on every vote (bounded by `max_voters`);
//! a proposal that has not passed when its `voting_period` ends expires. `nay` votes are
//! recorded for the record; they do not subtract (the thresholds are of all stake).
//!
//! ## Emergency halt
//!
//! Validators of the current epoch's set may call `emergency_halt(run)`. When the validators
//! that called it hold more than `emergency_threshold` (default 2/3) of the set's stake, the
//! run halts in that very block — no voting period, no delay. Resuming always goes through a
//! proposal.
//!
//! ## Block hook
//!
//! At block start the hook expires the proposals whose voting ended with the previous block
//! and enacts those due now. It takes each queue entry out of storage and keeps that removal;
//! each proposal is then processed in its own nested transaction
//! (`weft_pallet_support::transactional_item`). One that fails with a dispatch error
//! (inconsistent state, e.g. a deposit its proposer no longer has reserved) has its writes
//! and events rolled back and is recorded as `ExpiryFailed` (it stays `Voting`) or
//! `EnactmentAborted` (it stays `Passed`); it is not retried, and the other proposals go on.
//! (A failing *action* is not such a failure: the proposal is marked `EnactmentFailed`.) A
//! storage fault aborts the hook.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_balances as balances;
use weft_pallet_runs as runs;
use weft_pallet_staking as staking;
use weft_pallet_support::{
    emit, index, transactional_item, Deposit, Failure, Perbill, ProposalId, Rewind, RunId, SlashId,
    Transactional,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::units::UNIT;
use weft_primitives::{AccountId, Balance, BlockNumber, DispatchError};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Governance";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::GOVERNANCE;

/// Parameters, set at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Blocks a proposal is open for votes.
    pub voting_period: BlockNumber,
    /// Blocks from passing to enactment (run actions).
    pub enactment_delay: BlockNumber,
    /// Deposit reserved by the proposer.
    #[serde(with = "runs::balance_string")]
    pub proposal_deposit: Balance,
    /// Most voters per proposal.
    pub max_voters: u32,
    /// Share of active stake that cancels a deferred slash.
    pub cancel_slash_threshold: Perbill,
    /// Share of the validator set's stake that halts a run at once.
    pub emergency_threshold: Perbill,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            voting_period: 20,
            enactment_delay: 5,
            proposal_deposit: 10 * UNIT,
            max_voters: 512,
            cancel_slash_threshold: Perbill::from_percent(50),
            emergency_threshold: Perbill::from_rational(2, 3),
        }
    }
}

/// What a proposal does.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Halt a run: training and inference stop.
    #[codec(index = 0)]
    HaltRun {
        /// Run.
        run: RunId,
    },
    /// Resume a halted run.
    #[codec(index = 1)]
    ResumeRun {
        /// Run.
        run: RunId,
    },
    /// Replace a run's parameters.
    #[codec(index = 2)]
    SetRunParams {
        /// Run.
        run: RunId,
        /// New parameters.
        params: runs::RunParams,
    },
    /// Cancel a deferred slash.
    #[codec(index = 3)]
    CancelSlash {
        /// Slash.
        slash: SlashId,
    },
}

/// Where a proposal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProposalStatus {
    /// Open for votes.
    #[codec(index = 0)]
    Voting,
    /// Passed; enacted at this block.
    #[codec(index = 1)]
    Passed {
        /// Enactment block.
        enact_at: BlockNumber,
    },
    /// Did not pass in time.
    #[codec(index = 2)]
    Expired,
    /// Enacted.
    #[codec(index = 3)]
    Enacted,
    /// Enactment failed (e.g. the run had already moved on).
    #[codec(index = 4)]
    EnactmentFailed,
}

/// A proposal.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    /// Proposer.
    pub proposer: AccountId,
    /// Action.
    pub action: Action,
    /// Reserved deposit.
    pub deposit: Balance,
    /// Voting ends after this block.
    pub end: BlockNumber,
    /// Votes (`true` = aye).
    pub votes: Vec<(AccountId, bool)>,
    /// Status.
    pub status: ProposalStatus,
}

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// Proposals.
pub const PROPOSALS: StorageMap<ProposalId, Proposal> = StorageMap::new(PALLET, "Proposals");
/// The next proposal id.
pub const NEXT_ID: StorageValue<ProposalId> = StorageValue::new(PALLET, "NextId");
/// Proposals by the block after which voting ends.
pub const ENDS: StorageMap<BlockNumber, Vec<ProposalId>> = StorageMap::new(PALLET, "Ends");
/// Passed proposals by enactment block.
pub const ENACTMENTS: StorageMap<BlockNumber, Vec<ProposalId>> =
    StorageMap::new(PALLET, "Enactments");
/// Validators calling for an emergency halt of a run.
pub const EMERGENCY: StorageMap<RunId, Vec<AccountId>> = StorageMap::new(PALLET, "Emergency");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Opens a proposal.
    #[codec(index = 0)]
    Propose {
        /// What it does.
        action: Action,
    },
    /// Votes (again) on a proposal.
    #[codec(index = 1)]
    Vote {
        /// Proposal.
        proposal: ProposalId,
        /// Aye?
        aye: bool,
    },
    /// A validator's call to halt a run at once.
    #[codec(index = 2)]
    EmergencyHalt {
        /// Run.
        run: RunId,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A proposal was opened.
    #[codec(index = 0)]
    Proposed {
        /// Id.
        proposal: ProposalId,
        /// Proposer.
        proposer: AccountId,
        /// Action.
        action: Action,
        /// Voting ends after this block.
        end: BlockNumber,
    },
    /// A vote was cast.
    #[codec(index = 1)]
    Voted {
        /// Proposal.
        proposal: ProposalId,
        /// Voter.
        who: AccountId,
        /// Aye?
        aye: bool,
        /// Aye stake after the vote.
        ayes: Balance,
        /// All active stake.
        total: Balance,
    },
    /// A proposal passed.
    #[codec(index = 2)]
    Passed {
        /// Proposal.
        proposal: ProposalId,
        /// Enactment block.
        enact_at: BlockNumber,
    },
    /// A proposal expired.
    #[codec(index = 3)]
    Expired {
        /// Proposal.
        proposal: ProposalId,
    },
    /// A proposal was enacted.
    #[codec(index = 4)]
    Enacted {
        /// Proposal.
        proposal: ProposalId,
    },
    /// A proposal's enactment failed.
    #[codec(index = 5)]
    EnactmentFailed {
        /// Proposal.
        proposal: ProposalId,
        /// Why.
        error: DispatchError,
    },
    /// A validator called for an emergency halt.
    #[codec(index = 6)]
    EmergencyVote {
        /// Run.
        run: RunId,
        /// Validator.
        who: AccountId,
        /// Stake calling so far.
        stake: Balance,
        /// The set's stake.
        total: Balance,
    },
    /// A run was halted by emergency vote.
    #[codec(index = 7)]
    EmergencyHalted {
        /// Run.
        run: RunId,
    },
    /// A proposal whose voting ended could not be expired; its writes and events were rolled
    /// back and it stays `Voting` (it is not expired again).
    #[codec(index = 8)]
    ExpiryFailed {
        /// Proposal.
        proposal: ProposalId,
        /// Why.
        error: DispatchError,
    },
    /// A proposal due for enactment could not be processed at all (as opposed to
    /// `EnactmentFailed`, where its action failed and it was marked so); its writes and events
    /// were rolled back and it stays `Passed` (it is not enacted again).
    #[codec(index = 9)]
    EnactmentAborted {
        /// Proposal.
        proposal: ProposalId,
        /// Why.
        error: DispatchError,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// The signer has no active bond.
    #[codec(index = 0)]
    #[error("NotStaked: only bonded accounts propose and vote")]
    NotStaked,
    /// No such proposal.
    #[codec(index = 1)]
    #[error("UnknownProposal: no such proposal")]
    UnknownProposal,
    /// The proposal is not open for votes.
    #[codec(index = 2)]
    #[error("NotVoting: the proposal is not open for votes")]
    NotVoting,
    /// Too many voters.
    #[codec(index = 3)]
    #[error("TooManyVoters: the proposal has too many voters")]
    TooManyVoters,
    /// The signer is not in the current validator set.
    #[codec(index = 4)]
    #[error("NotValidator: only validators of the current set may call an emergency halt")]
    NotValidator,
    /// The run cannot be halted (already halted or finished).
    #[codec(index = 5)]
    #[error("NotHaltable: the run is already halted or finished")]
    NotHaltable,
    /// The action's target does not exist.
    #[codec(index = 6)]
    #[error("BadTarget: the run or slash does not exist")]
    BadTarget,
    /// Overflow.
    #[codec(index = 7)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: staking::Sink + runs::Sink + Deposit<Event> {}
impl<T: staking::Sink + runs::Sink + Deposit<Event> + ?Sized> Sink for T {}

/// Parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// The proposal `id`.
pub fn proposal(
    s: &(impl StateReader + ?Sized),
    id: ProposalId,
) -> Result<Option<Proposal>, StorageError> {
    PROPOSALS.get(s, &id)
}

fn threshold(s: &(impl StateReader + ?Sized), action: &Action) -> Result<Perbill, Failure> {
    Ok(match action {
        Action::HaltRun { run } => runs::get(s, *run)?.params.halt_threshold,
        Action::ResumeRun { run } | Action::SetRunParams { run, .. } => {
            runs::get(s, *run)?.params.resume_threshold
        }
        Action::CancelSlash { .. } => config(s)?.cancel_slash_threshold,
    })
}

fn push(
    s: &mut (impl Storage + ?Sized),
    q: &StorageMap<BlockNumber, Vec<ProposalId>>,
    at: BlockNumber,
    id: ProposalId,
) -> Result<(), StorageError> {
    let mut v = q.get(s, &at)?.unwrap_or_default();
    v.push(id);
    q.insert(s, &at, &v);
    Ok(())
}

/// `propose`.
pub fn propose(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
    action: Action,
) -> Result<ProposalId, Failure> {
    let cfg = config(s)?;
    if staking::active_stake(s, who)? == 0 {
        return Err(Error::NotStaked.into());
    }
    match &action {
        Action::HaltRun { run } | Action::ResumeRun { run } => {
            runs::run(s, *run)?.ok_or(Error::BadTarget)?;
        }
        Action::SetRunParams { run, params } => {
            let r = runs::run(s, *run)?.ok_or(Error::BadTarget)?;
            runs::check_params(params, r.stages)?;
        }
        Action::CancelSlash { slash } => {
            staking::pending_slash(s, *slash)?.ok_or(Error::BadTarget)?;
        }
    }
    balances::reserve(s, ev, who, cfg.proposal_deposit)?;
    let id = NEXT_ID.get(s)?.unwrap_or(0);
    NEXT_ID.put(s, &id.checked_add(1).ok_or(Error::Overflow)?);
    let end = now.checked_add(cfg.voting_period).ok_or(Error::Overflow)?;
    let p = Proposal {
        proposer: *who,
        action: action.clone(),
        deposit: cfg.proposal_deposit,
        end,
        votes: Vec::new(),
        status: ProposalStatus::Voting,
    };
    PROPOSALS.insert(s, &id, &p);
    push(s, &ENDS, end, id)?;
    emit(
        ev,
        Event::Proposed {
            proposal: id,
            proposer: *who,
            action,
            end,
        },
    );
    Ok(id)
}

/// `vote`: records the vote, tallies, and passes (or enacts) the proposal when it crosses its
/// threshold.
pub fn vote(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
    id: ProposalId,
    aye: bool,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let mut p = PROPOSALS.get(s, &id)?.ok_or(Error::UnknownProposal)?;
    if p.status != ProposalStatus::Voting || now > p.end {
        return Err(Error::NotVoting.into());
    }
    if staking::active_stake(s, who)? == 0 {
        return Err(Error::NotStaked.into());
    }
    match p.votes.iter_mut().find(|(v, _)| v == who) {
        Some(v) => v.1 = aye,
        None => {
            if p.votes.len() >= cfg.max_voters as usize {
                return Err(Error::TooManyVoters.into());
            }
            p.votes.push((*who, aye));
        }
    }
    let mut ayes: Balance = 0;
    for (v, a) in &p.votes {
        if *a {
            ayes = ayes.saturating_add(staking::active_stake(s, v)?);
        }
    }
    let total = staking::total_active(s)?;
    emit(
        ev,
        Event::Voted {
            proposal: id,
            who: *who,
            aye,
            ayes,
            total,
        },
    );
    if threshold(s, &p.action)?.is_exceeded_by(ayes, total) {
        let delay = match p.action {
            Action::CancelSlash { .. } => 0,
            _ => cfg.enactment_delay,
        };
        let enact_at = now.saturating_add(delay);
        p.status = ProposalStatus::Passed { enact_at };
        balances::unreserve(s, ev, &p.proposer, p.deposit)?;
        PROPOSALS.insert(s, &id, &p);
        emit(
            ev,
            Event::Passed {
                proposal: id,
                enact_at,
            },
        );
        if delay == 0 {
            enact(s, ev, id)?;
        } else {
            push(s, &ENACTMENTS, enact_at, id)?;
        }
        return Ok(());
    }
    PROPOSALS.insert(s, &id, &p);
    Ok(())
}

fn apply_action(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    action: &Action,
) -> Result<(), Failure> {
    match action {
        Action::HaltRun { run } => runs::set_status(s, ev, *run, runs::RunStatus::Halted),
        Action::ResumeRun { run } => runs::set_status(s, ev, *run, runs::RunStatus::Training),
        Action::SetRunParams { run, params } => runs::set_params(s, ev, *run, params.clone()),
        Action::CancelSlash { slash } => staking::cancel_slash(s, ev, *slash),
    }
}

/// Enacts a passed proposal. The actions check before they write, so a failed one changes
/// nothing but the proposal's status.
fn enact(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: ProposalId,
) -> Result<(), Failure> {
    let Some(mut p) = PROPOSALS.get(s, &id)? else {
        return Ok(());
    };
    match apply_action(s, ev, &p.action) {
        Ok(()) => {
            p.status = ProposalStatus::Enacted;
            emit(ev, Event::Enacted { proposal: id });
        }
        Err(Failure::Dispatch(error)) => {
            p.status = ProposalStatus::EnactmentFailed;
            emit(
                ev,
                Event::EnactmentFailed {
                    proposal: id,
                    error,
                },
            );
        }
        Err(e) => return Err(e),
    }
    PROPOSALS.insert(s, &id, &p);
    Ok(())
}

/// `emergency_halt`.
pub fn emergency_halt(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    run: RunId,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let r = runs::get(s, run)?;
    if !matches!(
        r.status,
        runs::RunStatus::Pending | runs::RunStatus::Training
    ) {
        return Err(Error::NotHaltable.into());
    }
    let set = staking::active_set(s)?;
    if !set.iter().any(|v| v.account == *who) {
        return Err(Error::NotValidator.into());
    }
    let mut callers = EMERGENCY.get(s, &run)?.unwrap_or_default();
    if let Err(i) = callers.binary_search(who) {
        callers.insert(i, *who);
    }
    let total: Balance = set.iter().fold(0u128, |t, v| t.saturating_add(v.stake));
    let stake: Balance = set
        .iter()
        .filter(|v| callers.binary_search(&v.account).is_ok())
        .fold(0u128, |t, v| t.saturating_add(v.stake));
    emit(
        ev,
        Event::EmergencyVote {
            run,
            who: *who,
            stake,
            total,
        },
    );
    if cfg.emergency_threshold.is_exceeded_by(stake, total) {
        EMERGENCY.remove(s, &run);
        runs::set_status(s, ev, run, runs::RunStatus::Halted)?;
        emit(ev, Event::EmergencyHalted { run });
    } else {
        EMERGENCY.insert(s, &run, &callers);
    }
    Ok(())
}

/// Expires proposal `id` if it is still voting.
fn expire(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: ProposalId,
) -> Result<(), Failure> {
    let Some(mut p) = PROPOSALS.get(s, &id)? else {
        return Ok(());
    };
    if p.status == ProposalStatus::Voting {
        p.status = ProposalStatus::Expired;
        balances::unreserve(s, ev, &p.proposer, p.deposit)?;
        PROPOSALS.insert(s, &id, &p);
        emit(ev, Event::Expired { proposal: id });
    }
    Ok(())
}

/// Block start: expires proposals whose voting ended and enacts those due, each proposal in
/// its own transaction (a failing one is recorded as [`Event::ExpiryFailed`] or
/// [`Event::EnactmentAborted`]; see the module docs).
pub fn on_initialize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
) -> Result<(), Failure> {
    // Voting on proposals with `end = now − 1` closed with the previous block.
    if let Some(prev) = now.checked_sub(1) {
        if let Some(q) = ENDS.get(s, &prev)? {
            ENDS.remove(s, &prev);
            for id in q {
                if let Err(error) = transactional_item(s, ev, |s, ev| expire(s, ev, id))? {
                    emit(
                        ev,
                        Event::ExpiryFailed {
                            proposal: id,
                            error,
                        },
                    );
                }
            }
        }
    }
    if let Some(q) = ENACTMENTS.get(s, &now)? {
        ENACTMENTS.remove(s, &now);
        for id in q {
            if let Err(error) = transactional_item(s, ev, |s, ev| enact(s, ev, id))? {
                emit(
                    ev,
                    Event::EnactmentAborted {
                        proposal: id,
                        error,
                    },
                );
            }
        }
    }
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
    now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::Propose { action } => propose(s, ev, now, origin, action.clone()).map(|_| ()),
        Call::Vote { proposal, aye } => vote(s, ev, now, origin, *proposal, *aye),
        Call::EmergencyHalt { run } => emergency_halt(s, ev, origin, *run),
    }
}

#[cfg(test)]
mod tests;
