//! The pipeline checks at commit: seals verified, neighbours' roots compared, the liar
//! slashed (see the `pipeline` module).
use super::*;

/// `who`'s seal over root `[root; 32]`, sent by stage `from_stage` in `step` (run 0, replica
/// 0).
fn sealed(
    who: &AccountId,
    step: Step,
    from_stage: StageIndex,
    direction: Direction,
    root: u8,
) -> SealSignature {
    seal(
        t_of(who),
        (0, step, from_stage, 0),
        direction,
        &Hash([root; 32]),
    )
}

/// Commits step 0 of `stage` (replica 0 of run 0) for `who` in block 1, with a loss on the
/// last stage.
fn commit(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    who: &AccountId,
    stage: StageIndex,
    roots: StepRoots,
    seals: StepSeals,
) -> Result<CommitmentId, Failure> {
    let loss = (stage == 1).then_some(1);
    commit_step(o, ev, 1, who, 0, stage, 0, 0, roots, loss, CPU, seals, None)
}

fn seals(inputs: Option<SealSignature>, output_grads: Option<SealSignature>) -> StepSeals {
    StepSeals {
        inputs,
        output_grads,
    }
}

/// Step 0 of stage `stage`: a fresh slot's first step, its boundary roots given.
fn first_step(inputs: u8, outputs: u8, output_grads: u8, input_grads: u8) -> StepRoots {
    StepRoots {
        inputs: Hash([inputs; 32]),
        outputs: Hash([outputs; 32]),
        output_grads: Hash([output_grads; 32]),
        input_grads: Hash([input_grads; 32]),
        ..step_roots(0)
    }
}

fn inconsistencies(ev: &Recorder) -> Vec<(Direction, Option<AccountId>)> {
    ev.of::<Event>()
        .iter()
        .filter_map(|e| match e {
            Event::PipelineInconsistent {
                direction, liar, ..
            } => Some((*direction, *liar)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sender_that_commits_other_activations_than_it_sealed_is_slashed_in_either_order() {
    for sender_first in [false, true] {
        let st = world(Perbill::ZERO);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let (t0, t1) = (trainer_of(&o, 0), trainer_of(&o, 1));
        // Stage 0 sent activations with root 7 and sealed them; it commits root 8.
        let acts = sealed(&t0, 0, 0, Direction::Activations, 7);
        let grads = sealed(&t1, 0, 1, Direction::Gradients, 3);
        let receiver = |o: &mut Overlay<'_>, ev: &mut Recorder| {
            commit(
                o,
                ev,
                &t1,
                1,
                first_step(7, 0, 0, 3),
                seals(Some(acts), None),
            )
            .unwrap()
        };
        let sender = |o: &mut Overlay<'_>, ev: &mut Recorder| {
            commit(
                o,
                ev,
                &t0,
                0,
                first_step(0, 8, 3, 0),
                seals(None, Some(grads)),
            )
            .unwrap()
        };
        let (rid, sid) = if sender_first {
            let s = sender(&mut o, &mut ev);
            (receiver(&mut o, &mut ev), s)
        } else {
            let r = receiver(&mut o, &mut ev);
            (r, sender(&mut o, &mut ev))
        };
        // The seal is stored with the account it was verified against.
        let stored = commitment(&o, rid).unwrap().unwrap();
        assert_eq!(stored.input_seal.map(|s| s.by), Some(t0));
        // The activations disagree and the seal convicts the sender; the gradients agree.
        assert_eq!(
            inconsistencies(&ev),
            vec![(Direction::Activations, Some(t0))],
            "sender first: {sender_first}"
        );
        assert_eq!(
            offences(&ev),
            vec![(t0, staking::OffenceKind::PipelineContradiction)]
        );
        assert_eq!(stages::slot(&o, 0, 0, 0).unwrap(), None);
        assert_eq!(stages::slot(&o, 0, 1, 0).unwrap(), Some(t1));
        assert_eq!(
            commitment(&o, sid).unwrap().unwrap().status,
            CommitStatus::Voided
        );
        assert_eq!(
            commitment(&o, rid).unwrap().unwrap().status,
            CommitStatus::Committed
        );
    }
}

#[test]
fn a_receiver_that_commits_gradients_nobody_sealed_is_slashed() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (t0, t1) = (trainer_of(&o, 0), trainer_of(&o, 1));
    let acts = sealed(&t0, 0, 0, Direction::Activations, 7);
    commit(
        &mut o,
        &mut ev,
        &t1,
        1,
        first_step(7, 0, 0, 3),
        seals(Some(acts), None),
    )
    .unwrap();
    // Stage 0 claims gradients (root 4) that stage 1 never sealed (it sent root 3).
    commit(
        &mut o,
        &mut ev,
        &t0,
        0,
        first_step(0, 7, 4, 0),
        seals(None, None),
    )
    .unwrap();
    assert_eq!(inconsistencies(&ev), vec![(Direction::Gradients, Some(t0))]);
    assert_eq!(
        offences(&ev),
        vec![(t0, staking::OffenceKind::PipelineContradiction)]
    );
    assert_eq!(stages::slot(&o, 0, 1, 0).unwrap(), Some(t1));
}

#[test]
fn seals_that_do_not_verify_are_refused_and_change_nothing() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (t0, t1) = (trainer_of(&o, 0), trainer_of(&o, 1));
    let roots = first_step(7, 0, 0, 3);
    let bad = [
        // By the receiver itself, not its sender.
        sealed(&t1, 0, 0, Direction::Activations, 7),
        // Over another root.
        sealed(&t0, 0, 0, Direction::Activations, 6),
        // For another step, or the other direction.
        sealed(&t0, 1, 0, Direction::Activations, 7),
        sealed(&t0, 0, 0, Direction::Gradients, 7),
    ];
    for s in bad {
        let r = commit(&mut o, &mut ev, &t1, 1, roots, seals(Some(s), None));
        assert_eq!(r, Err(Error::BadSeal.into()));
    }
    // The last stage has no next stage to seal its output gradients, stage 0 no previous.
    let any = sealed(&t0, 0, 0, Direction::Gradients, 0);
    let r = commit(&mut o, &mut ev, &t1, 1, roots, seals(None, Some(any)));
    assert_eq!(r, Err(Error::BadSeal.into()));
    let r = commit(&mut o, &mut ev, &t0, 0, roots, seals(Some(any), None));
    assert_eq!(r, Err(Error::BadSeal.into()));
    assert_eq!(next_step(&o, 0, 1, 0).unwrap(), 0);
    assert_eq!(next_step(&o, 0, 0, 0).unwrap(), 0);
    assert!(ev.of::<Event>().is_empty());
}

#[test]
fn honest_neighbours_with_their_seals_slash_nobody() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (t0, t1) = (trainer_of(&o, 0), trainer_of(&o, 1));
    let acts = sealed(&t0, 0, 0, Direction::Activations, 7);
    let grads = sealed(&t1, 0, 1, Direction::Gradients, 3);
    commit(
        &mut o,
        &mut ev,
        &t0,
        0,
        first_step(1, 7, 3, 0),
        seals(None, Some(grads)),
    )
    .unwrap();
    commit(
        &mut o,
        &mut ev,
        &t1,
        1,
        first_step(7, 0, 0, 3),
        seals(Some(acts), None),
    )
    .unwrap();
    assert!(inconsistencies(&ev).is_empty());
    assert!(offences(&ev).is_empty());
    assert_eq!(stages::slot(&o, 0, 0, 0).unwrap(), Some(t0));
}
