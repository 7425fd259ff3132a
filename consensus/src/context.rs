//! Weft's instantiation of Malachite's [`Context`](arc_malachitebft_core_types::Context).
//!
//! Malachite's core is generic over the types consensus runs on; [`WeftContext`] fixes them:
//!
//! * **Height**: [`Height`], a `u64` (the block number being decided).
//! * **Address**: [`Address`], a validator's `weft_primitives::AccountId` (ordered by bytes,
//!   which is the validator set's order and the certificate bitmap's order).
//! * **Value** and **value id**: [`BlockHash`], the hash of the proposed block. Consensus only
//!   ever handles hashes; the node gossips and validates block bodies itself and reports the
//!   verdict (`ValuePayload::ProposalAndParts`, see `engine.rs`).
//! * **Votes and proposals**: [`WeftVote`] / [`WeftProposal`], which map one-to-one onto
//!   `weft_finality::Vote` / `Proposal` and are signed over *exactly* those types'
//!   `signing_bytes(genesis)`, so a quorum of precommit signatures aggregates into a
//!   `weft_finality::Certificate` and two conflicting signed votes are a
//!   `weft_finality::Equivocation` the runtime can check.
//! * **Vote extensions**: none (`()`; the policy is always `Disabled`).
//! * **Signing scheme**: [`Bn254Bls`], BN254 BLS from `weft-bls` (32-byte signatures, 64-byte
//!   keys).
//! * **Validator set**: [`WeftValidatorSet`], a wrapper of `weft_finality::ValidatorSet`; voting
//!   power is `Validator::power`, and the proposer of `(height, round)` is
//!   `weft_finality::ValidatorSet::proposer(height, round)` (stake-weighted and stateless).
//!
//! Malachite rounds are `Round::{Nil, Some(u32)}` (Nil = -1); Weft's wire types use `u32` and
//! `Option<u32>`. Votes and proposals always carry a defined round; a `pol_round` is `Nil` for
//! a fresh block.

use crate::timeouts::Timeouts;
use arc_malachitebft_core_types::{
    self as mt, NilOrVal, Round, SignedExtension, SignedMessage, VoteType, VotingPower,
};
use std::fmt;
use std::sync::Arc;
use weft_bls::{BlsError, PublicKeyBytes, SecretKey, SignatureBytes};
use weft_finality::{Proposal, SignedProposal, SignedVote, ValidatorSet, Vote, VoteKind};
use weft_primitives::{AccountId, Hash};

/// Malachite's context for Weft (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeftContext;

/// A block height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mt::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

fn short_hex(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "0x")?;
    for b in &bytes[..4] {
        write!(f, "{b:02x}")?;
    }
    write!(f, "…")
}

/// A validator's account.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub AccountId);

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        short_hex(&self.0 .0, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        short_hex(&self.0 .0, f)
    }
}

impl mt::Address for Address {}

/// A block hash: both the value consensus decides on and its id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(pub Hash);

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        short_hex(&self.0 .0, f)
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        short_hex(&self.0 .0, f)
    }
}

impl mt::Value for BlockHash {
    type Id = BlockHash;

    fn id(&self) -> BlockHash {
        *self
    }
}

/// `Round::Some(r)` as `r`, `Nil` as 0 (only used where the round is always defined).
pub(crate) fn round_u32(round: Round) -> u32 {
    round.as_u32().unwrap_or(0)
}

/// `Round` as `Option<u32>` (`Nil` is `None`).
pub(crate) fn round_opt(round: Round) -> Option<u32> {
    round.as_u32()
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeftVote {
    /// Prevote or precommit.
    pub kind: VoteType,
    /// The height.
    pub height: Height,
    /// The round (always defined).
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockHash>,
    /// The voter.
    pub validator: Address,
}

impl WeftVote {
    /// The `weft_finality` vote this is (whose signing bytes the signature covers).
    pub fn to_finality(&self) -> Vote {
        Vote {
            kind: match self.kind {
                VoteType::Prevote => VoteKind::Prevote,
                VoteType::Precommit => VoteKind::Precommit,
            },
            height: self.height.0,
            round: round_u32(self.round),
            block: match self.value {
                NilOrVal::Nil => None,
                NilOrVal::Val(b) => Some(b.0),
            },
            validator: self.validator.0,
        }
    }

    /// The Malachite vote of a `weft_finality` vote.
    pub fn from_finality(v: &Vote) -> Self {
        WeftVote {
            kind: match v.kind {
                VoteKind::Prevote => VoteType::Prevote,
                VoteKind::Precommit => VoteType::Precommit,
            },
            height: Height(v.height),
            round: Round::new(v.round),
            value: match v.block {
                None => NilOrVal::Nil,
                Some(b) => NilOrVal::Val(BlockHash(b)),
            },
            validator: Address(v.validator),
        }
    }
}

impl mt::Vote<WeftContext> for WeftVote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.kind
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<WeftContext>> {
        None
    }

    fn take_extension(&mut self) -> Option<SignedExtension<WeftContext>> {
        None
    }

    fn extend(self, _extension: SignedExtension<WeftContext>) -> Self {
        // Vote extensions are disabled: there is nowhere to put one.
        self
    }
}

/// A proposal of a block for `(height, round)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeftProposal {
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The proposed block.
    pub value: BlockHash,
    /// The round of the polka being re-proposed, or `Nil` for a fresh block.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl WeftProposal {
    /// The `weft_finality` proposal this is.
    pub fn to_finality(&self) -> Proposal {
        Proposal {
            height: self.height.0,
            round: round_u32(self.round),
            block: self.value.0,
            pol_round: round_opt(self.pol_round),
            proposer: self.proposer.0,
        }
    }

    /// The Malachite proposal of a `weft_finality` proposal.
    pub fn from_finality(p: &Proposal) -> Self {
        WeftProposal {
            height: Height(p.height),
            round: Round::new(p.round),
            value: BlockHash(p.block),
            pol_round: Round::from(p.pol_round),
            proposer: Address(p.proposer),
        }
    }
}

impl mt::Proposal<WeftContext> for WeftProposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockHash {
        &self.value
    }

    fn take_value(self) -> BlockHash {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Proposal parts are never used: the node streams block bodies itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoParts;

impl mt::ProposalPart<WeftContext> for NoParts {
    fn is_first(&self) -> bool {
        true
    }

    fn is_last(&self) -> bool {
        true
    }
}

/// BN254 BLS signatures from `weft-bls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bn254Bls;

impl mt::SigningScheme for Bn254Bls {
    type DecodingError = BlsError;
    type Signature = SignatureBytes;
    type PublicKey = PublicKeyBytes;
    type PrivateKey = SecretKey;

    fn decode_signature(bytes: &[u8]) -> Result<SignatureBytes, BlsError> {
        let arr: [u8; weft_bls::SIGNATURE_LEN] =
            bytes.try_into().map_err(|_| BlsError::InvalidPoint)?;
        Ok(SignatureBytes(arr))
    }

    fn encode_signature(signature: &SignatureBytes) -> Vec<u8> {
        signature.0.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<PublicKeyBytes, BlsError> {
        let arr: [u8; weft_bls::PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| BlsError::InvalidPoint)?;
        Ok(PublicKeyBytes(arr))
    }

    fn encode_public_key(public_key: &PublicKeyBytes) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

/// A member of a validator set, as Malachite sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeftValidator {
    /// Its account.
    pub address: Address,
    /// Its BLS key.
    pub public_key: PublicKeyBytes,
    /// Its voting power.
    pub power: u64,
}

impl mt::Validator<WeftContext> for WeftValidator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &PublicKeyBytes {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// A height's validator set: `weft_finality::ValidatorSet` plus Malachite's view of it, in
/// the same (account) order. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeftValidatorSet {
    set: Arc<ValidatorSet>,
    validators: Arc<Vec<WeftValidator>>,
}

impl WeftValidatorSet {
    /// Wraps a set.
    pub fn new(set: ValidatorSet) -> Self {
        let validators = set
            .validators()
            .iter()
            .map(|v| WeftValidator {
                address: Address(v.account),
                public_key: v.bls_key,
                power: v.power,
            })
            .collect();
        WeftValidatorSet {
            set: Arc::new(set),
            validators: Arc::new(validators),
        }
    }

    /// The wrapped set.
    pub fn inner(&self) -> &ValidatorSet {
        &self.set
    }

    /// The proposer of `(height, round)`: `weft_finality::ValidatorSet::proposer`.
    pub fn proposer(&self, height: u64, round: u32) -> &WeftValidator {
        let account = self.set.proposer(height, round).account;
        let index = self.set.index_of(&account).unwrap_or(0);
        &self.validators[index]
    }
}

impl mt::ValidatorSet<WeftContext> for WeftValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.set.total_power()
    }

    fn get_by_address(&self, address: &Address) -> Option<&WeftValidator> {
        self.set
            .index_of(&address.0)
            .and_then(|i| self.validators.get(i))
    }

    fn get_by_index(&self, index: usize) -> Option<&WeftValidator> {
        self.validators.get(index)
    }
}

impl mt::Context for WeftContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = WeftProposal;
    type Validator = WeftValidator;
    type ValidatorSet = WeftValidatorSet;
    type Timeouts = Timeouts;
    type Value = BlockHash;
    type Vote = WeftVote;
    type Extension = ();
    type SigningScheme = Bn254Bls;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a WeftValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a WeftValidator {
        validator_set.proposer(height.0, round_u32(round))
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockHash,
        pol_round: Round,
        address: Address,
    ) -> WeftProposal {
        WeftProposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockHash>,
        address: Address,
    ) -> WeftVote {
        WeftVote {
            kind: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockHash>,
        address: Address,
    ) -> WeftVote {
        WeftVote {
            kind: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
        }
    }
}

/// A Malachite signed vote as a `weft_finality` one.
pub(crate) fn signed_vote_out(v: &mt::SignedVote<WeftContext>) -> SignedVote {
    SignedVote {
        vote: v.message.to_finality(),
        signature: v.signature,
    }
}

/// A `weft_finality` signed vote as a Malachite one.
pub(crate) fn signed_vote_in(v: &SignedVote) -> mt::SignedVote<WeftContext> {
    SignedMessage::new(WeftVote::from_finality(&v.vote), v.signature)
}

/// A Malachite signed proposal as a `weft_finality` one.
pub(crate) fn signed_proposal_out(p: &mt::SignedProposal<WeftContext>) -> SignedProposal {
    SignedProposal {
        proposal: p.message.to_finality(),
        signature: p.signature,
    }
}

/// A `weft_finality` signed proposal as a Malachite one.
pub(crate) fn signed_proposal_in(p: &SignedProposal) -> mt::SignedProposal<WeftContext> {
    SignedMessage::new(WeftProposal::from_finality(&p.proposal), p.signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mt::Context as _;

    #[test]
    fn votes_and_proposals_map_one_to_one() {
        let v = Vote {
            kind: VoteKind::Precommit,
            height: 4,
            round: 2,
            block: Some(Hash([3; 32])),
            validator: AccountId([1; 32]),
        };
        assert_eq!(WeftVote::from_finality(&v).to_finality(), v);
        let nil = Vote { block: None, ..v };
        assert_eq!(WeftVote::from_finality(&nil).to_finality(), nil);
        let p = Proposal {
            height: 4,
            round: 3,
            block: Hash([3; 32]),
            pol_round: Some(1),
            proposer: AccountId([1; 32]),
        };
        assert_eq!(WeftProposal::from_finality(&p).to_finality(), p);
        let fresh = Proposal {
            pol_round: None,
            ..p
        };
        assert_eq!(WeftProposal::from_finality(&fresh).to_finality(), fresh);
    }

    #[test]
    fn proposer_is_the_finality_sets() {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| {
                let sk = SecretKey::from_seed(&[i; 8]).expect("key");
                (
                    AccountId([i; 32]),
                    sk.public_key().to_bytes(),
                    u128::from(i) * 100,
                )
            })
            .collect();
        let set = ValidatorSet::from_stakes(keys).expect("set");
        let wrapped = WeftValidatorSet::new(set.clone());
        for h in 0..50 {
            for r in 0..3 {
                let ours = WeftContext.select_proposer(&wrapped, Height(h), Round::new(r));
                assert_eq!(ours.address.0, set.proposer(h, r).account);
            }
        }
    }
}
