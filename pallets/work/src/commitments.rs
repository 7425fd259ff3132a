//! Commitments: `commit_step` (the checks a step must pass, the ids and queues it is filed
//! under) and the status changes of a commitment once it is past selection or audit
//! (credited, voided, inconclusive). See the crate docs, "Commitments".

use crate::{
    next_step, pipeline, replicas, CommitStatus, Commitment, CommittedLoss, ComputeClass, Error,
    Event, Round, Sink, StepRoots, StepSeals, COMMITMENTS, NEXT_ID, NEXT_STEP, SELECTION_QUEUE,
    STEP_COMMITMENT,
};
use weft_pallet_ownership as ownership;
use weft_pallet_runs as runs;
use weft_pallet_stages as stages;
use weft_pallet_staking as staking;
use weft_pallet_support::Perbill;
use weft_pallet_support::{emit, CommitmentId, Failure, Replica, RunId, StageIndex, Step};
use weft_primitives::storage::{Storage, StorageError, StorageMap};
use weft_primitives::{AccountId, BlockNumber};

pub(crate) fn push_queue(
    s: &mut (impl Storage + ?Sized),
    q: &StorageMap<BlockNumber, Vec<CommitmentId>>,
    at: BlockNumber,
    id: CommitmentId,
) -> Result<(), StorageError> {
    let mut v = q.get(s, &at)?.unwrap_or_default();
    v.push(id);
    q.insert(s, &at, &v);
    Ok(())
}

/// `commit_step`: the checks in the crate docs ("Commitments"), in this order: the run, the
/// slot, the step, the loss, the round (`BadRound`), continuity, the seals (pipeline and
/// update seals, `BadSeal`); nothing is written before all pass. Then the commitment is
/// stored and queued for selection, and compared with its neighbours' (`pipeline`) and the
/// other replicas' (`replicas`: sealed updates, then `weights_after`).
#[allow(clippy::too_many_arguments)]
pub fn commit_step(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
    roots: StepRoots,
    loss: Option<CommittedLoss>,
    compute: ComputeClass,
    seals: StepSeals,
    round: Option<Round>,
) -> Result<CommitmentId, Failure> {
    let r = runs::get(s, run)?;
    if !r.is_training() {
        return Err(Error::RunNotTraining.into());
    }
    if stage >= r.stages || replica >= r.replicas {
        return Err(Error::BadSlot.into());
    }
    if stages::slot(s, run, stage, replica)? != Some(*who) {
        return Err(Error::NotAssigned.into());
    }
    let next = next_step(s, run, stage, replica)?;
    if step < next {
        return Err(Error::AlreadyCommitted.into());
    }
    if step > next {
        return Err(Error::OutOfOrder.into());
    }
    if step >= r.step_limit() {
        return Err(Error::StepLimit.into());
    }
    let last = stage + 1 == r.stages;
    if last != loss.is_some() {
        return Err(Error::LossMismatch.into());
    }
    replicas::check_round(&r, replica, &roots, round.as_ref())?;
    // Continuity, for every step and whoever commits it: the slot's state is handed on,
    // never invented (a root comparison, not a sampled audit).
    if let Some(before) = step.checked_sub(1) {
        let previous = match STEP_COMMITMENT.get(s, &(run, stage, replica, before))? {
            Some(id) => COMMITMENTS.get(s, &id)?,
            None => None,
        };
        if let Some(p) = previous {
            if p.roots.weights_after != roots.weights_before
                || p.roots.optimizer_after != roots.optimizer_before
            {
                return Err(Error::Discontinuous.into());
            }
        }
    }
    let (input_seal, output_grad_seal) =
        pipeline::verify_seals(s, run, r.stages, stage, replica, step, &roots, seals)?;
    let round = replicas::verify_round(s, run, stage, step, round)?;
    let id = NEXT_ID.get(s)?.unwrap_or(0);
    NEXT_ID.put(s, &id.checked_add(1).ok_or(Error::Overflow)?);
    NEXT_STEP.insert(
        s,
        &(run, stage, replica),
        &step.checked_add(1).ok_or(Error::Overflow)?,
    );
    let c = Commitment {
        run,
        stage,
        replica,
        step,
        trainer: *who,
        roots,
        loss,
        compute,
        input_seal,
        output_grad_seal,
        round,
        block: now,
        status: CommitStatus::Committed,
    };
    COMMITMENTS.insert(s, &id, &c);
    STEP_COMMITMENT.insert(s, &(run, stage, replica, step), &id);
    let at = now
        .checked_add(r.params.selection_delay.max(1) as BlockNumber)
        .ok_or(Error::Overflow)?;
    push_queue(s, &SELECTION_QUEUE, at, id)?;
    if let Some(l) = loss {
        ownership::record_loss(s, run, step, l)?;
    }
    emit(
        ev,
        Event::StepCommitted {
            id,
            run,
            stage,
            replica,
            step,
            trainer: *who,
        },
    );
    pipeline::cross_check(s, ev, now, id, &c)?;
    replicas::check_updates(s, ev, now, &r, id, &c)?;
    replicas::compare(s, ev, &r, id, &c)?;
    Ok(id)
}

pub(crate) fn set_status(
    s: &mut (impl Storage + ?Sized),
    id: CommitmentId,
    c: &mut Commitment,
    status: CommitStatus,
) {
    c.status = status;
    COMMITMENTS.insert(s, &id, c);
}

pub(crate) fn credit(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: CommitmentId,
    c: &mut Commitment,
) -> Result<(), Failure> {
    ownership::credit(s, ev, c.run, &c.trainer, c.step)?;
    set_status(s, id, c, CommitStatus::Credited);
    Ok(())
}

pub(crate) fn void(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: CommitmentId,
    c: &mut Commitment,
    status: CommitStatus,
) {
    if c.loss.is_some() {
        ownership::void_loss(s, c.run, c.step);
    }
    set_status(s, id, c, status);
    if status == CommitStatus::Voided {
        emit(ev, Event::StepVoided { id });
    }
}

/// The punishment of a trainer caught cheating (a failed audit, a contradicted seal):
/// `fraction` of its stake slashed (deferred, see staking), chilled and removed from its
/// stages, and every contribution unit it holds in `run` forfeited.
#[allow(clippy::too_many_arguments)]
pub(crate) fn punish(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    trainer: &AccountId,
    run: RunId,
    fraction: Perbill,
    reporter: Option<AccountId>,
    kind: staking::OffenceKind,
) -> Result<(), Failure> {
    staking::report_offence(s, ev, now, trainer, fraction, reporter, kind)?;
    stages::remove_account(s, ev, trainer)?;
    ownership::forfeit(s, ev, run, trainer)?;
    Ok(())
}
