//! Votes and proposals, and the bytes their signatures cover.
//!
//! A validator signs with its BN254 BLS key (the one registered with `staking.validate`):
//!
//! * a vote over `"weft/vote/v1" ‖ genesis ‖ SCALE(kind, height, round, block)`: the voter is
//!   not in the signed bytes (the signature is checked against the voter's own key), so
//!   every precommit for one block at one (height, round) is the same message,
//! * a proposal over `"weft/proposal/v1" ‖ genesis ‖ SCALE(Proposal)`.
//!
//! which is what lets a certificate aggregate them into one signature. Rounds are `u32`; a proposal's
//! `pol_round` (the round of the polka it re-proposes, Tendermint's `validRound`) is `None`
//! for a fresh value.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::{PublicKey, SecretKey, Signature, SignatureBytes};
use weft_primitives::{AccountId, Hash};

/// Prevote or precommit. Indices are stable.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum VoteKind {
    /// First voting step.
    #[codec(index = 0)]
    Prevote,
    /// Second voting step; a quorum of these decides.
    #[codec(index = 1)]
    Precommit,
}

/// A vote: for a block, or for nil (`block: None`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The block voted for, or nil.
    pub block: Option<Hash>,
    /// The voter.
    pub validator: AccountId,
}

/// A proposal of a block for (height, round).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The proposed block's hash.
    pub block: Hash,
    /// The round of the polka this re-proposes, or `None` for a new block.
    pub pol_round: Option<u32>,
    /// The proposer.
    pub proposer: AccountId,
}

const VOTE_DOMAIN: &[u8] = b"weft/vote/v1";
const PROPOSAL_DOMAIN: &[u8] = b"weft/proposal/v1";

fn domain_bytes(domain: &[u8], genesis: &Hash, body: &impl Encode) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 32 + 96);
    out.extend_from_slice(domain);
    out.extend_from_slice(genesis.as_bytes());
    body.encode_to(&mut out);
    out
}

impl Vote {
    /// The bytes a validator signs for this vote on the chain with `genesis`.
    pub fn signing_bytes(&self, genesis: &Hash) -> Vec<u8> {
        domain_bytes(
            VOTE_DOMAIN,
            genesis,
            &(self.kind, self.height, self.round, self.block),
        )
    }
}

impl Proposal {
    /// The bytes a proposer signs for this proposal on the chain with `genesis`.
    pub fn signing_bytes(&self, genesis: &Hash) -> Vec<u8> {
        domain_bytes(PROPOSAL_DOMAIN, genesis, self)
    }
}

/// A vote with its signature.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// The voter's signature over [`Vote::signing_bytes`].
    pub signature: SignatureBytes,
}

/// A proposal with its signature.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// The proposer's signature over [`Proposal::signing_bytes`].
    pub signature: SignatureBytes,
}

fn sign(key: &SecretKey, msg: &[u8]) -> Result<SignatureBytes, weft_bls::BlsError> {
    Ok(key.sign(msg)?.to_bytes())
}

fn verify(key: &PublicKey, msg: &[u8], sig: &SignatureBytes) -> bool {
    match Signature::from_bytes(sig) {
        Ok(s) => key.verify(msg, &s),
        Err(_) => false,
    }
}

impl SignedVote {
    /// Signs `vote` with `key`.
    pub fn sign(vote: Vote, genesis: &Hash, key: &SecretKey) -> Result<Self, weft_bls::BlsError> {
        let signature = sign(key, &vote.signing_bytes(genesis))?;
        Ok(SignedVote { vote, signature })
    }

    /// Whether the signature is the voter's, given its key.
    pub fn verify(&self, genesis: &Hash, key: &PublicKey) -> bool {
        verify(key, &self.vote.signing_bytes(genesis), &self.signature)
    }
}

impl SignedProposal {
    /// Signs `proposal` with `key`.
    pub fn sign(
        proposal: Proposal,
        genesis: &Hash,
        key: &SecretKey,
    ) -> Result<Self, weft_bls::BlsError> {
        let signature = sign(key, &proposal.signing_bytes(genesis))?;
        Ok(SignedProposal {
            proposal,
            signature,
        })
    }

    /// Whether the signature is the proposer's, given its key.
    pub fn verify(&self, genesis: &Hash, key: &PublicKey) -> bool {
        verify(key, &self.proposal.signing_bytes(genesis), &self.signature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn votes_bind_chain_and_content() {
        let sk = SecretKey::from_seed(b"v").unwrap();
        let pk = sk.public_key();
        let g = Hash([1; 32]);
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 5,
            round: 0,
            block: Some(Hash([9; 32])),
            validator: AccountId([3; 32]),
        };
        let signed = SignedVote::sign(vote.clone(), &g, &sk).unwrap();
        assert!(signed.verify(&g, &pk));
        assert!(!signed.verify(&Hash([2; 32]), &pk), "another chain");
        let mut nil = signed.clone();
        nil.vote.block = None;
        assert!(!nil.verify(&g, &pk), "a changed vote");
        let mut prevote = signed;
        prevote.vote.kind = VoteKind::Prevote;
        assert!(!prevote.verify(&g, &pk), "kind is signed");
    }

    #[test]
    fn proposals_and_votes_have_separate_domains() {
        let g = Hash([1; 32]);
        let v = Vote {
            kind: VoteKind::Prevote,
            height: 1,
            round: 0,
            block: None,
            validator: AccountId([0; 32]),
        };
        let p = Proposal {
            height: 1,
            round: 0,
            block: Hash([0; 32]),
            pol_round: None,
            proposer: AccountId([0; 32]),
        };
        assert_ne!(v.signing_bytes(&g)[..12], p.signing_bytes(&g)[..12]);
    }
}
