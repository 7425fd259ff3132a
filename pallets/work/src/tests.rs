#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use weft_pallet_balances as balances;
use weft_pallet_runs as runs;
use weft_pallet_staking as staking;
use weft_pallet_testkit::{
    acc, as_executive, endowed, genesis, protocol_genesis, run_block, run_spec, seal, trainer,
    validator, validator_secret_key, Recorder,
};
use weft_primitives::storage::{MemoryState, Overlay};

/// The compute class the tests' trainers declare.
const CPU: ComputeClass = ComputeClass {
    device: weft_primitives::compute::DeviceKind::Cpu,
    arch: weft_primitives::compute::cpu_arch::X86_AVX2,
    threads: 1,
    precision: weft_primitives::compute::Precision::Fp32,
    libtorch: 21_100,
};

/// No pipeline seals (the tests' neighbours commit matching roots, or none).
const NOSEALS: StepSeals = StepSeals {
    inputs: None,
    output_grads: None,
};

const VALIDATORS: [(u8, Balance); 4] = [(10, 10_000), (11, 20_000), (12, 30_000), (13, 40_000)];

fn sk(v: u8) -> weft_bls::SecretKey {
    validator_secret_key(v)
}

/// Validators 10..=13, trainers 1..=4 joined to run 0 (2 stages, 1 replica, audit
/// probability `p`), assigned.
fn world(p: Perbill) -> MemoryState {
    world_with(p, 0)
}

/// [`world`] with a step limit.
fn world_with(p: Perbill, max_steps: u64) -> MemoryState {
    genesis(|o, ev| {
        let mut stakers: Vec<staking::GenesisStaker> = VALIDATORS
            .iter()
            .map(|(v, stake)| validator(*v, *stake))
            .collect();
        stakers.extend((1..=4u8).map(|t| trainer(t, 1_000 * t as Balance, 1)));
        protocol_genesis(o, ev, &endowed(0..=20, 1_000_000), &stakers);
        stages::build_genesis(o, &stages::Config::default());
        ownership::build_genesis(o, &ownership::Config::default());
        let spec = runs::RunSpec {
            hyper_params: runs::HyperParams::with_defaults(
                4,
                1_000_000_000,
                if max_steps > 0 { max_steps } else { 1_000_000 },
            ),
            max_steps,
            ..run_spec(
                2,
                1,
                runs::RunParams {
                    audit_probability: p,
                    auditors_per_stage: 3,
                    max_stages_per_account: 1,
                    max_stages_per_auditor: 1,
                    selection_delay: 2,
                    reveal_window: 3,
                    attest_window: 6,
                    ..runs::RunParams::default()
                },
            )
        };
        let run = runs::register_run(o, ev, 0, &acc(0), spec).unwrap();
        for t in 1..=4u8 {
            stages::join_run(o, ev, &acc(t), run).unwrap();
        }
        stages::assign_run(o, ev, run, &Hash([9; 32])).unwrap();
    })
}

/// Runs the block hooks of block `n` (with randomness derived from `n`).
fn block(o: &mut Overlay<'_>, ev: &mut Recorder, n: BlockNumber) {
    run_block(o, ev, n, |o, ev, n| {
        on_initialize(o, ev, n).unwrap();
        on_finalize(o, ev, n).unwrap();
    });
}

/// The trainer number (`acc(t)`, p2p key `trainer_p2p_key(t)`) of an account.
fn t_of(who: &AccountId) -> u8 {
    (0..=u8::MAX).find(|t| acc(*t) == *who).unwrap()
}

/// The offences reported so far: `(offender, kind)`.
fn offences(ev: &Recorder) -> Vec<(AccountId, staking::OffenceKind)> {
    ev.of::<staking::Event>()
        .iter()
        .filter_map(|e| match e {
            staking::Event::OffenceReported { offender, kind, .. } => Some((*offender, *kind)),
            _ => None,
        })
        .collect()
}

fn trainer_of(o: &Overlay<'_>, stage: StageIndex) -> AccountId {
    stages::slot(o, 0, stage, 0).unwrap().unwrap()
}

fn sign(v: u8, audit: CommitmentId, verdict: Verdict) -> SignatureBytes {
    sk(v)
        .sign(&attestation_message(audit, verdict))
        .unwrap()
        .to_bytes()
}

/// The roots of a slot's step `n − 1` (0-based): it starts from state `n` and ends in state
/// `n + 1`, so `roots(1)`, `roots(2)`, … are a continuous chain of steps.
fn roots(n: u8) -> StepRoots {
    StepRoots {
        weights_before: Hash([n; 32]),
        weights_after: Hash([n + 1; 32]),
        ..StepRoots::default()
    }
}

/// The roots of `step` in a continuous chain: from state `step` to state `step + 1`.
fn step_roots(step: Step) -> StepRoots {
    let state = |n: Step| weft_primitives::blake3_256(&n.to_le_bytes());
    StepRoots {
        weights_before: state(step),
        weights_after: state(step + 1),
        optimizer_before: state(step + 1_000_000),
        optimizer_after: state(step + 1_000_001),
        ..StepRoots::default()
    }
}

#[test]
fn every_step_must_start_from_the_slots_last_committed_state() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let t0 = trainer_of(&o, 0);
    commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        0,
        step_roots(0),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    // Other weights, or other optimizer moments, than step 0 ended with: refused, and the
    // slot still waits for step 1.
    let mut weights = step_roots(1);
    weights.weights_before = Hash([0xee; 32]);
    let mut moments = step_roots(1);
    moments.optimizer_before = Hash([0xee; 32]);
    // A replay of step 0 as step 1 (genuine arithmetic, the wrong starting state).
    let replay = step_roots(0);
    for bad in [weights, moments, replay] {
        assert_eq!(
            commit_step(&mut o, &mut ev, 2, &t0, 0, 0, 0, 1, bad, None, CPU, NOSEALS, None),
            Err(Error::Discontinuous.into())
        );
    }
    assert_eq!(next_step(&o, 0, 0, 0).unwrap(), 1);
    assert!(STEP_COMMITMENT.get(&o, &(0, 0, 0, 1)).unwrap().is_none());
    commit_step(
        &mut o,
        &mut ev,
        2,
        &t0,
        0,
        0,
        0,
        1,
        step_roots(1),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    commit_step(
        &mut o,
        &mut ev,
        3,
        &t0,
        0,
        0,
        0,
        2,
        step_roots(2),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    // Each slot has its own chain: stage 1 starts wherever its own step 0 starts.
    let t1 = trainer_of(&o, 1);
    commit_step(
        &mut o,
        &mut ev,
        3,
        &t1,
        0,
        1,
        0,
        0,
        roots(9),
        Some(1),
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
}

#[test]
fn only_the_assigned_trainer_commits_steps_in_order() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let t0 = trainer_of(&o, 0);
    let t1 = trainer_of(&o, 1);
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &acc(20),
            0,
            0,
            0,
            0,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::NotAssigned.into())
    );
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &t1,
            0,
            0,
            0,
            0,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::NotAssigned.into())
    );
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &t0,
            0,
            0,
            1,
            0,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::BadSlot.into())
    );
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &t0,
            0,
            0,
            0,
            1,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::OutOfOrder.into())
    );
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &t0,
            0,
            0,
            0,
            0,
            roots(1),
            Some(5),
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::LossMismatch.into())
    );
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            1,
            &t1,
            0,
            1,
            0,
            0,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::LossMismatch.into())
    );
    commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        0,
        roots(1),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    commit_step(
        &mut o,
        &mut ev,
        1,
        &t1,
        0,
        1,
        0,
        0,
        roots(1),
        Some(2_000_000),
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    // Replays are rejected.
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            2,
            &t0,
            0,
            0,
            0,
            0,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::AlreadyCommitted.into())
    );
    commit_step(
        &mut o,
        &mut ev,
        2,
        &t0,
        0,
        0,
        0,
        1,
        roots(2),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    // Not selected (p = 0): credited in the selection block.
    block(&mut o, &mut ev, 2);
    assert_eq!(ownership::units(&o, 0, &t0).unwrap(), 0);
    block(&mut o, &mut ev, 3);
    assert!(ownership::units(&o, 0, &t0).unwrap() > 0);
    assert!(ownership::units(&o, 0, &t1).unwrap() > 0);
    assert_eq!(
        commitment(&o, 0).unwrap().unwrap().status,
        CommitStatus::Credited
    );
    // A halted run accepts no work.
    runs::set_status(&mut o, &mut ev, 0, runs::RunStatus::Halted).unwrap();
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            5,
            &t0,
            0,
            0,
            0,
            2,
            roots(3),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::RunNotTraining.into())
    );
}

#[test]
fn audits_are_selected_at_the_configured_rate() {
    // 20 000 commitments, 1 000 per randomness value, p = 10 %: the count is binomial with
    // mean 2 000 and σ = √(20 000 · 0.1 · 0.9) ≈ 42.4; accept ±5σ.
    let p = Perbill::from_percent(10);
    let mut selected = 0u64;
    for id in 0..20_000u64 {
        let r = weft_primitives::blake3_256(&(id / 1_000).to_le_bytes());
        selected += u64::from(is_selected(&r, id, p));
    }
    assert!(
        (2_000i64 - selected as i64).abs() <= 212,
        "selected {selected}"
    );
    let r = Hash([3; 32]);
    assert!((0..1_000).all(|id| !is_selected(&r, id, Perbill::ZERO)));
    assert!((0..1_000).all(|id| is_selected(&r, id, Perbill::ONE)));
}

#[test]
fn selection_through_the_hooks_matches_the_rate() {
    let p = Perbill::from_percent(25);
    let st = world(p);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let t0 = trainer_of(&o, 0);
    let n = 800u64;
    for step in 0..n {
        let now = step + 1;
        commit_step(
            &mut o,
            &mut ev,
            now,
            &t0,
            0,
            0,
            0,
            step,
            step_roots(step),
            None,
            CPU,
            NOSEALS,
            None,
        )
        .unwrap();
        // Keep the trainer free of pending slashes: only selection is under test here.
        randomness::RANDOMNESS.insert(
            &mut o,
            &now,
            &weft_primitives::blake3_256(&now.to_le_bytes()),
        );
        on_initialize(&mut o, &mut ev, now).unwrap();
    }
    let opened = ev
        .of::<Event>()
        .iter()
        .filter(|e| matches!(e, Event::AuditOpened { .. }))
        .count() as i64;
    // mean 200 (minus the last 2 not yet due), σ = √(800 · 0.25 · 0.75) ≈ 12.2; ±5σ.
    assert!((opened - 200).abs() <= 62, "opened {opened}");
}

fn open_one_audit(o: &mut Overlay<'_>, ev: &mut Recorder) -> (CommitmentId, Audit, AccountId) {
    let t0 = trainer_of(o, 0);
    let id = commit_step(
        o,
        ev,
        1,
        &t0,
        0,
        0,
        0,
        0,
        roots(1),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    block(o, ev, 2);
    block(o, ev, 3);
    let a = audit(o, id).unwrap().expect("selected with p = 1");
    assert_eq!((a.reveal_deadline, a.attest_deadline), (6, 9));
    assert_eq!(a.seats.len(), 3);
    (id, a, t0)
}

fn v_of(who: &AccountId) -> u8 {
    who.0[0]
}

#[test]
fn a_passed_audit_credits_and_certifies() {
    let st = world(Perbill::ONE);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (id, a, t0) = open_one_audit(&mut o, &mut ev);
    let seats: Vec<u8> = a.seats.iter().map(|x| v_of(&x.account)).collect();
    // Wrong key, wrong message, wrong reason, not an auditor.
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(seats[0]),
            id,
            Verdict::Pass,
            None,
            sign(seats[1], id, Verdict::Pass)
        ),
        Err(Error::BadSignature.into())
    );
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(seats[0]),
            id,
            Verdict::Pass,
            None,
            sign(seats[0], id, Verdict::Fail)
        ),
        Err(Error::BadSignature.into())
    );
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(seats[0]),
            id,
            Verdict::Pass,
            Some(FailReason::Mismatch),
            sign(seats[0], id, Verdict::Pass)
        ),
        Err(Error::BadReason.into())
    );
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(1),
            id,
            Verdict::Pass,
            None,
            sign(seats[0], id, Verdict::Pass)
        ),
        Err(Error::NotAuditor.into())
    );
    for v in &seats {
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(*v),
            id,
            Verdict::Pass,
            None,
            sign(*v, id, Verdict::Pass),
        )
        .unwrap();
    }
    let a = audit(&o, id).unwrap().unwrap();
    let cert = a.certificate.expect("settled");
    assert_eq!(cert.verdict, Verdict::Pass);
    // The certificate verifies on its own against the signers' aggregate key.
    let keys: Vec<weft_bls::PublicKey> = cert
        .signers
        .iter()
        .map(|s| sk(v_of(s)).public_key())
        .collect();
    let agg = weft_bls::Signature::from_bytes(&cert.aggregate).unwrap();
    assert!(weft_bls::verify_aggregate(
        &keys,
        &attestation_message(id, Verdict::Pass),
        &agg
    ));
    assert!(ownership::units(&o, 0, &t0).unwrap() > 0);
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(seats[0]),
            id,
            Verdict::Pass,
            None,
            sign(seats[0], id, Verdict::Pass)
        ),
        Err(Error::AlreadyAttested.into())
    );
    // Deadline: everyone attested and agreed; nobody slashed.
    for n in 4..=9 {
        block(&mut o, &mut ev, n);
    }
    assert!(!ev
        .of::<staking::Event>()
        .iter()
        .any(|e| matches!(e, staking::Event::OffenceReported { .. })));
}

#[test]
fn a_failed_audit_slashes_and_removes_the_trainer_and_the_contradicted_auditor() {
    let st = world(Perbill::ONE);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (id, a, t0) = open_one_audit(&mut o, &mut ev);
    let mut seats: Vec<(Balance, u8)> = a
        .seats
        .iter()
        .map(|x| (x.stake, v_of(&x.account)))
        .collect();
    seats.sort();
    let (_, small) = seats[0];
    // Earlier work of the trainer (an unaudited step) and of another owner.
    let other = acc(200);
    ownership::credit(&mut o, &mut ev, 0, &t0, 0).unwrap();
    ownership::credit(&mut o, &mut ev, 0, &other, 0).unwrap();
    let earned = ownership::units(&o, 0, &t0).unwrap();
    assert!(earned > 0);
    let total_before = ownership::total_units(&o, 0).unwrap();
    // NoReveal only after the reveal deadline.
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            4,
            &acc(seats[1].1),
            id,
            Verdict::Fail,
            Some(FailReason::NoReveal),
            sign(seats[1].1, id, Verdict::Fail)
        ),
        Err(Error::TooEarly.into())
    );
    attest(
        &mut o,
        &mut ev,
        4,
        &acc(small),
        id,
        Verdict::Pass,
        None,
        sign(small, id, Verdict::Pass),
    )
    .unwrap();
    attest(
        &mut o,
        &mut ev,
        4,
        &acc(seats[1].1),
        id,
        Verdict::Fail,
        Some(FailReason::Mismatch),
        sign(seats[1].1, id, Verdict::Fail),
    )
    .unwrap();
    assert!(audit(&o, id).unwrap().unwrap().certificate.is_none());
    attest(
        &mut o,
        &mut ev,
        5,
        &acc(seats[2].1),
        id,
        Verdict::Fail,
        Some(FailReason::Mismatch),
        sign(seats[2].1, id, Verdict::Fail),
    )
    .unwrap();
    assert_eq!(
        audit(&o, id).unwrap().unwrap().certificate.unwrap().verdict,
        Verdict::Fail
    );
    // The trainer: offence reported, chilled, removed; the run paused; the step void.
    assert!(staking::trainer(&o, &t0).unwrap().is_none());
    assert_eq!(stages::slot(&o, 0, 0, 0).unwrap(), None);
    assert!(runs::run(&o, 0).unwrap().unwrap().paused);
    assert_eq!(
        commitment(&o, id).unwrap().unwrap().status,
        CommitStatus::Voided
    );
    // It forfeits its whole contribution; the other owner now holds everything.
    assert_eq!(ownership::units(&o, 0, &t0).unwrap(), 0);
    assert_eq!(
        ownership::total_units(&o, 0).unwrap(),
        total_before - earned
    );
    assert_eq!(ownership::owners(&o, 0).unwrap(), vec![other]);
    assert!(ev
        .of::<ownership::Event>()
        .contains(&ownership::Event::UnitsForfeited {
            run: 0,
            who: t0,
            units: earned
        }));
    let offenders = |ev: &Recorder| -> Vec<AccountId> {
        ev.of::<staking::Event>()
            .iter()
            .filter_map(|e| match e {
                staking::Event::OffenceReported { offender, .. } => Some(*offender),
                _ => None,
            })
            .collect()
    };
    assert_eq!(offenders(&ev), vec![t0]);
    for n in 6..=9 {
        block(&mut o, &mut ev, n);
    }
    // The contradicted auditor is slashed at the deadline.
    assert_eq!(offenders(&ev), vec![t0, acc(small)]);
    // Slashes apply after the deferral (30 blocks in the default config) ... reserved shrinks.
    let before = balances::account(&o, &t0).unwrap().reserved;
    staking::on_initialize(&mut o, &mut ev, 5 + 30, &acc(0)).unwrap();
    let after = balances::account(&o, &t0).unwrap().reserved;
    assert_eq!(before - after, Perbill::from_percent(20).mul_floor(before));
}

#[test]
fn unsettled_audits_are_void_and_silent_auditors_slashed() {
    let st = world(Perbill::ONE);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (id, a, t0) = open_one_audit(&mut o, &mut ev);
    let first = v_of(&a.seats[0].account);
    attest(
        &mut o,
        &mut ev,
        7,
        &acc(first),
        id,
        Verdict::Fail,
        Some(FailReason::NoReveal),
        sign(first, id, Verdict::Fail),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for n in 4..=9 {
        block(&mut o, &mut ev, n);
    }
    assert_eq!(
        commitment(&o, id).unwrap().unwrap().status,
        CommitStatus::Inconclusive
    );
    assert_eq!(ownership::units(&o, 0, &t0).unwrap(), 0);
    assert_eq!(
        attest(
            &mut o,
            &mut ev,
            10,
            &acc(first),
            id,
            Verdict::Fail,
            Some(FailReason::Late),
            sign(first, id, Verdict::Fail)
        ),
        Err(Error::AuditClosed.into())
    );
    let missed: Vec<AccountId> = ev
        .of::<staking::Event>()
        .iter()
        .filter_map(|e| match e {
            staking::Event::OffenceReported {
                offender,
                kind: staking::OffenceKind::MissedAttestation,
                ..
            } => Some(*offender),
            _ => None,
        })
        .collect();
    assert_eq!(missed.len(), 2);
    assert!(!missed.contains(&acc(first)));
}

#[test]
fn seats_are_not_slashed_for_missing_a_trainer_the_chain_dropped() {
    let st = world(Perbill::ONE);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let (id, _, t0) = open_one_audit(&mut o, &mut ev);
    // The trainer loses its record (as a slashed trainer does) before anyone could attest.
    staking::chill(&mut o, &mut ev, &t0).unwrap();
    for n in 4..=9 {
        block(&mut o, &mut ev, n);
    }
    assert_eq!(
        commitment(&o, id).unwrap().unwrap().status,
        CommitStatus::Inconclusive
    );
    let missed = ev
        .of::<staking::Event>()
        .iter()
        .filter(|e| {
            matches!(
                e,
                staking::Event::OffenceReported {
                    kind: staking::OffenceKind::MissedAttestation,
                    ..
                }
            )
        })
        .count();
    assert_eq!(missed, 0);
}

/// Makes commitment `id` point at a run that does not exist, so that processing it fails
/// with `runs::Error::UnknownRun`.
fn break_commitment(o: &mut Overlay<'_>, id: CommitmentId) {
    let mut c = commitment(o, id).unwrap().unwrap();
    c.run = 99;
    COMMITMENTS.insert(o, &id, &c);
}

#[test]
fn a_failing_selection_does_not_block_the_rest_of_the_queue() {
    let st = world(Perbill::ZERO);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let t0 = trainer_of(&o, 0);
    let bad = commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        0,
        roots(1),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    let good = commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        1,
        roots(2),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    assert_eq!(SELECTION_QUEUE.get(&o, &3).unwrap(), Some(vec![bad, good]));
    break_commitment(&mut o, bad);
    randomness::RANDOMNESS.insert(&mut o, &3, &Hash([3; 32]));
    ev.clear();

    assert_eq!(
        as_executive(&mut o, &mut ev, |o, ev| on_initialize(o, ev, 3)),
        Ok(())
    );

    // The second commitment was processed (credited), the first one left as it was.
    assert_eq!(
        commitment(&o, good).unwrap().unwrap().status,
        CommitStatus::Credited
    );
    assert!(ownership::units(&o, 0, &t0).unwrap() > 0);
    assert_eq!(
        commitment(&o, bad).unwrap().unwrap().status,
        CommitStatus::Committed
    );
    // The failure is on record, and the queue entry is gone.
    let failed: Vec<(CommitmentId, u8)> = ev
        .of::<Event>()
        .into_iter()
        .filter_map(|e| match e {
            Event::SelectionFailed { commitment, error } => Some((commitment, error.pallet)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(bad, index::RUNS)]);
    assert_eq!(SELECTION_QUEUE.get(&o, &3).unwrap(), None);
}

#[test]
fn a_failing_audit_close_does_not_block_the_rest_of_the_deadline_queue() {
    let st = world(Perbill::ONE);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let t0 = trainer_of(&o, 0);
    let bad = commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        0,
        roots(1),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    let good = commit_step(
        &mut o,
        &mut ev,
        1,
        &t0,
        0,
        0,
        0,
        1,
        roots(2),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    for n in 2..=3 {
        block(&mut o, &mut ev, n);
    }
    assert!(audit(&o, bad).unwrap().is_some());
    assert!(audit(&o, good).unwrap().is_some());
    assert_eq!(DEADLINES.get(&o, &9).unwrap(), Some(vec![bad, good]));
    break_commitment(&mut o, bad);
    for n in 4..=8 {
        block(&mut o, &mut ev, n);
    }
    randomness::RANDOMNESS.insert(&mut o, &9, &Hash([9; 32]));
    on_initialize(&mut o, &mut ev, 9).unwrap();
    ev.clear();

    assert_eq!(
        as_executive(&mut o, &mut ev, |o, ev| on_finalize(o, ev, 9)),
        Ok(())
    );

    // The second audit was closed (nobody attested: inconclusive, silent auditors slashed).
    assert!(audit(&o, good).unwrap().unwrap().closed);
    assert_eq!(
        commitment(&o, good).unwrap().unwrap().status,
        CommitStatus::Inconclusive
    );
    assert_eq!(
        ev.of::<staking::Event>()
            .iter()
            .filter(|e| matches!(e, staking::Event::OffenceReported { .. }))
            .count(),
        3
    );
    // The first one is untouched, the failure is on record, and the queue entry is gone.
    assert!(!audit(&o, bad).unwrap().unwrap().closed);
    let failed: Vec<(CommitmentId, u8)> = ev
        .of::<Event>()
        .into_iter()
        .filter_map(|e| match e {
            Event::AuditCloseFailed { audit, error } => Some((audit, error.pallet)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(bad, index::RUNS)]);
    assert_eq!(DEADLINES.get(&o, &9).unwrap(), None);
}

fn status(o: &Overlay<'_>) -> runs::RunStatus {
    runs::get(o, 0).unwrap().status
}

/// Commits `step` on both stages of run 0 in block `now`.
fn commit_both(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    now: BlockNumber,
    step: Step,
) -> [CommitmentId; 2] {
    let (t0, t1) = (trainer_of(o, 0), trainer_of(o, 1));
    let a = commit_step(
        o,
        ev,
        now,
        &t0,
        0,
        0,
        0,
        step,
        step_roots(step),
        None,
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    let b = commit_step(
        o,
        ev,
        now,
        &t1,
        0,
        1,
        0,
        step,
        step_roots(step),
        Some(1_000_000),
        CPU,
        NOSEALS,
        None,
    )
    .unwrap();
    [a, b]
}

#[test]
fn a_run_finishes_when_its_last_step_is_credited_everywhere() {
    let st = world_with(Perbill::ZERO, 2);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert!(runs::get(&o, 0).unwrap().is_training());
    let reserved = balances::account(&o, &acc(0)).unwrap().reserved;
    commit_both(&mut o, &mut ev, 1, 0);
    commit_both(&mut o, &mut ev, 2, 1);
    // Every step committed, the last not yet settled: still training.
    assert_eq!(status(&o), runs::RunStatus::Training);
    let t0 = trainer_of(&o, 0);
    assert_eq!(
        commit_step(
            &mut o,
            &mut ev,
            2,
            &t0,
            0,
            0,
            0,
            2,
            roots(1),
            None,
            CPU,
            NOSEALS,
            None
        ),
        Err(Error::StepLimit.into())
    );
    block(&mut o, &mut ev, 3);
    assert_eq!(status(&o), runs::RunStatus::Training);
    // Step 1 (committed in block 2) is credited in its selection block 4.
    block(&mut o, &mut ev, 4);
    assert_eq!(status(&o), runs::RunStatus::Finished);
    assert!(ev
        .of::<runs::Event>()
        .contains(&runs::Event::StatusChanged {
            run: 0,
            status: runs::RunStatus::Finished
        }));
    // The designer's bond (1) is returned.
    assert_eq!(
        balances::account(&o, &acc(0)).unwrap().reserved,
        reserved - 1
    );
    assert!(runs::active_runs(&o).unwrap().is_empty());
    // The owners got the credentials of the epoch the run finished in.
    let minted: Vec<u128> = ev
        .of::<ownership::Event>()
        .iter()
        .filter_map(|e| match e {
            ownership::Event::CredentialsMinted { run: 0, minted, .. } => Some(*minted),
            _ => None,
        })
        .collect();
    let per_epoch = runs::get(&o, 0).unwrap().params.credentials_per_epoch;
    assert_eq!(minted, vec![per_epoch]);
    assert_eq!(ownership::credential_issuance(&o, 0).unwrap(), per_epoch);
}

#[test]
fn an_audited_last_step_finishes_the_run_when_its_audit_closes() {
    let st = world_with(Perbill::ONE, 1);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert!(runs::get(&o, 0).unwrap().is_training());
    let ids = commit_both(&mut o, &mut ev, 1, 0);
    block(&mut o, &mut ev, 2);
    block(&mut o, &mut ev, 3);
    // Both selected (p = 1): open audits, deadline 3 + 6 = 9.
    for id in ids {
        let a = audit(&o, id).unwrap().expect("selected with p = 1");
        assert_eq!(a.attest_deadline, 9);
        for seat in &a.seats {
            let v = v_of(&seat.account);
            attest(
                &mut o,
                &mut ev,
                4,
                &seat.account,
                id,
                Verdict::Pass,
                None,
                sign(v, id, Verdict::Pass),
            )
            .unwrap();
        }
        assert_eq!(
            commitment(&o, id).unwrap().unwrap().status,
            CommitStatus::Credited
        );
    }
    // Credited, but the audits are open until their deadline: still training.
    for n in 4..9 {
        block(&mut o, &mut ev, n);
        assert_eq!(status(&o), runs::RunStatus::Training, "block {n}");
    }
    block(&mut o, &mut ev, 9);
    assert_eq!(status(&o), runs::RunStatus::Finished);
}

#[test]
fn a_halted_run_does_not_finish() {
    let st = world_with(Perbill::ZERO, 1);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert!(runs::get(&o, 0).unwrap().is_training());
    commit_both(&mut o, &mut ev, 1, 0);
    runs::set_status(&mut o, &mut ev, 0, runs::RunStatus::Halted).unwrap();
    block(&mut o, &mut ev, 3);
    assert_eq!(status(&o), runs::RunStatus::Halted);
}

mod pipeline;
mod replicas;
