//! A run finishes when its last step is settled everywhere (see the crate docs, "Finishing").

use crate::{CommitStatus, Sink, AUDITS, COMMITMENTS, STEP_COMMITMENT};
use weft_pallet_runs as runs;
use weft_pallet_support::{CommitmentId, Failure, RunId};
use weft_primitives::storage::{StateReader, Storage, StorageError};

/// Whether commitment `id` is past its audit: credited, voided or inconclusive, and its
/// audit (if it was selected) closed at its attestation deadline.
pub fn is_settled(s: &(impl StateReader + ?Sized), id: CommitmentId) -> Result<bool, StorageError> {
    let Some(c) = COMMITMENTS.get(s, &id)? else {
        return Ok(false);
    };
    let past = matches!(
        c.status,
        CommitStatus::Credited | CommitStatus::Voided | CommitStatus::Inconclusive
    );
    Ok(past && AUDITS.get(s, &id)?.is_none_or(|a| a.closed))
}

/// Whether every `(stage, replica)` slot of `run` has committed the run's last step and
/// each of those commitments is settled.
pub fn last_step_settled(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    r: &runs::RunInfo,
) -> Result<bool, StorageError> {
    let Some(last) = r.final_steps().checked_sub(1) else {
        return Ok(false);
    };
    for stage in 0..r.stages {
        for replica in 0..r.replicas {
            match STEP_COMMITMENT.get(s, &(run, stage, replica, last))? {
                Some(id) if is_settled(s, id)? => {}
                _ => return Ok(false),
            }
        }
    }
    Ok(true)
}

/// After commitment `id` was selected or its audit closed: when it is a last step, finishes
/// its run if the run is training and its last step is settled everywhere.
pub fn after_settlement(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: CommitmentId,
) -> Result<(), Failure> {
    let Some(c) = COMMITMENTS.get(s, &id)? else {
        return Ok(());
    };
    let Some(r) = runs::run(s, c.run)? else {
        return Ok(());
    };
    if r.status != runs::RunStatus::Training || c.step.saturating_add(1) != r.final_steps() {
        return Ok(());
    }
    if last_step_settled(s, c.run, &r)? {
        // The epoch the run finishes in was trained too: its owners get that epoch's
        // credentials now, pro rata to the units just credited (a finished run leaves the
        // active runs, so no later boundary would mint them).
        weft_pallet_ownership::mint_epoch(s, ev, c.run)?;
        runs::set_status(s, ev, c.run, runs::RunStatus::Finished)?;
    }
    Ok(())
}
