//! The Tendermint engine's side of the [`ConsensusEngine`] seam: what block import checks.
//!
//! A BFT block's justification is a [`Certificate`]: more than two thirds of the power of the
//! validator set in the parent state precommitted to this block's hash at one round (one
//! BN254 aggregate signature and a signer bitmap, see `weft_finality::certificate`). The
//! header must also carry the proposer's [`PreDigest`] (round and randomness beacon); the
//! runtime verifies the beacon signature itself when it executes the block. Nothing here
//! builds or finalizes blocks alone: that takes a network ([`super::service`]).

use crate::consensus::{ConsensusEngine, ConsensusError, Justification};
use parity_scale_codec::{Decode, Encode};
use weft_finality::beacon::PreDigest;
use weft_finality::{Certificate, ValidatorSet, BFT_ENGINE};
use weft_primitives::storage::StateReader;
use weft_primitives::{AccountId, DigestItem, Hash, Header};

/// The validator set for the block after `state`: the staking pallet's active set, weighted by
/// stake.
pub fn validator_set(state: &dyn StateReader) -> Result<ValidatorSet, ConsensusError> {
    let active = weft_runtime::staking::active_set(state)
        .map_err(|e| ConsensusError::State(e.to_string()))?;
    ValidatorSet::from_stakes(active.into_iter().map(|v| (v.account, v.bls_key, v.stake)))
        .map_err(|e| ConsensusError::State(e.to_string()))
}

/// A certificate as a justification.
pub fn justification(certificate: &Certificate) -> Justification {
    Justification {
        engine: BFT_ENGINE,
        data: certificate.encode(),
    }
}

/// Verifies Tendermint commit certificates; authors nothing alone.
pub struct TendermintVerifier {
    author: Option<AccountId>,
}

impl TendermintVerifier {
    /// A verifier; `author` is this node's validator account, if any.
    pub fn new(author: Option<AccountId>) -> Self {
        TendermintVerifier { author }
    }
}

impl ConsensusEngine for TendermintVerifier {
    fn engine_id(&self) -> weft_primitives::header::EngineId {
        BFT_ENGINE
    }

    fn author(&self) -> Option<AccountId> {
        self.author
    }

    fn pre_digest(&self, _number: u64) -> Vec<DigestItem> {
        // The proposer's digest needs the round and the parent's randomness: the service
        // builds it (see `super::service`).
        Vec::new()
    }

    fn justify(&self, _header: &Header) -> Option<Justification> {
        None
    }

    fn verify(
        &self,
        genesis: &Hash,
        header: &Header,
        justification: &Justification,
        parent_state: &dyn StateReader,
    ) -> Result<(), ConsensusError> {
        if justification.engine != BFT_ENGINE {
            return Err(ConsensusError::WrongEngine(
                justification.engine,
                BFT_ENGINE,
            ));
        }
        if PreDigest::of(header).is_none() {
            return Err(ConsensusError::MissingPreDigest);
        }
        let cert = Certificate::decode(&mut &justification.data[..])
            .map_err(|_| ConsensusError::Malformed)?;
        let set = validator_set(parent_state)?;
        if set.get(&header.author).is_none() {
            return Err(ConsensusError::NotAValidator(header.author));
        }
        cert.verify(genesis, &set, header.number, &header.hash())?;
        Ok(())
    }
}
