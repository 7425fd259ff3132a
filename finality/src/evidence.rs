//! Equivocation evidence.
//!
//! A validator equivocates when it signs two different votes of one kind at one (height,
//! round), or two different proposals for one (height, round). Either pair is
//! self-contained proof: anyone holding the validator's registered BLS key can check it, with
//! no other context. The node collects such pairs from the votes it sees and puts them in a
//! block; the runtime verifies them here and reports the offence to the staking pallet, which
//! slashes like every other offence (deferred, max-not-sum per span).

use crate::vote::{SignedProposal, SignedVote};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::{PublicKey, PublicKeyBytes};
use weft_primitives::{AccountId, Hash};

/// Two conflicting signed messages of one validator. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Equivocation {
    /// Two votes of one kind at one (height, round) for different blocks (or a block and nil).
    #[codec(index = 0)]
    Votes {
        /// One vote.
        first: SignedVote,
        /// The other.
        second: SignedVote,
    },
    /// Two proposals for one (height, round) of different blocks or polka rounds.
    #[codec(index = 1)]
    Proposals {
        /// One proposal.
        first: SignedProposal,
        /// The other.
        second: SignedProposal,
    },
}

/// Why evidence is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The two messages are not by one validator at one height, round and kind.
    #[error("the two messages do not conflict: different signer, height, round or kind")]
    NotConflicting,
    /// The two messages are the same.
    #[error("the two messages are identical")]
    Identical,
    /// The offender's key does not parse.
    #[error("the offender's key is invalid")]
    BadKey,
    /// A signature does not verify under the offender's key.
    #[error("a signature does not verify")]
    BadSignature,
}

impl Equivocation {
    /// The validator that equivocated.
    pub fn offender(&self) -> AccountId {
        match self {
            Equivocation::Votes { first, .. } => first.vote.validator,
            Equivocation::Proposals { first, .. } => first.proposal.proposer,
        }
    }

    /// The height it equivocated at.
    pub fn height(&self) -> u64 {
        match self {
            Equivocation::Votes { first, .. } => first.vote.height,
            Equivocation::Proposals { first, .. } => first.proposal.height,
        }
    }

    /// An identity for deduplication: offender, height, round, kind.
    pub fn key(&self) -> (AccountId, u64, u32, u8) {
        match self {
            Equivocation::Votes { first, .. } => (
                first.vote.validator,
                first.vote.height,
                first.vote.round,
                first.vote.kind as u8,
            ),
            Equivocation::Proposals { first, .. } => (
                first.proposal.proposer,
                first.proposal.height,
                first.proposal.round,
                2,
            ),
        }
    }

    /// Checks the evidence against the offender's registered key on the chain with `genesis`.
    pub fn verify(&self, genesis: &Hash, key: &PublicKeyBytes) -> Result<(), EvidenceError> {
        let pk = PublicKey::from_bytes(key).map_err(|_| EvidenceError::BadKey)?;
        let (ok_first, ok_second) = match self {
            Equivocation::Votes { first, second } => {
                let (a, b) = (&first.vote, &second.vote);
                if a.validator != b.validator
                    || a.height != b.height
                    || a.round != b.round
                    || a.kind != b.kind
                {
                    return Err(EvidenceError::NotConflicting);
                }
                if a.block == b.block {
                    return Err(EvidenceError::Identical);
                }
                (first.verify(genesis, &pk), second.verify(genesis, &pk))
            }
            Equivocation::Proposals { first, second } => {
                let (a, b) = (&first.proposal, &second.proposal);
                if a.proposer != b.proposer || a.height != b.height || a.round != b.round {
                    return Err(EvidenceError::NotConflicting);
                }
                if a == b {
                    return Err(EvidenceError::Identical);
                }
                (first.verify(genesis, &pk), second.verify(genesis, &pk))
            }
        };
        if ok_first && ok_second {
            Ok(())
        } else {
            Err(EvidenceError::BadSignature)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vote::{Proposal, Vote, VoteKind};
    use weft_bls::SecretKey;

    fn vote(block: Option<Hash>, who: AccountId) -> Vote {
        Vote {
            kind: VoteKind::Prevote,
            height: 3,
            round: 0,
            block,
            validator: who,
        }
    }

    #[test]
    fn double_votes_prove_equivocation() {
        let sk = SecretKey::from_seed(b"x").unwrap();
        let pk = sk.public_key().to_bytes();
        let g = Hash([1; 32]);
        let who = AccountId([4; 32]);
        let a = SignedVote::sign(vote(Some(Hash([1; 32])), who), &g, &sk).unwrap();
        let b = SignedVote::sign(vote(Some(Hash([2; 32])), who), &g, &sk).unwrap();
        let ev = Equivocation::Votes {
            first: a.clone(),
            second: b.clone(),
        };
        assert_eq!(ev.verify(&g, &pk), Ok(()));
        assert_eq!(ev.offender(), who);
        let same = Equivocation::Votes {
            first: a.clone(),
            second: a.clone(),
        };
        assert_eq!(same.verify(&g, &pk), Err(EvidenceError::Identical));
        let other = SecretKey::from_seed(b"y").unwrap().public_key().to_bytes();
        assert_eq!(ev.verify(&g, &other), Err(EvidenceError::BadSignature));
        let mut later = b;
        later.vote.round = 1;
        let apart = Equivocation::Votes {
            first: a,
            second: later,
        };
        assert_eq!(apart.verify(&g, &pk), Err(EvidenceError::NotConflicting));
        let decoded = Equivocation::decode(&mut &ev.encode()[..]).unwrap();
        assert_eq!(decoded, ev);
    }

    #[test]
    fn double_proposals_prove_equivocation() {
        let sk = SecretKey::from_seed(b"p").unwrap();
        let g = Hash([1; 32]);
        let p = |b: u8| Proposal {
            height: 9,
            round: 2,
            block: Hash([b; 32]),
            pol_round: None,
            proposer: AccountId([7; 32]),
        };
        let ev = Equivocation::Proposals {
            first: SignedProposal::sign(p(1), &g, &sk).unwrap(),
            second: SignedProposal::sign(p(2), &g, &sk).unwrap(),
        };
        assert_eq!(ev.verify(&g, &sk.public_key().to_bytes()), Ok(()));
        assert_eq!(ev.height(), 9);
    }
}
