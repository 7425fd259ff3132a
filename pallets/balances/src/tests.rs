#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use weft_pallet_testkit::{self as testkit, acc};
use weft_primitives::storage::{MemoryState, Overlay};

const ED: Balance = 100;

fn genesis(endowed: &[(AccountId, Balance)]) -> MemoryState {
    testkit::genesis(|o, _| build_genesis(o, ED, endowed).unwrap())
}

fn sum_of_balances(o: &Overlay<'_>, accounts: &[AccountId]) -> Balance {
    accounts
        .iter()
        .map(|a| account(o, a).unwrap().total())
        .sum()
}

#[test]
fn transfer_moves_funds_and_endows() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    transfer(&mut o, &mut ev, &acc(1), &acc(2), 300, true).unwrap();
    assert_eq!(account(&o, &acc(1)).unwrap().free, 700);
    assert_eq!(account(&o, &acc(2)).unwrap().free, 300);
    assert_eq!(
        ev[0],
        Event::Endowed {
            account: acc(2),
            free_balance: 300
        }
    );
    assert_eq!(total_issuance(&o).unwrap(), 1_000);
}

#[test]
fn existential_deposit_rules() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    assert_eq!(
        transfer(&mut o, &mut ev, &acc(1), &acc(2), 50, false),
        Err(Error::ExistentialDeposit.into())
    );
    assert_eq!(
        transfer(&mut o, &mut ev, &acc(1), &acc(2), 950, true),
        Err(Error::KeepAlive.into())
    );
    // Allow death: 50 of dust is burned.
    transfer(&mut o, &mut ev, &acc(1), &acc(2), 950, false).unwrap();
    assert_eq!(account(&o, &acc(1)).unwrap().free, 0);
    assert_eq!(total_issuance(&o).unwrap(), 950);
    assert!(ev.contains(&Event::DustLost {
        account: acc(1),
        amount: 50
    }));
}

#[test]
fn insufficient_balance_changes_nothing() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    assert_eq!(
        transfer(&mut o, &mut ev, &acc(1), &acc(2), 1_001, false),
        Err(Error::InsufficientBalance.into())
    );
    assert!(ev.is_empty());
    assert_eq!(o.into_changes().len(), 0);
}

#[test]
fn fees_burn_and_tip_author_and_never_reap() {
    let state = genesis(&[(acc(1), 1_000), (acc(9), 500)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    charge_fee(&mut o, &mut ev, &acc(1), 10, 5, &acc(9)).unwrap();
    assert_eq!(account(&o, &acc(1)).unwrap().free, 985);
    assert_eq!(account(&o, &acc(9)).unwrap().free, 505);
    assert_eq!(total_issuance(&o).unwrap(), 1_490);
    assert!(!can_pay_fee(&o, &acc(1), 900, 0).unwrap());
    assert_eq!(
        charge_fee(&mut o, &mut ev, &acc(1), 900, 0, &acc(9)),
        Err(Error::InsufficientBalance.into())
    );
}

#[test]
fn reserve_unreserve_slash() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    reserve(&mut o, &mut ev, &acc(1), 400).unwrap();
    assert_eq!(
        account(&o, &acc(1)).unwrap(),
        AccountInfo {
            nonce: 0,
            free: 600,
            reserved: 400
        }
    );
    assert_eq!(
        reserve(&mut o, &mut ev, &acc(1), 601),
        Err(Error::InsufficientBalance.into())
    );
    unreserve(&mut o, &mut ev, &acc(1), 100).unwrap();
    assert_eq!(
        slash_reserved(&mut o, &mut ev, &acc(1), 1_000).unwrap(),
        300
    );
    assert_eq!(total_issuance(&o).unwrap(), 700);
    assert_eq!(sum_of_balances(&o, &[acc(1)]), 700);
}

#[test]
fn nonce_survives_reaping() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    inc_nonce(&mut o, &acc(1)).unwrap();
    dispatch(
        &mut o,
        &mut ev,
        0,
        &acc(1),
        &Call::TransferAll {
            dest: acc(2),
            keep_alive: false,
        },
    )
    .unwrap();
    let info = account(&o, &acc(1)).unwrap();
    assert_eq!((info.nonce, info.total()), (1, 0));
}

#[test]
fn mint_issues_and_never_creates_dust() {
    let state = genesis(&[(acc(1), 1_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    assert_eq!(mint(&mut o, &mut ev, &acc(2), 10).unwrap(), 0);
    assert_eq!(mint(&mut o, &mut ev, &acc(2), 500).unwrap(), 500);
    assert_eq!(mint(&mut o, &mut ev, &acc(1), 5).unwrap(), 5);
    assert_eq!(total_issuance(&o).unwrap(), 1_505);
    assert_eq!(sum_of_balances(&o, &[acc(1), acc(2)]), 1_505);
}

#[test]
fn an_account_with_reserved_funds_cannot_drop_below_the_existential_deposit() {
    let state = genesis(&[(acc(0), 5_000)]);
    let mut o = Overlay::new(&state);
    let mut ev = Vec::new();
    transfer(&mut o, &mut ev, &acc(0), &acc(3), 831, false).unwrap();
    reserve(&mut o, &mut ev, &acc(3), 1).unwrap();
    // 830 free + 1 reserved; sending 732 would leave 99 < ED, and the reserve keeps the
    // account from being reaped: refused, whether or not keep-alive was asked for.
    assert_eq!(
        transfer(&mut o, &mut ev, &acc(3), &acc(0), 732, false),
        Err(Error::KeepAlive.into())
    );
    assert_eq!(account(&o, &acc(3)).unwrap().total(), 831);
    transfer(&mut o, &mut ev, &acc(3), &acc(0), 731, false).unwrap();
    assert_eq!(account(&o, &acc(3)).unwrap().total(), ED);
}

proptest! {
    /// Total issuance equals the sum of balances after any sequence of transfers, fees and
    /// reservations, and failed operations change nothing.
    #[test]
    fn issuance_is_conserved(ops in proptest::collection::vec((0u8..5, 0u8..4, 0u8..4, 0u128..2_000), 1..60)) {
        let accounts: Vec<AccountId> = (0..4).map(acc).collect();
        let state = genesis(&[(acc(0), 5_000), (acc(1), 3_000)]);
        let mut o = Overlay::new(&state);
        let mut ev = Vec::new();
        for (kind, a, b, amount) in ops {
            let (a, b) = (acc(a), acc(b));
            o.start_transaction();
            let r = match kind {
                0 => transfer(&mut o, &mut ev, &a, &b, amount, false),
                1 => transfer(&mut o, &mut ev, &a, &b, amount, true),
                2 => charge_fee(&mut o, &mut ev, &a, amount / 10, amount % 7, &b),
                3 => reserve(&mut o, &mut ev, &a, amount),
                _ => slash_reserved(&mut o, &mut ev, &a, amount).map(|_| ()).map_err(Failure::from),
            };
            if r.is_ok() { o.commit_transaction() } else { o.rollback_transaction() }
            prop_assert_eq!(total_issuance(&o).unwrap(), sum_of_balances(&o, &accounts));
            for x in &accounts {
                let t = account(&o, x).unwrap().total();
                prop_assert!(t == 0 || t >= ED);
            }
        }
    }
}
