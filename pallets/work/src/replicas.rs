//! Replicas that average: the chain's check that the replicas of a stage end every step with
//! the same weights.
//!
//! A run whose `hyper_params.replica_sync` averages
//! ([`ReplicaSync::averages`](crate::ReplicaSync::averages)) has the `R` replicas of each
//! stage exchange their updates after every backward pass and apply the same aggregate, so
//! replica `r` and replica `r'` of a stage hold bitwise the same weights after every step. Each commitment names the replicas it aggregated (`included`, a bitmap) and
//! carries the root of the update it sent (`StepRoots::update`).
//!
//! **The round** ([`check_round`], at commit, before anything is written; else `BadRound`
//! and nothing changes):
//!
//! * replicas that average: `included` is `Some`, names at least one replica, and only
//!   replicas below the run's replica count;
//! * replicas that train apart: `included` is `None` and the `update` root is zero.
//!
//! **The comparison** ([`compare`], right after the commitment is stored and the pipeline
//! check has run): for every other replica `r'` of the same `(run, stage)`, in order
//! `0 … R − 1`, that has a commitment of the same step which is not voided, the two
//! `weights_after` roots must be equal. When they differ the replicas diverged: the chain
//! emits `ReplicasDiverged { run, stage, step, replicas: (low, high) }` and marks both
//! commitments in [`FORCED_AUDITS`], so that each is audited in its selection block whatever
//! the draw (`audits::select_one` takes the mark). Which of the two is wrong the roots cannot
//! tell; the audits can. The comparison runs when the later of the two commitments lands, in
//! either order, for every step (a root comparison, not a sampled audit). A commitment that
//! the pipeline check has just voided is not compared: its trainer is already punished.
//!
//! **The limit.** Only a commitment still waiting for its selection (`Committed`) can be
//! forced. One already audited needs no mark; one already past selection (credited, voided,
//! inconclusive) cannot be audited any more, so when replica `r'` commits its step more than
//! `selection_delay` blocks after replica `r`, only `r'` is audited. Replicas of a stage that
//! average exchange their updates within the step, so honest ones commit a step within a
//! block or two of each other.

use crate::{CommitStatus, Commitment, Error, Event, Included, Sink, StepRoots};
use crate::{COMMITMENTS, FORCED_AUDITS, STEP_COMMITMENT};
use weft_pallet_runs as runs;
use weft_pallet_support::{emit, CommitmentId, Failure};
use weft_primitives::storage::Storage;
use weft_primitives::Hash;

/// Whether a commitment's `included` and `update` root fit the run's replica sync (see the
/// module docs).
pub(crate) fn check_round(
    run: &runs::RunInfo,
    roots: &StepRoots,
    included: Option<Included>,
) -> Result<(), Error> {
    let fits = if run.hyper_params.replica_sync.averages() {
        included.is_some_and(|set| set.count() > 0 && set.within(run.replicas))
    } else {
        included.is_none() && roots.update == Hash::ZERO
    };
    if fits {
        Ok(())
    } else {
        Err(Error::BadRound)
    }
}

/// Marks commitment `id` for a forced audit if it still waits for its selection.
fn force(s: &mut (impl Storage + ?Sized), id: CommitmentId, c: &Commitment) {
    if c.status == CommitStatus::Committed {
        FORCED_AUDITS.insert(s, &id, &());
    }
}

/// Compares commitment `id` (just stored) with the other replicas' commitments of the same
/// stage and step, and forces audits of the ones that diverged (see the module docs).
pub(crate) fn compare(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    run: &runs::RunInfo,
    id: CommitmentId,
    c: &Commitment,
) -> Result<(), Failure> {
    if !run.hyper_params.replica_sync.averages() {
        return Ok(());
    }
    // The pipeline check may have voided this commitment just now.
    let Some(me) = COMMITMENTS.get(s, &id)? else {
        return Ok(());
    };
    if me.status == CommitStatus::Voided {
        return Ok(());
    }
    let mut diverged = false;
    for other in 0..run.replicas {
        if other == c.replica {
            continue;
        }
        let Some(other_id) = STEP_COMMITMENT.get(s, &(c.run, c.stage, other, c.step))? else {
            continue;
        };
        let Some(theirs) = COMMITMENTS.get(s, &other_id)? else {
            continue;
        };
        if theirs.status == CommitStatus::Voided
            || theirs.roots.weights_after == me.roots.weights_after
        {
            continue;
        }
        emit(
            ev,
            Event::ReplicasDiverged {
                run: c.run,
                stage: c.stage,
                step: c.step,
                replicas: (other.min(c.replica), other.max(c.replica)),
            },
        );
        force(s, other_id, &theirs);
        diverged = true;
    }
    if diverged {
        force(s, id, &me);
    }
    Ok(())
}
