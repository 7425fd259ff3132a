//! Carrying out Malachite's effects, synchronously.
//!
//! Malachite's consensus is a coroutine: it yields an `Effect` and waits to be resumed. The
//! engine resumes every effect immediately, so one engine call is one deterministic,
//! IO-free computation whose side effects are collected as [`Output`]s in yield order:
//!
//! | effect                              | done here                                          |
//! |-------------------------------------|----------------------------------------------------|
//! | `SignVote`, `SignProposal`          | ask the [`crate::guard`], then BLS-sign the `weft_finality` form's signing bytes |
//! | `VerifySignature`                   | BLS-verify with the set's parsed key               |
//! | `Verify{Commit,Polka,Round}Cert…`   | members, no duplicates, signatures, threshold      |
//! | `WalAppend`                         | [`Output::WalAppend`] (not for replayed entries)   |
//! | `Publish…`, `Republish…`            | [`Output::Broadcast`]                              |
//! | `ScheduleTimeout`, `Cancel…`        | the timer outputs                                  |
//! | `StartRound`                        | [`Output::NewRound`]                               |
//! | `GetValue`                          | [`Output::BuildBlock`]                             |
//! | `RestreamProposal`                  | [`Output::RestreamBlock`]                          |
//! | `Decide`                            | logged only                                        |
//! | `Finalize`                          | aggregate, verify, [`Output::Decided`]             |
//! | `ExtendVote`, `VerifyVoteExtension` | never asked (extensions disabled)                  |
//!
//! **Verification cache.** A signature that verified once at this height, for this exact
//! message and signer, is not checked again (`(blake3(message), signer, signature)`). The
//! commit certificate Malachite builds at a decision, and the polka and round certificates
//! peers send, are mostly made of votes the engine already checked one by one, so they
//! usually cost no pairing at all. The cache is cleared at each height.
//!
//! **Evidence.** Malachite's vote keeper and proposal keeper record conflicting pairs (at most
//! three per validator and height). After every call the engine reports pairs it has not
//! reported yet ([`Output::Evidence`], one per offender, height, round and kind); at the
//! decision the full list goes into [`Output::Decided`].

use crate::context::{
    round_u32, signed_proposal_out, signed_vote_out, WeftContext, WeftValidatorSet,
};
use crate::guard::{SignGuard, SignKind, SignRequest};
use crate::timeouts::{TimeoutId, Timeouts};
use crate::wal::WalEntry;
use crate::wire::{polka_out, proposal_msg, round_cert_out, vote_msg};
use crate::{EngineError, Output};
use arc_malachitebft_core_consensus::{
    ConsensusMsg, Effect, LivenessMsg, MisbehaviorEvidence, Resumable, Resume, SignedConsensusMsg,
    VoteExtensionError,
};
use arc_malachitebft_core_types::{self as mt, CertificateError, CommitCertificate, SignedMessage};
use std::collections::BTreeSet;

mod verify;
use tracing::{debug, error, info, warn};
use weft_bls::{SecretKey, SignatureBytes};
use weft_finality::{Certificate, Equivocation, VoteKind};
use weft_primitives::{AccountId, Hash};

/// What the effect handler needs, and what it collects during one engine call.
pub(crate) struct Effects {
    pub genesis: Hash,
    pub key: Option<SecretKey>,
    pub timeouts: Timeouts,
    /// The current height and its set.
    pub height: u64,
    pub set: Option<WeftValidatorSet>,
    /// Outputs of the call in progress.
    pub out: Vec<Output>,
    /// A signature failed to verify during this call.
    pub bad_signature: bool,
    /// A certificate was refused during this call (other than for a bad signature).
    pub cert_error: Option<String>,
    /// An effect could not be carried out (signing, the decision's certificate).
    pub fatal: Option<EngineError>,
    /// During replay: the bytes of the entries being replayed.
    pub replaying: Option<BTreeSet<Vec<u8>>>,
    /// `(offender, height, round, kind)` of evidence already reported.
    pub reported: BTreeSet<(AccountId, u64, u32, u8)>,
    /// The last height an `Output::Decided` was emitted for.
    pub decided: Option<u64>,
    verified: BTreeSet<([u8; 32], AccountId, SignatureBytes)>,
    /// Consulted before every signature (see [`crate::guard`]); none: sign freely.
    pub guard: Option<Box<dyn SignGuard>>,
    /// Test-only: sign a conflicting vote next to each of ours.
    #[cfg(feature = "equivocate")]
    pub equivocate: bool,
    #[cfg(feature = "equivocate")]
    conflicts: Vec<Output>,
}

type Ctx = WeftContext;

impl Effects {
    pub fn new(genesis: Hash, key: Option<SecretKey>, timeouts: Timeouts) -> Self {
        Effects {
            genesis,
            key,
            timeouts,
            height: 0,
            set: None,
            out: Vec::new(),
            bad_signature: false,
            cert_error: None,
            fatal: None,
            replaying: None,
            reported: BTreeSet::new(),
            decided: None,
            verified: BTreeSet::new(),
            guard: None,
            #[cfg(feature = "equivocate")]
            equivocate: false,
            #[cfg(feature = "equivocate")]
            conflicts: Vec::new(),
        }
    }

    /// Moves to a new height: its set, and fresh caches.
    pub fn start_height(&mut self, height: u64, set: WeftValidatorSet) {
        self.height = height;
        self.set = Some(set);
        self.verified.clear();
        self.reported.clear();
    }

    /// Clears the per-call flags before a call.
    pub fn begin(&mut self) {
        self.bad_signature = false;
        self.cert_error = None;
        self.fatal = None;
    }

    /// The outputs of the call, the test-only conflicting votes last.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        #[cfg(feature = "equivocate")]
        self.out.append(&mut self.conflicts);
        std::mem::take(&mut self.out)
    }

    fn duration(&self, t: mt::Timeout) -> std::time::Duration {
        <Timeouts as mt::Timeouts<Ctx>>::duration_for(&self.timeouts, t)
    }

    /// Carries out one effect and says how to resume.
    pub fn handle(&mut self, effect: Effect<Ctx>) -> Result<Resume<Ctx>, EngineError> {
        let result = self.handle_inner(effect);
        if let Err(e) = &result {
            if !matches!(e, EngineError::SigningRefused(_)) {
                error!(error = %e, "consensus effect failed");
            }
            self.fatal.get_or_insert_with(|| e.clone());
        }
        result
    }

    fn handle_inner(&mut self, effect: Effect<Ctx>) -> Result<Resume<Ctx>, EngineError> {
        match effect {
            Effect::CancelAllTimeouts(r) => {
                self.out.push(Output::CancelAllTimeouts);
                Ok(r.resume_with(()))
            }
            Effect::CancelTimeout(t, r) => {
                self.out
                    .push(Output::CancelTimeout(TimeoutId::from_malachite(
                        self.height,
                        t,
                    )));
                Ok(r.resume_with(()))
            }
            Effect::ScheduleTimeout(t, r) => {
                let id = TimeoutId::from_malachite(self.height, t);
                self.out.push(Output::ScheduleTimeout(id, self.duration(t)));
                Ok(r.resume_with(()))
            }
            Effect::StartRound(height, round, proposer, role, r) => {
                info!(height = height.0, round = %round, %proposer, ?role, "round started");
                self.out.push(Output::NewRound {
                    height: height.0,
                    round: round_u32(round),
                    proposer: proposer.0,
                });
                Ok(r.resume_with(()))
            }
            Effect::PublishConsensusMsg(msg, r) => {
                self.out.push(Output::Broadcast(match &msg {
                    SignedConsensusMsg::Vote(v) => vote_msg(v),
                    SignedConsensusMsg::Proposal(p) => proposal_msg(p),
                }));
                Ok(r.resume_with(()))
            }
            Effect::PublishLivenessMsg(msg, r) => {
                self.out.push(Output::Broadcast(match &msg {
                    LivenessMsg::Vote(v) => vote_msg(v),
                    LivenessMsg::PolkaCertificate(c) => polka_out(c),
                    LivenessMsg::SkipRoundCertificate(c) => round_cert_out(c),
                }));
                Ok(r.resume_with(()))
            }
            Effect::RepublishVote(v, r) => {
                self.out.push(Output::Broadcast(vote_msg(&v)));
                Ok(r.resume_with(()))
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.out.push(Output::Broadcast(round_cert_out(&c)));
                Ok(r.resume_with(()))
            }
            Effect::GetValue(height, round, timeout, r) => {
                self.out.push(Output::BuildBlock {
                    height: height.0,
                    round: round_u32(round),
                    timeout: self.duration(timeout),
                });
                Ok(r.resume_with(()))
            }
            Effect::RestreamProposal(height, round, _valid_round, _proposer, block, r) => {
                self.out.push(Output::RestreamBlock {
                    height: height.0,
                    round: round_u32(round),
                    block: block.0,
                });
                Ok(r.resume_with(()))
            }
            Effect::CertVerifiedSyncValue(_, _, r) => {
                warn!("sync value effect without sync: ignored");
                Ok(r.resume_with(()))
            }
            Effect::CertRejectedSyncValue(_, _, _, r) => {
                warn!("sync rejection effect without sync: ignored");
                Ok(r.resume_with(()))
            }
            Effect::Decide(cert, _extensions, r) => {
                info!(
                    height = cert.height.0,
                    round = %cert.round,
                    block = %cert.value_id,
                    "decided"
                );
                Ok(r.resume_with(()))
            }
            Effect::SignVote(vote, r) => {
                let v = vote.to_finality();
                self.approve(SignRequest {
                    height: v.height,
                    round: v.round,
                    kind: match v.kind {
                        VoteKind::Prevote => SignKind::Prevote,
                        VoteKind::Precommit => SignKind::Precommit,
                    },
                    block: v.block,
                })?;
                let signature = self.sign(&v.signing_bytes(&self.genesis))?;
                #[cfg(feature = "equivocate")]
                self.sign_conflict(&vote)?;
                Ok(r.resume_with(SignedMessage::new(vote, signature)))
            }
            Effect::SignProposal(proposal, r) => {
                let p = proposal.to_finality();
                self.approve(SignRequest {
                    height: p.height,
                    round: p.round,
                    kind: SignKind::Proposal,
                    block: Some(p.block),
                })?;
                let signature = self.sign(&p.signing_bytes(&self.genesis))?;
                Ok(r.resume_with(SignedMessage::new(proposal, signature)))
            }
            Effect::VerifySignature(msg, public_key, r) => {
                let (account, bytes) = match &msg.message {
                    ConsensusMsg::Vote(v) => {
                        (v.validator.0, v.to_finality().signing_bytes(&self.genesis))
                    }
                    ConsensusMsg::Proposal(p) => {
                        (p.proposer.0, p.to_finality().signing_bytes(&self.genesis))
                    }
                };
                let ok = self.verify(&account, &public_key, &bytes, &msg.signature);
                if !ok {
                    warn!(signer = ?account, "invalid signature");
                    self.bad_signature = true;
                }
                Ok(r.resume_with(ok))
            }
            Effect::VerifyCommitCertificate(cert, set, thresholds, r) => {
                let result = self.verify_commit(&cert, &set, thresholds);
                Ok(r.resume_with(result))
            }
            Effect::VerifyExtendedCommitCertificate(cert, set, thresholds, _policy, r) => {
                let result = match cert
                    .commit_signatures
                    .iter()
                    .find(|s| s.extension.is_some())
                {
                    Some(s) => Err(CertificateError::UnexpectedVoteExtension(s.address)),
                    None => self.verify_commit(&cert.trim_vote_extensions(), &set, thresholds),
                };
                Ok(r.resume_with(result))
            }
            Effect::VerifyPolkaCertificate(cert, set, thresholds, r) => {
                let result = self.verify_polka(&cert, &set, thresholds);
                self.note_cert_result(&result);
                Ok(r.resume_with(result))
            }
            Effect::VerifyRoundCertificate(cert, set, thresholds, r) => {
                let result = self.verify_round(&cert, &set, thresholds);
                self.note_cert_result(&result);
                Ok(r.resume_with(result))
            }
            Effect::WalAppend(height, input, r) => {
                match WalEntry::from_input(&input) {
                    Some(entry) => {
                        let bytes = entry.to_bytes();
                        let replayed = self.replaying.as_ref().is_some_and(|s| s.contains(&bytes));
                        if !replayed {
                            self.out.push(Output::WalAppend {
                                height: height.0,
                                entry: bytes,
                            });
                        }
                    }
                    None => error!(
                        ?input,
                        "Malachite asked to log an input that is never logged"
                    ),
                }
                Ok(r.resume_with(()))
            }
            Effect::ExtendVote(_, _, _, _, r) => Ok(r.resume_with(None)),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => {
                Ok(r.resume_with(Err(VoteExtensionError::InvalidVoteExtension)))
            }
            Effect::Finalize(cert, _extensions, evidence, r) => {
                self.finalize(&cert, &evidence)?;
                Ok(r.resume_with(()))
            }
        }
    }

    /// Asks the guard, if any, whether `request` may be signed.
    fn approve(&mut self, request: SignRequest) -> Result<(), EngineError> {
        match &mut self.guard {
            Some(guard) => guard.approve(&request).map_err(|e| {
                warn!(?request, error = %e, "the double-sign guard refused a signature");
                EngineError::SigningRefused(e)
            }),
            None => Ok(()),
        }
    }

    fn sign(&self, bytes: &[u8]) -> Result<SignatureBytes, EngineError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| EngineError::Signing("no validator key".into()))?;
        key.sign(bytes)
            .map(|s| s.to_bytes())
            .map_err(|e| EngineError::Signing(e.to_string()))
    }

    /// Test-only: signs a vote like `vote` but for another block, to be broadcast after the
    /// call's other outputs.
    #[cfg(feature = "equivocate")]
    fn sign_conflict(&mut self, vote: &crate::context::WeftVote) -> Result<(), EngineError> {
        if !self.equivocate {
            return Ok(());
        }
        let mut seed = b"weft/equivocate/".to_vec();
        if let arc_malachitebft_core_types::NilOrVal::Val(b) = vote.value {
            seed.extend_from_slice(b.0.as_bytes());
        }
        seed.extend_from_slice(&vote.height.0.to_le_bytes());
        seed.extend_from_slice(&round_u32(vote.round).to_le_bytes());
        let mut other = vote.to_finality();
        other.block = Some(weft_primitives::hash::blake3_256(&seed));
        let signature = self.sign(&other.signing_bytes(&self.genesis))?;
        warn!(
            height = other.height,
            round = other.round,
            "equivocating (test feature)"
        );
        self.conflicts
            .push(Output::Broadcast(crate::ConsensusMessage::Vote(
                weft_finality::SignedVote {
                    vote: other,
                    signature,
                },
            )));
        Ok(())
    }

    /// Emits the decision: the commit certificate aggregated into a
    /// `weft_finality::Certificate` (and verified), with the height's evidence.
    fn finalize(
        &mut self,
        cert: &CommitCertificate<Ctx>,
        evidence: &MisbehaviorEvidence<Ctx>,
    ) -> Result<(), EngineError> {
        let height = cert.height.0;
        if self.decided == Some(height) {
            debug!(height, "already decided");
            return Ok(());
        }
        let set = self.set.as_ref().ok_or(EngineError::NotStarted)?.inner();
        let round = round_u32(cert.round);
        let block = cert.value_id.0;
        let signatures: Vec<_> = cert
            .commit_signatures
            .iter()
            .map(|s| (s.address.0, s.signature))
            .collect();
        let certificate = Certificate::aggregate(set, height, round, block, &signatures)
            .map_err(|e| EngineError::Certificate(e.to_string()))?;
        certificate
            .verify(&self.genesis, set, height, &block)
            .map_err(|e| EngineError::Certificate(e.to_string()))?;
        let mut all = Vec::new();
        collect_evidence(&evidence.votes, &evidence.proposals, &mut all);
        for e in &all {
            self.report(e);
        }
        info!(
            height,
            round,
            block = %cert.value_id,
            signers = signatures.len(),
            evidence = all.len(),
            "finalized"
        );
        self.out.push(Output::Decided {
            certificate,
            evidence: all,
        });
        self.decided = Some(height);
        Ok(())
    }

    /// Reports `e` unless an equivocation with its key was reported already.
    fn report(&mut self, e: &Equivocation) {
        if self.reported.insert(e.key()) {
            warn!(offender = ?e.offender(), height = e.height(), "equivocation");
            self.out.push(Output::Evidence(e.clone()));
        }
    }

    /// Reports the keepers' pairs that were not reported yet.
    pub fn scan_evidence(
        &mut self,
        votes: &arc_malachitebft_core_votekeeper::EvidenceMap<Ctx>,
        proposals: &arc_malachitebft_core_driver::proposal_keeper::EvidenceMap<Ctx>,
    ) {
        if votes.is_empty() && proposals.is_empty() {
            return;
        }
        let mut all = Vec::new();
        collect_evidence(votes, proposals, &mut all);
        for e in &all {
            self.report(e);
        }
    }
}

/// The pairs of both maps as `weft_finality` evidence, one per key.
fn collect_evidence(
    votes: &arc_malachitebft_core_votekeeper::EvidenceMap<Ctx>,
    proposals: &arc_malachitebft_core_driver::proposal_keeper::EvidenceMap<Ctx>,
    into: &mut Vec<Equivocation>,
) {
    let mut keys = BTreeSet::new();
    let pairs = votes
        .iter()
        .flat_map(|(_, pairs)| pairs.iter())
        .map(|(a, b)| Equivocation::Votes {
            first: signed_vote_out(a),
            second: signed_vote_out(b),
        })
        .chain(
            proposals
                .iter()
                .flat_map(|(_, pairs)| pairs.iter())
                .map(|(a, b)| Equivocation::Proposals {
                    first: signed_proposal_out(a),
                    second: signed_proposal_out(b),
                }),
        );
    for e in pairs {
        if keys.insert(e.key()) {
            into.push(e);
        }
    }
}
