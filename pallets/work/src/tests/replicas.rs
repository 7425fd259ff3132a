//! Replicas that average: the round checked at commit (its shape, then its update seals), a
//! replica that commits another update than it sealed slashed, diverged replicas reported
//! and both commitments audited whatever the draw (see the `replicas` module).
use super::*;

/// Validators 10..=13 and trainers `1..=replicas` joined to run 0: one stage of `replicas`
/// replicas under `sync`, audit probability 0, selection two blocks after the commitment.
/// Trainer `replicas + 1` is staked but has not joined (a successor for a slot).
fn averaging_world(replicas: u16, sync: ReplicaSync) -> MemoryState {
    genesis(|o, ev| {
        let mut stakers: Vec<staking::GenesisStaker> = VALIDATORS
            .iter()
            .map(|(v, stake)| validator(*v, *stake))
            .collect();
        let trainers = 1..=replicas as u8;
        stakers.extend((1..=replicas as u8 + 1).map(|t| trainer(t, 1_000 * t as Balance, 1)));
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

/// The root of the update replica `replica` sends in step 0 (and, when honest, commits).
fn update_of(replica: Replica) -> Hash {
    Hash([0x40 + replica as u8; 32])
}

/// Replica `from`'s update of step 0 as received: `root`, sealed by the holder of its slot.
fn received(o: &Overlay<'_>, from: Replica, root: Hash) -> ReceivedUpdate {
    ReceivedUpdate {
        replica: from,
        root,
        signature: seal(
            t_of(&holder(o, from)),
            (0, 0, 0, from),
            Direction::Update,
            &root,
        ),
    }
}

/// The round of an honest `replica` that aggregated `included`: every other included
/// replica's update as that replica sent it, sealed.
fn honest_round(o: &Overlay<'_>, replica: Replica, included: Included) -> Round {
    Round {
        included,
        received: included
            .iter()
            .filter(|r| *r != replica)
            .map(|r| received(o, r, update_of(r)))
            .collect(),
    }
}

/// Step 0 of `replica` by its holder in block `now`, ending in weights `[weights; 32]`,
/// having sent the update `update`, with `round`.
fn commit_round(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    now: BlockNumber,
    replica: Replica,
    weights: u8,
    update: Hash,
    round: Option<Round>,
) -> Result<CommitmentId, Failure> {
    let roots = StepRoots {
        weights_after: Hash([weights; 32]),
        update,
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
        round,
    )
}

/// Step 0 of an honest `replica` in block `now`, ending in weights `[weights; 32]`, having
/// aggregated `included` (its honest round).
fn commit_weights(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    now: BlockNumber,
    replica: Replica,
    weights: u8,
    included: Option<Included>,
) -> Result<CommitmentId, Failure> {
    let round = included.map(|set| honest_round(o, replica, set));
    commit_round(o, ev, now, replica, weights, update_of(replica), round)
}

/// The `ReplicaUpdateContradiction` events so far (run 0, stage 0, any step): `(replica, by)`.
fn contradictions(ev: &Recorder) -> Vec<(Replica, Option<AccountId>)> {
    ev.of::<Event>()
        .iter()
        .filter_map(|e| match e {
            Event::ReplicaUpdateContradiction {
                run: 0,
                stage: 0,
                replica,
                by,
                ..
            } => Some((*replica, *by)),
            _ => None,
        })
        .collect()
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
        // The round and the update root are stored with the commitment, each received update
        // with the account its seal was verified against (replica 0's committer).
        let c = commitment(&o, b).unwrap().unwrap();
        let round = c.round.unwrap();
        assert_eq!(Some(round.included), all(2));
        let sent = received(&o, 0, update_of(0));
        assert_eq!(
            round.received,
            vec![VerifiedUpdate {
                replica: 0,
                root: update_of(0),
                signature: sent.signature,
                by: Some(holder(&o, 0)),
            }]
        );
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

/// Commits step 0 of replica 0 with `round` and update root `update` in a fresh overlay of
/// `st`, and checks that it is refused with `error` and changes nothing.
fn refused(st: &MemoryState, round: Option<Round>, update: Hash, error: Error) {
    let mut o = Overlay::new(st);
    let mut ev = Recorder::default();
    let r = commit_round(&mut o, &mut ev, 1, 0, 7, update, round.clone());
    assert_eq!(r, Err(error.into()), "{round:?} {update:?}");
    assert!(ev.of::<Event>().is_empty());
    assert!(o.into_changes().is_empty(), "{round:?} {update:?}");
}

#[test]
fn rounds_that_do_not_fit_the_run_are_refused_and_change_nothing() {
    let averaging = averaging_world(2, ReplicaSync::Average);
    let apart = averaging_world(2, ReplicaSync::Apart);
    let o = Overlay::new(&averaging);
    let from_1 = received(&o, 1, update_of(1));
    let round =
        |included: Included, received: Vec<ReceivedUpdate>| Some(Round { included, received });
    let update = Hash([5; 32]);
    // Averaging: no round, an empty bitmap, one naming replica 2 of a 2-replica run.
    refused(&averaging, None, update, Error::BadRound);
    refused(
        &averaging,
        round(Included(0), vec![]),
        update,
        Error::BadRound,
    );
    let (bad, bad63) = (Included::of([0, 2]).unwrap(), Included::of([63]).unwrap());
    refused(&averaging, round(bad, vec![]), update, Error::BadRound);
    refused(&averaging, round(bad63, vec![]), update, Error::BadRound);
    // Apart: a round, or a non-zero update root.
    refused(
        &apart,
        round(Included(0b11), vec![from_1]),
        Hash::ZERO,
        Error::BadRound,
    );
    refused(&apart, None, update, Error::BadRound);
    // What fits is accepted: a round of another replica alone, or none at all apart.
    let mut o = Overlay::new(&averaging);
    let mut ev = Recorder::default();
    commit_weights(&mut o, &mut ev, 1, 0, 7, Included::of([1])).unwrap();
    let mut o = Overlay::new(&apart);
    commit_round(&mut o, &mut ev, 1, 0, 7, Hash::ZERO, None).unwrap();
}

#[test]
fn rounds_that_miss_or_misplace_a_received_update_are_refused_and_change_nothing() {
    let st = averaging_world(3, ReplicaSync::Average);
    let o = Overlay::new(&st);
    let [from_0, from_1, from_2] = [0, 1, 2].map(|r| received(&o, r, update_of(r)));
    let all3 = Included(0b111);
    let bad = |included: Included, received: Vec<ReceivedUpdate>| {
        refused(
            &st,
            Some(Round { included, received }),
            update_of(0),
            Error::BadRound,
        );
    };
    // Replica 0 aggregated 0, 1 and 2:
    bad(all3, vec![]);
    // an included replica's update missing,
    bad(all3, vec![from_1]);
    bad(all3, vec![from_2]);
    // its own update among those received,
    bad(all3, vec![from_0, from_1, from_2]);
    bad(Included(0b011), vec![from_0]);
    // an update from a replica it did not include (instead of one it did, or besides),
    bad(Included(0b011), vec![from_2]);
    bad(Included(0b011), vec![from_1, from_2]);
    // out of order, or twice.
    bad(all3, vec![from_2, from_1]);
    bad(all3, vec![from_1, from_1]);
    bad(all3, vec![from_1, from_1, from_2]);
    // The same, exact and ascending, is accepted; so is a round without its own update.
    for included in [all3, Included(0b110)] {
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let round = Some(Round {
            included,
            received: vec![from_1, from_2],
        });
        commit_round(&mut o, &mut ev, 1, 0, 7, update_of(0), round).unwrap();
    }
}

#[test]
fn update_seals_that_do_not_verify_are_refused_and_change_nothing() {
    let st = averaging_world(3, ReplicaSync::Average);
    let o = Overlay::new(&st);
    let (h0, h2) = (t_of(&holder(&o, 0)), t_of(&holder(&o, 2)));
    let from_1 = received(&o, 1, update_of(1));
    let root = update_of(2);
    let forged = [
        // By the committer itself, not the sender.
        seal(h0, (0, 0, 0, 2), Direction::Update, &root),
        // Over another root than the entry names.
        seal(h2, (0, 0, 0, 2), Direction::Update, &Hash([0x77; 32])),
        // For another step, run, replica, or as a pipeline seal.
        seal(h2, (0, 1, 0, 2), Direction::Update, &root),
        seal(h2, (1, 0, 0, 2), Direction::Update, &root),
        seal(h2, (0, 0, 0, 1), Direction::Update, &root),
        seal(h2, (0, 0, 0, 2), Direction::Activations, &root),
        SealSignature([0; 64]),
    ];
    for signature in forged {
        let from_2 = ReceivedUpdate {
            replica: 2,
            root,
            signature,
        };
        let round = Round {
            included: Included(0b111),
            received: vec![from_1, from_2],
        };
        refused(&st, Some(round), update_of(0), Error::BadSeal);
    }
}

#[test]
fn honest_sealed_rounds_of_three_replicas_slash_nobody() {
    for order in [[0u16, 1, 2], [2, 0, 1]] {
        let st = averaging_world(3, ReplicaSync::Average);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let holders = [0, 1, 2].map(|r| holder(&o, r));
        let mut ids = [0; 3];
        for r in order {
            ids[r as usize] = commit_weights(&mut o, &mut ev, 1, r, 7, all(3)).unwrap();
        }
        assert!(contradictions(&ev).is_empty(), "order {order:?}");
        assert!(offences(&ev).is_empty(), "order {order:?}");
        assert!(divergences(&ev).is_empty(), "order {order:?}");
        // Each commitment holds the two others' updates, each verified against its sender.
        for (r, id) in ids.iter().enumerate() {
            let round = commitment(&o, *id).unwrap().unwrap().round.unwrap();
            let from: Vec<_> = round
                .received
                .iter()
                .map(|e| (e.replica, e.root, e.by))
                .collect();
            let want: Vec<_> = (0..3u16)
                .filter(|j| *j as usize != r)
                .map(|j| (j, update_of(j), Some(holders[j as usize])))
                .collect();
            assert_eq!(from, want, "order {order:?}");
        }
        block(&mut o, &mut ev, 2);
        block(&mut o, &mut ev, 3);
        for (r, id) in ids.iter().enumerate() {
            assert_eq!(
                status_of(&o, *id),
                CommitStatus::Credited,
                "order {order:?}"
            );
            assert_eq!(stages::slot(&o, 0, 0, r as u16).unwrap(), Some(holders[r]));
        }
    }
}

#[test]
fn a_replica_that_commits_another_update_than_it_sealed_is_slashed_in_either_order() {
    for liar_first in [true, false] {
        let st = averaging_world(2, ReplicaSync::Average);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let (h0, h1) = (holder(&o, 0), holder(&o, 1));
        // Replica 1 sent replica 0 its update with root 0x41, sealed; it commits 0x99.
        let to_0 = honest_round(&o, 0, Included(0b11));
        let own = honest_round(&o, 1, Included(0b11));
        let honest = |o: &mut Overlay<'_>, ev: &mut Recorder| {
            commit_round(o, ev, 1, 0, 7, update_of(0), Some(to_0.clone())).unwrap()
        };
        let liar = |o: &mut Overlay<'_>, ev: &mut Recorder| {
            commit_round(o, ev, 1, 1, 7, Hash([0x99; 32]), Some(own.clone())).unwrap()
        };
        let (hid, lid) = if liar_first {
            let l = liar(&mut o, &mut ev);
            (honest(&mut o, &mut ev), l)
        } else {
            let h = honest(&mut o, &mut ev);
            (h, liar(&mut o, &mut ev))
        };
        let at = format!("liar first: {liar_first}");
        // The evidence: replica 1's seal, verified against its committer (or, before it
        // committed, its holder: the same account).
        let evidence = commitment(&o, hid).unwrap().unwrap().round.unwrap();
        assert_eq!(evidence.received[0].by, Some(h1), "{at}");
        assert_eq!(contradictions(&ev), vec![(1, Some(h1))], "{at}");
        assert_eq!(
            offences(&ev),
            vec![(h1, staking::OffenceKind::ReplicaContradiction)],
            "{at}"
        );
        assert_eq!(status_of(&o, lid), CommitStatus::Voided, "{at}");
        assert_eq!(status_of(&o, hid), CommitStatus::Committed, "{at}");
        assert_eq!(stages::slot(&o, 0, 0, 1).unwrap(), None, "{at}");
        assert_eq!(stages::slot(&o, 0, 0, 0).unwrap(), Some(h0), "{at}");
        // The liar's commitment is not compared: no divergence, no forced audit.
        assert!(divergences(&ev).is_empty(), "{at}");
        block(&mut o, &mut ev, 2);
        block(&mut o, &mut ev, 3);
        assert_eq!(status_of(&o, hid), CommitStatus::Credited, "{at}");
        assert_eq!(status_of(&o, lid), CommitStatus::Voided, "{at}");
    }
}

#[test]
fn a_liar_that_two_replicas_hold_seals_of_is_slashed_once() {
    let st = averaging_world(3, ReplicaSync::AverageInt8);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let h1 = holder(&o, 1);
    let a = commit_weights(&mut o, &mut ev, 1, 0, 7, all(3)).unwrap();
    let b = commit_weights(&mut o, &mut ev, 1, 2, 7, all(3)).unwrap();
    let own = honest_round(&o, 1, Included(0b111));
    let lid = commit_round(&mut o, &mut ev, 1, 1, 7, Hash([0x99; 32]), Some(own)).unwrap();
    assert_eq!(contradictions(&ev), vec![(1, Some(h1))]);
    assert_eq!(
        offences(&ev),
        vec![(h1, staking::OffenceKind::ReplicaContradiction)]
    );
    assert_eq!(status_of(&o, lid), CommitStatus::Voided);
    assert_eq!(status_of(&o, a), CommitStatus::Committed);
    assert_eq!(status_of(&o, b), CommitStatus::Committed);
    assert!(divergences(&ev).is_empty());
}

#[test]
fn an_update_sealed_by_an_earlier_holder_of_the_slot_convicts_nobody() {
    let st = averaging_world(2, ReplicaSync::Average);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let h1 = holder(&o, 1);
    // Replica 1's holder seals its update to replica 0, which commits it.
    let a = commit_weights(&mut o, &mut ev, 1, 0, 7, all(2)).unwrap();
    let round = commitment(&o, a).unwrap().unwrap().round.unwrap();
    assert_eq!(round.received[0].by, Some(h1));
    // The slot changes hands before its holder committed the step (the handover of an
    // assignment, reduced to its effect on the slot), and its successor computes the step
    // again, with another update.
    let successor = acc(3);
    assert_ne!(successor, h1);
    stages::SLOT.insert(&mut o, &(0, 0, 1), &successor);
    let own = honest_round(&o, 1, Included(0b11));
    let b = commit_round(&mut o, &mut ev, 2, 1, 7, Hash([0x99; 32]), Some(own)).unwrap();
    assert_eq!(commitment(&o, b).unwrap().unwrap().trainer, successor);
    // Recorded, nobody slashed, nothing voided.
    assert_eq!(contradictions(&ev), vec![(1, None)]);
    assert!(offences(&ev).is_empty());
    assert_eq!(status_of(&o, a), CommitStatus::Committed);
    assert_eq!(status_of(&o, b), CommitStatus::Committed);
    assert_eq!(stages::slot(&o, 0, 0, 1).unwrap(), Some(successor));
}

#[test]
fn replicas_that_train_apart_are_never_compared() {
    let st = averaging_world(2, ReplicaSync::Apart);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let mut ids = Vec::new();
    for (replica, weights) in [(0u16, 7u8), (1, 8)] {
        ids.push(commit_round(&mut o, &mut ev, 1, replica, weights, Hash::ZERO, None).unwrap());
    }
    assert!(divergences(&ev).is_empty());
    block(&mut o, &mut ev, 2);
    block(&mut o, &mut ev, 3);
    for id in ids {
        assert_eq!(status_of(&o, id), CommitStatus::Credited);
    }
}

#[test]
fn a_replica_can_commit_the_update_of_a_sender_convicted_since_unverified_and_convicting_nobody() {
    let st = averaging_world(3, ReplicaSync::Average);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let h1 = holder(&o, 1);
    // Replica 1 sealed 0x41 to the others and commits 0x99; replica 0's commitment convicts
    // it: chilled, its slot empty.
    let own = honest_round(&o, 1, Included(0b111));
    let rounds = [0u16, 2].map(|r| honest_round(&o, r, Included(0b111)));
    let lid = commit_round(&mut o, &mut ev, 1, 1, 7, Hash([0x99; 32]), Some(own)).unwrap();
    commit_round(
        &mut o,
        &mut ev,
        1,
        0,
        7,
        update_of(0),
        Some(rounds[0].clone()),
    )
    .unwrap();
    assert_eq!(contradictions(&ev), vec![(1, Some(h1))]);
    assert_eq!(stages::slot(&o, 0, 0, 1).unwrap(), None);
    // Replica 2 aggregated the same sealed update; its seal can no longer be checked against
    // a trainer record, and the step is still committed, with the entry kept unverified.
    let c = commit_round(
        &mut o,
        &mut ev,
        2,
        2,
        7,
        update_of(2),
        Some(rounds[1].clone()),
    )
    .unwrap();
    let round = commitment(&o, c).unwrap().unwrap().round.unwrap();
    let from_1 = round.received.iter().find(|e| e.replica == 1).unwrap();
    assert_eq!((from_1.root, from_1.by), (update_of(1), None));
    assert_eq!(
        round.received.iter().find(|e| e.replica == 0).unwrap().by,
        Some(holder(&o, 0))
    );
    // No second conviction, no divergence with the honest replica.
    assert_eq!(contradictions(&ev).len(), 1);
    assert_eq!(offences(&ev).len(), 1);
    assert!(divergences(&ev).is_empty());
    assert_eq!(status_of(&o, lid), CommitStatus::Voided);
    assert_eq!(status_of(&o, c), CommitStatus::Committed);
}

#[test]
fn an_update_sealed_by_a_holder_that_vanished_before_committing_it_still_verifies() {
    let st = averaging_world(2, ReplicaSync::Average);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let h1 = holder(&o, 1);
    // Step 0 of both replicas, honest.
    for replica in [0, 1] {
        commit_weights(&mut o, &mut ev, 1, replica, 7, all(2)).unwrap();
    }
    // In step 1, replica 1's holder seals its update to replica 0 and vanishes before it
    // commits; a spare takes the slot and commits step 1 (the same update: the same state
    // and data) before replica 0 commits its step 1.
    let update = Hash([0x51; 32]);
    let sealed = ReceivedUpdate {
        replica: 1,
        root: update,
        signature: seal(t_of(&h1), (0, 1, 0, 1), Direction::Update, &update),
    };
    let spare = acc(3);
    stages::SLOT.insert(&mut o, &(0, 0, 1), &spare);
    let step1 = |update: Hash, weights: u8| StepRoots {
        weights_before: Hash([7; 32]),
        weights_after: Hash([weights; 32]),
        optimizer_before: step_roots(0).optimizer_after,
        update,
        ..step_roots(1)
    };
    let spare_round = Round {
        included: Included(0b11),
        received: vec![ReceivedUpdate {
            replica: 0,
            root: Hash([0x50; 32]),
            signature: seal(
                t_of(&holder(&o, 0)),
                (0, 1, 0, 0),
                Direction::Update,
                &Hash([0x50; 32]),
            ),
        }],
    };
    let commit1 =
        |o: &mut Overlay<'_>, ev: &mut Recorder, who: AccountId, replica, roots, round| {
            commit_step(
                o,
                ev,
                2,
                &who,
                0,
                0,
                replica,
                1,
                roots,
                Some(1),
                CPU,
                NOSEALS,
                Some(round),
            )
        };
    commit1(&mut o, &mut ev, spare, 1, step1(update, 8), spare_round).unwrap();
    // The seal is by neither the step's committer nor the slot's holder, but by the account
    // that committed the slot's step before: it verifies, and names it.
    let h0 = holder(&o, 0);
    let own = Round {
        included: Included(0b11),
        received: vec![sealed],
    };
    let id = commit1(&mut o, &mut ev, h0, 0, step1(Hash([0x50; 32]), 8), own).unwrap();
    let round = commitment(&o, id).unwrap().unwrap().round.unwrap();
    assert_eq!(round.received[0].by, Some(h1));
    // Same roots: nobody contradicted anybody, nothing diverged.
    assert!(contradictions(&ev).is_empty());
    assert!(offences(&ev).is_empty());
    // A seal by an account that never held the slot is still refused.
    let forged = ReceivedUpdate {
        replica: 1,
        root: update,
        signature: seal(9, (0, 1, 0, 1), Direction::Update, &update),
    };
    let mut o2 = Overlay::new(&st);
    let mut ev2 = Recorder::default();
    for replica in [0, 1] {
        commit_weights(&mut o2, &mut ev2, 1, replica, 7, all(2)).unwrap();
    }
    stages::SLOT.insert(&mut o2, &(0, 0, 1), &spare);
    let bad = Round {
        included: Included(0b11),
        received: vec![forged],
    };
    assert!(commit1(&mut o2, &mut ev2, h0, 0, step1(Hash([0x50; 32]), 8), bad).is_err());
}
