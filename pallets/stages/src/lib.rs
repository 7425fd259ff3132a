//! # Stages
//!
//! Who trains which `(run, stage, replica)` slot, and which validators audit which stages.
//!
//! ## Joining and leaving
//!
//! A registered trainer (staking `train`) calls `join_run` to become a *candidate* of a run
//! (at most `max_candidates_per_run` per run, at most `max_runs_per_trainer` runs per
//! trainer) and `leave_run` to stop. Neither changes the current assignment: slots change
//! only at epoch boundaries, so a pipeline never loses a stage mid-epoch because someone left.
//! A slash is the exception: an offender is removed from every slot and auditor set at once
//! ([`remove_account`]) and a run whose stage loses its last trainer pauses immediately.
//!
//! ## Trainer assignment (each epoch boundary, per run)
//!
//! 1. **Keep** every holder that is still an eligible candidate (still joined, still a
//!    trainer, active bond ≥ the trainer minimum): a stage's weights live with its trainer,
//!    so stability matters. Release the other slots.
//! 2. **Rank** the eligible candidates by active stake (descending), then declared capacity
//!    (descending), then account id.
//! 3. **Fill empty stages first**: repeatedly take the stage with the fewest filled replicas
//!    (ties: lowest index) that still has an empty slot, and give its lowest empty replica to
//!    the best-ranked candidate that (a) holds fewer than `max_stages_per_account` slots of
//!    this run — the **unextractability cap**, (b) serves fewer slots over all runs than its
//!    capacity, (c) does not already hold another replica of that stage and (d) does not audit
//!    that stage. A stage no candidate can take is skipped. At most `stages × replicas`
//!    iterations, each scanning at most `max_candidates_per_run` candidates.
//! 4. The run is **paused** iff some stage has no trainer. A `Pending` run starts `Training`
//!    only once **every slot** (each replica of each stage) is filled: replicas of a stage
//!    start together from the public initialisation, and no trainer is left holding a
//!    replica whose pipeline partners never came (a replica that starts without them could
//!    only wait). Once training, a stage that keeps at least one replica keeps the run going.
//!
//! ## Auditor assignment
//!
//! Auditors are the validators of the epoch's active set. Existing auditors that are still
//! active are kept. Then each stage (fewest auditors first) is topped up to
//! `auditors_per_stage` from the active set in a per-epoch shuffled order (sorted by
//! `blake3(randomness ‖ run ‖ account)`), skipping validators that already audit
//! `max_stages_per_auditor` stages of the run or that train that stage. Since
//! `max_stages_per_auditor < stages`, no validator receives the reveals of a whole model in an
//! epoch; keeping assignments stable keeps it that way across epochs too.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weft_pallet_runs as runs;
use weft_pallet_staking as staking;
use weft_pallet_support::{emit, index, randomness, Deposit, Failure, Replica, RunId, StageIndex};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber, Hash};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Stages";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::STAGES;

/// Parameters, set at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Most candidates per run.
    pub max_candidates_per_run: u32,
    /// Most runs a trainer may join.
    pub max_runs_per_trainer: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_candidates_per_run: 256,
            max_runs_per_trainer: 8,
        }
    }
}

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// Candidates per run, sorted.
pub const CANDIDATES: StorageMap<RunId, Vec<AccountId>> = StorageMap::new(PALLET, "Candidates");
/// Runs each trainer joined, sorted.
pub const TRAINER_RUNS: StorageMap<AccountId, Vec<RunId>> = StorageMap::new(PALLET, "TrainerRuns");
/// The trainer of each slot.
pub const SLOT: StorageMap<(RunId, StageIndex, Replica), AccountId> =
    StorageMap::new(PALLET, "Slot");
/// The slots each account holds in a run.
pub const HELD: StorageMap<(RunId, AccountId), Vec<(StageIndex, Replica)>> =
    StorageMap::new(PALLET, "Held");
/// Slots each account holds over all runs.
pub const LOAD: StorageMap<AccountId, u32> = StorageMap::new(PALLET, "Load");
/// Auditors of each stage.
pub const AUDITORS: StorageMap<(RunId, StageIndex), Vec<AccountId>> =
    StorageMap::new(PALLET, "Auditors");
/// Stages each validator audits in a run.
pub const AUDITED: StorageMap<(RunId, AccountId), Vec<StageIndex>> =
    StorageMap::new(PALLET, "Audited");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Becomes a candidate of `run` (assigned at the next epoch boundary).
    #[codec(index = 0)]
    JoinRun {
        /// The run.
        run: RunId,
    },
    /// Stops being a candidate (slots released at the next epoch boundary).
    #[codec(index = 1)]
    LeaveRun {
        /// The run.
        run: RunId,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A trainer joined a run's candidates.
    #[codec(index = 0)]
    Joined {
        /// Run.
        run: RunId,
        /// Trainer.
        who: AccountId,
    },
    /// A trainer left a run's candidates.
    #[codec(index = 1)]
    Left {
        /// Run.
        run: RunId,
        /// Trainer.
        who: AccountId,
    },
    /// A slot was assigned.
    #[codec(index = 2)]
    Assigned {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Replica.
        replica: Replica,
        /// Trainer.
        who: AccountId,
    },
    /// A slot was released.
    #[codec(index = 3)]
    Unassigned {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Replica.
        replica: Replica,
        /// Trainer.
        who: AccountId,
    },
    /// A validator was assigned to audit a stage.
    #[codec(index = 4)]
    AuditorAssigned {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Validator.
        who: AccountId,
    },
    /// A validator stopped auditing a stage.
    #[codec(index = 5)]
    AuditorRemoved {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Validator.
        who: AccountId,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Not a registered trainer.
    #[codec(index = 0)]
    #[error("NotTrainer: the account is not a registered trainer")]
    NotTrainer,
    /// Already a candidate.
    #[codec(index = 1)]
    #[error("AlreadyJoined: already a candidate of this run")]
    AlreadyJoined,
    /// Not a candidate.
    #[codec(index = 2)]
    #[error("NotJoined: not a candidate of this run")]
    NotJoined,
    /// The run has too many candidates, or the trainer joined too many runs.
    #[codec(index = 3)]
    #[error("TooMany: too many candidates in the run or runs for the trainer")]
    TooMany,
    /// The run is finished.
    #[codec(index = 4)]
    #[error("RunFinished: the run is finished")]
    RunFinished,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: staking::Sink + runs::Sink + Deposit<Event> {}
impl<T: staking::Sink + runs::Sink + Deposit<Event> + ?Sized> Sink for T {}

/// Parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// The trainer of a slot.
pub fn slot(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replica: Replica,
) -> Result<Option<AccountId>, StorageError> {
    SLOT.get(s, &(run, stage, replica))
}

/// The auditors of a stage.
pub fn auditors(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
) -> Result<Vec<AccountId>, StorageError> {
    Ok(AUDITORS.get(s, &(run, stage))?.unwrap_or_default())
}

/// The candidates of a run.
pub fn candidates(
    s: &(impl StateReader + ?Sized),
    run: RunId,
) -> Result<Vec<AccountId>, StorageError> {
    Ok(CANDIDATES.get(s, &run)?.unwrap_or_default())
}

/// The slots `who` holds in `run`.
pub fn held(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    who: &AccountId,
) -> Result<Vec<(StageIndex, Replica)>, StorageError> {
    Ok(HELD.get(s, &(run, *who))?.unwrap_or_default())
}

/// `join_run`.
pub fn join_run(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    run: RunId,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let r = runs::get(s, run)?;
    if r.status == runs::RunStatus::Finished {
        return Err(Error::RunFinished.into());
    }
    if staking::trainer(s, who)?.is_none() {
        return Err(Error::NotTrainer.into());
    }
    let mut c = candidates(s, run)?;
    let Err(i) = c.binary_search(who) else {
        return Err(Error::AlreadyJoined.into());
    };
    let mut mine = TRAINER_RUNS.get(s, who)?.unwrap_or_default();
    if c.len() >= cfg.max_candidates_per_run as usize
        || mine.len() >= cfg.max_runs_per_trainer as usize
    {
        return Err(Error::TooMany.into());
    }
    c.insert(i, *who);
    CANDIDATES.insert(s, &run, &c);
    if let Err(j) = mine.binary_search(&run) {
        mine.insert(j, run);
    }
    TRAINER_RUNS.insert(s, who, &mine);
    emit(ev, Event::Joined { run, who: *who });
    Ok(())
}

fn drop_candidate(
    s: &mut (impl Storage + ?Sized),
    who: &AccountId,
    run: RunId,
) -> Result<bool, StorageError> {
    let mut c = candidates(s, run)?;
    let Ok(i) = c.binary_search(who) else {
        return Ok(false);
    };
    c.remove(i);
    CANDIDATES.insert(s, &run, &c);
    let mut mine = TRAINER_RUNS.get(s, who)?.unwrap_or_default();
    mine.retain(|r| *r != run);
    if mine.is_empty() {
        TRAINER_RUNS.remove(s, who);
    } else {
        TRAINER_RUNS.insert(s, who, &mine);
    }
    Ok(true)
}

/// `leave_run`.
pub fn leave_run(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    run: RunId,
) -> Result<(), Failure> {
    if !drop_candidate(s, who, run)? {
        return Err(Error::NotJoined.into());
    }
    emit(ev, Event::Left { run, who: *who });
    Ok(())
}

fn unassign(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    who: &AccountId,
) -> Result<(), StorageError> {
    SLOT.remove(s, &(run, stage, replica));
    let mut h = held(s, run, who)?;
    h.retain(|x| *x != (stage, replica));
    if h.is_empty() {
        HELD.remove(s, &(run, *who));
    } else {
        HELD.insert(s, &(run, *who), &h);
    }
    let load = LOAD.get(s, who)?.unwrap_or(0).saturating_sub(1);
    if load == 0 {
        LOAD.remove(s, who);
    } else {
        LOAD.insert(s, who, &load);
    }
    emit(
        ev,
        Event::Unassigned {
            run,
            stage,
            replica,
            who: *who,
        },
    );
    Ok(())
}

fn assign(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    who: &AccountId,
) -> Result<(), StorageError> {
    SLOT.insert(s, &(run, stage, replica), who);
    let mut h = held(s, run, who)?;
    h.push((stage, replica));
    h.sort();
    HELD.insert(s, &(run, *who), &h);
    let load = LOAD.get(s, who)?.unwrap_or(0).saturating_add(1);
    LOAD.insert(s, who, &load);
    emit(
        ev,
        Event::Assigned {
            run,
            stage,
            replica,
            who: *who,
        },
    );
    Ok(())
}

fn stage_filled(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replicas: u16,
) -> Result<u16, StorageError> {
    let mut n = 0;
    for r in 0..replicas {
        if SLOT.get(s, &(run, stage, r))?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Pauses the run if some stage has no trainer, unpauses it otherwise, and starts a pending
/// run whose every slot is filled.
pub fn refresh_pause(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
) -> Result<(), Failure> {
    let r = runs::get(s, run)?;
    let mut empty = false;
    let mut full = true;
    for st in 0..r.stages {
        let n = stage_filled(s, run, st, r.replicas)?;
        empty |= n == 0;
        full &= n == r.replicas;
    }
    runs::set_paused(s, ev, run, empty)?;
    if full && r.status == runs::RunStatus::Pending {
        runs::set_status(s, ev, run, runs::RunStatus::Training)?;
    }
    Ok(())
}

struct Cand {
    who: AccountId,
    stake: Balance,
    capacity: u32,
    load: u32,
    in_run: u32,
    stages: Vec<StageIndex>,
}

/// Epoch-boundary assignment of trainers and auditors for one run (see the module docs).
pub fn assign_run(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    seed: &Hash,
) -> Result<(), Failure> {
    let r = runs::get(s, run)?;
    if r.status == runs::RunStatus::Finished {
        return Ok(());
    }
    let p = &r.params;
    let min_bond = staking::config(s)?.min_trainer_bond;
    // Eligible candidates.
    let mut eligible: BTreeMap<AccountId, (Balance, u32)> = BTreeMap::new();
    for who in candidates(s, run)? {
        let Some(t) = staking::trainer(s, &who)? else {
            continue;
        };
        let stake = staking::active_stake(s, &who)?;
        if stake >= min_bond && stake > 0 {
            eligible.insert(who, (stake, t.capacity));
        }
    }
    // 1. Keep eligible holders, release the rest.
    for st in 0..r.stages {
        for rep in 0..r.replicas {
            if let Some(h) = SLOT.get(s, &(run, st, rep))? {
                if !eligible.contains_key(&h) {
                    unassign(s, ev, run, st, rep, &h)?;
                }
            }
        }
    }
    // 2. Rank.
    let mut cands: Vec<Cand> = Vec::with_capacity(eligible.len());
    for (who, (stake, capacity)) in &eligible {
        let h = held(s, run, who)?;
        cands.push(Cand {
            who: *who,
            stake: *stake,
            capacity: *capacity,
            load: LOAD.get(s, who)?.unwrap_or(0),
            in_run: h.len() as u32,
            stages: h.iter().map(|(st, _)| *st).collect(),
        });
    }
    cands.sort_by(|a, b| {
        b.stake
            .cmp(&a.stake)
            .then(b.capacity.cmp(&a.capacity))
            .then(a.who.cmp(&b.who))
    });
    // 3. Fill empty stages first.
    let mut filled: Vec<u16> = Vec::with_capacity(r.stages as usize);
    for st in 0..r.stages {
        filled.push(stage_filled(s, run, st, r.replicas)?);
    }
    let mut stuck = vec![false; r.stages as usize];
    let cap = p.max_stages_per_account as u32;
    loop {
        let next = (0..r.stages as usize)
            .filter(|i| !stuck[*i] && filled[*i] < r.replicas)
            .min_by_key(|i| (filled[*i], *i));
        let Some(i) = next else { break };
        let st = i as StageIndex;
        let auditors_here = auditors(s, run, st)?;
        let pick = cands.iter().position(|c| {
            c.in_run < cap
                && c.load < c.capacity
                && !c.stages.contains(&st)
                && !auditors_here.contains(&c.who)
        });
        let Some(ci) = pick else {
            stuck[i] = true;
            continue;
        };
        let mut rep = 0;
        while rep < r.replicas && SLOT.get(s, &(run, st, rep))?.is_some() {
            rep += 1;
        }
        let c = &mut cands[ci];
        assign(s, ev, run, st, rep, &c.who)?;
        c.in_run += 1;
        c.load += 1;
        c.stages.push(st);
        filled[i] += 1;
    }
    // 4. Pause or start.
    refresh_pause(s, ev, run)?;
    assign_auditors(s, ev, run, &r, seed)?;
    Ok(())
}

fn assign_auditors(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: RunId,
    r: &runs::RunInfo,
    seed: &Hash,
) -> Result<(), Failure> {
    let p = &r.params;
    let set = staking::active_set(s)?;
    let active: Vec<AccountId> = set.iter().map(|v| v.account).collect();
    let mut counts: BTreeMap<AccountId, u32> = BTreeMap::new();
    let mut per_stage: Vec<Vec<AccountId>> = Vec::with_capacity(r.stages as usize);
    for st in 0..r.stages {
        let mut a = auditors(s, run, st)?;
        let before = a.clone();
        a.retain(|x| active.contains(x));
        for gone in before.iter().filter(|x| !a.contains(x)) {
            AUDITED.remove(s, &(run, *gone));
            emit(
                ev,
                Event::AuditorRemoved {
                    run,
                    stage: st,
                    who: *gone,
                },
            );
        }
        for x in &a {
            *counts.entry(*x).or_insert(0) += 1;
        }
        per_stage.push(a);
    }
    let mut order: Vec<(u64, AccountId)> = active
        .iter()
        .map(|a| {
            let mut subject = run.to_le_bytes().to_vec();
            subject.extend_from_slice(&a.0);
            (randomness::draw_u64(seed, &subject), *a)
        })
        .collect();
    order.sort();
    let mut stage_order: Vec<usize> = (0..r.stages as usize).collect();
    stage_order.sort_by_key(|i| (per_stage[*i].len(), *i));
    for i in stage_order {
        let st = i as StageIndex;
        for (_, v) in &order {
            if per_stage[i].len() >= p.auditors_per_stage as usize {
                break;
            }
            let n = counts.get(v).copied().unwrap_or(0);
            if n >= p.max_stages_per_auditor as u32 || per_stage[i].contains(v) {
                continue;
            }
            if held(s, run, v)?.iter().any(|(hs, _)| *hs == st) {
                continue;
            }
            per_stage[i].push(*v);
            counts.insert(*v, n + 1);
            emit(
                ev,
                Event::AuditorAssigned {
                    run,
                    stage: st,
                    who: *v,
                },
            );
        }
    }
    // Write back both indexes.
    let mut audited: BTreeMap<AccountId, Vec<StageIndex>> = BTreeMap::new();
    for (i, a) in per_stage.iter().enumerate() {
        let mut sorted = a.clone();
        sorted.sort();
        if sorted.is_empty() {
            AUDITORS.remove(s, &(run, i as StageIndex));
        } else {
            AUDITORS.insert(s, &(run, i as StageIndex), &sorted);
        }
        for x in a {
            audited.entry(*x).or_default().push(i as StageIndex);
        }
    }
    for v in &active {
        match audited.get(v) {
            Some(st) => AUDITED.insert(s, &(run, *v), st),
            None => AUDITED.remove(s, &(run, *v)),
        }
    }
    Ok(())
}

/// Removes `who` (slashed) from every run: candidacies, slots and auditor sets; runs left
/// with an empty stage pause at once.
pub fn remove_account(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
) -> Result<(), Failure> {
    for run in runs::active_runs(s)? {
        if drop_candidate(s, who, run)? {
            emit(ev, Event::Left { run, who: *who });
        }
        let h = held(s, run, who)?;
        for (st, rep) in &h {
            unassign(s, ev, run, *st, *rep, who)?;
        }
        if let Some(stages) = AUDITED.get(s, &(run, *who))? {
            AUDITED.remove(s, &(run, *who));
            for st in stages {
                let mut a = auditors(s, run, st)?;
                a.retain(|x| x != who);
                AUDITORS.insert(s, &(run, st), &a);
                emit(
                    ev,
                    Event::AuditorRemoved {
                        run,
                        stage: st,
                        who: *who,
                    },
                );
            }
        }
        if !h.is_empty() {
            refresh_pause(s, ev, run)?;
        }
    }
    Ok(())
}

/// Genesis: parameters.
pub fn build_genesis(s: &mut (impl Storage + ?Sized), cfg: &Config) {
    CONFIG.put(s, cfg);
}

/// Dispatches a call signed by `origin` in block `_now` (the signature every pallet's
/// `dispatch` has; no stages call depends on the block).
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    _now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::JoinRun { run } => join_run(s, ev, origin, *run),
        Call::LeaveRun { run } => leave_run(s, ev, origin, *run),
    }
}

#[cfg(test)]
mod tests;
