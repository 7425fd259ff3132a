#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use weft_pallet_support::Perbill;
use weft_pallet_testkit::{
    self as testkit, acc, endowed, protocol_genesis, run_spec, validator, Recorder,
};
use weft_primitives::storage::{MemoryState, Overlay};

/// Accounts 1..=n endowed; `validators` of them bonded as validators.
fn genesis(n: u8, validators: &[u8]) -> MemoryState {
    testkit::genesis(|o, ev| {
        let stakers: Vec<staking::GenesisStaker> =
            validators.iter().map(|v| validator(*v, 10_000)).collect();
        protocol_genesis(o, ev, &endowed(0..=n, 1_000_000), &stakers);
        build_genesis(o, &Config::default());
    })
}

fn spec(stages: StageIndex, replicas: u16, cap: StageIndex) -> runs::RunSpec {
    run_spec(
        stages,
        replicas,
        runs::RunParams {
            max_stages_per_account: cap,
            max_stages_per_auditor: cap,
            auditors_per_stage: 2,
            ..runs::RunParams::default()
        },
    )
}

fn make_trainer(o: &mut Overlay<'_>, ev: &mut Recorder, who: u8, stake: Balance, capacity: u32) {
    staking::bond(o, ev, &acc(who), stake).unwrap();
    staking::train(
        o,
        ev,
        &acc(who),
        staking::TrainerInfo {
            peer_id: vec![who],
            addrs: vec![],
            capacity,
        },
    )
    .unwrap();
}

#[test]
fn join_requires_a_trainer_and_is_not_repeated() {
    let st = genesis(4, &[]);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let run = runs::register_run(&mut o, &mut ev, 1, &acc(0), spec(2, 1, 1)).unwrap();
    assert_eq!(
        join_run(&mut o, &mut ev, &acc(1), run),
        Err(Error::NotTrainer.into())
    );
    make_trainer(&mut o, &mut ev, 1, 500, 1);
    join_run(&mut o, &mut ev, &acc(1), run).unwrap();
    assert_eq!(
        join_run(&mut o, &mut ev, &acc(1), run),
        Err(Error::AlreadyJoined.into())
    );
    assert_eq!(
        join_run(&mut o, &mut ev, &acc(1), 9),
        Err(runs::Error::UnknownRun.into())
    );
    leave_run(&mut o, &mut ev, &acc(1), run).unwrap();
    assert_eq!(
        leave_run(&mut o, &mut ev, &acc(1), run),
        Err(Error::NotJoined.into())
    );
}

#[test]
fn four_trainers_fill_four_stages_and_start_the_run() {
    let st = genesis(14, &[5, 6, 7, 8, 9, 10, 11, 12]);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let run = runs::register_run(&mut o, &mut ev, 1, &acc(0), spec(4, 1, 1)).unwrap();
    for t in 1..=4 {
        make_trainer(&mut o, &mut ev, t, 100 * t as Balance, 4);
        join_run(&mut o, &mut ev, &acc(t), run).unwrap();
    }
    assign_run(&mut o, &mut ev, run, &Hash::ZERO).unwrap();
    // Highest stake first, each to the emptiest stage.
    let holders: Vec<AccountId> = (0..4)
        .map(|st| slot(&o, run, st, 0).unwrap().unwrap())
        .collect();
    assert_eq!(holders, vec![acc(4), acc(3), acc(2), acc(1)]);
    let r = runs::run(&o, run).unwrap().unwrap();
    assert_eq!((r.status, r.paused), (runs::RunStatus::Training, false));
    // Auditors: 2 per stage, each validator at most one stage.
    for st in 0..4 {
        assert_eq!(auditors(&o, run, st).unwrap().len(), 2);
    }
    // Leaving takes effect at the next boundary; the run pauses when a stage empties.
    leave_run(&mut o, &mut ev, &acc(2), run).unwrap();
    assert_eq!(slot(&o, run, 2, 0).unwrap(), Some(acc(2)));
    assign_run(&mut o, &mut ev, run, &Hash::ZERO).unwrap();
    assert_eq!(slot(&o, run, 2, 0).unwrap(), None);
    assert!(runs::run(&o, run).unwrap().unwrap().paused);
    // A new trainer fills the gap.
    make_trainer(&mut o, &mut ev, 13, 100, 1);
    join_run(&mut o, &mut ev, &acc(13), run).unwrap();
    assign_run(&mut o, &mut ev, run, &Hash::ZERO).unwrap();
    assert_eq!(slot(&o, run, 2, 0).unwrap(), Some(acc(13)));
    assert!(!runs::run(&o, run).unwrap().unwrap().paused);
    // A slashed trainer is removed at once and the run pauses.
    remove_account(&mut o, &mut ev, &acc(13)).unwrap();
    assert_eq!(slot(&o, run, 2, 0).unwrap(), None);
    assert!(runs::run(&o, run).unwrap().unwrap().paused);
    assert!(!candidates(&o, run).unwrap().contains(&acc(13)));
}

#[test]
fn a_run_with_replicas_starts_only_when_every_slot_is_filled() {
    let st = genesis(14, &[5, 6, 7, 8, 9, 10]);
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let run = runs::register_run(&mut o, &mut ev, 1, &acc(0), spec(2, 2, 1)).unwrap();
    for t in 1..=3 {
        make_trainer(&mut o, &mut ev, t, 100 * t as Balance, 1);
        join_run(&mut o, &mut ev, &acc(t), run).unwrap();
    }
    assign_run(&mut o, &mut ev, run, &Hash::ZERO).unwrap();
    // Three of four slots: both stages have a trainer, yet replica 1 has no partner.
    assert!(slot(&o, run, 0, 0).unwrap().is_some() && slot(&o, run, 1, 0).unwrap().is_some());
    assert_eq!(slot(&o, run, 1, 1).unwrap(), None);
    let r = runs::run(&o, run).unwrap().unwrap();
    assert_eq!((r.status, r.paused), (runs::RunStatus::Pending, false));
    make_trainer(&mut o, &mut ev, 4, 100, 1);
    join_run(&mut o, &mut ev, &acc(4), run).unwrap();
    assign_run(&mut o, &mut ev, run, &Hash::ZERO).unwrap();
    assert_eq!(slot(&o, run, 1, 1).unwrap(), Some(acc(4)));
    let r = runs::run(&o, run).unwrap().unwrap();
    assert_eq!(r.status, runs::RunStatus::Training);
    // Once training, losing one replica of a stage does not pause it; losing the stage does.
    remove_account(&mut o, &mut ev, &acc(4)).unwrap();
    let r = runs::run(&o, run).unwrap().unwrap();
    assert_eq!((r.status, r.paused), (runs::RunStatus::Training, false));
    let last = slot(&o, run, 1, 0).unwrap().unwrap();
    remove_account(&mut o, &mut ev, &last).unwrap();
    assert!(runs::run(&o, run).unwrap().unwrap().paused);
}

fn check_assignment(o: &Overlay<'_>, run: RunId) -> Result<(), TestCaseError> {
    let r = runs::run(o, run).unwrap().unwrap();
    let cap = r.params.max_stages_per_account as usize;
    let mut per_account: BTreeMap<AccountId, Vec<StageIndex>> = BTreeMap::new();
    let mut some_empty = false;
    let mut all_full = true;
    for st in 0..r.stages {
        let mut n = 0;
        for rep in 0..r.replicas {
            if let Some(h) = slot(o, run, st, rep).unwrap() {
                per_account.entry(h).or_default().push(st);
                n += 1;
                prop_assert!(held(o, run, &h).unwrap().contains(&(st, rep)));
            }
        }
        some_empty |= n == 0;
        all_full &= n == r.replicas;
        for a in auditors(o, run, st).unwrap() {
            // No one audits a stage it trains.
            prop_assert!(!held(o, run, &a).unwrap().iter().any(|(s2, _)| *s2 == st));
        }
    }
    for (who, stages) in &per_account {
        // The unextractability cap, and no two replicas of one stage.
        prop_assert!(
            stages.len() <= cap,
            "{:?} holds {} > {}",
            who,
            stages.len(),
            cap
        );
        let mut d = stages.clone();
        d.dedup();
        prop_assert_eq!(d.len(), stages.len());
        prop_assert_eq!(held(o, run, who).unwrap().len(), stages.len());
        let capacity = staking::trainer(o, who)
            .unwrap()
            .map(|t| t.capacity)
            .unwrap_or(u32::MAX);
        prop_assert!(LOAD.get(o, who).unwrap().unwrap_or(0) <= capacity);
    }
    prop_assert_eq!(r.paused, some_empty);
    // A run still pending has an empty slot: it starts once all are filled.
    prop_assert!(!(all_full && r.status == runs::RunStatus::Pending));
    let mut audit_counts: BTreeMap<AccountId, usize> = BTreeMap::new();
    for st in 0..r.stages {
        for a in auditors(o, run, st).unwrap() {
            *audit_counts.entry(a).or_default() += 1;
        }
    }
    for n in audit_counts.values() {
        prop_assert!(*n <= r.params.max_stages_per_auditor as usize);
    }
    Ok(())
}

proptest! {
    /// Over random trainers, joins, leaves and slashes across epochs: nobody holds more than
    /// `max_stages_per_account` slots of a run or more than its capacity, nobody audits a stage
    /// it trains, auditors stay within their cap, and the run is paused iff a stage is empty.
    #[test]
    fn assignment_never_exceeds_caps(
        stages in 2u16..6,
        replicas in 1u16..3,
        cap_sel in 0u16..8,
        trainers in proptest::collection::vec((100u128..5_000, 1u32..4), 1..12),
        ops in proptest::collection::vec((0u8..3, 0u8..12), 0..30),
    ) {
        let cap = 1 + cap_sel % (stages - 1);
        let st = genesis(30, &[20, 21, 22]);
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let run = runs::register_run(&mut o, &mut ev, 1, &acc(0), spec(stages, replicas, cap)).unwrap();
        let second = runs::register_run(&mut o, &mut ev, 1, &acc(0), spec(stages, 1, cap)).unwrap();
        for (i, (stake, capacity)) in trainers.iter().enumerate() {
            let who = i as u8 + 1;
            make_trainer(&mut o, &mut ev, who, *stake, *capacity);
            join_run(&mut o, &mut ev, &acc(who), run).unwrap();
            let _ = join_run(&mut o, &mut ev, &acc(who), second);
        }
        assign_run(&mut o, &mut ev, run, &Hash([1; 32])).unwrap();
        assign_run(&mut o, &mut ev, second, &Hash([1; 32])).unwrap();
        check_assignment(&o, run)?;
        for (kind, t) in ops {
            let who = acc(t % trainers.len() as u8 + 1);
            match kind {
                0 => { let _ = leave_run(&mut o, &mut ev, &who, run); }
                1 => { let _ = join_run(&mut o, &mut ev, &who, run); }
                _ => {
                    staking::report_offence(&mut o, &mut ev, 1, &who, Perbill::from_percent(1), None, staking::OffenceKind::AuditFailed).unwrap();
                    remove_account(&mut o, &mut ev, &who).unwrap();
                }
            }
            check_assignment(&o, run)?;
            assign_run(&mut o, &mut ev, run, &Hash([2; 32])).unwrap();
            assign_run(&mut o, &mut ev, second, &Hash([2; 32])).unwrap();
            check_assignment(&o, run)?;
            check_assignment(&o, second)?;
        }
    }
}
