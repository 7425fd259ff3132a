#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use weft_pallet_testkit::{self as testkit, acc, Recorder};
use weft_primitives::storage::{MemoryState, Overlay};

const ED: Balance = 10;

fn cfg() -> Config {
    Config {
        epoch_length: 10,
        bonding_period: 60,
        slash_defer: 30,
        span_epochs: 6,
        min_validator_bond: 1_000,
        min_trainer_bond: 100,
        max_unlocking_chunks: 4,
        reporter_share: Perbill::from_percent(10),
        max_validators: 2,
        max_candidates: 10,
        epoch_reward: 1_000,
        history_depth: 3,
        equivocation_slash: Perbill::from_percent(10),
    }
}

fn genesis(endowed: &[(AccountId, Balance)]) -> MemoryState {
    testkit::genesis(|o, ev| {
        balances::build_genesis(o, ED, endowed).unwrap();
        build_genesis(o, ev, &cfg(), &[]).unwrap();
    })
}

fn reserved(o: &Overlay<'_>, who: &AccountId) -> Balance {
    balances::account(o, who).unwrap().reserved
}

fn trainer_info() -> TrainerInfo {
    TrainerInfo {
        peer_id: b"peer".to_vec(),
        addrs: vec![b"/ip4/1.2.3.4/tcp/1".to_vec()],
        capacity: 2,
    }
}

#[test]
fn bond_unbond_withdraw_timing() {
    let state = genesis(&[(acc(1), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    assert_eq!(
        bond(&mut o, &mut ev, &acc(1), 1),
        Err(Error::AlreadyBonded.into())
    );
    assert_eq!(reserved(&o, &acc(1)), 5_000);
    unbond(&mut o, &mut ev, 5, &acc(1), 2_000).unwrap();
    unbond(&mut o, &mut ev, 5, &acc(1), 1_000).unwrap(); // merges into the same chunk
    let l = ledger(&o, &acc(1)).unwrap().unwrap();
    assert_eq!(
        l.unlocking,
        vec![UnlockChunk {
            value: 3_000,
            unlock_at: 65
        }]
    );
    assert_eq!(
        withdraw_unbonded(&mut o, &mut ev, 64, &acc(1)),
        Err(Error::NothingToDo.into())
    );
    withdraw_unbonded(&mut o, &mut ev, 65, &acc(1)).unwrap();
    assert_eq!(reserved(&o, &acc(1)), 2_000);
    assert_eq!(balances::account(&o, &acc(1)).unwrap().free, 8_000);
    assert_eq!(total_bonded(&o).unwrap(), 2_000);
    // Unbond everything and withdraw: the ledger disappears.
    unbond(&mut o, &mut ev, 70, &acc(1), 2_000).unwrap();
    withdraw_unbonded(&mut o, &mut ev, 130, &acc(1)).unwrap();
    assert_eq!(ledger(&o, &acc(1)).unwrap(), None);
    assert_eq!(total_bonded(&o).unwrap(), 0);
}

#[test]
fn rebond_takes_newest_chunks_and_chunks_are_bounded() {
    let state = genesis(&[(acc(1), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    for b in 1..=4 {
        unbond(&mut o, &mut ev, b, &acc(1), 100).unwrap();
    }
    assert_eq!(
        unbond(&mut o, &mut ev, 5, &acc(1), 100),
        Err(Error::TooManyChunks.into())
    );
    rebond(&mut o, &mut ev, &acc(1), 150).unwrap();
    let l = ledger(&o, &acc(1)).unwrap().unwrap();
    assert_eq!(l.active, 4_750);
    assert_eq!(l.unlocking.len(), 3);
    assert_eq!(l.unlocking[2].value, 50);
    assert_eq!(l.total(), 5_000);
}

#[test]
fn roles_need_minimum_bonds_and_valid_bls_keys() {
    let state = genesis(&[(acc(1), 10_000), (acc(2), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    let (_, pk, pop) = weft_bls::dev_keypair("one").unwrap();
    let (_, pk2, pop2) = weft_bls::dev_keypair("two").unwrap();
    assert_eq!(
        validate(&mut o, &mut ev, &acc(1), pk, pop),
        Err(Error::NotBonded.into())
    );
    bond(&mut o, &mut ev, &acc(1), 999).unwrap();
    assert_eq!(
        validate(&mut o, &mut ev, &acc(1), pk, pop),
        Err(Error::InsufficientBond.into())
    );
    bond_extra(&mut o, &mut ev, &acc(1), 1).unwrap();
    // Someone else's proof does not prove possession of this key.
    assert_eq!(
        validate(&mut o, &mut ev, &acc(1), pk, pop2),
        Err(Error::InvalidBlsKey.into())
    );
    validate(&mut o, &mut ev, &acc(1), pk, pop).unwrap();
    bond(&mut o, &mut ev, &acc(2), 2_000).unwrap();
    assert_eq!(
        validate(&mut o, &mut ev, &acc(2), pk, pop),
        Err(Error::BlsKeyInUse.into())
    );
    validate(&mut o, &mut ev, &acc(2), pk2, pop2).unwrap();
    // A validator cannot unbond below the minimum without chilling.
    assert_eq!(
        unbond(&mut o, &mut ev, 1, &acc(1), 1),
        Err(Error::InsufficientBond.into())
    );
    chill(&mut o, &mut ev, &acc(1)).unwrap();
    unbond(&mut o, &mut ev, 1, &acc(1), 1).unwrap();
    // Trainers.
    assert_eq!(
        train(
            &mut o,
            &mut ev,
            &acc(2),
            TrainerInfo {
                capacity: 0,
                ..trainer_info()
            }
        ),
        Err(Error::BadTrainerInfo.into())
    );
    train(&mut o, &mut ev, &acc(2), trainer_info()).unwrap();
    assert!(trainer(&o, &acc(2)).unwrap().is_some());
}

#[test]
fn epochs_elect_by_stake_and_pay_rewards() {
    let state = genesis(&[(acc(1), 10_000), (acc(2), 10_000), (acc(3), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    for (n, stake) in [(1u8, 3_000), (2, 2_000), (3, 5_000)] {
        bond(&mut o, &mut ev, &acc(n), stake).unwrap();
        let (_, pk, pop) = weft_bls::dev_keypair(&n.to_string()).unwrap();
        validate(&mut o, &mut ev, &acc(n), pk, pop).unwrap();
    }
    new_epoch(&mut o, &mut ev).unwrap();
    let set: Vec<AccountId> = active_set(&o).unwrap().iter().map(|v| v.account).collect();
    assert_eq!(set, vec![acc(3), acc(1)]);
    on_initialize(&mut o, &mut ev, 11, &acc(3)).unwrap();
    on_initialize(&mut o, &mut ev, 12, &acc(3)).unwrap();
    on_initialize(&mut o, &mut ev, 13, &acc(1)).unwrap();
    on_initialize(&mut o, &mut ev, 14, &acc(2)).unwrap(); // not active: no point
    let issuance = balances::total_issuance(&o).unwrap();
    new_epoch(&mut o, &mut ev).unwrap();
    assert_eq!(balances::total_issuance(&o).unwrap(), issuance + 1_000);
    let rewards = ev
        .of::<Event>()
        .into_iter()
        .filter(|e| matches!(e, Event::Rewarded { .. }))
        .collect::<Vec<_>>();
    assert_eq!(
        rewards,
        vec![
            Event::Rewarded {
                who: acc(1),
                amount: 333
            },
            Event::Rewarded {
                who: acc(3),
                amount: 667
            }
        ]
    );
    assert_eq!(current_epoch(&o).unwrap(), 2);
}

#[test]
fn slashes_are_deferred_cancellable_and_max_not_sum() {
    let state = genesis(&[(acc(1), 10_000), (acc(9), 100)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    train(&mut o, &mut ev, &acc(1), trainer_info()).unwrap();
    let a = report_offence(
        &mut o,
        &mut ev,
        1,
        &acc(1),
        Perbill::from_percent(10),
        Some(acc(9)),
        OffenceKind::AuditFailed,
    )
    .unwrap()
    .unwrap();
    // Chilled at once.
    assert!(trainer(&o, &acc(1)).unwrap().is_none());
    let b = report_offence(
        &mut o,
        &mut ev,
        2,
        &acc(1),
        Perbill::from_percent(20),
        None,
        OffenceKind::AuditFailed,
    )
    .unwrap()
    .unwrap();
    let c = report_offence(
        &mut o,
        &mut ev,
        3,
        &acc(1),
        Perbill::from_percent(50),
        None,
        OffenceKind::AuditFailed,
    )
    .unwrap()
    .unwrap();
    assert_eq!(pending_slash(&o, a).unwrap().unwrap().apply_at, 31);
    // Not yet applied.
    for n in 4..31 {
        on_initialize(&mut o, &mut ev, n, &acc(0)).unwrap();
    }
    assert_eq!(reserved(&o, &acc(1)), 5_000);
    cancel_slash(&mut o, &mut ev, c).unwrap();
    assert_eq!(
        cancel_slash(&mut o, &mut ev, c),
        Err(Error::UnknownSlash.into())
    );
    // 10% then 20% in the same span: 500, then 1000 − 500 = 500 more. Max, not sum.
    on_initialize(&mut o, &mut ev, 31, &acc(0)).unwrap();
    assert_eq!(reserved(&o, &acc(1)), 4_500);
    assert_eq!(balances::account(&o, &acc(9)).unwrap().free, 150); // 10% of 500 to the reporter
    on_initialize(&mut o, &mut ev, 32, &acc(0)).unwrap();
    assert_eq!(reserved(&o, &acc(1)), 4_000);
    assert_eq!(ledger(&o, &acc(1)).unwrap().unwrap().total(), 4_000);
    assert!(pending_slash(&o, b).unwrap().is_none());
    assert_eq!(PENDING_SLASHES.get(&o, &acc(1)).unwrap(), None);
    // What applied is kept with what it took; the cancelled one left no record.
    let first = applied_slash(&o, a).unwrap().unwrap();
    assert_eq!(
        (first.burnt, first.reporter_reward, first.applied_at),
        (500, 50, 31)
    );
    assert_eq!(first.slash.reporter, Some(acc(9)));
    let second = applied_slash(&o, b).unwrap().unwrap();
    assert_eq!((second.burnt, second.applied_at), (500, 32));
    assert_eq!(second.slash.amount, 1_000);
    assert!(applied_slash(&o, c).unwrap().is_none());
}

#[test]
fn nobody_escapes_a_slash_by_unbonding() {
    let state = genesis(&[(acc(1), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    // Unbonded long ago: this chunk unlocks at block 70, before the slash applies at 80.
    unbond(&mut o, &mut ev, 10, &acc(1), 1_000).unwrap();
    report_offence(
        &mut o,
        &mut ev,
        50,
        &acc(1),
        Perbill::from_percent(100),
        None,
        OffenceKind::AuditFailed,
    )
    .unwrap();
    // Unbond the rest right after the offence.
    unbond(&mut o, &mut ev, 51, &acc(1), 4_000).unwrap();
    for n in 51..80 {
        on_initialize(&mut o, &mut ev, n, &acc(0)).unwrap();
        assert_eq!(
            withdraw_unbonded(&mut o, &mut ev, n, &acc(1)),
            Err(Error::SlashPending.into())
        );
    }
    on_initialize(&mut o, &mut ev, 80, &acc(0)).unwrap();
    assert_eq!(reserved(&o, &acc(1)), 0);
    assert_eq!(ledger(&o, &acc(1)).unwrap(), None);
    assert_eq!(balances::account(&o, &acc(1)).unwrap().free, 5_000);
}

#[derive(Debug, Clone)]
enum Op {
    Bond(u8, Balance),
    Unbond(u8, Balance),
    Withdraw(u8),
    Rebond(u8, Balance),
    Offence(u8, u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u128..3_000).prop_map(|(a, v)| Op::Bond(a, v)),
        (0u8..3, 1u128..3_000).prop_map(|(a, v)| Op::Unbond(a, v)),
        (0u8..3).prop_map(Op::Withdraw),
        (0u8..3, 1u128..3_000).prop_map(|(a, v)| Op::Rebond(a, v)),
        (0u8..3, 0u32..=100).prop_map(|(a, p)| Op::Offence(a, p)),
        (1u64..40).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Bonded totals equal the sum of ledgers and of reserved balances, issuance is conserved
    /// (slashes burn), and — since all offences fall in one span — each offender pays exactly
    /// the largest amount reported against it: unbonding never lets it escape.
    #[test]
    fn staking_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let accounts: Vec<AccountId> = (0..3).map(acc).collect();
        let state = genesis(&[(acc(0), 20_000), (acc(1), 20_000), (acc(2), 20_000)]);
        let mut o = Overlay::new(&state);
        let mut ev = Recorder::default();
        let mut now: BlockNumber = 1;
        let mut max_reported = [0u128; 3];
        for op in ops {
            o.start_transaction();
            let r: Result<(), Failure> = match op {
                Op::Bond(a, v) => if ledger(&o, &acc(a)).unwrap().is_some() { bond_extra(&mut o, &mut ev, &acc(a), v) } else { bond(&mut o, &mut ev, &acc(a), v) },
                Op::Unbond(a, v) => unbond(&mut o, &mut ev, now, &acc(a), v),
                Op::Withdraw(a) => withdraw_unbonded(&mut o, &mut ev, now, &acc(a)),
                Op::Rebond(a, v) => rebond(&mut o, &mut ev, &acc(a), v),
                Op::Offence(a, p) => report_offence(&mut o, &mut ev, now, &acc(a), Perbill::from_percent(p), None, OffenceKind::AuditFailed).map(|id| {
                    if let Some(id) = id {
                        let amount = SLASHES.get(&o, &id).unwrap().unwrap().amount;
                        max_reported[a as usize] = max_reported[a as usize].max(amount);
                    }
                }),
                Op::Advance(k) => {
                    for _ in 0..k {
                        now += 1;
                        on_initialize(&mut o, &mut ev, now, &acc(7)).unwrap();
                    }
                    Ok(())
                }
            };
            if r.is_ok() { o.commit_transaction() } else { o.rollback_transaction() }
            let mut sum = 0;
            for a in &accounts {
                let t = ledger(&o, a).unwrap().map(|l| l.total()).unwrap_or(0);
                prop_assert_eq!(t, reserved(&o, a));
                sum += t;
            }
            prop_assert_eq!(total_bonded(&o).unwrap(), sum);
            let bal: Balance = accounts.iter().map(|a| balances::account(&o, a).unwrap().total()).sum();
            prop_assert_eq!(balances::total_issuance(&o).unwrap(), bal);
        }
        // Let every pending slash apply.
        for _ in 0..40 {
            now += 1;
            on_initialize(&mut o, &mut ev, now, &acc(7)).unwrap();
        }
        for (i, a) in accounts.iter().enumerate() {
            let burnt: Balance = ev.of::<Event>().iter().map(|e| match e {
                Event::Slashed { offender, amount, .. } if offender == a => *amount,
                _ => 0,
            }).sum();
            prop_assert_eq!(burnt, max_reported[i]);
        }
    }
}

/// Runs a hook the way the runtime executive does: in one storage transaction, whose writes
/// and events are dropped when the hook fails with a dispatch error.
fn as_executive<R>(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    hook: impl FnOnce(&mut Overlay<'_>, &mut Recorder) -> Result<R, Failure>,
) -> Result<R, weft_primitives::DispatchError> {
    weft_pallet_support::transactional_item(o, ev, |o, ev| hook(o, ev)).unwrap()
}

#[test]
fn a_failing_slash_does_not_block_the_rest_of_the_slash_queue() {
    let state = genesis(&[(acc(1), 10_000), (acc(2), 10_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    bond(&mut o, &mut ev, &acc(2), 500).unwrap();
    let tenth = Perbill::from_percent(10);
    let bad = report_offence(
        &mut o,
        &mut ev,
        1,
        &acc(1),
        tenth,
        None,
        OffenceKind::AuditFailed,
    )
    .unwrap()
    .unwrap();
    let good = report_offence(
        &mut o,
        &mut ev,
        1,
        &acc(2),
        tenth,
        None,
        OffenceKind::AuditFailed,
    )
    .unwrap()
    .unwrap();
    assert_eq!(SLASH_QUEUE.get(&o, &31).unwrap(), Some(vec![bad, good]));
    // Inconsistent totals: less bonded in all than acc(1) alone has, so the ledger update of
    // the first slash underflows (`Overflow`); the second one still fits.
    TOTAL_BONDED.put(&mut o, &1_000);
    ev.clear();

    let slashed = as_executive(&mut o, &mut ev, |o, ev| on_initialize(o, ev, 31, &acc(0)));

    // The second slash applied; the first one left everything as it was and stays pending.
    assert_eq!(slashed, Ok(vec![acc(2)]));
    assert_eq!(reserved(&o, &acc(2)), 450);
    assert_eq!(reserved(&o, &acc(1)), 5_000);
    assert_eq!(ledger(&o, &acc(1)).unwrap().unwrap().total(), 5_000);
    assert!(pending_slash(&o, bad).unwrap().is_some());
    assert!(pending_slash(&o, good).unwrap().is_none());
    // Neither its staking nor its balances events survive; the failure is on record.
    assert!(!ev
        .of::<balances::Event>()
        .iter()
        .any(|e| matches!(e, balances::Event::Slashed { who, .. } if *who == acc(1))));
    let events = ev.of::<Event>();
    assert!(events.contains(&Event::SlashFailed {
        slash: bad,
        error: Failure::from(Error::Overflow)
            .dispatch_error()
            .cloned()
            .unwrap(),
    }));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Slashed { slash, amount: 50, .. } if *slash == good)));
    // The queue entry is gone.
    assert_eq!(SLASH_QUEUE.get(&o, &31).unwrap(), None);
}

#[test]
fn equivocation_evidence_is_verified_and_slashed_once() {
    use weft_finality::{Equivocation, SignedVote, Vote, VoteKind};
    use weft_primitives::Hash;
    let state = genesis(&[(acc(1), 10_000), (acc(9), 100)]);
    let mut o = Overlay::new(&state);
    let mut ev = Recorder::default();
    let genesis_hash = Hash([42; 32]);
    weft_pallet_support::blocks::BLOCK_HASH.insert(&mut o, &0, &genesis_hash);
    let sk = weft_bls::SecretKey::from_seed(b"validator-1").unwrap();
    bond(&mut o, &mut ev, &acc(1), 5_000).unwrap();
    validate(
        &mut o,
        &mut ev,
        &acc(1),
        sk.public_key().to_bytes(),
        sk.proof_of_possession().unwrap().to_bytes(),
    )
    .unwrap();
    new_epoch(&mut o, &mut ev).unwrap();
    assert_eq!(current_epoch(&o).unwrap(), 1);
    let vote = |block: u8| Vote {
        kind: VoteKind::Precommit,
        height: 12,
        round: 0,
        block: Some(Hash([block; 32])),
        validator: acc(1),
    };
    let signed = |block: u8, key: &weft_bls::SecretKey| {
        SignedVote::sign(vote(block), &genesis_hash, key).unwrap()
    };
    let evidence = Equivocation::Votes {
        first: signed(1, &sk),
        second: signed(2, &sk),
    };
    // Signed by someone else: refused, nothing changes.
    let forger = weft_bls::SecretKey::from_seed(b"forger").unwrap();
    let forged = Equivocation::Votes {
        first: signed(1, &forger),
        second: signed(2, &forger),
    };
    assert_eq!(
        equivocation::report(&mut o, &mut ev, 15, &acc(9), &forged),
        Err(Error::InvalidEvidence.into())
    );
    assert_eq!(
        equivocation::report(&mut o, &mut ev, 5, &acc(9), &evidence),
        Err(Error::EvidenceOutOfRange.into()),
        "a height not reached yet"
    );
    let slash = equivocation::report(&mut o, &mut ev, 15, &acc(9), &evidence)
        .unwrap()
        .unwrap();
    let pending = pending_slash(&o, slash).unwrap().unwrap();
    assert_eq!(pending.offender, acc(1));
    assert_eq!(pending.kind, OffenceKind::Equivocation);
    assert_eq!(pending.amount, 500);
    assert_eq!(pending.reporter, Some(acc(9)));
    assert_eq!(
        equivocation::report(&mut o, &mut ev, 16, &acc(9), &evidence),
        Err(Error::AlreadyReported.into())
    );
}
