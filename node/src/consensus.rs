//! The consensus seam.
//!
//! Block import does not know how blocks are agreed on. It asks a [`ConsensusEngine`] for the
//! digest items to put into a header it builds, for the finality proof ([`Justification`]) of a
//! block it built, and to verify the proof of a block it imports. The engine of this crate is
//! [`DevEngine`]: one validator authors a block every `--block-time` and finalizes it at once
//! by signing its hash (instant finality). The BFT engine of a multi-validator network plugs in
//! behind the same trait: its `justify` returns the commit certificate (an aggregate signature
//! of more than two thirds of the stake) and `verify` checks one.

use parity_scale_codec::{Decode, Encode};
use weft_primitives::header::EngineId;
use weft_primitives::storage::StateReader;
use weft_primitives::{crypto, AccountId, DigestItem, Hash, Header, Keypair, Signature};

/// A finality proof, stored with its block and served with `chain_getBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Justification {
    /// The engine that produced it.
    pub engine: EngineId,
    /// Engine-defined proof bytes.
    pub data: Vec<u8>,
}

/// Why a block's consensus data is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsensusError {
    /// The proof is from another engine.
    #[error("justification from engine {0:?}, expected {1:?}")]
    WrongEngine(EngineId, EngineId),
    /// The proof does not decode.
    #[error("malformed justification")]
    Malformed,
    /// The signer is not in the validator set.
    #[error("{0} is not a validator")]
    NotAValidator(AccountId),
    /// The signature does not verify.
    #[error("bad finality signature")]
    BadSignature,
    /// The commit certificate does not verify.
    #[error("commit certificate: {0}")]
    Certificate(#[from] weft_finality::CertificateError),
    /// A BFT header without the proposer's round and beacon.
    #[error("the header has no BFT pre-digest")]
    MissingPreDigest,
    /// The validator set could not be read from state.
    #[error("validator set: {0}")]
    State(String),
    /// The header's author is not the signer.
    #[error("header author {author} did not sign it ({signer} did)")]
    AuthorMismatch {
        /// In the header.
        author: AccountId,
        /// Who signed.
        signer: AccountId,
    },
}

/// What block import needs from a consensus engine.
pub trait ConsensusEngine: Send + Sync {
    /// The engine's id in digests and justifications.
    fn engine_id(&self) -> EngineId;
    /// The account that authors blocks on this node, if it is a validator.
    fn author(&self) -> Option<AccountId>;
    /// Digest items for a header this node builds.
    fn pre_digest(&self, number: u64) -> Vec<DigestItem>;
    /// The finality proof for a header this node built, if it can finalize alone.
    fn justify(&self, header: &Header) -> Option<Justification>;
    /// Checks the finality proof of an imported header against the validator set in the state
    /// of its parent, on the chain with `genesis`.
    fn verify(
        &self,
        genesis: &Hash,
        header: &Header,
        justification: &Justification,
        parent_state: &dyn StateReader,
    ) -> Result<(), ConsensusError>;
}

/// Engine id of [`DevEngine`].
pub const DEV_ENGINE: EngineId = *b"dev0";

/// One validator, instant finality: the author signs each block hash.
pub struct DevEngine {
    key: Option<Keypair>,
}

#[derive(Encode, Decode)]
struct DevProof {
    signer: AccountId,
    signature: Signature,
}

impl DevEngine {
    /// An engine that authors with `key`, or only verifies when `None`.
    pub fn new(key: Option<Keypair>) -> Self {
        DevEngine { key }
    }
}

impl ConsensusEngine for DevEngine {
    fn engine_id(&self) -> EngineId {
        DEV_ENGINE
    }

    fn author(&self) -> Option<AccountId> {
        self.key.as_ref().map(|k| k.account_id())
    }

    fn pre_digest(&self, number: u64) -> Vec<DigestItem> {
        vec![DigestItem::PreRuntime {
            engine: DEV_ENGINE,
            data: number.encode(),
        }]
    }

    fn justify(&self, header: &Header) -> Option<Justification> {
        let key = self.key.as_ref()?;
        let proof = DevProof {
            signer: key.account_id(),
            signature: key.sign(header.hash().as_bytes()),
        };
        Some(Justification {
            engine: DEV_ENGINE,
            data: proof.encode(),
        })
    }

    fn verify(
        &self,
        _genesis: &Hash,
        header: &Header,
        justification: &Justification,
        parent_state: &dyn StateReader,
    ) -> Result<(), ConsensusError> {
        let validators = weft_runtime::genesis::VALIDATORS
            .get(parent_state)
            .map_err(|e| ConsensusError::State(e.to_string()))?
            .unwrap_or_default();
        if justification.engine != DEV_ENGINE {
            return Err(ConsensusError::WrongEngine(
                justification.engine,
                DEV_ENGINE,
            ));
        }
        let proof = DevProof::decode(&mut &justification.data[..])
            .map_err(|_| ConsensusError::Malformed)?;
        if !validators.iter().any(|v| v.account == proof.signer) {
            return Err(ConsensusError::NotAValidator(proof.signer));
        }
        if header.author != proof.signer {
            return Err(ConsensusError::AuthorMismatch {
                author: header.author,
                signer: proof.signer,
            });
        }
        if !crypto::verify(&proof.signature, header.hash().as_bytes(), &proof.signer) {
            return Err(ConsensusError::BadSignature);
        }
        Ok(())
    }
}
