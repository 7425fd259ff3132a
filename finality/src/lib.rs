//! # weft-finality
//!
//! The data a multi-validator Weft chain agrees on, shared by the node (which runs Tendermint
//! through Malachite's core in `weft-consensus`), the runtime (which verifies equivocation
//! evidence and the randomness beacon) and anyone checking a finality proof over RPC. It has no
//! networking and no consensus logic: only types, their SCALE encodings (explicit, stable
//! indices) and their verification.
//!
//! * [`set`]: the validator set of a height, weighted by bonded stake scaled to `u64` voting
//!   power, with the `> 2/3` quorum and stake-weighted proposer selection.
//! * [`vote`]: prevotes, precommits and proposals, and the domain-separated bytes each is
//!   signed over with the validator's BN254 BLS key (`weft-bls`). The bytes bind the chain's
//!   genesis hash, so a vote on one chain is worthless on another.
//! * [`certificate`]: the commit certificate stored with a block: one aggregate BLS signature
//!   of the precommits plus a signer bitmap over the set's order. Verifying costs one
//!   hash-to-curve and one two-pairing check, whatever the number of signers.
//! * [`evidence`]: two conflicting signed votes (or proposals) of one validator at one height
//!   and round: self-contained proof that it equivocated.
//! * [`beacon`]: the proposer's unique BLS signature over (height, previous randomness), whose
//!   hash chain is the chain's randomness.

#![forbid(unsafe_code)]

pub mod beacon;
pub mod certificate;
pub mod evidence;
pub mod set;
pub mod vote;

pub use certificate::{Certificate, CertificateError};
pub use evidence::{Equivocation, EvidenceError};
pub use set::{SetError, Validator, ValidatorSet};
pub use vote::{Proposal, SignedProposal, SignedVote, Vote, VoteKind};

/// Engine id of the Tendermint engine in digests and justifications.
pub const BFT_ENGINE: weft_primitives::header::EngineId = *b"tmbf";
