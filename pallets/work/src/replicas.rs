//! Replicas that average: the chain's checks that the replicas of a stage end every step with
//! the same weights, and that each aggregated the updates the others sent.
//!
//! A run whose `hyper_params.replica_sync` averages
//! ([`ReplicaSync::averages`](crate::ReplicaSync::averages)) has the `R` replicas of each
//! stage exchange their updates after every backward pass and apply the same aggregate, so
//! replica `r` and replica `r'` of a stage hold bitwise the same weights after every step.
//! Each commitment carries the root of the update it sent (`StepRoots::update`) and its
//! [`Round`]: the replicas it aggregated (`included`, a bitmap) and, for every included
//! replica but its own, that replica's update as it received it: the root and the sender's
//! seal over it (`received`; `weft_primitives::replicas`). The sender of replica `j` of stage
//! `k` signs `seal_message(run, step, k, j, Direction::Update, root)` with its p2p key.
//!
//! **The round** ([`check_round`], at commit, before anything is written; else `BadRound`
//! and nothing changes):
//!
//! * replicas that average: the round is present, `included` names at least one replica,
//!   and only replicas below the run's replica count; `received` is strictly ascending by
//!   replica, names only included replicas other than the committing one, and every one of
//!   them (`received.len() == included.count() − [own replica included]`);
//! * replicas that train apart: no round, and the `update` root is zero.
//!
//! **The seals** ([`verify_round`], at commit, reads only; else `BadSeal`): each received
//! entry's signature must verify, as a pipeline seal does (`pipeline::sealed_by`), against
//! the peer id of one of the accounts that can have sent replica `j`'s update of step `t`:
//! the account that committed `j`'s step `t`, or, before anyone has, the holder of slot
//! `(run, stage, j)`; and, failing those, an account that committed one of `j`'s steps
//! `t − 1 … t − SEALER_LOOKBACK` ([`SEALER_LOOKBACK`] = 8): a holder that sealed its update of
//! `t` and vanished before committing it, whose slot a spare has taken since (a trainer runs at
//! most its backlog, 4 steps by default, ahead of its last commitment). The commitment stores
//! each entry with the account whose seal it is ([`VerifiedUpdate`]). An entry whose first
//! possible sender has no trainer record any more and whose seal none of the others made is
//! kept unverified (`by` = `None`): nobody can be convicted by it.
//!
//! **The contradiction** ([`check_updates`], right after the commitment is stored and the
//! pipeline check has run, in either commit order): for every pair where replica `r`'s
//! commitment of a step holds a received update from replica `j` and `j`'s commitment of the
//! same step exists and is not voided, `j`'s committed `update` root must be the sealed root.
//! When it is not, `j` sent one update and committed another, and the chain emits
//! `ReplicaUpdateContradiction { run, stage, step, replica: j, by }`:
//!
//! * the seal is by the account that committed `j`'s step: it contradicted its own signature;
//!   it is punished as a failed audit (`commitments::punish`, offence
//!   `ReplicaContradiction`), its commitment is void, and `by` names it;
//! * the seal is by an earlier holder of slot `j` (it sealed, left before committing, and its
//!   successor computed the step again differently): nobody provably lied, `by` is `None`.
//!
//! The receiver's own status does not matter (the evidence is the sender's signature), and a
//! sender convicted once for a step is not punished again for it. A receiver cannot frame an
//! honest sender: the entry's signature was verified at commit over the root it names, and an
//! honest sender commits the root it sealed.
//!
//! **The comparison** ([`compare`], after the contradiction check): for every other replica
//! `r'` of the same `(run, stage)`, in order `0 … R − 1`, that has a commitment of the same
//! step which is not voided, the two `weights_after` roots must be equal. When they differ the
//! replicas diverged: the chain emits `ReplicasDiverged { run, stage, step, replicas: (low,
//! high) }` and marks both commitments in [`FORCED_AUDITS`], so that each is audited in its
//! selection block whatever the draw (`audits::select_one` takes the mark). Which of the two
//! is wrong the roots cannot tell; the audits can. The comparison runs when the later of the
//! two commitments lands, in either order, for every step (a root comparison, not a sampled
//! audit). A commitment that the pipeline or the contradiction check has just voided is not
//! compared: its trainer is already punished.
//!
//! **The limit.** Only a commitment still waiting for its selection (`Committed`) can be
//! forced. One already audited needs no mark; one already past selection (credited, voided,
//! inconclusive) cannot be audited any more, so when replica `r'` commits its step more than
//! `selection_delay` blocks after replica `r`, only `r'` is audited. Replicas of a stage that
//! average exchange their updates within the step, so honest ones commit a step within a
//! block or two of each other. The contradiction check has no such limit: it voids the
//! liar's commitment whatever its status.

use crate::pipeline::{committed, sealed_by, sender_of};
use crate::{CommitStatus, Commitment, Error, Event, Round, Sink, StepRoots};
use crate::{VerifiedRound, VerifiedUpdate, COMMITMENTS, FORCED_AUDITS, STEP_COMMITMENT};
use weft_pallet_runs as runs;
use weft_pallet_staking as staking;
use weft_pallet_support::{emit, CommitmentId, Failure, Replica, RunId, StageIndex, Step};
use weft_primitives::seal::Direction;
use weft_primitives::storage::{StateReader, Storage};
use weft_primitives::{AccountId, BlockNumber, Hash};

/// Whether the round and `update` root of replica `replica`'s commitment fit the run's
/// replica sync (see the module docs).
pub(crate) fn check_round(
    run: &runs::RunInfo,
    replica: Replica,
    roots: &StepRoots,
    round: Option<&Round>,
) -> Result<(), Error> {
    let fits = if run.hyper_params.replica_sync.averages() {
        round.is_some_and(|round| {
            let included = round.included;
            let others = included
                .count()
                .saturating_sub(u32::from(included.contains(replica)));
            included.count() > 0
                && included.within(run.replicas)
                && round
                    .received
                    .windows(2)
                    .all(|w| w[0].replica < w[1].replica)
                && round
                    .received
                    .iter()
                    .all(|e| e.replica != replica && included.contains(e.replica))
                && round.received.len() == others as usize
        })
    } else {
        round.is_none() && roots.update == Hash::ZERO
    };
    if fits {
        Ok(())
    } else {
        Err(Error::BadRound)
    }
}

/// How many earlier steps of a slot [`update_sealers`] looks through for a holder that
/// sealed an update and vanished before committing it (see the module docs).
pub const SEALER_LOOKBACK: Step = 8;

/// The accounts that can have sealed replica `replica`'s update of `step`, in the order they
/// are tried: `answering`, the one that answers for the step (`pipeline::sender_of`), then
/// every other account that committed one of the slot's steps `step − 1 …
/// step − SEALER_LOOKBACK`, latest first (see the module docs). Reads only.
fn update_sealers(
    s: &(impl StateReader + ?Sized),
    (run, stage, replica, step): (RunId, StageIndex, Replica, Step),
    answering: Option<AccountId>,
) -> Result<Vec<AccountId>, Failure> {
    let mut out: Vec<AccountId> = answering.into_iter().collect();
    for earlier in (step.saturating_sub(SEALER_LOOKBACK)..step).rev() {
        if let Some((_, c)) = committed(s, run, stage, replica, earlier)? {
            if !out.contains(&c.trainer) {
                out.push(c.trainer);
            }
        }
    }
    Ok(out)
}

/// The round of the commitment of `(run, stage, step)` with each received update's seal
/// verified against the sending replica's trainer (see the module docs); `BadSeal` when one
/// does not verify. Reads only; `check_round` has accepted the round.
pub(crate) fn verify_round(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    step: Step,
    round: Option<Round>,
) -> Result<Option<VerifiedRound>, Failure> {
    let Some(round) = round else {
        return Ok(None);
    };
    let mut received = Vec::with_capacity(round.received.len());
    for e in round.received {
        let slot = (run, stage, e.replica, step);
        let answering = sender_of(s, run, stage, e.replica, step)?;
        let mut by = None;
        for who in update_sealers(s, slot, answering)? {
            if sealed_by(s, &who, slot, Direction::Update, &e.root, e.signature)? {
                by = Some(who);
                break;
            }
        }
        // A sender with no trainer to answer for it (chilled since it sent, its slot empty)
        // cannot be checked, nor punished: its entry is kept unverified, so that the
        // replicas that aggregated its update can still commit the step.
        let answerable = match answering {
            Some(who) => staking::trainer(s, &who)?.is_some(),
            None => false,
        };
        if by.is_none() && answerable {
            return Err(Error::BadSeal.into());
        }
        received.push(VerifiedUpdate {
            replica: e.replica,
            root: e.root,
            signature: e.signature,
            by,
        });
    }
    Ok(Some(VerifiedRound {
        included: round.included,
        received,
    }))
}

/// Compares commitment `id` (just stored) with the other replicas' commitments of the same
/// stage and step, in both roles: the updates it received against what their senders
/// committed, and what the others received from it against its own `update` root; punishes
/// whoever contradicted its own seal (see the module docs).
pub(crate) fn check_updates(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    run: &runs::RunInfo,
    id: CommitmentId,
    c: &Commitment,
) -> Result<(), Failure> {
    if !run.hyper_params.replica_sync.averages() {
        return Ok(());
    }
    // (the sender's commitment, an update received from it)
    let mut evidence: Vec<(CommitmentId, VerifiedUpdate)> = Vec::new();
    // As the receiver: the updates this commitment aggregated.
    for e in c.round.iter().flat_map(|round| &round.received) {
        if let Some(sender) = STEP_COMMITMENT.get(s, &(c.run, c.stage, e.replica, c.step))? {
            evidence.push((sender, *e));
        }
    }
    // As the sender: what the other replicas received from this one.
    for other in 0..run.replicas {
        if other == c.replica {
            continue;
        }
        let Some((_, theirs)) = committed(s, c.run, c.stage, other, c.step)? else {
            continue;
        };
        let from_me = theirs
            .round
            .iter()
            .flat_map(|round| &round.received)
            .find(|e| e.replica == c.replica);
        if let Some(e) = from_me {
            evidence.push((id, *e));
        }
    }
    for (sender_id, e) in evidence {
        // Read again: the pipeline check or an earlier entry may have voided it.
        let Some(mut sender) = COMMITMENTS.get(s, &sender_id)? else {
            continue;
        };
        if sender.status == CommitStatus::Voided || sender.roots.update == e.root {
            continue;
        }
        // An unverified entry is no evidence.
        let Some(by) = e.by else {
            continue;
        };
        let liar = (by == sender.trainer).then_some(sender.trainer);
        emit(
            ev,
            Event::ReplicaUpdateContradiction {
                run: c.run,
                stage: c.stage,
                step: c.step,
                replica: e.replica,
                by: liar,
            },
        );
        let Some(liar) = liar else {
            continue;
        };
        crate::commitments::punish(
            s,
            ev,
            now,
            &liar,
            c.run,
            run.params.trainer_slash,
            None,
            staking::OffenceKind::ReplicaContradiction,
        )?;
        crate::commitments::void(s, ev, sender_id, &mut sender, CommitStatus::Voided);
    }
    Ok(())
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
    // The pipeline or the contradiction check may have voided this commitment just now.
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
