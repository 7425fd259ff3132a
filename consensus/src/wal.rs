//! The write-ahead log entry codec, and why the log makes restarts safe.
//!
//! ## What is logged
//!
//! Malachite asks for a WAL append (`Effect::WalAppend`) for exactly the inputs whose effect
//! on its state must survive a crash: every vote it accepted (ours included, and the votes
//! dissolved out of round certificates), every proposal it stored (ours included), every
//! proposed value (the node's verdict on a block body, and our own proposed blocks), every
//! step timeout that fired (propose, prevote, precommit: each moves the state machine) and
//! every polka certificate it accepted. The engine turns each into a [`WalEntry`] and returns
//! its bytes as [`crate::Output::WalAppend`]. Bytes are one version byte (`1`) followed by the
//! SCALE encoding of [`WalEntry`] (explicit, stable indices).
//!
//! ## The crash-safety argument
//!
//! A validator must never sign two different votes of one kind at one (height, round), nor
//! two proposals for one (height, round) — even across a crash. Malachite's state machine is
//! deterministic: the same inputs in the same order lead to the same state and the same
//! votes. So:
//!
//! 1. Every message this engine signs is itself an input that is logged (`on_vote` /
//!    `on_proposal` of our own message append it) *before* the message is published: in the
//!    `Vec<Output>` a batch returns, the `WalAppend` of a vote always comes before the
//!    `Broadcast` of that vote.
//! 2. The node appends (and fsyncs) each `WalAppend` before it acts on any later output of
//!    the same batch — in particular before it broadcasts anything. So whatever left the
//!    machine is on disk; a crash in the middle of a batch loses only outputs that nobody saw.
//! 3. After a restart the node calls `start_height(h, set)` and then
//!    `replay(entries of height h, in order)`. The engine indexes our own recorded votes and
//!    proposals (Malachite's `ReplayIndex`) and feeds every entry back. Whenever the state
//!    machine re-derives one of our messages, the recorded one (with its signature) is reused;
//!    if a re-derivation ever differed (a non-determinism bug), replay fails with
//!    `ReplayDivergence` instead of signing. A message that was never recorded was never
//!    published, so signing it now is no equivocation.
//! 4. During replay the engine does not ask the node to log again what it is replaying:
//!    `WalAppend` outputs whose bytes equal an entry being replayed are suppressed. Entries
//!    that are new (e.g. our vote, when the crash came after logging the vote that triggered
//!    it but before our own vote was logged) are returned as usual.
//!
//! Entries of finished heights are useless: the node may drop them once the height is
//! decided and committed. A corrupt entry (bad version, undecodable, trailing bytes) makes
//! replay fail with [`crate::EngineError::CorruptWal`]: the node decides whether to stop or to
//! discard the tail — discarding is only safe for a torn last write, which never left the
//! machine.

use crate::context::{
    round_opt, round_u32, signed_proposal_in, signed_proposal_out, signed_vote_in, signed_vote_out,
    Address, BlockHash, Height, WeftContext,
};
use crate::timeouts::TimeoutKind;
use crate::wire::{polka_in, polka_out, ConsensusMessage};
use arc_malachitebft_core_consensus::{Input, ProposedValue};
use arc_malachitebft_core_types::{Round, Timeout, Validity, ValueOrigin};
use parity_scale_codec::{Decode, DecodeAll, Encode};
use weft_bls::SignatureBytes;
use weft_finality::{SignedProposal, SignedVote};
use weft_primitives::{AccountId, Hash};

/// The format version, the first byte of every entry.
pub const WAL_VERSION: u8 = 1;

/// One logged consensus input. Indices are stable.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub enum WalEntry {
    /// A vote that was accepted (ours or a peer's).
    #[codec(index = 0)]
    Vote(SignedVote),
    /// A proposal that was stored (ours or the round's proposer's).
    #[codec(index = 1)]
    Proposal(SignedProposal),
    /// A block body's verdict, or a block we proposed (always valid).
    #[codec(index = 2)]
    ProposedValue {
        /// The height.
        height: u64,
        /// The round the body was proposed at (metadata; matching is by hash).
        round: Option<u32>,
        /// The POL round it was proposed with (metadata).
        valid_round: Option<u32>,
        /// The proposer.
        proposer: AccountId,
        /// The block.
        block: Hash,
        /// The verdict.
        valid: bool,
        /// Whether it came from the sync protocol (never, in this engine).
        from_sync: bool,
    },
    /// A step timeout that fired.
    #[codec(index = 3)]
    Timeout {
        /// The round it was for.
        round: u32,
        /// Propose, prevote or precommit.
        kind: TimeoutKind,
    },
    /// A polka certificate that was accepted.
    #[codec(index = 4)]
    PolkaCertificate {
        /// The height.
        height: u64,
        /// The round.
        round: u32,
        /// The block.
        block: Hash,
        /// The prevote signatures.
        signatures: Vec<(AccountId, SignatureBytes)>,
    },
}

/// Why an entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeError {
    /// Empty bytes.
    #[error("empty entry")]
    Empty,
    /// A version this code does not know.
    #[error("unknown WAL entry version {0}")]
    Version(u8),
    /// Undecodable.
    #[error("undecodable entry: {0}")]
    Codec(String),
}

impl WalEntry {
    /// The entry for a Malachite input, or `None` for an input that is never logged.
    pub(crate) fn from_input(input: &Input<WeftContext>) -> Option<Self> {
        Some(match input {
            Input::Vote(v) => WalEntry::Vote(signed_vote_out(v)),
            Input::Proposal(p) => WalEntry::Proposal(signed_proposal_out(p)),
            Input::ProposedValue(pv, origin) => WalEntry::ProposedValue {
                height: pv.height.0,
                round: round_opt(pv.round),
                valid_round: round_opt(pv.valid_round),
                proposer: pv.proposer.0,
                block: pv.value.0,
                valid: pv.validity.is_valid(),
                from_sync: origin.is_sync(),
            },
            Input::TimeoutElapsed(t) => WalEntry::Timeout {
                round: round_u32(t.round),
                kind: TimeoutKind::from_malachite(t.kind),
            },
            Input::PolkaCertificate(c) => match polka_out(c) {
                ConsensusMessage::PolkaCertificate {
                    height,
                    round,
                    block,
                    signatures,
                } => WalEntry::PolkaCertificate {
                    height,
                    round,
                    block,
                    signatures,
                },
                _ => return None,
            },
            Input::StartHeight(..)
            | Input::RoundCertificate(_)
            | Input::Propose(_)
            | Input::SyncValueResponse(_) => return None,
        })
    }

    /// The Malachite input this entry replays.
    pub(crate) fn to_input(&self) -> Input<WeftContext> {
        match self {
            WalEntry::Vote(v) => Input::Vote(signed_vote_in(v)),
            WalEntry::Proposal(p) => Input::Proposal(signed_proposal_in(p)),
            WalEntry::ProposedValue {
                height,
                round,
                valid_round,
                proposer,
                block,
                valid,
                from_sync,
            } => Input::ProposedValue(
                ProposedValue {
                    height: Height(*height),
                    round: Round::from(*round),
                    valid_round: Round::from(*valid_round),
                    proposer: Address(*proposer),
                    value: BlockHash(*block),
                    validity: Validity::from_bool(*valid),
                },
                if *from_sync {
                    ValueOrigin::Sync
                } else {
                    ValueOrigin::Consensus
                },
            ),
            WalEntry::Timeout { round, kind } => {
                Input::TimeoutElapsed(Timeout::new(Round::new(*round), kind.to_malachite()))
            }
            WalEntry::PolkaCertificate {
                height,
                round,
                block,
                signatures,
            } => Input::PolkaCertificate(polka_in(*height, *round, *block, signatures)),
        }
    }

    /// The bytes the node appends: the version, then SCALE.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![WAL_VERSION];
        self.encode_to(&mut out);
        out
    }

    /// Decodes [`WalEntry::to_bytes`], refusing unknown versions and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WalDecodeError> {
        let (&version, mut rest) = bytes.split_first().ok_or(WalDecodeError::Empty)?;
        if version != WAL_VERSION {
            return Err(WalDecodeError::Version(version));
        }
        WalEntry::decode_all(&mut rest).map_err(|e| WalDecodeError::Codec(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_finality::{Proposal, Vote, VoteKind};

    fn entries() -> Vec<WalEntry> {
        vec![
            WalEntry::Vote(SignedVote {
                vote: Vote {
                    kind: VoteKind::Precommit,
                    height: 2,
                    round: 0,
                    block: None,
                    validator: AccountId([1; 32]),
                },
                signature: SignatureBytes([2; 32]),
            }),
            WalEntry::Proposal(SignedProposal {
                proposal: Proposal {
                    height: 2,
                    round: 1,
                    block: Hash([3; 32]),
                    pol_round: Some(0),
                    proposer: AccountId([1; 32]),
                },
                signature: SignatureBytes([2; 32]),
            }),
            WalEntry::ProposedValue {
                height: 2,
                round: Some(1),
                valid_round: None,
                proposer: AccountId([1; 32]),
                block: Hash([3; 32]),
                valid: false,
                from_sync: false,
            },
            WalEntry::Timeout {
                round: 3,
                kind: TimeoutKind::Prevote,
            },
            WalEntry::PolkaCertificate {
                height: 2,
                round: 0,
                block: Hash([3; 32]),
                signatures: vec![(AccountId([1; 32]), SignatureBytes([2; 32]))],
            },
        ]
    }

    #[test]
    fn entries_round_trip_through_bytes_and_inputs() {
        for e in entries() {
            let bytes = e.to_bytes();
            assert_eq!(bytes[0], WAL_VERSION);
            assert_eq!(WalEntry::from_bytes(&bytes), Ok(e.clone()));
            assert_eq!(WalEntry::from_input(&e.to_input()), Some(e));
        }
    }

    #[test]
    fn corrupt_entries_are_refused() {
        let bytes = entries()[0].to_bytes();
        assert_eq!(WalEntry::from_bytes(&[]), Err(WalDecodeError::Empty));
        let mut other = bytes.clone();
        other[0] = 7;
        assert_eq!(
            WalEntry::from_bytes(&other),
            Err(WalDecodeError::Version(7))
        );
        assert!(WalEntry::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(1);
        assert!(WalEntry::from_bytes(&longer).is_err());
    }
}
