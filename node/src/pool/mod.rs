//! The transaction pool.
//!
//! Admission: a submitted extrinsic is size-checked, decoded, and validated against the best
//! state by the runtime (format, validity window, signature, nonce not stale and at most
//! [`MAX_FUTURE_NONCES`](weft_runtime::limits::MAX_FUTURE_NONCES) ahead, fee payable now, for
//! future nonces too). Only then is it stored. Per sender, transactions are kept ordered by
//! nonce; a transaction is *ready* when its nonce is the account's next nonce or directly
//! follows a ready one, and *future* otherwise. A second transaction with the same sender and
//! nonce replaces the first only if it tips more.
//!
//! Nobody fills the pool for free (issue 10). Three bounds, checked in this order:
//!
//! * **Fees of the queue**: a sender's queued transactions (from its account nonce on) plus
//!   the newcomer must together cost at most what the sender can pay in fees now
//!   ([`weft_runtime::balances::fee_budget`]); each costs its length fee plus its tip. An
//!   account without funds queues nothing; one with funds for `k` fees queues at most `k`.
//! * **Per-sender quota**: at most [`PoolConfig::max_per_sender`] (default
//!   [`DEFAULT_MAX_PER_SENDER`] = 64, the runtime's future-nonce window) queued per sender.
//! * **Capacity with eviction**: when the pool holds [`PoolConfig::capacity`] transactions, a
//!   newcomer evicts the *cheapest* transaction if it pays strictly more per byte. Only the
//!   last (highest-nonce) transaction of each sender is evictable, so eviction never opens a
//!   nonce gap; among those the cheapest is the lowest tip per byte (tip × 2²⁰ / length), and
//!   among equals the newest (the one admitted last) goes first, so older transactions keep
//!   their place. A newcomer that does not pay more than the cheapest is refused
//!   ([`PoolError::Full`]). The evictable set is an ordered index, so an eviction costs
//!   `O(log n)`. The newcomer's own sender is never its victim.
//!
//! Block candidates: for each sender, the ready run of consecutive nonces; runs are merged by
//! the tip of their next transaction, so nonce order per sender is kept while higher tips go
//! first.
//!
//! After each block: included transactions leave the pool (watchers hear `inBlock` and, when
//! the block is final, `finalized`); the rest are rechecked cheaply (nonce, validity window):
//! stale ones are `invalid`, expired ones `dropped`. A *future* transaction (immortal ones
//! included) that has waited [`PoolConfig::future_ttl`] blocks (default
//! [`DEFAULT_FUTURE_TTL`] = 600, 10 minutes at one block a second) for its earlier nonces is
//! `dropped` as well, so junk that can never become ready does not stay forever. Evicted
//! transactions' watchers hear `dropped` too.

use crate::chain::Candidate;
use parity_scale_codec::Decode;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// The pool is full and the newcomer pays no more per byte than the cheapest transaction.
    #[error("transaction pool is full ({0} transactions) and this one pays no more per byte than the cheapest")]
    Full(usize),
    /// The sender's queued transactions and this one cost more than it can pay in fees.
    #[error("the sender cannot pay the fees of its {queued} queued transactions and this one ({needed} needed, {available} available)")]
    CannotPayQueued {
        /// Transactions of the sender already queued.
        queued: usize,
        /// Their fees and tips plus this one's.
        needed: Balance,
        /// What the sender can pay in fees now.
        available: Balance,
    },
    /// The sender already has as many queued transactions as one sender may.
    #[error("the sender already has {0} transactions in the pool (the per-sender limit)")]
    SenderQuota(usize),
    /// The state could not be read.
    #[error("state unavailable: {0}")]
    State(String),
}

/// Queued transactions per sender by default (the runtime's future-nonce window).
pub const DEFAULT_MAX_PER_SENDER: usize = 64;
/// Blocks a future transaction may wait for its earlier nonces by default.
pub const DEFAULT_FUTURE_TTL: BlockNumber = 600;

/// The pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most transactions in the pool.
    pub capacity: usize,
    /// Most queued transactions of one sender.
    pub max_per_sender: usize,
    /// Blocks after which a transaction that is still future is dropped.
    pub future_ttl: BlockNumber,
}

impl PoolConfig {
    /// `capacity` with the default per-sender quota and future lifetime.
    pub fn with_capacity(capacity: usize) -> Self {
        PoolConfig {
            capacity,
            max_per_sender: DEFAULT_MAX_PER_SENDER,
            future_ttl: DEFAULT_FUTURE_TTL,
        }
    }
}

struct PoolTx {
    extrinsic: Extrinsic,
    encoded: Vec<u8>,
    sender: AccountId,
    nonce: Nonce,
    priority: Balance,
    valid_until: BlockNumber,
    /// Length fee plus tip.
    fee: Balance,
    /// Tip × 2²⁰ / encoded length: the eviction order.
    per_byte: Balance,
    /// Admission order (larger is newer).
    seq: u64,
    /// Best block number when admitted.
    admitted_at: BlockNumber,
}

/// Eviction order: cheapest per byte first, then newest first.
type EvictKey = (Balance, Reverse<u64>, Hash);

fn per_byte(tip: Balance, len: usize) -> Balance {
    tip.saturating_mul(1 << 20) / (len.max(1) as Balance)
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<Hash, PoolTx>,
    by_sender: BTreeMap<AccountId, BTreeMap<Nonce, Hash>>,
    watchers: HashMap<Hash, Vec<mpsc::UnboundedSender<TransactionStatus>>>,
    /// The last transaction of each sender, in eviction order.
    tails: BTreeSet<EvictKey>,
    /// Next admission sequence number.
    seq: u64,
    /// The best block number the pool last heard of.
    best_number: BlockNumber,
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

    fn tail_key(&self, sender: &AccountId) -> Option<EvictKey> {
        let hash = self.by_sender.get(sender)?.values().next_back()?;
        let tx = self.by_hash.get(hash)?;
        Some((tx.per_byte, Reverse(tx.seq), *hash))
    }

    fn insert(&mut self, hash: Hash, tx: PoolTx) {
        let sender = tx.sender;
        if let Some(k) = self.tail_key(&sender) {
            self.tails.remove(&k);
        }
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(tx.nonce, hash);
        self.by_hash.insert(hash, tx);
        if let Some(k) = self.tail_key(&sender) {
            self.tails.insert(k);
        }
    }

    fn remove(&mut self, hash: &Hash) -> Option<PoolTx> {
        let sender = self.by_hash.get(hash)?.sender;
        if let Some(k) = self.tail_key(&sender) {
            self.tails.remove(&k);
        }
        let tx = self.by_hash.remove(hash)?;
        if let Some(m) = self.by_sender.get_mut(&tx.sender) {
            m.remove(&tx.nonce);
            if m.is_empty() {
                self.by_sender.remove(&tx.sender);
            }
        }
        if let Some(k) = self.tail_key(&sender) {
            self.tails.insert(k);
        }
        Some(tx)
    }

    /// The cheapest evictable transaction not sent by `sender`.
    fn cheapest_other_than(&self, sender: &AccountId) -> Option<(Balance, Hash)> {
        self.tails
            .iter()
            .find(|(_, _, h)| self.by_hash.get(h).is_some_and(|t| t.sender != *sender))
            .map(|(per_byte, _, h)| (*per_byte, *h))
    }
}

/// The pool.
pub struct Pool {
    inner: Mutex<Inner>,
    config: PoolConfig,
    /// Where transactions submitted locally (RPC) are announced, for gossip.
    announce: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
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
    /// A pool holding at most `capacity` transactions, with the default per-sender quota and
    /// future lifetime.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(PoolConfig::with_capacity(capacity))
    }

    /// A pool with the given bounds.
    pub fn with_config(config: PoolConfig) -> Self {
        Pool {
            inner: Mutex::new(Inner::default()),
            config,
            announce: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The nonce a new transaction of `sender` should use: after its queued ones that follow
    /// `account_nonce` (its nonce in the best state) without a gap.
    pub fn next_nonce(&self, sender: &AccountId, account_nonce: Nonce) -> Nonce {
        let inner = self.lock();
        let mut next = account_nonce;
        if let Some(queued) = inner.by_sender.get(sender) {
            while queued.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every transaction submitted locally from now on to `to` (the network gossips
    /// them); transactions that arrived by gossip are not announced again.
    pub fn announce_to(&self, to: mpsc::UnboundedSender<Vec<u8>>) {
        match self.announce.lock() {
            Ok(mut a) => *a = Some(to),
            Err(poisoned) => *poisoned.into_inner() = Some(to),
        }
    }

    /// Decodes and validates `bytes` with `validate`, then admits the transaction and
    /// announces it for gossip.
    pub fn submit(
        &self,
        bytes: &[u8],
        validate: impl FnOnce(&Extrinsic, usize) -> Result<ValidTransaction, ApplyError>,
        watcher: Option<mpsc::UnboundedSender<TransactionStatus>>,
    ) -> Result<Submitted, PoolError> {
        let submitted = self.admit(bytes, validate, watcher)?;
        if let Ok(announce) = self.announce.lock() {
            if let Some(to) = announce.as_ref() {
                let _ = to.send(bytes.to_vec());
            }
        }
        Ok(submitted)
    }

    /// Admits a transaction that arrived by gossip (not announced again: the gossip layer
    /// forwards it once the node accepts it).
    pub fn submit_from_network(
        &self,
        bytes: &[u8],
        validate: impl FnOnce(&Extrinsic, usize) -> Result<ValidTransaction, ApplyError>,
    ) -> Result<Submitted, PoolError> {
        self.admit(bytes, validate, None)
    }

    fn admit(
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
        let replaced = inner
            .by_sender
            .get(&valid.sender)
            .and_then(|m| m.get(&valid.nonce))
            .copied();
        if let Some(existing) = replaced {
            let existing_priority = inner
                .by_hash
                .get(&existing)
                .map(|t| t.priority)
                .unwrap_or(0);
            if existing_priority >= valid.priority {
                return Err(PoolError::TooLowPriority);
            }
        }
        // The sender's queue (without the one this replaces) must stay payable and in quota.
        let (queued, queued_fees) = inner
            .by_sender
            .get(&valid.sender)
            .map(|m| {
                m.range(valid.account_nonce..)
                    .filter(|(n, _)| **n != valid.nonce)
                    .filter_map(|(_, h)| inner.by_hash.get(h))
                    .fold((0usize, 0 as Balance), |(c, f), t| {
                        (c + 1, f.saturating_add(t.fee))
                    })
            })
            .unwrap_or((0, 0));
        let needed = queued_fees.saturating_add(valid.fee);
        if needed > valid.fee_budget {
            return Err(PoolError::CannotPayQueued {
                queued,
                needed,
                available: valid.fee_budget,
            });
        }
        if queued >= self.config.max_per_sender {
            return Err(PoolError::SenderQuota(queued));
        }
        let newcomer_per_byte = per_byte(valid.priority, bytes.len());
        if replaced.is_none() && inner.by_hash.len() >= self.config.capacity {
            match inner.cheapest_other_than(&valid.sender) {
                Some((cheapest, victim)) if cheapest < newcomer_per_byte => {
                    inner.remove(&victim);
                    inner.notify(&victim, TransactionStatus::Dropped, true);
                    tracing::debug!(%victim, "pool full: evicted the cheapest transaction");
                }
                _ => return Err(PoolError::Full(self.config.capacity)),
            }
        }
        if let Some(existing) = replaced {
            inner.remove(&existing);
            inner.notify(&existing, TransactionStatus::Dropped, true);
        }
        let ready = {
            let queued = inner.by_sender.get(&valid.sender);
            let mut next = valid.account_nonce;
            while queued.is_some_and(|m| m.contains_key(&next)) {
                next += 1;
            }
            valid.nonce <= next
        };
        let seq = inner.seq;
        inner.seq += 1;
        let admitted_at = inner.best_number;
        inner.insert(
            hash,
            PoolTx {
                extrinsic,
                encoded: bytes.to_vec(),
                sender: valid.sender,
                nonce: valid.nonce,
                priority: valid.priority,
                valid_until: valid.valid_until,
                fee: valid.fee,
                per_byte: newcomer_per_byte,
                seq,
                admitted_at,
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
        inner.best_number = number;
        let ttl = self.config.future_ttl;
        let mut stale = Vec::new();
        let mut expired = Vec::new();
        for (sender, txs) in &inner.by_sender {
            let nonce = balances::account(state, sender)
                .map(|a| a.nonce)
                .unwrap_or(0);
            // The ready run goes from the account's nonce through consecutive nonces.
            let mut next_ready = nonce;
            for (n, h) in txs {
                if *n < nonce {
                    stale.push(*h);
                    continue;
                }
                let ready = *n == next_ready;
                if ready {
                    next_ready += 1;
                }
                let Some(t) = inner.by_hash.get(h) else {
                    continue;
                };
                if t.valid_until <= number
                    || (!ready && number.saturating_sub(t.admitted_at) >= ttl)
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
mod tests;
