//! A deterministic simulator of a Weft validator network.
//!
//! N [`Engine`]s run in one process against a virtual clock (milliseconds) and one priority
//! queue of events: message deliveries, block-body deliveries, timer expiries and block
//! builds. A seeded `StdRng` draws every message delay (uniform in `[min_delay, max_delay]`)
//! and every drop (probability `drop`), so reordering comes from independent delays and a
//! run is reproducible from its seed. Nothing sleeps.
//!
//! Each simulated node does what a real node does with the engine's outputs, in order:
//! appends `WalAppend` entries to its (in-memory) WAL, keeps one timer per `TimeoutId`,
//! gossips `Broadcast` messages, builds a block on `BuildBlock` (hash =
//! `blake3(height ‖ round ‖ proposer)`, after `build_delay`) and gossips its body, validates
//! every body it receives (valid unless its proposer is listed in `invalid_proposers`), fetches
//! the body of a proposal it has not seen from the proposer, and on `Decided` checks the
//! certificate, records the decision and starts the next height. A node that falls behind
//! (it missed a decision) syncs: every second it looks for a certificate of its current height
//! decided by someone else, verifies it and starts the next height, as a real node's block
//! sync would (fetching every missing height at once).
//!
//! Faults: message drops, a partition (messages across groups are dropped at delivery time),
//! crashes (a crash can cut a batch of outputs in the middle, losing the outputs after the
//! cut, as a real crash would) and restarts from the in-memory WAL (`start_height` + `replay`),
//! and a harness-level equivocator that double-signs every vote with its node's key.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use weft_bls::SecretKey;
use weft_consensus::{
    ConsensusMessage, Engine, EngineConfig, EngineError, Output, TimeoutId, Timeouts,
};
use weft_finality::{Certificate, Equivocation, SignedVote, ValidatorSet, VoteKind};
use weft_primitives::{AccountId, Hash};

/// The network's behaviour.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub min_delay: u64,
    pub max_delay: u64,
    pub drop: f64,
    pub build_delay: u64,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            min_delay: 10,
            max_delay: 50,
            drop: 0.0,
            build_delay: 20,
        }
    }
}

#[derive(Debug)]
enum Ev {
    Msg {
        from: usize,
        to: usize,
        msg: ConsensusMessage,
    },
    Body {
        from: usize,
        to: usize,
        hash: Hash,
    },
    Timer {
        node: usize,
        epoch: u64,
        id: TimeoutId,
        generation: u64,
    },
    Build {
        node: usize,
        epoch: u64,
        height: u64,
        round: u32,
    },
    SyncTick {
        node: usize,
    },
}

/// A decision as a node recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub block: Hash,
    pub round: u32,
    pub at: u64,
    pub synced: bool,
}

pub struct Node {
    pub engine: Engine,
    config: EngineConfig,
    pub wal: BTreeMap<u64, Vec<Vec<u8>>>,
    timers: BTreeMap<TimeoutId, u64>,
    generation: u64,
    pub up: bool,
    epoch: u64,
    /// Cut the next batch of outputs after this many (then crash).
    pub crash_after: Option<usize>,
    pub decided: BTreeMap<u64, Decision>,
    pub evidence: Vec<Equivocation>,
    pub decided_evidence: Vec<Equivocation>,
    pub bodies: BTreeSet<Hash>,
    pub errors: Vec<EngineError>,
    pub equivocator: bool,
}

pub struct Sim {
    pub now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    pub nodes: Vec<Node>,
    pub keys: Vec<(AccountId, SecretKey)>,
    pub set: ValidatorSet,
    pub genesis: Hash,
    rng: StdRng,
    pub net: Net,
    /// Group of each node; messages across groups are dropped.
    pub partition: Option<Vec<u8>>,
    pub invalid_proposers: BTreeSet<AccountId>,
    /// Every block built: hash → (height, round, proposer).
    pub blocks: BTreeMap<Hash, (u64, u32, AccountId)>,
    /// Every vote any node broadcast: (sender node, vote).
    pub votes: Vec<(usize, SignedVote)>,
    /// The first certificate seen per height.
    pub certificates: BTreeMap<u64, Certificate>,
    /// (node, height, round) of every BuildBlock.
    pub builds: Vec<(usize, u64, u32)>,
    /// Every timer that fired: (node, id).
    pub fired: Vec<(usize, TimeoutId)>,
    /// Every round started: (node, height, round, at).
    pub rounds: Vec<(usize, u64, u32, u64)>,
    /// Every restart: (node, height, WAL entries replayed, at).
    pub restarts: Vec<(usize, u64, usize, u64)>,
}

pub fn block_hash(height: u64, round: u32, proposer: &AccountId) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"sim/block");
    h.update(&height.to_le_bytes());
    h.update(&round.to_le_bytes());
    h.update(&proposer.0);
    Hash(*h.finalize().as_bytes())
}

pub fn keys(n: usize) -> Vec<(AccountId, SecretKey)> {
    (1..=n as u8)
        .map(|i| (AccountId([i; 32]), SecretKey::from_seed(&[i; 8]).unwrap()))
        .collect()
}

impl Sim {
    /// A network of validators with these stakes, all starting height 1.
    pub fn new(stakes: &[u128], seed: u64, net: Net) -> Sim {
        let keys = keys(stakes.len());
        let set = ValidatorSet::from_stakes(
            keys.iter()
                .zip(stakes)
                .map(|((a, k), s)| (*a, k.public_key().to_bytes(), *s)),
        )
        .unwrap();
        let genesis = Hash([0x6e; 32]);
        let nodes = keys
            .iter()
            .map(|(a, k)| {
                let config = EngineConfig {
                    genesis,
                    key: Some((*a, k.clone())),
                    timeouts: Timeouts::default(),
                };
                Node {
                    engine: Engine::new(config.clone()),
                    config,
                    wal: BTreeMap::new(),
                    timers: BTreeMap::new(),
                    generation: 0,
                    up: true,
                    epoch: 0,
                    crash_after: None,
                    decided: BTreeMap::new(),
                    evidence: Vec::new(),
                    decided_evidence: Vec::new(),
                    bodies: BTreeSet::new(),
                    errors: Vec::new(),
                    equivocator: false,
                }
            })
            .collect();
        Sim {
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            keys,
            set,
            genesis,
            rng: StdRng::seed_from_u64(seed),
            net,
            partition: None,
            invalid_proposers: BTreeSet::new(),
            blocks: BTreeMap::new(),
            votes: Vec::new(),
            certificates: BTreeMap::new(),
            builds: Vec::new(),
            fired: Vec::new(),
            rounds: Vec::new(),
            restarts: Vec::new(),
        }
    }

    /// Replaces a node's engine (e.g. with a test-only equivocating one) before the start.
    pub fn replace_engine(&mut self, i: usize, make: impl Fn(EngineConfig) -> Engine) {
        self.nodes[i].engine = make(self.nodes[i].config.clone());
    }

    pub fn start(&mut self) {
        for i in 0..self.nodes.len() {
            let out = self.nodes[i]
                .engine
                .start_height(1, self.set.clone())
                .unwrap();
            self.apply(i, out);
            self.schedule(1000 + i as u64, Ev::SyncTick { node: i });
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn delay(&mut self) -> u64 {
        let (lo, hi) = (self.net.min_delay, self.net.max_delay);
        self.rng.gen_range(lo..=hi)
    }

    fn dropped(&mut self) -> bool {
        self.net.drop > 0.0 && self.rng.gen_bool(self.net.drop)
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_some_and(|g| g[a] != g[b])
    }

    fn broadcast(&mut self, from: usize, msg: ConsensusMessage) {
        for to in 0..self.nodes.len() {
            if to == from || self.dropped() {
                continue;
            }
            let at = self.now + self.delay();
            self.schedule(
                at,
                Ev::Msg {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn gossip_body(&mut self, from: usize, hash: Hash) {
        for to in 0..self.nodes.len() {
            if to == from || self.dropped() {
                continue;
            }
            let at = self.now + self.delay();
            self.schedule(at, Ev::Body { from, to, hash });
        }
    }

    /// Carries out a batch of outputs of node `i`, in order.
    fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        let cut = self.nodes[i].crash_after.take();
        for (k, o) in outputs.into_iter().enumerate() {
            if cut.is_some_and(|c| k >= c) {
                self.crash(i);
                return;
            }
            self.apply_one(i, o);
        }
        if cut.is_some() {
            self.crash(i);
        }
    }

    fn apply_one(&mut self, i: usize, o: Output) {
        match o {
            Output::Broadcast(msg) => {
                if let ConsensusMessage::Vote(v) = &msg {
                    self.votes.push((i, v.clone()));
                    if self.nodes[i].equivocator {
                        self.double_sign(i, v);
                    }
                }
                self.broadcast(i, msg);
            }
            Output::ScheduleTimeout(id, d) => {
                let n = &mut self.nodes[i];
                n.generation += 1;
                let (generation, epoch) = (n.generation, n.epoch);
                n.timers.insert(id, generation);
                let at = self.now + d.as_millis() as u64;
                self.schedule(
                    at,
                    Ev::Timer {
                        node: i,
                        epoch,
                        id,
                        generation,
                    },
                );
            }
            Output::CancelTimeout(id) => {
                self.nodes[i].timers.remove(&id);
            }
            Output::CancelAllTimeouts => self.nodes[i].timers.clear(),
            Output::BuildBlock { height, round, .. } => {
                self.builds.push((i, height, round));
                let epoch = self.nodes[i].epoch;
                let at = self.now + self.net.build_delay;
                self.schedule(
                    at,
                    Ev::Build {
                        node: i,
                        epoch,
                        height,
                        round,
                    },
                );
            }
            Output::RestreamBlock { block, .. } => self.gossip_body(i, block),
            Output::NewRound { height, round, .. } => {
                self.rounds.push((i, height, round, self.now));
            }
            Output::WalAppend { height, entry } => {
                self.nodes[i].wal.entry(height).or_default().push(entry);
            }
            Output::Decided {
                certificate,
                evidence,
            } => self.decided(i, certificate, evidence, false),
            Output::Evidence(e) => self.nodes[i].evidence.push(e),
            Output::AheadOfUs { .. } => {}
        }
    }

    /// The harness-level equivocator: a second vote of the same kind, height and round for
    /// another block, signed with the node's key and gossiped too.
    fn double_sign(&mut self, i: usize, v: &SignedVote) {
        let mut other = v.vote.clone();
        let mut seed = b"sim/evil".to_vec();
        seed.extend_from_slice(&other.height.to_le_bytes());
        seed.extend_from_slice(&other.round.to_le_bytes());
        other.block = Some(Hash(*blake3::hash(&seed).as_bytes()));
        let signed = SignedVote::sign(other, &self.genesis, &self.keys[i].1).unwrap();
        self.votes.push((i, signed.clone()));
        self.broadcast(i, ConsensusMessage::Vote(signed));
    }

    fn decided(
        &mut self,
        i: usize,
        certificate: Certificate,
        evidence: Vec<Equivocation>,
        synced: bool,
    ) {
        let h = certificate.height;
        certificate
            .verify(&self.genesis, &self.set, h, &certificate.block)
            .expect("a Decided certificate verifies");
        let n = &mut self.nodes[i];
        assert!(
            !n.decided.contains_key(&h),
            "node {i} decided height {h} twice"
        );
        n.decided.insert(
            h,
            Decision {
                block: certificate.block,
                round: certificate.round,
                at: self.now,
                synced,
            },
        );
        n.decided_evidence.extend(evidence);
        n.wal.retain(|height, _| *height > h);
        self.certificates.entry(h).or_insert(certificate);
        let out = self.nodes[i]
            .engine
            .start_height(h + 1, self.set.clone())
            .unwrap();
        self.apply(i, out);
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Msg { from, to, msg } => {
                if !self.nodes[to].up || self.cut(from, to) {
                    return;
                }
                if let ConsensusMessage::Proposal(p) = &msg {
                    let hash = p.proposal.block;
                    if !self.nodes[to].bodies.contains(&hash) && !self.dropped() {
                        // Fetch the body from its proposer: a request and a response.
                        let at = self.now + 2 * self.delay();
                        self.schedule(at, Ev::Body { from, to, hash });
                    }
                }
                match self.nodes[to].engine.on_message(msg) {
                    Ok(out) => self.apply(to, out),
                    Err(e) => self.nodes[to].errors.push(e),
                }
            }
            Ev::Body { from, to, hash } => {
                if !self.nodes[to].up || self.cut(from, to) || !self.nodes[to].bodies.insert(hash) {
                    return;
                }
                let Some(&(height, round, proposer)) = self.blocks.get(&hash) else {
                    return;
                };
                let valid = !self.invalid_proposers.contains(&proposer);
                match self.nodes[to]
                    .engine
                    .on_block(height, round, hash, proposer, valid)
                {
                    Ok(out) => self.apply(to, out),
                    Err(e) => self.nodes[to].errors.push(e),
                }
            }
            Ev::Timer {
                node,
                epoch,
                id,
                generation,
            } => {
                let n = &mut self.nodes[node];
                if !n.up || n.epoch != epoch || n.timers.get(&id) != Some(&generation) {
                    return;
                }
                n.timers.remove(&id);
                self.fired.push((node, id));
                match self.nodes[node].engine.on_timeout(id) {
                    Ok(out) => self.apply(node, out),
                    Err(e) => self.nodes[node].errors.push(e),
                }
            }
            Ev::Build {
                node,
                epoch,
                height,
                round,
            } => {
                if !self.nodes[node].up || self.nodes[node].epoch != epoch {
                    return;
                }
                let proposer = self.keys[node].0;
                let hash = block_hash(height, round, &proposer);
                self.blocks.insert(hash, (height, round, proposer));
                self.nodes[node].bodies.insert(hash);
                match self.nodes[node].engine.propose(height, round, hash) {
                    Ok(out) => self.apply(node, out),
                    Err(e) => self.nodes[node].errors.push(e),
                }
                self.gossip_body(node, hash);
            }
            Ev::SyncTick { node } => {
                self.schedule(self.now + 1000, Ev::SyncTick { node });
                if !self.nodes[node].up {
                    return;
                }
                // Catch up on every height someone else decided (one block sync request).
                loop {
                    let h = self.nodes[node].engine.height();
                    let Some(c) = self.certificates.get(&h).cloned() else {
                        break;
                    };
                    if self.nodes[node].decided.contains_key(&h)
                        || self.nodes[node].engine.is_decided()
                    {
                        break;
                    }
                    self.decided(node, c, Vec::new(), true);
                }
            }
        }
    }

    /// Runs events until virtual time `deadline` or until `stop` holds.
    pub fn run_until(&mut self, deadline: u64, stop: impl Fn(&Sim) -> bool) -> bool {
        while let Some((&(t, s), _)) = self.queue.first_key_value() {
            if t > deadline {
                break;
            }
            let ev = self.queue.remove(&(t, s)).unwrap();
            self.now = t;
            self.dispatch(ev);
            if stop(self) {
                return true;
            }
        }
        self.now = self.now.max(deadline);
        false
    }

    /// Runs until every live node has decided `height` (or the deadline passes).
    pub fn run_to_height(&mut self, height: u64, deadline: u64) -> bool {
        self.run_until(deadline, |s| {
            s.nodes
                .iter()
                .filter(|n| n.up)
                .all(|n| n.decided.contains_key(&height))
        })
    }

    pub fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = false;
        n.epoch += 1;
        n.timers.clear();
        n.crash_after = None;
    }

    /// Restarts node `i` with a fresh engine from its WAL.
    pub fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = true;
        n.epoch += 1;
        n.engine = Engine::new(n.config.clone());
        let height = n.decided.keys().next_back().map_or(1, |h| h + 1);
        let entries = n.wal.get(&height).cloned().unwrap_or_default();
        let mut out = n.engine.start_height(height, self.set.clone()).unwrap();
        out.extend(n.engine.replay(&entries).expect("replay"));
        self.restarts.push((i, height, entries.len(), self.now));
        self.apply(i, out);
    }

    /// Every height decided by two nodes was decided the same.
    pub fn assert_agreement(&self) {
        let mut by_height: BTreeMap<u64, Hash> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (h, d) in &n.decided {
                let first = by_height.entry(*h).or_insert(d.block);
                assert_eq!(
                    *first, d.block,
                    "node {i} decided another block at height {h}"
                );
            }
        }
    }

    /// No validator (but those in `except`) signed two different votes of one kind at one
    /// height and round.
    pub fn assert_no_double_votes(&self, except: &[AccountId]) {
        let mut seen: BTreeMap<(AccountId, u64, u32, VoteKind), Option<Hash>> = BTreeMap::new();
        for (_, v) in &self.votes {
            let v = &v.vote;
            if except.contains(&v.validator) {
                continue;
            }
            let key = (v.validator, v.height, v.round, v.kind);
            let first = seen.entry(key).or_insert(v.block);
            assert_eq!(*first, v.block, "{key:?} signed twice");
        }
    }

    pub fn assert_no_errors(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            assert!(n.errors.is_empty(), "node {i}: {:?}", n.errors);
        }
    }

    /// The highest height any node decided.
    pub fn max_height(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.decided.keys().next_back().copied())
            .max()
            .unwrap_or(0)
    }

    /// The highest height every live node decided.
    pub fn common_height(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| n.decided.keys().next_back().copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }
}
