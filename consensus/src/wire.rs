//! What validators gossip: [`ConsensusMessage`], SCALE-encoded with stable indices.
//!
//! * `Proposal`: a signed `weft_finality::Proposal` (height, round, block hash, POL round,
//!   proposer). The block body travels separately, by the node's own block gossip.
//! * `Vote`: a signed prevote or precommit.
//! * `PolkaCertificate`: prevotes from more than 2/3 of the power for one block at one round,
//!   as `(validator, signature)` pairs. Every signer signed the same bytes (the voter is not
//!   in a vote's signing bytes), so a receiver checks it with one aggregate verification.
//!   Sent with a re-proposal so that validators which missed the polka accept it.
//! * `RoundCertificate`: the votes that justify entering a round: `Skip` (votes of that round
//!   from more than 1/3 of the power: someone honest is already there) or `Precommit`
//!   (precommits of the previous round from more than 2/3: the previous round is over).
//!   Each vote carries its own kind and block, so the signatures are checked one by one.
//!
//! Certificates carry at most one signature per validator; a receiver rejects duplicates,
//! non-members, bad signatures and too little power. Decoding is strict: use
//! [`ConsensusMessage::from_bytes`], which also refuses trailing bytes.

use crate::context::{
    round_u32, signed_proposal_in, signed_proposal_out, signed_vote_in, signed_vote_out, Address,
    BlockHash, Height, WeftContext,
};
use arc_malachitebft_core_types::{
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, VoteType,
};
use parity_scale_codec::{Decode, DecodeAll, Encode};
use weft_bls::SignatureBytes;
use weft_finality::{SignedProposal, SignedVote, VoteKind};
use weft_primitives::{AccountId, Hash};

/// Why a round certificate lets a validator enter a round. Indices are stable.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundCertificateKind {
    /// Votes of the certificate's round from more than 1/3 of the power.
    #[codec(index = 0)]
    Skip,
    /// Precommits (for anything) of the certificate's round from more than 2/3 of the power:
    /// enter the next round.
    #[codec(index = 1)]
    Precommit,
}

/// One vote of a round certificate (height and round are the certificate's).
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub struct RoundVote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for, or nil.
    pub block: Option<Hash>,
    /// The voter.
    pub validator: AccountId,
    /// Its signature over the vote's `signing_bytes`.
    pub signature: SignatureBytes,
}

/// A consensus message between validators (see the module docs). Indices are stable.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub enum ConsensusMessage {
    /// A signed proposal.
    #[codec(index = 0)]
    Proposal(SignedProposal),
    /// A signed vote.
    #[codec(index = 1)]
    Vote(SignedVote),
    /// A polka: prevotes for `block` at `(height, round)` from more than 2/3 of the power.
    #[codec(index = 2)]
    PolkaCertificate {
        /// The height.
        height: u64,
        /// The round of the prevotes.
        round: u32,
        /// The block prevoted for.
        block: Hash,
        /// `(voter, signature over the prevote's signing bytes)`.
        signatures: Vec<(AccountId, SignatureBytes)>,
    },
    /// Votes that justify entering a round.
    #[codec(index = 3)]
    RoundCertificate {
        /// The height.
        height: u64,
        /// The round of the votes.
        round: u32,
        /// Skip (f+1 votes of `round`) or precommit (2f+1 precommits of `round`).
        kind: RoundCertificateKind,
        /// The votes.
        votes: Vec<RoundVote>,
    },
}

/// The message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consensus message: {0}")]
pub struct DecodeError(pub String);

impl ConsensusMessage {
    /// Decodes a message, refusing trailing bytes.
    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        ConsensusMessage::decode_all(&mut bytes).map_err(|e| DecodeError(e.to_string()))
    }

    /// The SCALE encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// The height the message is for.
    pub fn height(&self) -> u64 {
        match self {
            ConsensusMessage::Proposal(p) => p.proposal.height,
            ConsensusMessage::Vote(v) => v.vote.height,
            ConsensusMessage::PolkaCertificate { height, .. }
            | ConsensusMessage::RoundCertificate { height, .. } => *height,
        }
    }

    /// The round the message is for.
    pub fn round(&self) -> u32 {
        match self {
            ConsensusMessage::Proposal(p) => p.proposal.round,
            ConsensusMessage::Vote(v) => v.vote.round,
            ConsensusMessage::PolkaCertificate { round, .. }
            | ConsensusMessage::RoundCertificate { round, .. } => *round,
        }
    }
}

fn vote_type(kind: VoteKind) -> VoteType {
    match kind {
        VoteKind::Prevote => VoteType::Prevote,
        VoteKind::Precommit => VoteType::Precommit,
    }
}

fn vote_kind(t: VoteType) -> VoteKind {
    match t {
        VoteType::Prevote => VoteKind::Prevote,
        VoteType::Precommit => VoteKind::Precommit,
    }
}

/// A polka certificate on the wire.
pub(crate) fn polka_out(c: &PolkaCertificate<WeftContext>) -> ConsensusMessage {
    ConsensusMessage::PolkaCertificate {
        height: c.height.0,
        round: round_u32(c.round),
        block: c.value_id.0,
        signatures: c
            .polka_signatures
            .iter()
            .map(|s| (s.address.0, s.signature))
            .collect(),
    }
}

/// A polka certificate from its parts.
pub(crate) fn polka_in(
    height: u64,
    round: u32,
    block: Hash,
    signatures: &[(AccountId, SignatureBytes)],
) -> PolkaCertificate<WeftContext> {
    PolkaCertificate {
        height: Height(height),
        round: Round::new(round),
        value_id: BlockHash(block),
        polka_signatures: signatures
            .iter()
            .map(|(a, s)| PolkaSignature::new(Address(*a), *s))
            .collect(),
    }
}

/// A round certificate on the wire.
pub(crate) fn round_cert_out(c: &RoundCertificate<WeftContext>) -> ConsensusMessage {
    ConsensusMessage::RoundCertificate {
        height: c.height.0,
        round: round_u32(c.round),
        kind: match c.cert_type {
            RoundCertificateType::Skip => RoundCertificateKind::Skip,
            RoundCertificateType::Precommit => RoundCertificateKind::Precommit,
        },
        votes: c
            .round_signatures
            .iter()
            .map(|s| RoundVote {
                kind: vote_kind(s.vote_type),
                block: match s.value_id {
                    NilOrVal::Nil => None,
                    NilOrVal::Val(b) => Some(b.0),
                },
                validator: s.address.0,
                signature: s.signature,
            })
            .collect(),
    }
}

/// A round certificate from its parts.
pub(crate) fn round_cert_in(
    height: u64,
    round: u32,
    kind: RoundCertificateKind,
    votes: &[RoundVote],
) -> RoundCertificate<WeftContext> {
    RoundCertificate {
        height: Height(height),
        round: Round::new(round),
        cert_type: match kind {
            RoundCertificateKind::Skip => RoundCertificateType::Skip,
            RoundCertificateKind::Precommit => RoundCertificateType::Precommit,
        },
        round_signatures: votes
            .iter()
            .map(|v| {
                RoundSignature::new(
                    vote_type(v.kind),
                    match v.block {
                        None => NilOrVal::Nil,
                        Some(b) => NilOrVal::Val(BlockHash(b)),
                    },
                    Address(v.validator),
                    v.signature,
                )
            })
            .collect(),
    }
}

/// Converts a network message into Malachite's input.
pub(crate) fn to_input(
    msg: &ConsensusMessage,
) -> arc_malachitebft_core_consensus::Input<WeftContext> {
    use arc_malachitebft_core_consensus::Input;
    match msg {
        ConsensusMessage::Proposal(p) => Input::Proposal(signed_proposal_in(p)),
        ConsensusMessage::Vote(v) => Input::Vote(signed_vote_in(v)),
        ConsensusMessage::PolkaCertificate {
            height,
            round,
            block,
            signatures,
        } => Input::PolkaCertificate(polka_in(*height, *round, *block, signatures)),
        ConsensusMessage::RoundCertificate {
            height,
            round,
            kind,
            votes,
        } => Input::RoundCertificate(round_cert_in(*height, *round, *kind, votes)),
    }
}

/// A signed vote on the wire.
pub(crate) fn vote_msg(
    v: &arc_malachitebft_core_types::SignedVote<WeftContext>,
) -> ConsensusMessage {
    ConsensusMessage::Vote(signed_vote_out(v))
}

/// A signed proposal on the wire.
pub(crate) fn proposal_msg(
    p: &arc_malachitebft_core_types::SignedProposal<WeftContext>,
) -> ConsensusMessage {
    ConsensusMessage::Proposal(signed_proposal_out(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_finality::Vote;

    fn sample() -> Vec<ConsensusMessage> {
        let vote = SignedVote {
            vote: Vote {
                kind: VoteKind::Prevote,
                height: 3,
                round: 1,
                block: Some(Hash([4; 32])),
                validator: AccountId([5; 32]),
            },
            signature: SignatureBytes([6; 32]),
        };
        vec![
            ConsensusMessage::Vote(vote),
            ConsensusMessage::PolkaCertificate {
                height: 3,
                round: 1,
                block: Hash([4; 32]),
                signatures: vec![(AccountId([5; 32]), SignatureBytes([6; 32]))],
            },
            ConsensusMessage::RoundCertificate {
                height: 3,
                round: 2,
                kind: RoundCertificateKind::Skip,
                votes: vec![RoundVote {
                    kind: VoteKind::Precommit,
                    block: None,
                    validator: AccountId([5; 32]),
                    signature: SignatureBytes([6; 32]),
                }],
            },
        ]
    }

    #[test]
    fn messages_round_trip_and_reject_trailing_bytes() {
        for m in sample() {
            let bytes = m.to_bytes();
            assert_eq!(ConsensusMessage::from_bytes(&bytes), Ok(m.clone()));
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(ConsensusMessage::from_bytes(&longer).is_err());
            assert!(ConsensusMessage::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        }
        assert!(
            ConsensusMessage::from_bytes(&[9, 1, 2, 3]).is_err(),
            "unknown index"
        );
        assert!(ConsensusMessage::from_bytes(&[]).is_err());
    }

    #[test]
    fn certificates_convert_both_ways() {
        for m in sample().into_iter().skip(1) {
            let back = match to_input(&m) {
                arc_malachitebft_core_consensus::Input::PolkaCertificate(c) => polka_out(&c),
                arc_malachitebft_core_consensus::Input::RoundCertificate(c) => round_cert_out(&c),
                other => panic!("unexpected input {other:?}"),
            };
            assert_eq!(back, m);
        }
    }
}
