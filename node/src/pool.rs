//! The transaction pool.
//!
//! Admission: a submitted extrinsic is size-checked, decoded, and validated against the best
//! state by the runtime (format, validity window, signature, nonce not stale, fee payable).
//! Only then is it stored. Per sender, transactions are kept ordered by nonce; a transaction
//! is *ready* when its nonce is the account's next nonce or directly follows a ready one, and
//! *future* otherwise. A second transaction with the same sender and nonce replaces the first
//! only if it tips more.
//!
//! Block candidates: for each sender, the ready run of consecutive nonces; runs are merged by
//! the tip of their next transaction, so nonce order per sender is kept while higher tips go
//! first.
//!
//! After each block: included transactions leave the pool (watchers hear `inBlock` and, when
//! the block is final, `finalized`); the rest are rechecked cheaply (nonce, validity window):
//! stale ones are `invalid`, expired ones `dropped`.

use crate::chain::Candidate;
use parity_scale_codec::Decode;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::mpsc;
use weft_primitives::storage::StateReader;
use weft_primitives::{AccountId, Balance, BlockNumber, Hash, Nonce, MAX_EXTRINSIC_SIZE};
use weft_rpc_api::TransactionStatus;
use weft_runtime::executive::ApplyError;
use weft_runtime::{balances, Extrinsic, InvalidTransaction, ValidTransaction};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Larger than the extrinsic size limit.
    #[error("extrinsic too large: {0} bytes (limit {MAX_EXTRINSIC_SIZE})")]
    TooLarge(usize),
    /// Bytes that are not an extrinsic.
    #[error("could not decode extrinsic: {0}")]
    Decode(String),
    /// The runtime rejected it.
    #[error("invalid transaction: {0}")]
    Invalid(InvalidTransaction),
    /// Already in the pool.
    #[error("transaction already in the pool")]
    AlreadyImported,
    /// Same sender and nonce with an equal or higher tip already in the pool.
    #[error("a transaction with the same nonce and an equal or higher tip is in the pool")]
    TooLowPriority,
    /// The pool is full.
    #[error("transaction pool is full ({0} transactions)")]
    Full(usize),
    /// The state could not be read.
    #[error("state unavailable: {0}")]
    State(String),
}

struct PoolTx {
    extrinsic: Extrinsic,
    encoded: Vec<u8>,
    sender: AccountId,
    nonce: Nonce,
    priority: Balance,
    valid_until: BlockNumber,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<Hash, PoolTx>,
    by_sender: BTreeMap<AccountId, BTreeMap<Nonce, Hash>>,
    watchers: HashMap<Hash, Vec<mpsc::UnboundedSender<TransactionStatus>>>,
}

impl Inner {
    fn notify(&mut self, hash: &Hash, status: TransactionStatus, last: bool) {
        if let Some(ws) = self.watchers.get_mut(hash) {
            ws.retain(|w| w.send(status.clone()).is_ok());
        }
        if last {
            self.watchers.remove(hash);
        }
    }

    fn remove(&mut self, hash: &Hash) -> Option<PoolTx> {
        let tx = self.by_hash.remove(hash)?;
        if let Some(m) = self.by_sender.get_mut(&tx.sender) {
            m.remove(&tx.nonce);
            if m.is_empty() {
                self.by_sender.remove(&tx.sender);
            }
        }
        Some(tx)
    }
}

/// The pool.
pub struct Pool {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// What a successful submission returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The extrinsic hash.
    pub hash: Hash,
    /// Ready now (rather than waiting for an earlier nonce).
    pub ready: bool,
}

impl Pool {
    /// A pool holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Pool {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes and validates `bytes` with `validate`, then admits the transaction.
    pub fn submit(
        &self,
        bytes: &[u8],
        validate: impl FnOnce(&Extrinsic, usize) -> Result<ValidTransaction, ApplyError>,
        watcher: Option<mpsc::UnboundedSender<TransactionStatus>>,
    ) -> Result<Submitted, PoolError> {
        if bytes.len() > MAX_EXTRINSIC_SIZE {
            return Err(PoolError::TooLarge(bytes.len()));
        }
        let mut input = bytes;
        let extrinsic =
            Extrinsic::decode(&mut input).map_err(|e| PoolError::Decode(e.to_string()))?;
        if !input.is_empty() {
            return Err(PoolError::Decode(format!("{} trailing bytes", input.len())));
        }
        let hash = weft_primitives::blake3_256(bytes);
        if self.lock().by_hash.contains_key(&hash) {
            return Err(PoolError::AlreadyImported);
        }
        let valid = validate(&extrinsic, bytes.len()).map_err(|e| match e {
            ApplyError::Invalid(r) => PoolError::Invalid(r),
            ApplyError::Storage(s) => PoolError::State(s.to_string()),
        })?;
        let mut inner = self.lock();
        if let Some(existing) = inner
            .by_sender
            .get(&valid.sender)
            .and_then(|m| m.get(&valid.nonce))
            .copied()
        {
            let existing_priority = inner
                .by_hash
                .get(&existing)
                .map(|t| t.priority)
                .unwrap_or(0);
            if existing_priority >= valid.priority {
                return Err(PoolError::TooLowPriority);
            }
            inner.remove(&existing);
            inner.notify(&existing, TransactionStatus::Dropped, true);
        }
        if inner.by_hash.len() >= self.capacity {
            return Err(PoolError::Full(self.capacity));
        }
        let ready = {
            let queued = inner.by_sender.get(&valid.sender);
            let mut next = valid.account_nonce;
            while queued.is_some_and(|m| m.contains_key(&next)) {
                next += 1;
            }
            valid.nonce <= next
        };
        inner
            .by_sender
            .entry(valid.sender)
            .or_default()
            .insert(valid.nonce, hash);
        inner.by_hash.insert(
            hash,
            PoolTx {
                extrinsic,
                encoded: bytes.to_vec(),
                sender: valid.sender,
                nonce: valid.nonce,
                priority: valid.priority,
                valid_until: valid.valid_until,
            },
        );
        if let Some(w) = watcher {
            let _ = w.send(if ready {
                TransactionStatus::Ready
            } else {
                TransactionStatus::Future
            });
            inner.watchers.entry(hash).or_default().push(w);
        }
        Ok(Submitted { hash, ready })
    }

    /// Ready transactions for the next block, at most `limit`, given the account nonces in
    /// `state`.
    pub fn candidates(&self, state: &dyn StateReader, limit: usize) -> Vec<Candidate> {
        let inner = self.lock();
        // Per sender: the run of consecutive nonces starting at the account's nonce.
        let mut runs: Vec<Vec<&Hash>> = Vec::new();
        for (sender, txs) in &inner.by_sender {
            let Ok(info) = balances::account(state, sender) else {
                continue;
            };
            let mut run: Vec<&Hash> = txs
                .range(info.nonce..)
                .zip(info.nonce..)
                .take_while(|((nonce, _), expected)| *nonce == expected)
                .map(|((_, hash), _)| hash)
                .collect();
            if !run.is_empty() {
                run.reverse();
                runs.push(run);
            }
        }
        let mut out = Vec::new();
        while out.len() < limit {
            // The run whose next transaction tips most (ties: first sender in key order).
            let best = runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.last()
                        .and_then(|h| inner.by_hash.get(*h))
                        .map(|t| (i, t.priority))
                })
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
            let Some((i, _)) = best else { break };
            let Some(hash) = runs[i].pop() else { break };
            if let Some(tx) = inner.by_hash.get(hash) {
                out.push(Candidate {
                    hash: *hash,
                    extrinsic: tx.extrinsic.clone(),
                    encoded: tx.encoded.clone(),
                });
            }
        }
        out
    }

    /// Encoded transactions in the pool.
    pub fn pending(&self) -> Vec<Vec<u8>> {
        let inner = self.lock();
        inner
            .by_sender
            .values()
            .flat_map(|m| m.values())
            .filter_map(|h| inner.by_hash.get(h))
            .map(|t| t.encoded.clone())
            .collect()
    }

    /// Updates the pool after a block: removes `included` (notifying watchers), removes
    /// `rejected` as invalid, and rechecks the rest against `state` at height `number`.
    pub fn on_block(
        &self,
        block_hash: Hash,
        number: BlockNumber,
        finalized: bool,
        included: &[Hash],
        rejected: &[Hash],
        state: &dyn StateReader,
    ) {
        let mut inner = self.lock();
        for h in included {
            if inner.remove(h).is_some() || inner.watchers.contains_key(h) {
                inner.notify(h, TransactionStatus::InBlock(block_hash), false);
                if finalized {
                    inner.notify(h, TransactionStatus::Finalized(block_hash), true);
                }
            }
        }
        for h in rejected {
            inner.remove(h);
            inner.notify(h, TransactionStatus::Invalid, true);
        }
        let mut stale = Vec::new();
        let mut expired = Vec::new();
        for (sender, txs) in &inner.by_sender {
            let nonce = balances::account(state, sender)
                .map(|a| a.nonce)
                .unwrap_or(0);
            for (n, h) in txs {
                if *n < nonce {
                    stale.push(*h);
                } else if inner
                    .by_hash
                    .get(h)
                    .is_some_and(|t| t.valid_until <= number)
                {
                    expired.push(*h);
                }
            }
        }
        for h in stale {
            inner.remove(&h);
            inner.notify(&h, TransactionStatus::Invalid, true);
        }
        for h in expired {
            inner.remove(&h);
            inner.notify(&h, TransactionStatus::Dropped, true);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
