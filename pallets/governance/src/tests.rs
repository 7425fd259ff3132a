#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use weft_pallet_testkit::{
    acc, as_executive, endowed, genesis, protocol_genesis, run_spec, validator, Recorder,
};
use weft_primitives::storage::{MemoryState, Overlay};

/// Validators 1, 2, 3 with stakes 10k, 10k, 20k; run 0 training; deposit 100.
fn world() -> MemoryState {
    genesis(|o, ev| {
        let stakers = [
            validator(1, 10_000),
            validator(2, 10_000),
            validator(3, 20_000),
        ];
        protocol_genesis(o, ev, &endowed(0..=9, 1_000_000), &stakers);
        build_genesis(
            o,
            &Config {
                proposal_deposit: 100,
                ..Config::default()
            },
        );
        let spec = run_spec(2, 1, runs::RunParams::default());
        runs::register_run(o, ev, 0, &acc(0), spec).unwrap();
        runs::set_status(o, ev, 0, runs::RunStatus::Training).unwrap();
    })
}

fn status(o: &Overlay<'_>) -> runs::RunStatus {
    runs::run(o, 0).unwrap().unwrap().status
}

#[test]
fn halting_needs_less_stake_than_resuming() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert_eq!(
        propose(&mut o, &mut ev, 1, &acc(9), Action::HaltRun { run: 0 }),
        Err(Error::NotStaked.into())
    );
    let halt = propose(&mut o, &mut ev, 1, &acc(1), Action::HaltRun { run: 0 }).unwrap();
    assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 10_100);
    vote(&mut o, &mut ev, 2, &acc(1), halt, true).unwrap(); // 25 %: not yet
    assert_eq!(
        proposal(&o, halt).unwrap().unwrap().status,
        ProposalStatus::Voting
    );
    vote(&mut o, &mut ev, 3, &acc(2), halt, true).unwrap(); // 50 % > 1/3: passes
    assert_eq!(
        proposal(&o, halt).unwrap().unwrap().status,
        ProposalStatus::Passed { enact_at: 8 }
    );
    assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 10_000);
    for n in 4..8 {
        on_initialize(&mut o, &mut ev, n).unwrap();
        assert_eq!(status(&o), runs::RunStatus::Training);
    }
    on_initialize(&mut o, &mut ev, 8).unwrap();
    assert_eq!(status(&o), runs::RunStatus::Halted);
    // The same 50 % cannot resume it (needs more than 2/3).
    let resume = propose(&mut o, &mut ev, 9, &acc(1), Action::ResumeRun { run: 0 }).unwrap();
    vote(&mut o, &mut ev, 9, &acc(1), resume, true).unwrap();
    vote(&mut o, &mut ev, 9, &acc(2), resume, true).unwrap();
    assert_eq!(
        proposal(&o, resume).unwrap().unwrap().status,
        ProposalStatus::Voting
    );
    vote(&mut o, &mut ev, 10, &acc(3), resume, true).unwrap();
    for n in 10..=15 {
        on_initialize(&mut o, &mut ev, n).unwrap();
    }
    assert_eq!(status(&o), runs::RunStatus::Training);
}

#[test]
fn unbonded_voters_lose_their_weight_and_proposals_expire() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let id = propose(&mut o, &mut ev, 1, &acc(3), Action::ResumeRun { run: 0 }).unwrap();
    vote(&mut o, &mut ev, 1, &acc(3), id, true).unwrap(); // 50 %
    staking::chill(&mut o, &mut ev, &acc(3)).unwrap();
    staking::unbond(&mut o, &mut ev, 2, &acc(3), 20_000).unwrap();
    vote(&mut o, &mut ev, 3, &acc(1), id, true).unwrap();
    vote(&mut o, &mut ev, 3, &acc(2), id, true).unwrap();
    // acc(3) no longer counts: 20k of 20k active... which is all the active stake now.
    let total = staking::total_active(&o).unwrap();
    assert_eq!(total, 20_000);
    assert!(matches!(
        proposal(&o, id).unwrap().unwrap().status,
        ProposalStatus::Passed { .. }
    ));
    let id2 = propose(&mut o, &mut ev, 5, &acc(1), Action::HaltRun { run: 0 }).unwrap();
    assert_eq!(
        vote(&mut o, &mut ev, 5, &acc(9), id2, true),
        Err(Error::NotStaked.into())
    );
    for n in 6..=26 {
        on_initialize(&mut o, &mut ev, n).unwrap();
    }
    assert_eq!(
        proposal(&o, id2).unwrap().unwrap().status,
        ProposalStatus::Expired
    );
    assert_eq!(
        vote(&mut o, &mut ev, 26, &acc(1), id2, true),
        Err(Error::NotVoting.into())
    );
    assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 10_000);
}

#[test]
fn a_deferred_slash_can_be_cancelled() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let slash = staking::report_offence(
        &mut o,
        &mut ev,
        1,
        &acc(1),
        Perbill::from_percent(50),
        None,
        staking::OffenceKind::Equivocation,
    )
    .unwrap()
    .unwrap();
    let id = propose(&mut o, &mut ev, 2, &acc(2), Action::CancelSlash { slash }).unwrap();
    vote(&mut o, &mut ev, 2, &acc(2), id, true).unwrap();
    vote(&mut o, &mut ev, 2, &acc(3), id, true).unwrap(); // 30k of 40k > 1/2: enacted at once
    assert_eq!(
        proposal(&o, id).unwrap().unwrap().status,
        ProposalStatus::Enacted
    );
    assert_eq!(staking::pending_slash(&o, slash).unwrap(), None);
    staking::on_initialize(&mut o, &mut ev, 31, &acc(0)).unwrap();
    assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 10_000);
}

#[test]
fn validators_halt_at_once_by_supermajority() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert_eq!(
        emergency_halt(&mut o, &mut ev, &acc(9), 0),
        Err(Error::NotValidator.into())
    );
    emergency_halt(&mut o, &mut ev, &acc(3), 0).unwrap(); // 50 %
    assert_eq!(status(&o), runs::RunStatus::Training);
    emergency_halt(&mut o, &mut ev, &acc(3), 0).unwrap(); // repeated: still 50 %
    assert_eq!(status(&o), runs::RunStatus::Training);
    emergency_halt(&mut o, &mut ev, &acc(1), 0).unwrap(); // 75 % > 2/3
    assert_eq!(status(&o), runs::RunStatus::Halted);
    assert_eq!(
        emergency_halt(&mut o, &mut ev, &acc(2), 0),
        Err(Error::NotHaltable.into())
    );
}

#[test]
fn a_failing_expiry_does_not_block_the_rest_of_the_queue() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let bad = propose(&mut o, &mut ev, 1, &acc(1), Action::HaltRun { run: 0 }).unwrap();
    let good = propose(&mut o, &mut ev, 1, &acc(2), Action::HaltRun { run: 0 }).unwrap();
    assert_eq!(ENDS.get(&o, &21).unwrap(), Some(vec![bad, good]));
    // Inconsistent: the first proposal claims a deposit its proposer never reserved, so
    // returning it fails (`InsufficientReserved`).
    let mut p = proposal(&o, bad).unwrap().unwrap();
    p.deposit = 1_000_000_000;
    PROPOSALS.insert(&mut o, &bad, &p);
    ev.clear();

    assert_eq!(
        as_executive(&mut o, &mut ev, |o, ev| on_initialize(o, ev, 22)),
        Ok(())
    );

    // The second proposal expired and its deposit came back; the first one is untouched.
    assert_eq!(
        proposal(&o, good).unwrap().unwrap().status,
        ProposalStatus::Expired
    );
    assert_eq!(balances::account(&o, &acc(2)).unwrap().reserved, 10_000);
    assert_eq!(
        proposal(&o, bad).unwrap().unwrap().status,
        ProposalStatus::Voting
    );
    assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 10_100);
    // The failure is on record, and the queue entry is gone.
    let events = ev.of::<Event>();
    let failed: Vec<(ProposalId, u8)> = events
        .iter()
        .filter_map(|e| match e {
            Event::ExpiryFailed { proposal, error } => Some((*proposal, error.pallet)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(bad, index::BALANCES)]);
    assert!(events.contains(&Event::Expired { proposal: good }));
    assert_eq!(ENDS.get(&o, &21).unwrap(), None);
}
