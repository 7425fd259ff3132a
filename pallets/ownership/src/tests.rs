#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use weft_pallet_testkit::{acc, endow, genesis, open_runs, run_spec, Recorder};
use weft_primitives::storage::{MemoryState, Overlay};

fn risk() -> runs::RiskSchedule {
    runs::RiskSchedule {
        base_units: 1_000_000,
        early_bonus: Perbill::from_percent(100),
        early_horizon: 10_000,
        loss_bonus: Perbill::from_percent(50),
        loss_gain: 10,
    }
}

/// A state with one training run (id 0) minting 1000 credentials per epoch.
fn with_run() -> MemoryState {
    genesis(|o, ev| {
        endow(o, &[(acc(0), 1_000)]);
        open_runs(o, ev);
        build_genesis(
            o,
            &Config {
                max_owners_per_run: 6,
            },
        );
        let params = runs::RunParams {
            credentials_per_epoch: 1_000,
            risk: risk(),
            ..runs::RunParams::default()
        };
        let run = runs::register_run(o, ev, 1, &acc(0), run_spec(2, 1, params)).unwrap();
        runs::set_status(o, ev, run, runs::RunStatus::Training).unwrap();
        runs::set_paused(o, ev, run, false).unwrap();
    })
}

#[test]
fn risk_adjusted_units() {
    let r = risk();
    assert_eq!(step_units(&r, 0, None), 2_000_000);
    assert_eq!(step_units(&r, 5_000, None), 1_500_000);
    assert_eq!(step_units(&r, 10_000, None), 1_000_000);
    assert_eq!(step_units(&r, 50_000, None), 1_000_000);
    // 1 % lower loss than the average, gain 10 → 10 % of the 50 % bonus.
    let l = StepLoss {
        loss: 1_980_000,
        ema_before: 2_000_000,
    };
    assert_eq!(step_units(&r, 10_000, Some(l)), 1_050_000);
    // Capped at the full bonus; a higher loss earns no bonus.
    let big = StepLoss {
        loss: 1_000_000,
        ema_before: 2_000_000,
    };
    assert_eq!(step_units(&r, 10_000, Some(big)), 1_500_000);
    let worse = StepLoss {
        loss: 3_000_000,
        ema_before: 2_000_000,
    };
    assert_eq!(step_units(&r, 10_000, Some(worse)), 1_000_000);
}

#[test]
fn losses_feed_the_moving_average() {
    let st = with_run();
    let mut o = Overlay::new(&st);
    record_loss(&mut o, 0, 0, 8_000_000).unwrap();
    record_loss(&mut o, 0, 1, 0).unwrap();
    assert_eq!(
        STEP_LOSS.get(&o, &(0, 1)).unwrap(),
        Some(StepLoss {
            loss: 0,
            ema_before: 8_000_000
        })
    );
    assert_eq!(LOSS_EMA.get(&o, &0).unwrap(), Some(7_000_000));
    let mut ev = Recorder::default();
    // Step 1 cut the loss to zero: full loss bonus on top of the early bonus.
    let u = credit(&mut o, &mut ev, 0, &acc(1), 1).unwrap();
    assert_eq!(
        u,
        step_units(
            &risk(),
            1,
            Some(StepLoss {
                loss: 0,
                ema_before: 8_000_000
            })
        )
    );
    assert_eq!(u, 1_000_000 + 999_900 + 500_000);
}

#[test]
fn credentials_minted_transferred_redeemed_and_reissued() {
    let st = with_run();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    add_units(&mut o, 0, &acc(1), 1).unwrap();
    add_units(&mut o, 0, &acc(2), 1).unwrap();
    add_units(&mut o, 0, &acc(3), 1).unwrap();
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!(
        [
            credentials(&o, 0, &acc(1)).unwrap(),
            credentials(&o, 0, &acc(2)).unwrap(),
            credentials(&o, 0, &acc(3)).unwrap()
        ],
        [334, 333, 333]
    );
    let s = shares_of(&o, 0).unwrap();
    assert_eq!(
        s.iter().map(|(_, p)| p.parts() as u64).sum::<u64>(),
        1_000_000_000
    );
    transfer_credentials(&mut o, &mut ev, 0, &acc(1), &acc(9), 10).unwrap();
    assert_eq!(
        transfer_credentials(&mut o, &mut ev, 0, &acc(9), &acc(1), 11),
        Err(Error::Insufficient.into())
    );
    redeem_credential(&mut o, &mut ev, 0, &acc(9), 4, Hash([7; 32])).unwrap();
    assert_eq!(reissue_pool(&o, 0).unwrap(), 4);
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!(credential_issuance(&o, 0).unwrap(), 2_000);
    assert_eq!(reissue_pool(&o, 0).unwrap(), 0);
    // A halted run serves (and mints) nothing.
    runs::set_status(&mut o, &mut ev, 0, runs::RunStatus::Halted).unwrap();
    assert_eq!(
        redeem_credential(&mut o, &mut ev, 0, &acc(9), 1, Hash::ZERO),
        Err(Error::NotServing.into())
    );
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!(credential_issuance(&o, 0).unwrap(), 2_000);
}

fn check(o: &Overlay<'_>, people: &[AccountId]) -> Result<(), TestCaseError> {
    let held: u128 = people.iter().map(|p| credentials(o, 0, p).unwrap()).sum();
    let escrow: u128 = people.iter().map(|p| escrowed(o, 0, p).unwrap()).sum();
    prop_assert_eq!(
        credential_issuance(o, 0).unwrap(),
        held + escrow + reissue_pool(o, 0).unwrap()
    );
    prop_assert_eq!(
        pooled_runs(o).unwrap().contains(&0),
        reissue_pool(o, 0).unwrap() > 0
    );
    let units_sum: u128 = people.iter().map(|p| units(o, 0, p).unwrap()).sum();
    prop_assert_eq!(total_units(o, 0).unwrap(), units_sum);
    let sh = shares_of(o, 0).unwrap();
    if units_sum > 0 {
        prop_assert_eq!(
            sh.iter().map(|(_, p)| p.parts() as u64).sum::<u64>(),
            1_000_000_000
        );
    }
    for p in people {
        prop_assert_eq!(
            owners(o, 0).unwrap().contains(p),
            units(o, 0, p).unwrap() > 0
        );
    }
    Ok(())
}

proptest! {
    /// Shares always sum to exactly one, units are conserved by transfers, and credentials are
    /// conserved by transfers, redemptions and escrow (only minting adds to the issued total).
    #[test]
    fn shares_and_credentials_conserved(ops in proptest::collection::vec((0u8..8, 0u8..8, 0u8..8, 0u128..3_000, 0u64..20_000), 1..80)) {
        let people: Vec<AccountId> = (0..8).map(acc).collect();
        let st = with_run();
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        for (kind, a, b, amount, step) in ops {
            o.start_transaction();
            let r = match kind {
                0 => credit(&mut o, &mut ev, 0, &acc(a), step).map(|_| ()),
                1 => mint_epoch(&mut o, &mut ev, 0),
                2 => transfer_credentials(&mut o, &mut ev, 0, &acc(a), &acc(b), amount),
                3 => redeem_credential(&mut o, &mut ev, 0, &acc(a), amount, Hash::ZERO),
                5 => escrow_credentials(&mut o, 0, &acc(a), amount),
                6 => release_escrow(&mut o, 0, &acc(a), amount),
                7 => charge_escrow(&mut o, 0, &acc(a), amount),
                _ => transfer_units(&mut o, &mut ev, 0, &acc(a), &acc(b), amount * 1_000),
            };
            if r.is_ok() { o.commit_transaction() } else { o.rollback_transaction() }
            check(&o, &people)?;
        }
    }
}

/// Credentials of three owners with one unit each, after one epoch (334, 333, 333).
fn three_owners(o: &mut Overlay<'_>, ev: &mut Recorder) {
    for i in 1..=3 {
        add_units(o, 0, &acc(i), 1).unwrap();
    }
    mint_epoch(o, ev, 0).unwrap();
}

#[test]
fn escrow_moves_credentials_and_refuses_what_is_not_there() {
    let st = with_run();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    three_owners(&mut o, &mut ev);
    let a = acc(1);
    assert_eq!(
        escrow_credentials(&mut o, 0, &a, 0),
        Err(Error::ZeroAmount.into())
    );
    assert_eq!(
        escrow_credentials(&mut o, 0, &a, 335),
        Err(Error::Insufficient.into())
    );
    assert_eq!(
        (
            credentials(&o, 0, &a).unwrap(),
            escrowed(&o, 0, &a).unwrap()
        ),
        (334, 0)
    );
    escrow_credentials(&mut o, 0, &a, 300).unwrap();
    assert_eq!(
        (
            credentials(&o, 0, &a).unwrap(),
            escrowed(&o, 0, &a).unwrap()
        ),
        (34, 300)
    );
    assert_eq!(
        release_escrow(&mut o, 0, &a, 301),
        Err(Error::Insufficient.into())
    );
    assert_eq!(
        charge_escrow(&mut o, 0, &a, 301),
        Err(Error::Insufficient.into())
    );
    assert_eq!(reissue_pool(&o, 0).unwrap(), 0);
    charge_escrow(&mut o, 0, &a, 120).unwrap();
    release_escrow(&mut o, 0, &a, 180).unwrap();
    assert_eq!(
        (
            credentials(&o, 0, &a).unwrap(),
            escrowed(&o, 0, &a).unwrap()
        ),
        (214, 0)
    );
    assert_eq!(reissue_pool(&o, 0).unwrap(), 120);
    assert_eq!(pooled_runs(&o).unwrap(), vec![0]);
    // The run is active: the normal per-run epoch work re-issues it, not the finished list.
    assert_eq!(finished_pooled_runs(&o).unwrap(), Vec::<RunId>::new());
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!(reissue_pool(&o, 0).unwrap(), 0);
    assert_eq!(pooled_runs(&o).unwrap(), Vec::<RunId>::new());
    assert_eq!(credential_issuance(&o, 0).unwrap(), 2_000);
}

#[test]
fn a_finished_run_reissues_its_pool_without_minting() {
    let st = with_run();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    three_owners(&mut o, &mut ev);
    escrow_credentials(&mut o, 0, &acc(2), 100).unwrap();
    runs::set_status(&mut o, &mut ev, 0, runs::RunStatus::Finished).unwrap();
    assert!(!runs::active_runs(&o).unwrap().contains(&0));
    charge_escrow(&mut o, 0, &acc(2), 100).unwrap();
    assert_eq!(finished_pooled_runs(&o).unwrap(), vec![0]);
    ev.clear();
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!(
        ev.of::<Event>(),
        vec![Event::CredentialsMinted {
            run: 0,
            minted: 0,
            reissued: 100,
            owners: 3
        }]
    );
    assert_eq!(
        [1, 2, 3].map(|i| credentials(&o, 0, &acc(i)).unwrap()),
        [334 + 34, 233 + 33, 333 + 33]
    );
    assert_eq!(credential_issuance(&o, 0).unwrap(), 1_000);
    assert_eq!(reissue_pool(&o, 0).unwrap(), 0);
    assert_eq!(finished_pooled_runs(&o).unwrap(), Vec::<RunId>::new());
    // Nothing left: another boundary changes nothing.
    ev.clear();
    mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert!(ev.of::<Event>().is_empty());
}
