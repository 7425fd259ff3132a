//! The double-sign guard: what a validator has signed, consulted before every signature.
//!
//! The write-ahead log (see [`crate::wal`]) makes a validator that restarts after a crash
//! re-derive exactly the votes it had cast. It lives in the chain database, so it is gone when
//! the database is wiped or damaged (`purge-chain`, `--db-recover`, a lost disk), and a
//! validator that then rejoins a height it had voted at could sign a second, conflicting vote
//! or proposal — equivocation, slashed. The guard closes that gap: before the engine signs a
//! proposal or vote it asks a [`SignGuard`], which the node backs by a small file kept beside
//! the validator's keys and outside the database (`signing-state.json`, like CometBFT's
//! `priv_validator_state.json`), written and synced **before** the signature exists.
//!
//! The rule ([`SignedRecord::check`]) orders a signature by *(height, round, step)*, the
//! steps being proposal < prevote < precommit, the order Tendermint signs them in:
//!
//! | request at (h, r, s) for block b                  | answer                            |
//! |---------------------------------------------------|-----------------------------------|
//! | h above the recorded height                       | sign; the record moves to h        |
//! | h below the recorded height                       | refuse ([`Refusal::HeightBelow`])  |
//! | (r, s) already signed at h, same b                | sign again (BLS signatures are unique: the same bytes) |
//! | (r, s) already signed at h, another b             | refuse ([`Refusal::Conflict`])     |
//! | (r, s) not signed at h, below the highest signed  | refuse ([`Refusal::StepBelow`])    |
//! | (r, s) not signed at h, above the highest signed  | sign; recorded                    |
//!
//! A replay of the write-ahead log re-signs only what it had signed (same block), so it is
//! always allowed; a validator whose database was wiped refuses every height up to the
//! recorded one and signs again from the next. A refused signature aborts the engine call
//! that asked for it ([`crate::EngineError::SigningRefused`]): nothing of that call is
//! broadcast, and the height goes on without this validator's vote.

use serde::{Deserialize, Serialize};
use weft_primitives::Hash;

/// What is being signed, in the order Tendermint signs them within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignKind {
    /// A block proposal.
    Proposal,
    /// A prevote.
    Prevote,
    /// A precommit.
    Precommit,
}

/// A signature the engine is about to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignRequest {
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// Proposal, prevote or precommit.
    pub kind: SignKind,
    /// The block voted for or proposed; `None` for a nil vote.
    pub block: Option<Hash>,
}

/// One signature recorded at the record's height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedEntry {
    /// The round.
    pub round: u32,
    /// What was signed.
    pub kind: SignKind,
    /// The block; `None` for a nil vote.
    pub block: Option<Hash>,
}

/// Everything a validator signed at its highest height.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedRecord {
    /// The highest height signed at (0: nothing signed yet).
    pub height: u64,
    /// The signatures at `height`, in the order they were made.
    pub signed: Vec<SignedEntry>,
}

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The validator has signed at a later height.
    #[error(
        "refusing to sign at height {height}: this validator has already signed at height {signed}"
    )]
    HeightBelow {
        /// The height asked for.
        height: u64,
        /// The recorded height.
        signed: u64,
    },
    /// The same height, round and step was signed for another block.
    #[error("refusing to sign a {kind:?} at height {height} round {round} for {asked:?}: already signed for {signed:?}")]
    Conflict {
        /// The height.
        height: u64,
        /// The round.
        round: u32,
        /// The step.
        kind: SignKind,
        /// The block asked for.
        asked: Option<Hash>,
        /// The block signed before.
        signed: Option<Hash>,
    },
    /// A step below one already signed at this height.
    #[error("refusing to sign a {kind:?} at height {height} round {round}: already signed a {signed_kind:?} at round {signed_round}")]
    StepBelow {
        /// The height.
        height: u64,
        /// The round asked for.
        round: u32,
        /// The step asked for.
        kind: SignKind,
        /// The highest round signed at this height.
        signed_round: u32,
        /// The highest step signed in that round.
        signed_kind: SignKind,
    },
}

/// What [`SignedRecord::check`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// A signature not made before: record it (and persist the record) before signing.
    New,
    /// The same signature again (a replay or a rebroadcast): nothing to record.
    Again,
}

impl SignedRecord {
    /// Whether `request` may be signed (the table in the module docs).
    pub fn check(&self, request: &SignRequest) -> Result<Allowed, Refusal> {
        if request.height > self.height {
            return Ok(Allowed::New);
        }
        if request.height < self.height {
            return Err(Refusal::HeightBelow {
                height: request.height,
                signed: self.height,
            });
        }
        if let Some(e) = self
            .signed
            .iter()
            .find(|e| e.round == request.round && e.kind == request.kind)
        {
            return if e.block == request.block {
                Ok(Allowed::Again)
            } else {
                Err(Refusal::Conflict {
                    height: request.height,
                    round: request.round,
                    kind: request.kind,
                    asked: request.block,
                    signed: e.block,
                })
            };
        }
        match self.signed.iter().map(|e| (e.round, e.kind)).max() {
            Some((round, kind)) if (request.round, request.kind) < (round, kind) => {
                Err(Refusal::StepBelow {
                    height: request.height,
                    round: request.round,
                    kind: request.kind,
                    signed_round: round,
                    signed_kind: kind,
                })
            }
            _ => Ok(Allowed::New),
        }
    }

    /// [`SignedRecord::check`], then records a new signature: what a guard does, less
    /// making it durable.
    pub fn approve(&mut self, request: &SignRequest) -> Result<Allowed, Refusal> {
        let allowed = self.check(request)?;
        if allowed == Allowed::New {
            self.record(request);
        }
        Ok(allowed)
    }

    /// Records `request` (after [`SignedRecord::check`] answered [`Allowed::New`]).
    pub fn record(&mut self, request: &SignRequest) {
        if request.height > self.height {
            self.height = request.height;
            self.signed.clear();
        }
        self.signed.push(SignedEntry {
            round: request.round,
            kind: request.kind,
            block: request.block,
        });
    }
}

/// Why a [`SignGuard`] said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The rule refuses it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The record could not be made durable, so nothing may be signed.
    #[error("cannot persist the signing record: {0}")]
    Storage(String),
}

/// Consulted before every signature of a validator's engine
/// ([`crate::Engine::set_sign_guard`]).
pub trait SignGuard: Send {
    /// Ok when `request` may be signed; by then a new signature is recorded durably.
    fn approve(&mut self, request: &SignRequest) -> Result<(), GuardError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard kept in memory only: the rule without the file.
    #[derive(Debug, Default)]
    pub struct MemoryGuard {
        /// What has been signed.
        pub record: SignedRecord,
    }

    impl SignGuard for MemoryGuard {
        fn approve(&mut self, request: &SignRequest) -> Result<(), GuardError> {
            self.record.approve(request)?;
            Ok(())
        }
    }

    fn req(height: u64, round: u32, kind: SignKind, block: u8) -> SignRequest {
        SignRequest {
            height,
            round,
            kind,
            block: (block != 0).then_some(Hash([block; 32])),
        }
    }

    fn approve(g: &mut MemoryGuard, r: SignRequest) -> Result<(), GuardError> {
        g.approve(&r)
    }

    #[test]
    fn a_round_signs_in_step_order_and_a_replay_signs_the_same_again() {
        let mut g = MemoryGuard::default();
        approve(&mut g, req(5, 0, SignKind::Proposal, 1)).unwrap();
        approve(&mut g, req(5, 0, SignKind::Prevote, 1)).unwrap();
        approve(&mut g, req(5, 0, SignKind::Precommit, 1)).unwrap();
        // Replay after a crash: the same three again.
        approve(&mut g, req(5, 0, SignKind::Proposal, 1)).unwrap();
        approve(&mut g, req(5, 0, SignKind::Prevote, 1)).unwrap();
        assert_eq!(g.record.signed.len(), 3);
        // The next round, nil votes, then the next height clears the entries.
        approve(&mut g, req(5, 1, SignKind::Prevote, 0)).unwrap();
        approve(&mut g, req(6, 0, SignKind::Prevote, 2)).unwrap();
        assert_eq!(g.record.height, 6);
        assert_eq!(g.record.signed.len(), 1);
    }

    #[test]
    fn conflicting_lower_and_earlier_signatures_are_refused_and_not_recorded() {
        let mut g = MemoryGuard::default();
        approve(&mut g, req(7, 1, SignKind::Prevote, 1)).unwrap();
        let before = g.record.clone();
        assert!(matches!(
            approve(&mut g, req(7, 1, SignKind::Prevote, 2)),
            Err(GuardError::Refused(Refusal::Conflict { .. }))
        ));
        assert!(matches!(
            approve(&mut g, req(7, 1, SignKind::Prevote, 0)),
            Err(GuardError::Refused(Refusal::Conflict { .. }))
        ));
        assert!(matches!(
            approve(&mut g, req(7, 1, SignKind::Proposal, 1)),
            Err(GuardError::Refused(Refusal::StepBelow { .. }))
        ));
        assert!(matches!(
            approve(&mut g, req(7, 0, SignKind::Precommit, 1)),
            Err(GuardError::Refused(Refusal::StepBelow { .. }))
        ));
        assert!(matches!(
            approve(&mut g, req(6, 3, SignKind::Prevote, 1)),
            Err(GuardError::Refused(Refusal::HeightBelow {
                height: 6,
                signed: 7
            }))
        ));
        assert_eq!(g.record, before, "a refusal records nothing");
        // A later step of the same round, or a later round, is fine.
        approve(&mut g, req(7, 1, SignKind::Precommit, 1)).unwrap();
        approve(&mut g, req(7, 2, SignKind::Proposal, 3)).unwrap();
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let mut g = MemoryGuard::default();
        approve(&mut g, req(9, 0, SignKind::Precommit, 4)).unwrap();
        approve(&mut g, req(9, 1, SignKind::Prevote, 0)).unwrap();
        let json = serde_json::to_string(&g.record).unwrap();
        assert!(json.contains("\"precommit\""), "{json}");
        let back: SignedRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g.record);
    }
}
