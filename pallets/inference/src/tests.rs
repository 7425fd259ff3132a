#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use parity_scale_codec::Encode;
use weft_pallet_support::Recorder;
use weft_pallet_testkit::{acc, endow, endowed, genesis, open_runs, run_spec};
use weft_primitives::storage::{MemoryState, Overlay};

const HOLDER: u8 = 5;
const OTHER: u8 = 6;
const SERVER: u8 = 7;
const NOBODY: u8 = 9;
/// Price 10 per token, at most 100 tokens, 5 blocks to settle.
const CFG: Config = Config {
    credentials_per_token: 10,
    max_tokens_per_request: 100,
    request_timeout_blocks: 5,
};

fn spec() -> runs::RunSpec {
    run_spec(
        2,
        1,
        runs::RunParams {
            credentials_per_epoch: 1_000,
            ..runs::RunParams::default()
        },
    )
}

/// Run 0 training (owners 1 and 2 with 1 and 3 units, `SERVER` holding slot (0, 0)), run 1
/// pending; `HOLDER` and `OTHER` hold 1 000 credentials of run 0 each.
fn world() -> MemoryState {
    genesis(|o, ev| {
        endow(o, &endowed([0], 1_000));
        open_runs(o, ev);
        fixture(o, ev);
    })
}

/// The runs, units, credentials and slot of [`world`].
fn fixture(o: &mut Overlay<'_>, ev: &mut Recorder) {
    build_genesis(o, &CFG).unwrap();
    let run = runs::register_run(o, ev, 1, &acc(0), spec()).unwrap();
    runs::set_status(o, ev, run, runs::RunStatus::Training).unwrap();
    runs::set_paused(o, ev, run, false).unwrap();
    runs::register_run(o, ev, 1, &acc(0), spec()).unwrap();
    ownership::UNITS.insert(o, &(0, acc(1)), &1);
    ownership::UNITS.insert(o, &(0, acc(2)), &3);
    ownership::TOTAL_UNITS.insert(o, &0, &4);
    ownership::OWNERS.insert(o, &0, &vec![acc(1), acc(2)]);
    ownership::CREDENTIALS.insert(o, &(0, acc(HOLDER)), &1_000);
    ownership::CREDENTIALS.insert(o, &(0, acc(OTHER)), &1_000);
    ownership::CREDENTIAL_ISSUANCE.insert(o, &0, &2_000);
    stages::SLOT.insert(o, &(0, 0, 0), &acc(SERVER));
    stages::HELD.insert(o, &(0, acc(SERVER)), &vec![(0, 0)]);
}

/// `st` with `f` applied.
fn after(st: &MemoryState, f: impl FnOnce(&mut Overlay<'_>, &mut Recorder)) -> MemoryState {
    let mut o = Overlay::new(st);
    let mut ev = Recorder::default();
    f(&mut o, &mut ev);
    let mut next = st.clone();
    next.apply(&o.into_changes());
    next
}

/// `world()` with request 0 of `HOLDER` for 10 tokens opened at block 1 (expires at 6).
fn with_request() -> MemoryState {
    after(&world(), |o, ev| {
        let id = open(o, ev, 1, &acc(HOLDER), 0, Hash([1; 32]), 10).unwrap();
        assert_eq!(id, 0);
    })
}

/// Asserts that `f` fails with `err` and writes nothing and emits nothing.
fn refused<R: std::fmt::Debug>(
    st: &MemoryState,
    err: Error,
    f: impl FnOnce(&mut Overlay<'_>, &mut Recorder) -> Result<R, Failure>,
) {
    let mut o = Overlay::new(st);
    let mut ev = Recorder::default();
    assert_eq!(f(&mut o, &mut ev).unwrap_err(), Failure::from(err));
    assert!(ev.events.is_empty(), "events on error");
    assert!(o.into_changes().is_empty(), "writes on error");
}

fn creds(s: &impl StateReader, who: u8) -> u128 {
    ownership::credentials(s, 0, &acc(who)).unwrap()
}

fn escrow(s: &impl StateReader, who: u8) -> u128 {
    ownership::escrowed(s, 0, &acc(who)).unwrap()
}

/// Issued = balances + escrow + pool for run 0.
fn conserved(s: &impl StateReader) {
    let held: u128 = [1, 2, HOLDER, OTHER].iter().map(|w| creds(s, *w)).sum();
    let esc: u128 = [HOLDER, OTHER].iter().map(|w| escrow(s, *w)).sum();
    assert_eq!(
        ownership::credential_issuance(s, 0).unwrap(),
        held + esc + ownership::reissue_pool(s, 0).unwrap()
    );
}

#[test]
fn estimate_prices_tokens_and_checks_bounds() {
    assert_eq!(estimate(&CFG, 1), Ok(10));
    assert_eq!(estimate(&CFG, 100), Ok(1_000));
    assert_eq!(estimate(&CFG, 0), Err(Error::ZeroTokens));
    assert_eq!(estimate(&CFG, 101), Err(Error::TooManyTokens));
    let dear = Config {
        credentials_per_token: u128::MAX / 2,
        ..CFG
    };
    assert_eq!(estimate(&dear, 3), Err(Error::Overflow));
    // The development defaults: a 64-token request escrows 6 400 credentials.
    assert_eq!(estimate(&Config::default(), 64), Ok(6_400));
}

#[test]
fn open_escrows_and_queues_the_refund() {
    let st = world();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let a = open(&mut o, &mut ev, 1, &acc(HOLDER), 0, Hash([1; 32]), 10).unwrap();
    // The same hash again is another request.
    let b = open(&mut o, &mut ev, 2, &acc(HOLDER), 0, Hash([1; 32]), 90).unwrap();
    assert_eq!((a, b), (0, 1));
    assert_eq!(next_request_id(&o).unwrap(), 2);
    assert_eq!((creds(&o, HOLDER), escrow(&o, HOLDER)), (0, 1_000));
    // Nothing left for a third.
    assert_eq!(
        open(&mut o, &mut ev, 2, &acc(HOLDER), 0, Hash::ZERO, 1),
        Err(Error::InsufficientCredentials.into())
    );
    conserved(&o);
    let r = request(&o, a).unwrap().unwrap();
    assert_eq!(
        r,
        Request {
            id: 0,
            holder: acc(HOLDER),
            run: 0,
            request_hash: Hash([1; 32]),
            max_tokens: 10,
            escrowed: 100,
            opened_at: 1,
            expires_at: 6,
            status: RequestStatus::Open,
        }
    );
    assert_eq!(EXPIRIES.get(&o, &6).unwrap(), Some(vec![0]));
    assert_eq!(EXPIRIES.get(&o, &7).unwrap(), Some(vec![1]));
    let mine: Vec<RequestId> = requests_of(&o, &acc(HOLDER))
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(mine, vec![0, 1]);
    assert_eq!(
        ev.of::<Event>()[0],
        Event::RequestOpened {
            id: 0,
            run: 0,
            holder: acc(HOLDER),
            escrowed: 100,
            expires_at: 6
        }
    );
}

#[test]
fn open_refuses_bad_input_and_changes_nothing() {
    let st = world();
    let h = Hash([1; 32]);
    let who = acc(HOLDER);
    refused(&st, Error::ZeroTokens, |o, ev| {
        open(o, ev, 1, &who, 0, h, 0)
    });
    refused(&st, Error::TooManyTokens, |o, ev| {
        open(o, ev, 1, &who, 0, h, 101)
    });
    refused(&st, Error::UnknownRun, |o, ev| {
        open(o, ev, 1, &who, 7, h, 1)
    });
    // Run 1 is pending.
    refused(&st, Error::NotServable, |o, ev| {
        open(o, ev, 1, &who, 1, h, 1)
    });
    refused(&st, Error::InsufficientCredentials, |o, ev| {
        open(o, ev, 1, &acc(NOBODY), 0, h, 1)
    });
    let halted = after(&st, |o, ev| {
        runs::set_status(o, ev, 0, runs::RunStatus::Halted).unwrap()
    });
    refused(&halted, Error::NotServable, |o, ev| {
        open(o, ev, 1, &who, 0, h, 1)
    });
    let dear = after(&st, |o, _| {
        CONFIG.put(
            o,
            &Config {
                credentials_per_token: u128::MAX / 2,
                ..CFG
            },
        )
    });
    refused(&dear, Error::Overflow, |o, ev| {
        open(o, ev, 1, &who, 0, h, 3)
    });
    refused(&st, Error::Overflow, |o, ev| {
        open(o, ev, BlockNumber::MAX, &who, 0, h, 1)
    });
}

#[test]
fn paused_and_finished_runs_are_servable() {
    let paused = after(&world(), |o, ev| runs::set_paused(o, ev, 0, true).unwrap());
    let mut o = Overlay::new(&paused);
    let mut ev = Recorder::default();
    assert_eq!(
        open(&mut o, &mut ev, 1, &acc(HOLDER), 0, Hash::ZERO, 1),
        Ok(0)
    );
    let finished = after(&world(), |o, ev| {
        runs::set_status(o, ev, 0, runs::RunStatus::Finished).unwrap()
    });
    let mut o = Overlay::new(&finished);
    assert_eq!(
        open(&mut o, &mut ev, 1, &acc(HOLDER), 0, Hash::ZERO, 1),
        Ok(0)
    );
}

#[test]
fn settle_splits_charge_and_refund_exactly() {
    let st = with_request();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let out = Hash([2; 32]);
    assert_eq!(
        settle(&mut o, &mut ev, 5, &acc(SERVER), 0, 7, out),
        Ok((70, 30))
    );
    assert_eq!((creds(&o, HOLDER), escrow(&o, HOLDER)), (1_000 - 70, 0));
    assert_eq!(ownership::reissue_pool(&o, 0).unwrap(), 70);
    conserved(&o);
    assert_eq!(
        request(&o, 0).unwrap().unwrap().status,
        RequestStatus::Settled {
            tokens: 7,
            output_hash: out,
            by: acc(SERVER)
        }
    );
    assert!(requests_of(&o, &acc(HOLDER)).unwrap().is_empty());
    assert_eq!(OPEN_BY_HOLDER.get(&o, &acc(HOLDER)).unwrap(), None);
    assert_eq!(
        ev.of::<Event>(),
        vec![Event::RequestSettled {
            id: 0,
            run: 0,
            charged: 70,
            refunded: 30,
            output_hash: out,
            by: acc(SERVER)
        }]
    );
    // The owners (1 and 3 units) receive the charge at the boundary, with the epoch's mint.
    ownership::mint_epoch(&mut o, &mut ev, 0).unwrap();
    assert_eq!((creds(&o, 1), creds(&o, 2)), (268, 802));
    // Delivering everything charges the whole escrow.
    let st = with_request();
    let mut o = Overlay::new(&st);
    assert_eq!(
        settle(&mut o, &mut ev, 2, &acc(SERVER), 0, 10, out),
        Ok((100, 0))
    );
    assert_eq!((creds(&o, HOLDER), escrow(&o, HOLDER)), (900, 0));
}

#[test]
fn settle_refuses_bad_input_and_changes_nothing() {
    let st = with_request();
    let out = Hash([2; 32]);
    let server = acc(SERVER);
    refused(&st, Error::UnknownRequest, |o, ev| {
        settle(o, ev, 2, &server, 1, 1, out)
    });
    refused(&st, Error::Expired, |o, ev| {
        settle(o, ev, 6, &server, 0, 1, out)
    });
    refused(&st, Error::NotServer, |o, ev| {
        settle(o, ev, 2, &acc(NOBODY), 0, 1, out)
    });
    // Neither an owner nor the holder itself can settle.
    refused(&st, Error::NotServer, |o, ev| {
        settle(o, ev, 2, &acc(HOLDER), 0, 1, out)
    });
    refused(&st, Error::ZeroTokens, |o, ev| {
        settle(o, ev, 2, &server, 0, 0, out)
    });
    refused(&st, Error::TooManyDelivered, |o, ev| {
        settle(o, ev, 2, &server, 0, 11, out)
    });
    let settled = after(&st, |o, ev| {
        settle(o, ev, 2, &server, 0, 1, out).unwrap();
    });
    refused(&settled, Error::NotOpen, |o, ev| {
        settle(o, ev, 3, &server, 0, 1, out)
    });
    // A server that lost its slot can no longer settle.
    let released = after(&st, |o, _| stages::HELD.remove(o, &(0, server)));
    refused(&released, Error::NotServer, |o, ev| {
        settle(o, ev, 2, &server, 0, 1, out)
    });
}

/// Runs a hook the way the runtime executive does (one transaction, dropped on failure).
fn as_executive(o: &mut Overlay<'_>, ev: &mut Recorder, now: BlockNumber) {
    weft_pallet_support::transactional_item(o, ev, |o, ev| on_initialize(o, ev, now))
        .unwrap()
        .unwrap();
}

#[test]
fn an_unsettled_request_is_refunded_at_expiry() {
    // Request 0 (HOLDER, 10 tokens) and request 1 (OTHER, 20 tokens), both expiring at 6;
    // request 2 (OTHER) expires at 6 too but is settled before.
    let st = after(&with_request(), |o, ev| {
        open(o, ev, 1, &acc(OTHER), 0, Hash::ZERO, 20).unwrap();
        open(o, ev, 1, &acc(OTHER), 0, Hash::ZERO, 5).unwrap();
        settle(o, ev, 3, &acc(SERVER), 2, 5, Hash::ZERO).unwrap();
    });
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    as_executive(&mut o, &mut ev, 5);
    assert!(ev.of::<Event>().is_empty());
    assert_eq!(EXPIRIES.get(&o, &6).unwrap(), Some(vec![0, 1, 2]));
    as_executive(&mut o, &mut ev, 6);
    assert_eq!(
        ev.of::<Event>(),
        vec![
            Event::RequestRefunded {
                id: 0,
                holder: acc(HOLDER),
                amount: 100
            },
            Event::RequestRefunded {
                id: 1,
                holder: acc(OTHER),
                amount: 200
            },
        ]
    );
    assert_eq!((creds(&o, HOLDER), escrow(&o, HOLDER)), (1_000, 0));
    assert_eq!((creds(&o, OTHER), escrow(&o, OTHER)), (1_000 - 50, 0));
    assert_eq!(
        request(&o, 0).unwrap().unwrap().status,
        RequestStatus::Refunded
    );
    assert_eq!(EXPIRIES.get(&o, &6).unwrap(), None);
    assert!(requests_of(&o, &acc(OTHER)).unwrap().is_empty());
    conserved(&o);
    // Refunded is final.
    assert_eq!(
        settle(&mut o, &mut ev, 4, &acc(SERVER), 0, 1, Hash::ZERO),
        Err(Error::NotOpen.into())
    );
}

#[test]
fn a_failing_refund_does_not_block_the_others() {
    let st = after(&with_request(), |o, ev| {
        open(o, ev, 1, &acc(OTHER), 0, Hash::ZERO, 20).unwrap();
        // Inconsistent: HOLDER's escrow lost 1 credential, so its refund fails.
        ownership::ESCROWED.insert(o, &(0, acc(HOLDER)), &99);
    });
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    as_executive(&mut o, &mut ev, 6);
    let events = ev.of::<Event>();
    assert_eq!(events.len(), 2);
    match &events[0] {
        Event::RefundFailed { id: 0, error } => assert_eq!(error.pallet, index::OWNERSHIP),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        events[1],
        Event::RequestRefunded {
            id: 1,
            holder: acc(OTHER),
            amount: 200
        }
    );
    // The failed one is untouched (still open, escrow still held); the queue entry is gone.
    assert_eq!(request(&o, 0).unwrap().unwrap().status, RequestStatus::Open);
    assert_eq!((creds(&o, HOLDER), escrow(&o, HOLDER)), (900, 99));
    assert_eq!((creds(&o, OTHER), escrow(&o, OTHER)), (1_000, 0));
    assert_eq!(EXPIRIES.get(&o, &6).unwrap(), None);
}

#[test]
fn a_finished_run_is_paid_and_reissues_to_its_owners() {
    let st = after(&with_request(), |o, ev| {
        runs::set_status(o, ev, 0, runs::RunStatus::Finished).unwrap()
    });
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    assert_eq!(
        settle(&mut o, &mut ev, 2, &acc(SERVER), 0, 4, Hash::ZERO),
        Ok((40, 60))
    );
    assert!(!runs::active_runs(&o).unwrap().contains(&0));
    assert_eq!(ownership::finished_pooled_runs(&o).unwrap(), vec![0]);
    ownership::mint_epoch(&mut o, &mut ev, 0).unwrap();
    // 40 re-issued 1 : 3, nothing minted.
    assert_eq!((creds(&o, 1), creds(&o, 2)), (10, 30));
    assert_eq!(ownership::credential_issuance(&o, 0).unwrap(), 2_000);
    assert_eq!(ownership::reissue_pool(&o, 0).unwrap(), 0);
    conserved(&o);
}

#[test]
fn genesis_refuses_zero_parameters() {
    let base = MemoryState::default();
    let mut o = Overlay::new(&base);
    for bad in [
        Config {
            credentials_per_token: 0,
            ..CFG
        },
        Config {
            max_tokens_per_request: 0,
            ..CFG
        },
        Config {
            request_timeout_blocks: 0,
            ..CFG
        },
    ] {
        assert_eq!(build_genesis(&mut o, &bad), Err(Error::BadConfig.into()));
    }
    assert!(o.into_changes().is_empty());
}

#[test]
fn layouts_are_stable() {
    let open = Call::Open {
        run: 1,
        request_hash: Hash([3; 32]),
        max_tokens: 64,
    };
    let mut want = vec![0u8];
    want.extend(1u32.to_le_bytes());
    want.extend([3u8; 32]);
    want.extend(64u32.to_le_bytes());
    assert_eq!(open.encode(), want);
    let settle = Call::Settle {
        id: 2,
        tokens_delivered: 5,
        output_hash: Hash::ZERO,
    };
    assert_eq!(settle.encode()[0], 1);
    assert_eq!(Error::Overflow.encode(), vec![10]);
    assert_eq!(Error::BadConfig.encode(), vec![11]);
    assert_eq!(RequestStatus::Refunded.encode(), vec![2]);
    assert_eq!(INDEX, 8);
}
