//! Replicas that average: the round checked at commit, diverged replicas reported and both
//! commitments audited whatever the draw (see the `replicas` module).
use super::*;

/// Validators 10..=13 and trainers `1..=replicas` joined to run 0: one stage of `replicas`
/// replicas under `sync`, audit probability 0, selection two blocks after the commitment.
fn averaging_world(replicas: u16, sync: ReplicaSync) -> MemoryState {
    genesis(|o, ev| {
        let mut stakers: Vec<staking::GenesisStaker> = VALIDATORS
            .iter()
            .map(|(v, stake)| validator(*v, *stake))
            .collect();
        let trainers = 1..=replicas as u8;
        stakers.extend(
            trainers
                .clone()
                .map(|t| trainer(t, 1_000 * t as Balance, 1)),
        );
        protocol_genesis(o, ev, &endowed(0..=20, 1_000_000), &stakers);
        stages::build_genesis(o, &stages::Config::default());
        ownership::build_genesis(o, &ownership::Config::default());
        let mut spec = run_spec(
            1,
            replicas,
            runs::RunParams {
                audit_probability: Perbill::ZERO,
                auditors_per_stage: 3,
                selection_delay: 2,
                reveal_window: 3,
                attest_window: 6,
                ..runs::RunParams::default()
            },
        );
        spec.hyper_params.replica_sync = sync;
        let run = runs::register_run(o, ev, 0, &acc(0), spec).unwrap();
        for t in trainers {
            stages::join_run(o, ev, &acc(t), run).unwrap();
        }
        stages::assign_run(o, ev, run, &Hash([9; 32])).unwrap();
    })
}

fn holder(o: &Overlay<'_>, replica: Replica) -> AccountId {
    stages::slot(o, 0, 0, replica).unwrap().unwrap()
}

/// Step 0 of `replica` in block `now`, ending in weights `[weights; 32]`, having aggregated
/// `included`.
fn commit_weights(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    now: BlockNumber,
    replica: Replica,
    weights: u8,
    included: Option<Included>,
) -> Result<CommitmentId, Failure> {
    let roots = StepRoots {
        weights_after: Hash([weights; 32]),
        update: Hash([0x40 + replica as u8; 32]),
        ..step_roots(0)
    };
    let who = holder(o, replica);
    commit_step(
        o,
        ev,
        now,
        &who,
        0,
        0,
        replica,
        0,
        roots,
        Some(1),
        CPU,
        NOSEALS,
        included,
    )
}

fn all(replicas: u16) -> Option<Included> {
    Included::of(0..replicas)
}

fn divergences(ev: &Recorder) -> Vec<(StageIndex, Step, (Replica, Replica))> {
    ev.of::<Event>()
        .iter()
        .filter_map(|e| match e {
            Event::ReplicasDiverged {
                run: 0,
                stage,
                step,
                replicas,
            } => Some((*stage, *step, *replicas)),
            _ => None,
        })
        .collect()
}

fn status_of(o: &Overlay<'_>, id: CommitmentId) -> CommitStatus {
    commitment(o, id).unwrap().unwrap().status
}

#[test]
fn replicas_that_agree_are_selected_as_usual() {
    for sync in [ReplicaSync::Average, ReplicaSync::AverageInt8] {
        let st = averaging_world(2, sync);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let a = commit_weights(&mut o, &mut ev, 1, 0, 7, all(2)).unwrap();
        let b = commit_weights(&mut o, &mut ev, 1, 1, 7, all(2)).unwrap();
        assert!(divergences(&ev).is_empty());
        assert_eq!(FORCED_AUDITS.get(&o, &a).unwrap(), None);
        assert_eq!(FORCED_AUDITS.get(&o, &b).unwrap(), None);
        // The bitmap and the update root are stored with the commitment.
        let c = commitment(&o, b).unwrap().unwrap();
        assert_eq!(c.included, all(2));
        assert_eq!(c.roots.update, Hash([0x41; 32]));
        block(&mut o, &mut ev, 2);
        block(&mut o, &mut ev, 3);
        // Audit probability 0: both credited, no audit.
        assert_eq!(status_of(&o, a), CommitStatus::Credited);
        assert_eq!(status_of(&o, b), CommitStatus::Credited);
        assert_eq!(audit(&o, a).unwrap(), None);
        assert_eq!(audit(&o, b).unwrap(), None);
    }
}

#[test]
fn diverged_replicas_are_both_audited_in_either_order() {
    for first in [0u16, 1] {
        let st = averaging_world(2, ReplicaSync::Average);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let second = 1 - first;
        let x = commit_weights(&mut o, &mut ev, 1, first, 7, all(2)).unwrap();
        assert!(divergences(&ev).is_empty());
        let y = commit_weights(&mut o, &mut ev, 1, second, 8, all(2)).unwrap();
        // Reported once, lower replica first, whichever committed first.
        assert_eq!(divergences(&ev), vec![(0, 0, (0, 1))], "first: {first}");
        assert_eq!(FORCED_AUDITS.get(&o, &x).unwrap(), Some(()));
        assert_eq!(FORCED_AUDITS.get(&o, &y).unwrap(), Some(()));
        block(&mut o, &mut ev, 2);
        block(&mut o, &mut ev, 3);
        // Audited at their selection block although the audit probability is 0.
        for id in [x, y] {
            assert_eq!(status_of(&o, id), CommitStatus::Audited, "first: {first}");
            let a = audit(&o, id).unwrap().expect("forced audit");
            assert_eq!(a.opened_at, 3);
            assert_eq!(a.seats.len(), 3);
            // The mark is used up.
            assert_eq!(FORCED_AUDITS.get(&o, &id).unwrap(), None);
        }
        let opened = ev
            .of::<Event>()
            .iter()
            .filter(|e| matches!(e, Event::AuditOpened { .. }))
            .count();
        assert_eq!(opened, 2);
    }
}

#[test]
fn with_three_replicas_the_one_that_differs_is_reported_against_each_other() {
    // Replica 2 differs; it commits last, first, or in between.
    for order in [[0u16, 1, 2], [2, 0, 1], [0, 2, 1]] {
        let st = averaging_world(3, ReplicaSync::AverageInt8);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let mut ids = [0; 3];
        for r in order {
            let weights = if r == 2 { 9 } else { 7 };
            ids[r as usize] = commit_weights(&mut o, &mut ev, 1, r, weights, all(3)).unwrap();
        }
        let mut pairs: Vec<_> = divergences(&ev).into_iter().map(|(_, _, p)| p).collect();
        pairs.sort();
        // The two agreeing replicas are never reported against each other.
        assert_eq!(pairs, vec![(0, 2), (1, 2)], "order {order:?}");
        block(&mut o, &mut ev, 2);
        block(&mut o, &mut ev, 3);
        // Each commitment of a diverged pair is audited.
        for id in ids {
            assert_eq!(status_of(&o, id), CommitStatus::Audited, "order {order:?}");
        }
    }
}

#[test]
fn a_commitment_past_its_selection_cannot_be_forced() {
    let st = averaging_world(2, ReplicaSync::Average);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let early = commit_weights(&mut o, &mut ev, 1, 0, 7, all(2)).unwrap();
    block(&mut o, &mut ev, 2);
    block(&mut o, &mut ev, 3);
    assert_eq!(status_of(&o, early), CommitStatus::Credited);
    // Replica 1 commits other weights after replica 0's step was credited.
    let late = commit_weights(&mut o, &mut ev, 4, 1, 8, all(2)).unwrap();
    assert_eq!(divergences(&ev), vec![(0, 0, (0, 1))]);
    assert_eq!(FORCED_AUDITS.get(&o, &early).unwrap(), None);
    assert_eq!(FORCED_AUDITS.get(&o, &late).unwrap(), Some(()));
    block(&mut o, &mut ev, 5);
    block(&mut o, &mut ev, 6);
    assert_eq!(status_of(&o, early), CommitStatus::Credited);
    assert_eq!(status_of(&o, late), CommitStatus::Audited);
}

#[test]
fn rounds_that_do_not_fit_the_run_are_refused_and_change_nothing() {
    let averaging = averaging_world(2, ReplicaSync::Average);
    let apart = averaging_world(2, ReplicaSync::Apart);
    let refused = |st: &MemoryState, included: Option<Included>, update: Hash| {
        let mut o = Overlay::new(st);
        let mut ev = Recorder::default();
        let roots = StepRoots {
            update,
            ..step_roots(0)
        };
        let who = holder(&o, 0);
        let r = commit_step(
            &mut o,
            &mut ev,
            1,
            &who,
            0,
            0,
            0,
            0,
            roots,
            Some(1),
            CPU,
            NOSEALS,
            included,
        );
        assert_eq!(r, Err(Error::BadRound.into()), "{included:?} {update:?}");
        assert!(ev.of::<Event>().is_empty());
        assert!(o.into_changes().is_empty(), "{included:?} {update:?}");
    };
    let update = Hash([5; 32]);
    // Averaging: no bitmap, an empty one, one naming replica 2 of a 2-replica run.
    refused(&averaging, None, update);
    refused(&averaging, Some(Included(0)), update);
    refused(&averaging, Included::of([0, 2]), update);
    refused(&averaging, Included::of([63]), update);
    // Apart: a bitmap, or a non-zero update root.
    refused(&apart, all(2), Hash::ZERO);
    refused(&apart, None, update);
    // What fits is accepted: a bitmap of one replica, or none at all apart.
    let mut o = Overlay::new(&averaging);
    let mut ev = Recorder::default();
    commit_weights(&mut o, &mut ev, 1, 0, 7, Included::of([1])).unwrap();
    let mut o = Overlay::new(&apart);
    let who = holder(&o, 0);
    commit_step(
        &mut o,
        &mut ev,
        1,
        &who,
        0,
        0,
        0,
        0,
        step_roots(0),
        Some(1),
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
}

#[test]
fn replicas_that_train_apart_are_never_compared() {
    let st = averaging_world(2, ReplicaSync::Apart);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let mut ids = Vec::new();
    for (replica, weights) in [(0u16, 7u8), (1, 8)] {
        let roots = StepRoots {
            weights_after: Hash([weights; 32]),
            ..step_roots(0)
        };
        let who = holder(&o, replica);
        ids.push(
            commit_step(
                &mut o,
                &mut ev,
                1,
                &who,
                0,
                0,
                replica,
                0,
                roots,
                Some(1),
                CPU,
                NOSEALS,
                None,
            )
            .unwrap(),
        );
    }
    assert!(divergences(&ev).is_empty());
    block(&mut o, &mut ev, 2);
    block(&mut o, &mut ev, 3);
    for id in ids {
        assert_eq!(status_of(&o, id), CommitStatus::Credited);
    }
}
