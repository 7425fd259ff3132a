//! Pool admission, eviction, quotas and expiry.
use super::*;
use parity_scale_codec::Encode;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::storage::MemoryState;
use weft_primitives::{Era, Keypair};
use weft_runtime::genesis::GenesisBalance;
use weft_runtime::{
    build_genesis, validate_transaction, GenesisConfig, GenesisValidator, RuntimeCall,
};

fn setup() -> (MemoryState, Keypair, Hash) {
    let alice = Keypair::from_suri("//Alice").unwrap();
    let cfg = GenesisConfig {
        existential_deposit: 1,
        balances: vec![GenesisBalance {
            account: alice.account_id(),
            free: 1 << 80,
        }],
        validators: vec![GenesisValidator {
            account: alice.account_id(),
            stake: 1,
        }],
        ..Default::default()
    };
    let mut state = MemoryState::default();
    state.apply(&build_genesis("t", &cfg).unwrap());
    (state, alice, Hash([7; 32]))
}

fn xt(k: &Keypair, nonce: u64, tip: u128, genesis: Hash) -> Vec<u8> {
    let ctx = SigningContext {
        genesis_hash: genesis,
        birth_hash: genesis,
    };
    let call = RuntimeCall::System(weft_runtime::system::Call::Remark {
        remark: vec![nonce as u8],
    });
    Extrinsic::new_signed(call, k, nonce, tip, Era::Immortal, ctx).encode()
}

#[test]
fn orders_by_nonce_reports_future_and_rejects_garbage() {
    let (state, alice, genesis) = setup();
    let pool = Pool::new(10);
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    let s2 = pool.submit(&xt(&alice, 2, 0, genesis), v, None).unwrap();
    assert!(!s2.ready);
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert!(
        pool.submit(&xt(&alice, 0, 0, genesis), v, None)
            .unwrap()
            .ready
    );
    let one = xt(&alice, 1, 0, genesis);
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert!(pool.submit(&one, v, None).unwrap().ready);
    let c = pool.candidates(&state, 10);
    let nonces: Vec<u64> = c.iter().map(|c| c.extrinsic.nonce).collect();
    assert_eq!(nonces, vec![0, 1, 2]);
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert!(matches!(
        pool.submit(&[1, 2, 3], v, None),
        Err(PoolError::Decode(_))
    ));
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert_eq!(pool.submit(&one, v, None), Err(PoolError::AlreadyImported));
    // sr25519 signatures are randomised: a re-signed copy is another transaction with the
    // same nonce, and without a higher tip it does not replace the first.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert_eq!(
        pool.submit(&xt(&alice, 1, 0, genesis), v, None),
        Err(PoolError::TooLowPriority)
    );
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert!(matches!(
        pool.submit(&xt(&alice, 0, 0, Hash([9; 32])), v, None),
        Err(PoolError::Invalid(InvalidTransaction::BadSignature))
    ));
    assert_eq!(pool.len(), 3);
}

#[test]
fn included_and_stale_leave_the_pool_with_notifications() {
    let (state, alice, genesis) = setup();
    let pool = Pool::new(10);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    let a = pool
        .submit(&xt(&alice, 0, 0, genesis), v, Some(tx))
        .unwrap();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    pool.submit(&xt(&alice, 0, 5, genesis), v, Some(tx2))
        .unwrap();
    // The higher tip replaced the first.
    assert_eq!(rx.try_recv().unwrap(), TransactionStatus::Ready);
    assert_eq!(rx.try_recv().unwrap(), TransactionStatus::Dropped);
    assert_eq!(rx2.try_recv().unwrap(), TransactionStatus::Ready);
    assert_eq!(pool.len(), 1);
    let _ = a;
    let included: Vec<Hash> = pool.candidates(&state, 1).iter().map(|c| c.hash).collect();
    let mut after = state.clone();
    let key = balances::ACCOUNTS.key(&alice.account_id());
    let mut info = balances::account(&state, &alice.account_id()).unwrap();
    info.nonce = 1;
    after.entries.insert(key, info.encode());
    pool.on_block(Hash([1; 32]), 1, true, &included, &[], &after);
    assert_eq!(
        rx2.try_recv().unwrap(),
        TransactionStatus::InBlock(Hash([1; 32]))
    );
    assert_eq!(
        rx2.try_recv().unwrap(),
        TransactionStatus::Finalized(Hash([1; 32]))
    );
    assert!(pool.is_empty());
}

/// A funded account with exactly `fees` fees' worth of budget above the existential
/// deposit (fees of remark transactions as [`xt`] builds them).
fn fund(state: &mut MemoryState, who: &Keypair, amount: Balance) {
    let key = balances::ACCOUNTS.key(&who.account_id());
    let mut info = balances::account(&*state, &who.account_id()).unwrap();
    info.free = amount;
    state.entries.insert(key, info.encode());
}

fn remark_fee(k: &Keypair, nonce: u64, tip: u128, genesis: Hash) -> Balance {
    weft_runtime::fees::fee_for_length(xt(k, nonce, tip, genesis).len()) + tip
}

#[test]
fn an_unfunded_sender_queues_nothing_and_a_funded_one_only_what_it_can_pay() {
    let (mut state, _alice, genesis) = setup();
    let pool = Pool::new(1000);
    // Never funded: not even a future nonce gets in (it did before: issue 10).
    let nobody = Keypair::from_suri("//Nobody").unwrap();
    for nonce in [0, 1, 5, 64] {
        let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
        assert_eq!(
            pool.submit(&xt(&nobody, nonce, 0, genesis), v, None),
            Err(PoolError::Invalid(InvalidTransaction::CannotPayFees)),
            "nonce {nonce}"
        );
    }
    assert!(pool.is_empty());
    // Funded for three fees (plus the existential deposit of 1): three queue, the fourth
    // is refused whatever its nonce.
    let carol = Keypair::from_suri("//Carol").unwrap();
    let fee = remark_fee(&carol, 1, 0, genesis);
    fund(&mut state, &carol, 3 * fee + 1);
    for nonce in [1, 2, 3] {
        let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
        pool.submit(&xt(&carol, nonce, 0, genesis), v, None)
            .unwrap();
    }
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert!(matches!(
        pool.submit(&xt(&carol, 4, 0, genesis), v, None),
        Err(PoolError::CannotPayQueued { queued: 3, .. })
    ));
    assert_eq!(pool.len(), 3);
}

#[test]
fn one_sender_is_held_to_its_quota() {
    let (state, alice, genesis) = setup();
    let pool = Pool::with_config(PoolConfig {
        capacity: 100,
        max_per_sender: 4,
        future_ttl: DEFAULT_FUTURE_TTL,
    });
    for nonce in 0..4 {
        let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
        pool.submit(&xt(&alice, nonce, 0, genesis), v, None)
            .unwrap();
    }
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert_eq!(
        pool.submit(&xt(&alice, 4, 0, genesis), v, None),
        Err(PoolError::SenderQuota(4))
    );
    // Replacing a queued one with a higher tip is not one more.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    pool.submit(&xt(&alice, 3, 9, genesis), v, None).unwrap();
    assert_eq!(pool.len(), 4);
}

#[test]
fn a_full_pool_evicts_the_cheapest_newest_tail_for_a_better_newcomer() {
    let (mut state, alice, genesis) = setup();
    let pool = Pool::new(3);
    let (bob, carol, dave) = (
        Keypair::from_suri("//Bob").unwrap(),
        Keypair::from_suri("//Carol").unwrap(),
        Keypair::from_suri("//Dave").unwrap(),
    );
    for k in [&bob, &carol, &dave] {
        fund(&mut state, k, 1 << 70);
    }
    // Bob 0 (tip 5), Bob 1 (tip 0), Carol 0 (tip 0): the pool is full.
    let mut watch = Vec::new();
    for (k, nonce, tip) in [(&bob, 0, 5), (&bob, 1, 0), (&carol, 0, 0)] {
        let (tx, rx) = mpsc::unbounded_channel();
        let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
        pool.submit(&xt(k, nonce, tip, genesis), v, Some(tx))
            .unwrap();
        watch.push(rx);
    }
    // Not better than the cheapest (tip 0): refused.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    assert_eq!(
        pool.submit(&xt(&dave, 0, 0, genesis), v, None),
        Err(PoolError::Full(3))
    );
    // Better: evicts a tail with tip 0. Bob 1 and Carol 0 tie; Carol's is newer.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    pool.submit(&xt(&dave, 0, 1, genesis), v, None).unwrap();
    assert_eq!(pool.len(), 3);
    assert_eq!(watch[2].try_recv().unwrap(), TransactionStatus::Ready);
    assert_eq!(watch[2].try_recv().unwrap(), TransactionStatus::Dropped);
    // Next: Bob 1 (a tail, tip 0) goes, never Bob 0 in front of it.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    pool.submit(&xt(&alice, 0, 1_000, genesis), v, None)
        .unwrap();
    assert_eq!(watch[1].try_recv().unwrap(), TransactionStatus::Ready);
    assert_eq!(watch[1].try_recv().unwrap(), TransactionStatus::Dropped);
    assert_eq!(watch[0].try_recv().unwrap(), TransactionStatus::Ready);
    assert!(watch[0].try_recv().is_err(), "Bob 0 stays");
    let mut nonces: Vec<(AccountId, u64)> = pool
        .candidates(&state, 10)
        .iter()
        .map(|c| (c.extrinsic.signer, c.extrinsic.nonce))
        .collect();
    nonces.sort();
    let mut want = vec![
        (bob.account_id(), 0),
        (dave.account_id(), 0),
        (alice.account_id(), 0),
    ];
    want.sort();
    assert_eq!(nonces, want);
}

#[test]
fn future_transactions_expire_after_the_ttl_and_watchers_hear_dropped() {
    let (state, alice, genesis) = setup();
    let pool = Pool::with_config(PoolConfig {
        capacity: 100,
        max_per_sender: 64,
        future_ttl: 10,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    // Nonce 5 while the account is at 0: future, and immortal.
    assert!(
        !pool
            .submit(&xt(&alice, 5, 0, genesis), v, Some(tx))
            .unwrap()
            .ready
    );
    // A ready one is not touched by the bound.
    let v = |x: &Extrinsic, l: usize| validate_transaction(&state, 0, genesis, x, l);
    pool.submit(&xt(&alice, 0, 0, genesis), v, None).unwrap();
    assert_eq!(rx.try_recv().unwrap(), TransactionStatus::Future);
    pool.on_block(Hash([1; 32]), 9, false, &[], &[], &state);
    assert_eq!(pool.len(), 2, "not yet");
    pool.on_block(Hash([2; 32]), 10, false, &[], &[], &state);
    assert_eq!(rx.try_recv().unwrap(), TransactionStatus::Dropped);
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.candidates(&state, 10)[0].extrinsic.nonce, 0);
}
