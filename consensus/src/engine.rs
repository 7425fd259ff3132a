//! The engine: Malachite's consensus state plus the effect handler, behind a synchronous API.
//!
//! Every public call turns a node event into one Malachite `Input`, runs it to completion
//! with `process!` (each yielded effect is carried out on the spot by `effects.rs`) and
//! returns the collected [`Output`]s. Nothing here reads a clock, draws randomness or does IO,
//! so N engines fed the same events in the same order produce the same outputs.
//!
//! **Block bodies.** Consensus runs in Malachite's `ProposalAndParts` mode: a proposal message
//! carries only the block hash, and a proposal counts only once the node has reported the
//! body's verdict with [`Engine::on_block`] (Malachite's `Input::ProposedValue`). A block the
//! node judged invalid is prevoted nil; a block it never reported is never prevoted, so never
//! decided. The proposer's own block is valid by construction: [`Engine::propose`] stores it
//! as such (`Input::Propose`). In `ProposalOnly` mode Malachite would treat every proposed
//! value as valid, which is why it is not used.
//!
//! **Heights.** Messages for a lower height are dropped; for `height + 1` they are kept
//! (unverified, in Malachite's bounded queue) and processed when that height starts; for
//! later heights they are dropped. Either kind of future message yields
//! [`Output::AheadOfUs`] once per new highest height, so the node can decide to sync. A node
//! that syncs a height (verifies its certificate and imports the block) simply calls
//! [`Engine::start_height`] for the next one: any later height may be started.
//!
//! **Restarts.** See `wal.rs`: `start_height(h, set)`, then `replay(entries of h)` before any
//! other call; the engine re-derives its state and reuses its recorded signatures.

use crate::context::{round_u32, Address, BlockHash, Height, WeftContext, WeftValidatorSet};
use crate::effects::Effects;
use crate::timeouts::TimeoutId;
use crate::wal::WalEntry;
use crate::wire::{to_input, ConsensusMessage};
use crate::{EngineConfig, EngineError, Output};
use arc_malachitebft_core_consensus::{
    process, Error as ConsensusError, Input, LocallyProposedValue, Params, ProposedValue, State,
    ThresholdParams, ValuePayload,
};
use arc_malachitebft_core_types::{Round, Validity, ValueOrigin, VoteExtensionPolicy};
use std::collections::BTreeSet;
use tracing::{debug, info, warn};
use weft_finality::ValidatorSet;
use weft_primitives::{AccountId, Hash};

/// How many future heights Malachite buffers messages for (we only pass it `height + 1`).
const QUEUE_HEIGHTS: usize = 1;
/// How many messages it buffers for that height.
const QUEUE_PER_HEIGHT: usize = 4096;

/// The consensus engine of one node (see the module docs).
pub struct Engine {
    account: AccountId,
    has_key: bool,
    state: Option<State<WeftContext>>,
    fx: Effects,
    /// `start_height` ran and nothing else since: `replay` is allowed.
    fresh: bool,
    /// The highest future height reported with `Output::AheadOfUs`.
    ahead: u64,
}

impl Engine {
    /// An engine that has not started a height yet. Without a key it follows (verifies and
    /// decides) but never votes.
    pub fn new(config: EngineConfig) -> Self {
        let (account, key) = match config.key {
            Some((account, key)) => (account, Some(key)),
            None => (AccountId([0; 32]), None),
        };
        Engine {
            account,
            has_key: key.is_some(),
            state: None,
            fx: Effects::new(config.genesis, key, config.timeouts),
            fresh: false,
            ahead: 0,
        }
    }

    /// Makes every later signature of this engine ask `guard` first (see [`crate::guard`]).
    pub fn set_sign_guard(&mut self, guard: Box<dyn crate::SignGuard>) {
        self.fx.guard = Some(guard);
    }

    /// Test-only: an engine that, at every vote it casts, also signs and broadcasts a
    /// conflicting vote for a different block (to exercise evidence and slashing).
    #[cfg(feature = "equivocate")]
    pub fn new_equivocating(config: EngineConfig) -> Self {
        let mut engine = Engine::new(config);
        engine.fx.equivocate = true;
        engine
    }

    fn params(&self) -> Params<WeftContext> {
        Params {
            address: Address(self.account),
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: self.has_key,
        }
    }

    /// Runs one input to completion and collects its outputs.
    fn process(&mut self, input: Input<WeftContext>) -> Result<Vec<Output>, EngineError> {
        let state = self.state.as_mut().ok_or(EngineError::NotStarted)?;
        let fx = &mut self.fx;
        fx.begin();
        let result: Result<(), ConsensusError<WeftContext>> = process!(
            input: input,
            state: state,
            metrics: &(),
            with: effect => fx.handle(effect)
        );
        fx.scan_evidence(
            state.driver.votes().evidence(),
            state.driver.proposals().evidence(),
        );
        let out = fx.take_outputs();
        if let Some(e) = fx.fatal.take() {
            return Err(e);
        }
        result.map_err(|e| EngineError::Consensus(e.to_string()))?;
        Ok(out)
    }

    /// Starts consensus at `height` with its validator set (after the previous height was
    /// decided and committed, or synced). Any height above the current one may be started.
    pub fn start_height(
        &mut self,
        height: u64,
        set: ValidatorSet,
    ) -> Result<Vec<Output>, EngineError> {
        if let Some(state) = &self.state {
            let current = state.height().0;
            if height <= current {
                return Err(EngineError::HeightNotIncreasing {
                    requested: height,
                    current,
                });
            }
        }
        info!(height, validators = set.len(), "starting height");
        let set = WeftValidatorSet::new(set);
        self.fx.start_height(height, set.clone());
        if self.state.is_none() {
            self.state = Some(State::new(
                WeftContext,
                Height(height),
                set.clone(),
                self.params(),
                QUEUE_HEIGHTS,
                QUEUE_PER_HEIGHT,
            ));
        }
        let out = self.process(Input::StartHeight(
            Height(height),
            set,
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ))?;
        // Buffered messages of this height were processed above; a bad one among them is
        // not this call's failure.
        self.fresh = true;
        Ok(out)
    }

    /// After a restart: feeds back the WAL entries of the current height, in the order they
    /// were appended, right after [`Engine::start_height`]. Our recorded votes and proposals
    /// are reused (never re-signed differently); see `wal.rs`.
    pub fn replay(&mut self, entries: &[Vec<u8>]) -> Result<Vec<Output>, EngineError> {
        if self.state.is_none() {
            return Err(EngineError::NotStarted);
        }
        if !self.fresh {
            return Err(EngineError::ReplayTooLate);
        }
        self.fresh = false;
        let decoded = entries
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                WalEntry::from_bytes(bytes)
                    .map_err(|reason| EngineError::CorruptWal { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inputs: Vec<_> = decoded.iter().map(WalEntry::to_input).collect();
        info!(
            height = self.height(),
            entries = inputs.len(),
            "replaying the WAL"
        );
        if let Some(state) = self.state.as_mut() {
            state.index_wal_entries(inputs.iter());
        }
        self.fx.replaying = Some(entries.iter().cloned().collect::<BTreeSet<_>>());
        let mut out = Vec::new();
        let mut result = Ok(());
        for input in inputs {
            match self.process(input) {
                Ok(o) => out.extend(o),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(state) = self.state.as_mut() {
            state.reset_entries_index();
        }
        self.fx.replaying = None;
        result?;
        self.resend_recorded_proposal(&decoded, &mut out);
        self.repropose_recorded(&decoded, &mut out)?;
        Ok(out)
    }

    /// Replaying our own proposal stores it but does not publish it, and the crash may have
    /// come between logging and sending it: send it (and its block body) again if it is for
    /// the round we are in. Same message, same signature: no equivocation.
    fn resend_recorded_proposal(&self, entries: &[WalEntry], out: &mut Vec<Output>) {
        let (height, round) = (self.height(), self.round());
        for e in entries {
            if let WalEntry::Proposal(p) = e {
                let q = &p.proposal;
                if q.proposer == self.account && q.height == height && q.round == round {
                    out.push(Output::Broadcast(ConsensusMessage::Proposal(p.clone())));
                    out.push(Output::RestreamBlock {
                        height,
                        round,
                        block: q.block,
                    });
                }
            }
        }
    }

    /// If we are the proposer of the current round, still waiting to propose, and the WAL
    /// holds the block we were proposing (logged before the crash, never signed), propose it
    /// again instead of waiting for the node to build another.
    fn repropose_recorded(
        &mut self,
        entries: &[WalEntry],
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        let (height, round) = (state.height().0, state.round());
        if !state.driver.step_is_propose()
            || state.get_proposer(Height(height), round).0 != self.account
        {
            return Ok(());
        }
        let recorded = entries.iter().rev().find_map(|e| match e {
            WalEntry::ProposedValue {
                height: h,
                round: Some(r),
                proposer,
                block,
                valid: true,
                ..
            } if *h == height && Round::new(*r) == round && *proposer == self.account => {
                Some(*block)
            }
            _ => None,
        });
        if let Some(block) = recorded {
            info!(height, round = %round, "re-proposing the block recorded in the WAL");
            let r = round_u32(round);
            out.retain(|o| {
                !matches!(o, Output::BuildBlock { height: h, round: rr, .. }
                    if *h == height && *rr == r)
            });
            out.extend(self.process(Input::Propose(LocallyProposedValue::new(
                Height(height),
                round,
                BlockHash(block),
            )))?);
        }
        Ok(())
    }

    /// Checks what can be checked without cryptography: members, and the round's proposer.
    fn precheck(&self, msg: &ConsensusMessage) -> Result<(), EngineError> {
        let Some(set) = self.fx.set.as_ref().map(|s| s.inner()) else {
            return Err(EngineError::NotStarted);
        };
        let member = |a: &AccountId| {
            set.get(a)
                .map(|_| ())
                .ok_or(EngineError::UnknownValidator(*a))
        };
        match msg {
            ConsensusMessage::Vote(v) => member(&v.vote.validator),
            ConsensusMessage::Proposal(p) => {
                let p = &p.proposal;
                member(&p.proposer)?;
                if set.proposer(p.height, p.round).account != p.proposer {
                    return Err(EngineError::NotProposer {
                        found: p.proposer,
                        round: p.round,
                    });
                }
                Ok(())
            }
            ConsensusMessage::PolkaCertificate { signatures, .. } => {
                signatures.iter().try_for_each(|(a, _)| member(a))
            }
            ConsensusMessage::RoundCertificate { votes, .. } => {
                votes.iter().try_for_each(|v| member(&v.validator))
            }
        }
    }

    /// A gossiped consensus message. Signatures are verified against the height's set:
    /// an invalid one is [`EngineError::BadSignature`], a non-member
    /// [`EngineError::UnknownValidator`], a proposal from another than the round's proposer
    /// [`EngineError::NotProposer`] — grounds to punish the peer. Messages of other heights
    /// are handled as the module docs say.
    pub fn on_message(&mut self, msg: ConsensusMessage) -> Result<Vec<Output>, EngineError> {
        let current = self.current_height()?;
        let height = msg.height();
        if height < current {
            debug!(height, current, "message for a past height: dropped");
            return Ok(Vec::new());
        }
        if height > current {
            let mut out = Vec::new();
            if height > self.ahead {
                self.ahead = height;
                out.push(Output::AheadOfUs { height });
            }
            if height == current + 1 {
                out.extend(self.process(to_input(&msg))?);
            }
            return Ok(out);
        }
        self.precheck(&msg)?;
        self.fresh = false;
        let out = self.process(to_input(&msg))?;
        if self.fx.bad_signature {
            self.unreport(&out);
            return Err(EngineError::BadSignature);
        }
        if let Some(reason) = self.fx.cert_error.take() {
            self.unreport(&out);
            return Err(EngineError::InvalidCertificate(reason));
        }
        Ok(out)
    }

    /// Outputs of a refused message are dropped: evidence among them is reported again later.
    fn unreport(&mut self, out: &[Output]) {
        for o in out {
            if let Output::Evidence(e) = o {
                self.fx.reported.remove(&e.key());
            }
        }
    }

    /// The node has the body of `block`, proposed by `proposer` at `(height, round)`, and
    /// judged it `valid` (or not) by executing it.
    pub fn on_block(
        &mut self,
        height: u64,
        round: u32,
        block: Hash,
        proposer: AccountId,
        valid: bool,
    ) -> Result<Vec<Output>, EngineError> {
        let current = self.current_height()?;
        if height < current || height > current + 1 {
            debug!(height, current, "block verdict for another height: dropped");
            return Ok(Vec::new());
        }
        if height == current {
            self.fresh = false;
        }
        self.process(Input::ProposedValue(
            ProposedValue {
                height: Height(height),
                round: Round::new(round),
                valid_round: Round::Nil,
                proposer: Address(proposer),
                value: BlockHash(block),
                validity: Validity::from_bool(valid),
            },
            ValueOrigin::Consensus,
        ))
    }

    /// The answer to [`Output::BuildBlock`]: propose `block` at `(height, round)`. Ignored
    /// when the engine has moved on (another height or round, or it already proposed).
    pub fn propose(
        &mut self,
        height: u64,
        round: u32,
        block: Hash,
    ) -> Result<Vec<Output>, EngineError> {
        let current = self.current_height()?;
        if height != current {
            warn!(height, current, "block built for another height: ignored");
            return Ok(Vec::new());
        }
        self.fresh = false;
        self.process(Input::Propose(LocallyProposedValue::new(
            Height(height),
            Round::new(round),
            BlockHash(block),
        )))
    }

    /// A timer fired. Timers of another height or round are ignored.
    pub fn on_timeout(&mut self, t: TimeoutId) -> Result<Vec<Output>, EngineError> {
        let current = self.current_height()?;
        if t.height != current {
            return Ok(Vec::new());
        }
        self.fresh = false;
        self.process(Input::TimeoutElapsed(t.to_malachite()))
    }

    fn current_height(&self) -> Result<u64, EngineError> {
        self.state
            .as_ref()
            .map(|s| s.height().0)
            .ok_or(EngineError::NotStarted)
    }

    /// The current height (0 before the first `start_height`).
    pub fn height(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.height().0)
    }

    /// The current round.
    pub fn round(&self) -> u32 {
        self.state.as_ref().map_or(0, |s| round_u32(s.round()))
    }

    /// The current height's validator set.
    pub fn validator_set(&self) -> Option<&ValidatorSet> {
        self.fx.set.as_ref().map(|s| s.inner())
    }

    /// This node's account, if it has a validator key.
    pub fn account(&self) -> Option<AccountId> {
        self.has_key.then_some(self.account)
    }

    /// Whether the current height is decided (its `Output::Decided` was emitted).
    pub fn is_decided(&self) -> bool {
        self.state.is_some() && self.fx.decided == Some(self.height())
    }
}
