//! The Tendermint service: one task between the engine and the world.
//!
//! **Inputs**, each turned into engine calls:
//! * gossip on `consensus`: a signed vote or proposal → `Engine::on_message`. A message that
//!   does not decode, or whose signature is bad, is rejected (gossipsub does not forward it)
//!   and costs its sender score until it is banned. A message for a later height means this
//!   node is behind: it syncs from that peer.
//! * gossip on `proposal`: a block body → executed on the best block
//!   ([`Chain::check_block`]), then `Engine::on_block(valid)`. Bodies of the next heights are
//!   kept (bounded) until the node gets there.
//! * gossip on `tx`: into the pool (accepted → forwarded by gossipsub), at most
//!   [`TX_GOSSIP_PER_PEER`] a second from one peer; a badly signed one bans its sender.
//! * a timer the engine scheduled fired → `Engine::on_timeout`.
//! * this node proposes: when the engine asks (`BuildBlock`), the block is built no sooner
//!   than `block_time` after its parent's timestamp, carrying the proposer's round and
//!   randomness-beacon signature, then gossiped and handed to `Engine::propose`.
//!
//! **Outputs** are carried out in order: a WAL entry is written (synced) before anything after
//! it, so a vote is on disk before it is broadcast. `Decided` commits the block with its
//! certificate as justification (one atomic write), tells the pool, and starts the next
//! height with the validator set read from the new state.
//!
//! **Clock.** Block timestamps come from the proposer's clock, clamped to be no earlier than
//! the parent's; a body more than [`MAX_FUTURE_DRIFT_MS`] ahead of this node's clock is
//! judged invalid (node-side only: the runtime has no clock).

use super::signing_state::SigningStateFile;
use super::status::NetworkStatus;
use super::sync::{self, SyncOutcome};
use super::verify::{justification, validator_set};
use super::wal::Wal;
use super::wire::{BlockProposal, ConsensusGossip, MAX_BODIES_PER_HEIGHT};
use crate::chain::{Chain, ChainError, ExecutedBlock};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolError};
use parity_scale_codec::{Decode, DecodeAll, Encode};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use weft_consensus::{ConsensusMessage, Engine, EngineConfig, EngineError, Output, TimeoutId};
use weft_finality::beacon::{self, PreDigest};
use weft_node_net::scoring::RateLimiter;
use weft_node_net::{NetworkEvent, NetworkHandle, Offence, PeerId, Topic, Verdict};
use weft_primitives::{AccountId, Hash};
use weft_runtime::executive::InvalidTransaction;
use weft_runtime::limits::MAX_EXTRINSICS_PER_BLOCK;

/// How far ahead of this node's clock a proposed block's timestamp may be.
pub const MAX_FUTURE_DRIFT_MS: u64 = 10_000;
/// How often the service checks whether a peer is ahead.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Settings of the service.
#[derive(Clone)]
pub struct BftConfig {
    /// Least time between a block's parent and the block.
    pub block_time: Duration,
    /// The engine's timeouts.
    pub timeouts: weft_consensus::Timeouts,
}

/// This node's validator keys.
pub struct ValidatorKeys {
    /// Its account key: authors blocks, signs equivocation reports.
    pub signer: weft_primitives::Keypair,
    /// Its account (block author).
    pub account: AccountId,
    /// Its BLS key (votes, proposals, beacon).
    pub bls: weft_bls::SecretKey,
    /// What it has signed, consulted before every vote and proposal
    /// ([`super::signing_state`]); `None` only in tests of the engine glue.
    pub signing_state: Option<SigningStateFile>,
}

#[cfg(feature = "equivocate")]
static EQUIVOCATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every engine created from now on sign a conflicting second vote for each vote
/// (`weft-equivocator`, tests only).
#[cfg(feature = "equivocate")]
pub fn equivocate_from_now_on() {
    EQUIVOCATE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Gossiped transactions a peer may hand this node per second (a token bucket with bursts of
/// the same size); beyond it they are ignored and the peer's score pays `Spam`. Four times
/// the throughput the benchmark reaches on one machine, so honest relays never meet it.
pub const TX_GOSSIP_PER_PEER: u32 = 4_000;

fn new_engine(config: EngineConfig) -> Engine {
    #[cfg(feature = "equivocate")]
    if EQUIVOCATE.load(std::sync::atomic::Ordering::SeqCst) {
        tracing::warn!("this node equivocates (weft-equivocator)");
        return Engine::new_equivocating(config);
    }
    Engine::new(config)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The service's state.
pub struct BftService {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    net: NetworkHandle,
    status: Arc<NetworkStatus>,
    engine: Engine,
    keys: Option<ValidatorKeys>,
    config: BftConfig,
    timers: BTreeMap<TimeoutId, Instant>,
    /// Executed bodies of the current height by hash (own and received, valid ones).
    bodies: HashMap<Hash, ExecutedBlock>,
    /// Bodies of later heights, not yet executable.
    early: BTreeMap<u64, Vec<BlockProposal>>,
    /// A block to build: when, height, round.
    build: Option<(Instant, u64, u32)>,
    wal_len: u32,
    /// A peer seen at a later height, to sync from.
    ahead: Option<(PeerId, u64)>,
    peer_heights: HashMap<PeerId, Option<u64>>,
    /// How often each consensus message of the current height was sent, by its bytes' hash.
    sent: HashMap<Hash, u32>,
    /// Engine outputs not yet carried out, in order.
    queue: VecDeque<Output>,
    /// Equivocations this node reported, by (offender, height, round, kind).
    reported: std::collections::HashSet<(AccountId, u64, u32, u8)>,
    /// Gossiped transactions each peer may hand this node ([`TX_GOSSIP_PER_PEER`] a second).
    tx_quota: RateLimiter,
}

impl BftService {
    /// A service for `chain`, starting at the height after its finalized block.
    pub fn new(
        chain: Arc<Chain>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        net: NetworkHandle,
        status: Arc<NetworkStatus>,
        mut keys: Option<ValidatorKeys>,
        config: BftConfig,
    ) -> Self {
        let mut engine = new_engine(EngineConfig {
            genesis: chain.genesis_hash(),
            key: keys.as_ref().map(|k| (k.account, k.bls.clone())),
            timeouts: config.timeouts,
        });
        if let Some(state) = keys.as_mut().and_then(|k| k.signing_state.take()) {
            engine.set_sign_guard(Box::new(state));
        }
        BftService {
            chain,
            pool,
            metrics,
            net,
            status,
            engine,
            keys,
            config,
            timers: BTreeMap::new(),
            bodies: HashMap::new(),
            early: BTreeMap::new(),
            build: None,
            wal_len: 0,
            ahead: None,
            peer_heights: HashMap::new(),
            reported: std::collections::HashSet::new(),
            tx_quota: RateLimiter::new(TX_GOSSIP_PER_PEER),
            queue: VecDeque::new(),
            sent: HashMap::new(),
        }
    }

    /// Runs until the task is cancelled.
    pub async fn run(mut self, mut events: mpsc::Receiver<NetworkEvent>) {
        let (announce_tx, mut announced) = mpsc::unbounded_channel();
        self.pool.announce_to(announce_tx);
        let local = self.net.local_peer_id().to_string();
        self.status.update(|s| s.local_peer_id = local);
        self.status.set_handle(self.net.clone());
        if let Err(e) = self.start_height(true) {
            tracing::error!(error = %e, "consensus could not start");
            return;
        }
        self.drain().await;
        let mut status_tick = tokio::time::interval(STATUS_INTERVAL);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.next_deadline();
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_network(ev).await,
                    None => {
                        tracing::warn!("the network stopped; consensus stops");
                        return;
                    }
                },
                Some(tx) = announced.recv() => {
                    if let Err(e) = self.net.publish(Topic::Transactions, tx).await {
                        tracing::debug!(error = %e, "transaction not gossiped");
                    }
                }
                _ = tokio::time::sleep_until(next_timer.into()) => self.on_deadline().await,
                _ = status_tick.tick() => self.on_status_tick().await,
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let timer = self.timers.values().min().copied().unwrap_or(far);
        match self.build {
            Some((at, _, _)) => timer.min(at),
            None => timer,
        }
    }

    async fn on_deadline(&mut self) {
        let now = Instant::now();
        if let Some((at, height, round)) = self.build {
            if at <= now {
                self.build = None;
                self.build_block(height, round).await;
            }
        }
        let due: Vec<TimeoutId> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.timers.remove(&id);
            let result = self.engine.on_timeout(id);
            self.enqueue(result);
        }
        self.drain().await;
    }

    /// Starts consensus at the height after the finalized block; after a restart
    /// (`restart`), replays that height's write-ahead log first.
    fn start_height(&mut self, restart: bool) -> Result<(), ChainError> {
        let heads = self.chain.heads();
        let height = heads.finalized.number + 1;
        let set = validator_set(&self.chain.state_at(heads.finalized.number))?;
        let wal = Wal::new(self.chain.db());
        wal.prune_below(height)?;
        self.tx_quota.prune(Instant::now());
        self.timers.clear();
        self.build = None;
        self.bodies.clear();
        self.sent.clear();
        self.metrics.set_height("best", heads.best.number);
        self.metrics.set_height("finalized", heads.finalized.number);
        let mut outputs = match self.engine.start_height(height, set) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(height, error = %e, "engine refused the height");
                return Ok(());
            }
        };
        let entries = wal.entries(height)?;
        self.wal_len = entries.len() as u32;
        if restart && !entries.is_empty() {
            tracing::info!(
                height,
                entries = entries.len(),
                "replaying the consensus write-ahead log"
            );
            match self.engine.replay(&entries) {
                Ok(more) => outputs.extend(more),
                Err(e) if self.refused_signature(&e) => {}
                Err(e) => tracing::error!(height, error = %e, "write-ahead log replay failed"),
            }
        }
        self.queue.extend(outputs);
        // Bodies that arrived early for this height.
        if let Some(early) = self.early.remove(&height) {
            for proposal in early {
                self.judge_body(proposal);
            }
        }
        self.early.retain(|h, _| *h > height);
        Ok(())
    }

    /// Queues the outputs of an engine call (carried out by [`BftService::drain`]).
    fn enqueue(&mut self, result: Result<Vec<Output>, EngineError>) {
        match result {
            Ok(outputs) => self.queue.extend(outputs),
            Err(e) if self.refused_signature(&e) => {}
            Err(e) => tracing::debug!(error = %e, "engine input refused"),
        }
    }

    /// Counts a signature the double-sign guard refused; true if `e` is one.
    fn refused_signature(&self, e: &EngineError) -> bool {
        let refused = matches!(e, EngineError::SigningRefused(_));
        if refused {
            self.metrics.signatures_refused.inc();
        }
        refused
    }

    /// Carries out the queued outputs in order.
    async fn drain(&mut self) {
        while let Some(output) = self.queue.pop_front() {
            match output {
                Output::WalAppend { height, entry } => {
                    let wal = Wal::new(self.chain.db());
                    if let Err(e) = wal.append(height, self.wal_len, &entry) {
                        // Without the log a restart could double-sign: stop acting on this
                        // batch rather than broadcast what is not on disk.
                        tracing::error!(error = %e, "consensus write-ahead log append failed");
                        self.queue.clear();
                        return;
                    }
                    self.wal_len += 1;
                }
                Output::Broadcast(msg) => {
                    let message = msg.to_bytes();
                    let count = self
                        .sent
                        .entry(weft_primitives::blake3_256(&message))
                        .or_insert(0);
                    let gossip = ConsensusGossip {
                        attempt: *count,
                        message,
                    };
                    *count += 1;
                    if let Err(e) = self.net.publish(Topic::Consensus, gossip.encode()).await {
                        tracing::debug!(error = %e, "consensus message not gossiped");
                    }
                }
                Output::ScheduleTimeout(id, after) => {
                    self.timers.insert(id, Instant::now() + after);
                }
                Output::CancelTimeout(id) => {
                    self.timers.remove(&id);
                }
                Output::CancelAllTimeouts => self.timers.clear(),
                Output::BuildBlock { height, round, .. } => {
                    let parent_ts = self.chain.heads().best.timestamp;
                    let due_ms =
                        parent_ts.saturating_add(self.config.block_time.as_millis() as u64);
                    let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()))
                        .min(self.config.block_time);
                    self.build = Some((Instant::now() + wait, height, round));
                }
                Output::RestreamBlock { block, round, .. } => {
                    if let Some(executed) = self.bodies.get(&block) {
                        let body = BlockProposal {
                            round,
                            block: executed.block.clone(),
                        };
                        let _ = self.net.publish(Topic::Proposals, body.encode()).await;
                    }
                }
                Output::NewRound {
                    height,
                    round,
                    proposer,
                } => {
                    tracing::debug!(height, round, %proposer, "new round");
                }
                Output::Evidence(evidence) => self.report(evidence),
                // Routine when a little behind; `on_consensus_message` decides when to sync.
                Output::AheadOfUs { height } => tracing::trace!(height, "traffic ahead of us"),
                Output::Decided {
                    certificate,
                    evidence,
                } => {
                    for e in evidence {
                        self.report(e);
                    }
                    // Anything after a decision belongs to the old height.
                    self.queue.clear();
                    if self.commit(&certificate) {
                        if let Err(e) = self.start_height(false) {
                            tracing::error!(error = %e, "could not start the next height");
                        }
                    }
                }
            }
        }
    }

    /// Writes the decided block; `false` when its body is missing (then it is synced).
    fn commit(&mut self, certificate: &weft_finality::Certificate) -> bool {
        let Some(executed) = self.bodies.remove(&certificate.block) else {
            tracing::warn!(
                height = certificate.height,
                block = %certificate.block,
                "decided a block whose body this node lacks; syncing it"
            );
            self.ahead = self
                .peer_heights
                .keys()
                .next()
                .map(|p| (*p, certificate.height + 1));
            return false;
        };
        let proof = justification(certificate);
        let chain = self.chain.clone();
        let result = tokio::task::block_in_place(|| chain.commit_block(&executed, Some(&proof)));
        if let Err(e) = result {
            tracing::error!(error = %e, height = certificate.height, "could not write the decided block");
            return false;
        }
        let header = &executed.block.header;
        let rejected: Vec<Hash> = executed.rejected.iter().map(|(h, _)| *h).collect();
        self.pool.on_block(
            executed.hash,
            header.number,
            true,
            &executed.included,
            &rejected,
            &self.chain.best_state(),
        );
        self.metrics
            .block_extrinsics
            .observe(executed.included.len() as f64);
        self.metrics.txpool_size.set(self.pool.len() as i64);
        tracing::info!(
            "✅ finalized #{} {} (round {}, {} extrinsics, {} signers)",
            header.number,
            executed.hash,
            certificate.round,
            executed.included.len(),
            certificate
                .signers
                .iter()
                .map(|b| b.count_ones())
                .sum::<u32>()
        );
        true
    }

    /// Reports an equivocation on chain (`staking.report_equivocation`, signed by this
    /// validator's account), once per offence; full nodes only log it.
    fn report(&mut self, evidence: weft_finality::Equivocation) {
        if !self.reported.insert(evidence.key()) {
            return;
        }
        tracing::warn!(
            offender = %evidence.offender(),
            height = evidence.height(),
            "⚠️  equivocation seen"
        );
        let Some(keys) = self.keys.as_ref() else {
            return;
        };
        let state = self.chain.best_state();
        let account_nonce = weft_runtime::balances::account(&state, &keys.account)
            .map(|a| a.nonce)
            .unwrap_or(0);
        let nonce = self.pool.next_nonce(&keys.account, account_nonce);
        let genesis = self.chain.genesis_hash();
        let call =
            weft_runtime::RuntimeCall::Staking(weft_runtime::staking::Call::ReportEquivocation {
                evidence,
            });
        let xt = weft_runtime::Extrinsic::new_signed(
            call,
            &keys.signer,
            nonce,
            0,
            weft_primitives::Era::Immortal,
            weft_primitives::SigningContext {
                genesis_hash: genesis,
                birth_hash: genesis,
            },
        );
        let chain = self.chain.clone();
        match self.pool.submit(
            &xt.encode(),
            |xt, len| chain.validate_transaction(xt, len),
            None,
        ) {
            Ok(s) => tracing::info!(hash = %s.hash, "reported the equivocation"),
            Err(e) => tracing::warn!(error = %e, "the equivocation report was refused"),
        }
    }

    async fn build_block(&mut self, height: u64, round: u32) {
        let Some(keys) = self.keys.as_ref() else {
            return;
        };
        let heads = self.chain.heads();
        if heads.best.number + 1 != height {
            return;
        }
        let state = self.chain.best_state();
        let previous = match weft_runtime::support::randomness::at(&state, heads.best.number) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the randomness to sign");
                return;
            }
        };
        let beacon = match beacon::sign(&keys.bls, &self.chain.genesis_hash(), height, &previous) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the beacon");
                return;
            }
        };
        let candidates = self.pool.candidates(&state, MAX_EXTRINSICS_PER_BLOCK);
        let digest = vec![PreDigest { round, beacon }.to_item()];
        let chain = self.chain.clone();
        let author = keys.account;
        let built = tokio::task::block_in_place(|| {
            chain.prepare_block(&candidates, author, now_ms(), digest)
        });
        let executed = match built {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, height, "building a block failed");
                return;
            }
        };
        let hash = executed.hash;
        let body = BlockProposal {
            round,
            block: executed.block.clone(),
        };
        tracing::debug!(height, round, %hash, txs = executed.included.len(), "proposing");
        self.bodies.insert(hash, executed);
        if let Err(e) = self.net.publish(Topic::Proposals, body.encode()).await {
            tracing::debug!(error = %e, "proposal body not gossiped");
        }
        let result = self.engine.propose(height, round, hash);
        self.enqueue(result);
        self.drain().await;
    }

    async fn on_network(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Gossip {
                topic,
                from,
                id,
                data,
            } => {
                let verdict = match topic {
                    Topic::Consensus => self.on_consensus_message(from, &data).await,
                    Topic::Proposals => self.on_body(from, &data).await,
                    Topic::Transactions => self.on_transaction(from, &data),
                };
                if verdict == Verdict::Reject {
                    self.net.punish(from, Offence::InvalidData);
                }
                self.net.validation(id, from, verdict);
            }
            NetworkEvent::Request { peer, data, reply } => {
                let response = sync::answer(&self.chain, &data);
                match response {
                    Some(bytes) => self.net.respond(reply, bytes),
                    None => self.net.punish(peer, Offence::Undecodable),
                }
            }
            NetworkEvent::PeerConnected(peer) => {
                self.peer_heights.insert(peer, None);
                self.refresh_status();
                self.ask_status(peer).await;
            }
            NetworkEvent::PeerDisconnected(peer) | NetworkEvent::PeerBanned(peer) => {
                self.peer_heights.remove(&peer);
                self.refresh_status();
            }
        }
    }

    fn refresh_status(&self) {
        let peers = self
            .peer_heights
            .iter()
            .map(|(p, h)| super::status::PeerJson {
                peer_id: p.to_string(),
                best_number: *h,
            })
            .collect();
        self.status.update(|s| s.peers = peers);
    }

    async fn on_consensus_message(&mut self, from: PeerId, data: &[u8]) -> Verdict {
        let decoded = ConsensusGossip::decode_all(&mut &data[..])
            .ok()
            .and_then(|g| ConsensusMessage::from_bytes(&g.message).ok());
        let Some(msg) = decoded else {
            self.net.punish(from, Offence::Undecodable);
            return Verdict::Reject;
        };
        let height = msg.height();
        let current = self.engine.height();
        // The engine keeps messages of the next height (a proposal may arrive while this
        // node is still writing the last block); anything further means it is behind.
        if height > current + 1 {
            if self.ahead.is_none_or(|(_, h)| h < height) {
                self.ahead = Some((from, height));
            }
            return Verdict::Ignore;
        }
        if height < current {
            return Verdict::Ignore;
        }
        match self.engine.on_message(msg) {
            Ok(outputs) => {
                self.queue.extend(outputs);
                self.drain().await;
                Verdict::Accept
            }
            Err(EngineError::BadSignature) => {
                self.net.punish(from, Offence::BadSignature);
                Verdict::Reject
            }
            // The peer's message was good and is recorded; only our own vote was withheld.
            Err(e) if self.refused_signature(&e) => Verdict::Accept,
            Err(e) => {
                tracing::debug!(error = %e, %from, "consensus message refused");
                Verdict::Ignore
            }
        }
    }

    async fn on_body(&mut self, from: PeerId, data: &[u8]) -> Verdict {
        let Ok(proposal) = BlockProposal::decode(&mut &data[..]) else {
            self.net.punish(from, Offence::Undecodable);
            return Verdict::Reject;
        };
        let height = proposal.block.header.number;
        let current = self.engine.height();
        if height < current {
            return Verdict::Ignore;
        }
        if height > current {
            let heights = self.early.len();
            let slot = self.early.entry(height).or_default();
            if slot.len() < MAX_BODIES_PER_HEIGHT && heights <= 4 {
                slot.push(proposal);
            }
            return Verdict::Ignore;
        }
        let verdict = self.judge_body(proposal);
        self.drain().await;
        verdict
    }

    /// Executes a body of the current height and tells the engine whether it is valid.
    fn judge_body(&mut self, proposal: BlockProposal) -> Verdict {
        let block = &proposal.block;
        let hash = block.header.hash();
        if self.bodies.contains_key(&hash) {
            return Verdict::Ignore;
        }
        if self.bodies.len() >= MAX_BODIES_PER_HEIGHT {
            return Verdict::Ignore;
        }
        let height = block.header.number;
        let proposer = block.header.author;
        let digest_round = PreDigest::of(&block.header).map(|d| d.round);
        if digest_round != Some(proposal.round) {
            return Verdict::Reject;
        }
        if block.header.timestamp > now_ms().saturating_add(MAX_FUTURE_DRIFT_MS) {
            tracing::warn!(height, %proposer, "proposed block is from the future");
            let result = self
                .engine
                .on_block(height, proposal.round, hash, proposer, false);
            self.enqueue(result);
            return Verdict::Reject;
        }
        let chain = self.chain.clone();
        let checked = tokio::task::block_in_place(|| chain.check_block(block));
        let valid = match checked {
            Ok(executed) => {
                self.bodies.insert(hash, executed);
                true
            }
            Err(ChainError::NotOnBest { .. }) | Err(ChainError::AlreadyKnown(_)) => {
                return Verdict::Ignore
            }
            Err(e) => {
                tracing::warn!(height, %proposer, error = %e, "proposed block is invalid");
                false
            }
        };
        let result = self
            .engine
            .on_block(height, proposal.round, hash, proposer, valid);
        self.enqueue(result);
        if valid {
            Verdict::Accept
        } else {
            Verdict::Reject
        }
    }

    fn on_transaction(&mut self, from: PeerId, data: &[u8]) -> Verdict {
        // A node that cannot write admits nothing (its peers keep the gossip going).
        if self.chain.db().storage_error().is_some() {
            return Verdict::Ignore;
        }
        // Each peer's share of the pool's work is bounded, whatever it relays.
        if !self.tx_quota.allow(from, Instant::now()) {
            self.net.punish(from, Offence::Spam);
            return Verdict::Ignore;
        }
        let chain = self.chain.clone();
        match self
            .pool
            .submit_from_network(data, |xt, len| chain.validate_transaction(xt, len))
        {
            Ok(_) => {
                self.metrics.txpool_size.set(self.pool.len() as i64);
                Verdict::Accept
            }
            Err(PoolError::Decode(_)) | Err(PoolError::TooLarge(_)) => Verdict::Reject,
            // Honest peers check signatures before they relay: this one made it up.
            Err(PoolError::Invalid(InvalidTransaction::BadSignature)) => {
                self.net.punish(from, Offence::BadSignature);
                Verdict::Reject
            }
            // Known, stale, or not payable here and now: not the sender's fault to punish.
            Err(_) => Verdict::Ignore,
        }
    }

    async fn ask_status(&mut self, peer: PeerId) {
        if let Some(finalized) = sync::status_of(&self.net, peer).await {
            self.peer_heights.insert(peer, Some(finalized));
            self.refresh_status();
            if finalized > self.chain.heads().finalized.number {
                self.ahead = Some((peer, finalized + 1));
            }
        }
    }

    async fn on_status_tick(&mut self) {
        let Some((peer, height)) = self.ahead.take() else {
            return;
        };
        let ours = self.chain.heads().finalized.number;
        if height <= ours + 1 {
            return;
        }
        self.status.update(|s| s.is_syncing = true);
        let outcome = sync::catch_up(&self.chain, &self.pool, &self.net, peer).await;
        self.status.update(|s| s.is_syncing = false);
        match outcome {
            SyncOutcome::Imported(n) if n > 0 => {
                tracing::info!(
                    imported = n,
                    finalized = self.chain.heads().finalized.number,
                    %peer,
                    "caught up"
                );
                if let Err(e) = self.start_height(true) {
                    tracing::error!(error = %e, "could not restart consensus after sync");
                }
                self.drain().await;
            }
            SyncOutcome::Imported(_) => {}
            SyncOutcome::BadPeer => self.net.punish(peer, Offence::BadResponse),
            SyncOutcome::Unreachable => {}
        }
    }
}
