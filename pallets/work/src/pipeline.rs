//! Pipeline consistency: what a stage received in a step is what its neighbour sent.
//!
//! Replica `r` of stage `k` trains with replica `r` of stages `k − 1` and `k + 1`. For each
//! step, two pairs of roots must agree across each boundary `k → k + 1`:
//!
//! ```text
//! activations   outputs(k)       == inputs(k + 1)
//! gradients     input_grads(k+1) == output_grads(k)
//! ```
//!
//! **Seals** (`weft_primitives::seal`). A receiver's commitment carries its senders' seals:
//! the previous stage's ed25519 signature (by the p2p identity of its trainer record) over
//! the `inputs` root, the next stage's over the `output_grads` root. A seal is verified at
//! commit against the account that committed the sender's step, or, before it has, the
//! slot's current holder; one that does not verify is refused (`BadSeal`) and a seal where
//! the stage has no such neighbour too. The verified seal is stored with its signer.
//!
//! **The comparison** runs whenever the second commitment of a boundary lands, in either
//! order, for every step (not a sampled audit). When the roots differ, somebody lied, and
//! the seal decides who:
//!
//! * the receiver holds a seal by the sender's committer over the root it committed: the
//!   sender signed one root and committed another, and **the sender** is slashed;
//! * the receiver holds no seal for it: it committed what nobody can be shown to have sent,
//!   and **the receiver** is slashed (an honest trainer never commits without the seal);
//! * the seal is by an earlier holder of the sender's slot (the step was sealed, the holder
//!   left before committing it, and its successor computed it again differently): nobody is
//!   provably at fault, and the chain records `PipelineInconsistent` only.
//!
//! The slash is that of a failed audit (the run's `trainer_slash`, chilled, removed from its
//! stages, its units in the run forfeited), and the liar's commitment of the step is void.
//!
//! [`verify_seal`] is the one verification of a seal against its sender, for these seals and
//! for the update seals of replicas that average (`Direction::Update`, the `replicas`
//! module), which never appear in [`StepSeals`].

use crate::{Commitment, CommitmentId, Error, Event, Seal, Sink, COMMITMENTS, STEP_COMMITMENT};
use weft_pallet_runs as runs;
use weft_pallet_stages as stages;
use weft_pallet_staking as staking;
use weft_pallet_support::{emit, Failure, Replica, RunId, StageIndex, Step};
use weft_primitives::seal::{seal_message, verify_by_peer_id, Direction, SealSignature, StepSeals};
use weft_primitives::storage::{StateReader, Storage, StorageError};
use weft_primitives::{AccountId, BlockNumber, Hash};

/// The commitment of `(run, stage, replica, step)`, whatever its status.
pub(crate) fn committed(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
) -> Result<Option<(CommitmentId, Commitment)>, StorageError> {
    let Some(id) = STEP_COMMITMENT.get(s, &(run, stage, replica, step))? else {
        return Ok(None);
    };
    Ok(COMMITMENTS.get(s, &id)?.map(|c| (id, c)))
}

/// Who answers for what slot `(run, stage, replica)` sent in `step`: the account that
/// committed the step, or, before anyone has, the slot's holder.
pub(crate) fn sender_of(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
) -> Result<Option<AccountId>, Failure> {
    if let Some((_, c)) = committed(s, run, stage, replica, step)? {
        return Ok(Some(c.trainer));
    }
    Ok(stages::slot(s, run, stage, replica)?)
}

/// `signature` verified as the seal of slot `(run, from_stage, replica)` over `root`, what it
/// sent in `step` in `direction`: a signature of [`seal_message`] by the p2p key (the peer id
/// of its trainer record) of the account that answers for the slot's step (its committer,
/// else the slot's holder). `BadSeal` when there is no such account, it has no trainer
/// record, or the signature does not verify. Reads only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify_seal(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    from_stage: StageIndex,
    replica: Replica,
    step: Step,
    direction: Direction,
    root: &Hash,
    signature: SealSignature,
) -> Result<Seal, Failure> {
    let by = sender_of(s, run, from_stage, replica, step)?.ok_or(Error::BadSeal)?;
    if !sealed_by(
        s,
        &by,
        (run, from_stage, replica, step),
        direction,
        root,
        signature,
    )? {
        return Err(Error::BadSeal.into());
    }
    Ok(Seal { by, signature })
}

/// Whether `signature` is `by`'s seal of slot `(run, from_stage, replica)` over `root`, what
/// it sent in `step` in `direction` (by the p2p key of its trainer record; `false` when it
/// has none). Reads only.
pub(crate) fn sealed_by(
    s: &(impl StateReader + ?Sized),
    by: &AccountId,
    (run, from_stage, replica, step): (RunId, StageIndex, Replica, Step),
    direction: Direction,
    root: &Hash,
    signature: SealSignature,
) -> Result<bool, Failure> {
    let Some(record) = staking::trainer(s, by)? else {
        return Ok(false);
    };
    let message = seal_message(run, step, from_stage, replica, direction, root);
    Ok(verify_by_peer_id(&record.peer_id, &message, &signature))
}

/// One pipeline seal of a commitment being made, verified: `from_stage`'s seal over `root`.
#[allow(clippy::too_many_arguments)]
fn verify_one(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    from_stage: Option<StageIndex>,
    replica: Replica,
    step: Step,
    direction: Direction,
    root: &Hash,
    signature: Option<SealSignature>,
) -> Result<Option<Seal>, Failure> {
    let Some(signature) = signature else {
        return Ok(None);
    };
    // A seal from a neighbour the stage does not have.
    let from_stage = from_stage.ok_or(Error::BadSeal)?;
    verify_seal(
        s, run, from_stage, replica, step, direction, root, signature,
    )
    .map(Some)
}

/// The seals of the commitment of `(run, stage, replica, step)` with `roots`, verified
/// (see the module docs): `(inputs seal, output gradients seal)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify_seals(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    n_stages: StageIndex,
    stage: StageIndex,
    replica: Replica,
    step: Step,
    roots: &crate::StepRoots,
    seals: StepSeals,
) -> Result<(Option<Seal>, Option<Seal>), Failure> {
    let previous = stage.checked_sub(1);
    let next = stage.checked_add(1).filter(|n| *n < n_stages);
    let inputs = verify_one(
        s,
        run,
        previous,
        replica,
        step,
        Direction::Activations,
        &roots.inputs,
        seals.inputs,
    )?;
    let grads = verify_one(
        s,
        run,
        next,
        replica,
        step,
        Direction::Gradients,
        &roots.output_grads,
        seals.output_grads,
    )?;
    Ok((inputs, grads))
}

/// Who lied across one boundary in one direction, if the roots differ: `None` when they
/// agree, `Some(None)` when they differ and nobody is provably at fault. `Update` crosses no
/// boundary (the replicas' own check, see the `replicas` module): `None`.
fn liar(
    sender: &Commitment,
    receiver: &Commitment,
    direction: Direction,
) -> Option<Option<AccountId>> {
    let (sent, received, seal) = match direction {
        Direction::Activations => (
            sender.roots.outputs,
            receiver.roots.inputs,
            receiver.input_seal,
        ),
        Direction::Gradients => (
            sender.roots.input_grads,
            receiver.roots.output_grads,
            receiver.output_grad_seal,
        ),
        // Never built by `cross_check`: an update seal is never a pipeline seal.
        Direction::Update => return None,
    };
    if sent == received {
        return None;
    }
    Some(match seal {
        Some(seal) if seal.by == sender.trainer => Some(sender.trainer),
        Some(_) => None,
        None => Some(receiver.trainer),
    })
}

/// Compares commitment `id` (just made) with its neighbours' commitments of the same step
/// and slashes whoever lied (see the module docs).
pub(crate) fn cross_check(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
    c: &Commitment,
) -> Result<(), Failure> {
    // (boundary, direction, sender's commitment, receiver's commitment)
    type Side = (CommitmentId, Commitment);
    let mut disputes: Vec<(StageIndex, Direction, Side, Side)> = Vec::new();
    let me = (id, c.clone());
    if let Some(prev) = c.stage.checked_sub(1) {
        if let Some(p) = committed(s, c.run, prev, c.replica, c.step)? {
            disputes.push((prev, Direction::Activations, p.clone(), me.clone()));
            disputes.push((prev, Direction::Gradients, me.clone(), p));
        }
    }
    if let Some(next) = c.stage.checked_add(1) {
        if let Some(n) = committed(s, c.run, next, c.replica, c.step)? {
            disputes.push((c.stage, Direction::Activations, me.clone(), n.clone()));
            disputes.push((c.stage, Direction::Gradients, n, me));
        }
    }
    for (boundary, direction, (sender_id, sender), (receiver_id, receiver)) in disputes {
        let Some(verdict) = liar(&sender, &receiver, direction) else {
            continue;
        };
        emit(
            ev,
            Event::PipelineInconsistent {
                run: c.run,
                boundary,
                replica: c.replica,
                step: c.step,
                direction,
                liar: verdict,
            },
        );
        let Some(liar) = verdict else {
            continue;
        };
        let liar_id = if liar == sender.trainer {
            sender_id
        } else {
            receiver_id
        };
        // Already punished for this step at the other boundary.
        let Some(mut lying) = COMMITMENTS.get(s, &liar_id)? else {
            continue;
        };
        if lying.status == crate::CommitStatus::Voided {
            continue;
        }
        let fraction = runs::get(s, c.run)?.params.trainer_slash;
        crate::commitments::punish(
            s,
            ev,
            now,
            &liar,
            c.run,
            fraction,
            None,
            staking::OffenceKind::PipelineContradiction,
        )?;
        crate::commitments::void(s, ev, liar_id, &mut lying, crate::CommitStatus::Voided);
    }
    Ok(())
}
