//! # weft-consensus
//!
//! The Tendermint engine of a multi-validator Weft chain: Malachite's core consensus
//! (`arc-malachitebft-core-consensus` 0.8.2, driven input → effects through its `process!`
//! macro) wrapped in a synchronous, deterministic, IO-free state machine, [`Engine`].
//!
//! The node owns everything with side effects — networking, timers, storage, block building,
//! block validation — and feeds the engine events; the engine only decides, and answers each
//! event with a list of [`Output`]s that the node carries out **in order**:
//!
//! ```text
//!   node event                 engine call                    typical outputs
//!   ─────────────────────────  ─────────────────────────────  ─────────────────────────────
//!   height starts              start_height(h, set)           NewRound, ScheduleTimeout,
//!                                                             BuildBlock (if proposer)
//!   after a restart            replay(WAL entries of h)       Broadcast (recorded messages)
//!   gossip message             on_message(msg)                WalAppend, Broadcast, Decided
//!   block body validated       on_block(h, r, hash, who, ok)  WalAppend, Broadcast (vote)
//!   block built                propose(h, r, hash)            WalAppend, Broadcast
//!   timer fired                on_timeout(id)                 WalAppend, Broadcast, NewRound
//! ```
//!
//! **Tendermint in numbers.** A set of validators with total power `P` tolerates faulty
//! validators holding up to `f < P/3`. Each round `r` of height `h` has one proposer
//! (stake-weighted, `weft_finality::ValidatorSet::proposer(h, r)`). Validators prevote the
//! proposal if the node judged its block valid (and it does not conflict with their lock);
//! prevotes for one block from more than `2P/3` (a *polka*) make them precommit it;
//! precommits for one block from more than `2P/3` at one round decide it. Any two sets of
//! more than `2P/3` overlap in more than `P/3`, i.e. in at least one honest validator, so two
//! different blocks can never both be decided (safety, always). Timeouts grow per round, so
//! once messages arrive within them a round with an honest proposer decides (liveness,
//! after the network stabilises). On the happy path a height takes one block build plus three
//! message delays (proposal, prevotes, precommits) and no timeout fires.
//!
//! **Integrating it (the node's side of the contract).**
//!
//! 1. Carry out the outputs of a call in order. Append and fsync each `WalAppend` before
//!    acting on any later output of the same batch (see [`wal`]); `Broadcast` may carry other
//!    validators' messages too (certificates, a re-published proposal), relay them as they are.
//! 2. Keep one timer per [`TimeoutId`]; `ScheduleTimeout` replaces a running one with the
//!    same id. The id carries the height and the round the timer was started in; the engine
//!    ignores a timer of another height or round, so a late or duplicate firing is harmless.
//! 3. On `BuildBlock { height, round, timeout }` build a block, gossip its body with
//!    `(height, round, hash, proposer)`, and call `propose(height, round, hash)` within
//!    `timeout`. A late answer (the round moved on) is ignored; nothing else is needed.
//! 4. For every block body received (or fetched after a proposal named a hash you lack),
//!    execute it and call `on_block(height, round, hash, proposer, valid)`. The engine pairs
//!    bodies with signed proposals by `(height, hash)` (the round is informational), in any
//!    order. It never prevotes, so never decides, a block the node did not report valid; your
//!    own proposed block needs no `on_block`. On `RestreamBlock` gossip that body again.
//! 5. On `Decided` store the block with its certificate, then call `start_height(h + 1, set)`
//!    with the next height's set. Messages for `h + 1` that arrived early are kept and
//!    processed then; `AheadOfUs` means a peer claims a later height (unverified): sync if it
//!    persists, verify the synced certificates, then `start_height` the next height.
//! 6. After a crash: `start_height(h, set)` then `replay(WAL entries of h)` before any other
//!    call (`ReplayTooLate` otherwise), and only then feed network input.
//! 7. Errors: `BadSignature`, `UnknownValidator`, `NotProposer`, `InvalidCertificate` mean
//!    the peer sent something invalid; `CorruptWal` is for the operator; `Signing`,
//!    `Certificate` and `Consensus` are local faults (stop the validator rather than carry on).
//!
//! Malachite's state notes `Instant::now()` when a height starts; it only reads it back with
//! a finalization target time, which this engine never sets, so decisions never depend on it.
//!
//! Modules: [`context`] (the Malachite `Context`: heights, addresses, votes, proposals, BLS
//! signing, the validator set), [`engine`] (the wrapper), `effects` (how each Malachite
//! effect is carried out), [`wire`] (the gossiped [`ConsensusMessage`]), [`wal`] (the
//! write-ahead log entry codec and the crash-safety argument) and [`timeouts`].

#![forbid(unsafe_code)]

pub mod context;
mod effects;
pub mod engine;
pub mod guard;
pub mod timeouts;
pub mod wal;
pub mod wire;

pub use engine::Engine;
pub use guard::{GuardError, SignGuard, SignKind, SignRequest, SignedRecord};
pub use timeouts::{TimeoutId, TimeoutKind, Timeouts};
pub use wal::{WalDecodeError, WalEntry};
pub use wire::{ConsensusMessage, DecodeError, RoundCertificateKind, RoundVote};

use std::time::Duration;
use weft_finality::{Certificate, Equivocation};
use weft_primitives::{AccountId, Hash};

/// How an engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The chain's genesis hash: bound into every signature.
    pub genesis: Hash,
    /// This validator's account and BLS key, or `None` for a node that only follows.
    pub key: Option<(AccountId, weft_bls::SecretKey)>,
    /// Step timeouts.
    pub timeouts: Timeouts,
}

/// What the node must do, in order, after an engine call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Gossip this message to the other validators.
    Broadcast(ConsensusMessage),
    /// Start (or restart) the timer `id`; call [`Engine::on_timeout`] when it fires.
    ScheduleTimeout(TimeoutId, Duration),
    /// Stop the timer `id` if it runs.
    CancelTimeout(TimeoutId),
    /// Stop every timer.
    CancelAllTimeouts,
    /// We are the proposer: build a block for `(height, round)` and call [`Engine::propose`]
    /// within `timeout` (the round's propose timeout). Gossip the block body yourself.
    BuildBlock {
        /// The height.
        height: u64,
        /// The round.
        round: u32,
        /// How long the round waits for the proposal.
        timeout: Duration,
    },
    /// Re-gossip the body of a block we already have (a re-proposal of a locked block, or
    /// Malachite's hidden-lock recovery).
    RestreamBlock {
        /// The height.
        height: u64,
        /// The round it is (re-)proposed at.
        round: u32,
        /// The block.
        block: Hash,
    },
    /// A round started (for logs and metrics).
    NewRound {
        /// The height.
        height: u64,
        /// The round.
        round: u32,
        /// Its proposer.
        proposer: AccountId,
    },
    /// Append `entry` to the write-ahead log of `height` and fsync it before acting on any
    /// later output of this batch (see [`wal`]).
    WalAppend {
        /// The height the entry belongs to.
        height: u64,
        /// The entry's bytes ([`WalEntry::to_bytes`]).
        entry: Vec<u8>,
    },
    /// The height is decided. Write the block with this certificate as its justification,
    /// then call [`Engine::start_height`] with `height + 1`. Emitted once per height; the
    /// certificate has been checked with `Certificate::verify`.
    Decided {
        /// The commit certificate (height, round, block, signers, aggregate signature).
        certificate: Certificate,
        /// Every equivocation seen at this height.
        evidence: Vec<Equivocation>,
    },
    /// An equivocation was seen (reported once per offender, height, round and kind).
    Evidence(Equivocation),
    /// A message for a later height than ours arrived (at most once per height, the highest
    /// so far). It is unverified: the node may want to sync. Messages for `height + 1` are
    /// kept and processed when that height starts; later ones are dropped.
    AheadOfUs {
        /// The claimed height.
        height: u64,
    },
}

/// Why an engine call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `start_height` has not been called yet.
    #[error("consensus has not started a height")]
    NotStarted,
    /// `start_height` for a height not above the current one.
    #[error("cannot start height {requested}: already at height {current}")]
    HeightNotIncreasing {
        /// Requested.
        requested: u64,
        /// Current.
        current: u64,
    },
    /// A signature does not verify: punish the peer that sent it.
    #[error("invalid signature")]
    BadSignature,
    /// A message signed by (or naming) an account outside the validator set.
    #[error("{0:?} is not in the validator set")]
    UnknownValidator(AccountId),
    /// A proposal from someone who is not the round's proposer.
    #[error("{found:?} is not the proposer of round {round}")]
    NotProposer {
        /// The sender.
        found: AccountId,
        /// The round.
        round: u32,
    },
    /// A certificate that is not valid (too little power, duplicates, non-members).
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A WAL entry could not be decoded.
    #[error("corrupt WAL entry {index}: {reason}")]
    CorruptWal {
        /// Its position in the entries given to `replay`.
        index: usize,
        /// Why.
        reason: WalDecodeError,
    },
    /// `replay` after the engine already processed other input at this height.
    #[error("replay must directly follow start_height")]
    ReplayTooLate,
    /// Signing failed (no key, or a BLS error).
    #[error("cannot sign: {0}")]
    Signing(String),
    /// The double-sign guard refused the signature (see [`guard`]): nothing of this call
    /// was carried out.
    #[error("signature refused: {0}")]
    SigningRefused(#[from] GuardError),
    /// Building or checking the commit certificate failed (a bug: it was built from verified
    /// precommits).
    #[error("commit certificate: {0}")]
    Certificate(String),
    /// Malachite refused an input (e.g. a WAL replay that re-derived a different vote).
    #[error("consensus: {0}")]
    Consensus(String),
}
