//! # Work
//!
//! Training steps as verifiable work: commitments, audit selection, attestations, settlement.
//!
//! ## Commitments
//!
//! After each step the trainer of slot `(run, stage, replica)` calls `commit_step` with the
//! blake3 Merkle roots of the step ([`StepRoots`]: weights before, inputs, outputs, output
//! gradients received, input gradients sent, weights after) and, on the last stage only, the
//! loss in fixed point (× 10⁶). Accepted only when
//!
//! * the run is `Training` and not paused (a halted run accepts no work),
//! * the signer holds that slot now (an unassigned account cannot commit),
//! * `step` is exactly the slot's next step: one commitment per `(stage, replica, step)`,
//!   so a replayed step is `AlreadyCommitted` and a skipped one `OutOfOrder`,
//! * `step` is below the run's step limit (`steps_per_epoch` × epochs trained, and the run's
//!   `final_steps`: `max_steps`, else the schedule's `total_steps`),
//! * the round fits the run (`BadRound`): where the run's replicas average, the commitment
//!   carries its [`Round`]: the replicas it aggregated (`included`: non-empty, each below the
//!   run's replica count) and, for every included replica but its own, that replica's update
//!   root with its seal (`received`, ascending); where they train apart, no round and a zero
//!   `update` root,
//! * every seal verifies (`BadSeal`): the pipeline seals of its neighbours and the update
//!   seals of the replicas it aggregated, each against the sender's trainer.
//!
//! ## Replicas that average
//!
//! Replicas of a stage that average their updates every step end every step with the same
//! weights; when two of them commit different `weights_after` roots for a step, the chain
//! emits `ReplicasDiverged` and forces an audit of both commitments (see the `replicas`
//! module for the rule and its limit). Every update crosses sealed: a replica that commits
//! another update root than the one it sealed to another replica is slashed at commit
//! (`ReplicaUpdateContradiction`, offence `ReplicaContradiction`), as a stage that contradicts
//! its pipeline seal is.
//!
//! ## Audit selection
//!
//! A commitment made in block `h` is looked at in block `h + d` (`d = selection_delay ≥ 1`),
//! with the randomness `R(h + d)` that block records (see `weft_pallet_support::randomness`
//! for how it is made and how much a block author can bias it). It is **selected** iff
//!
//! ```text
//! u64_le(blake3(R(h + d) ‖ SCALE(commitment_id))[0..8]) mod 10⁹  <  audit_probability (ppb)
//! ```
//!
//! so each commitment is audited independently with the run's probability `p`, and nobody
//! knows at commit time which ones will be. A trainer cheating on `k` steps escapes with
//! probability `(1 − p)^k`. Not selected → the step is **credited** (ownership units) at
//! once, unless its trainer has a slash pending (a caught cheater forfeits its unaudited work).
//! A commitment marked in [`FORCED_AUDITS`] (replicas that diverged) is selected whatever the
//! draw.
//!
//! ## Audits
//!
//! A selected commitment opens an audit with id = commitment id, a reveal deadline
//! `h + d + reveal_window` (the trainer serves the committed tensors to the auditors off
//! chain) and an attestation deadline `h + d + attest_window`. The auditors are the
//! validators assigned to that stage (stages pallet), with their epoch stake as weight.
//!
//! Each auditor calls `attest(audit, verdict, reason, bls_signature)` where the signature is
//! its BN254 BLS signature over [`attestation_message`] `= SCALE(("weft/audit/v1", audit,
//! verdict))`, checked against its registered key (registered with a proof of possession, so
//! the signatures may be aggregated safely). `Pass` carries no reason; `Fail` carries
//! `Mismatch` (recomputation outside tolerance), `NoReveal` (only after the reveal deadline)
//! or `Late` (revealed after the deadline).
//!
//! **Settlement**: as soon as the stake attesting one verdict exceeds `settle_threshold`
//! (default 2/3) of the audit's auditor stake, the audit settles. The signatures of that side
//! are aggregated into one BLS signature, verified once against the aggregate key, and stored
//! as the audit's certificate (verifiable by anyone, e.g. Ethereum's bn254 precompile).
//!
//! * `Pass` → the step is credited.
//! * `Fail` → the trainer is slashed `trainer_slash` of its stake (deferred, see staking; the
//!   first Fail attester is the reporter), chilled and removed from its stages, and forfeits
//!   every contribution unit it holds in the run (ownership's `forfeit`); the step is void.
//!
//! **Deadline** (end of the attestation-deadline block): an audit that never settled is void
//! (no credit, no slash — the auditors failed, not provably the trainer). Then each auditor
//! that did not attest is slashed `missed_attestation_slash` — unless the trainer no longer
//! has a trainer record (chilled or removed after a failed audit of another step), since
//! nobody can fetch a reveal from it then — and each auditor whose verdict
//! contradicts the settled outcome is slashed `auditor_slash`. Within one slashing span an
//! account pays only its largest slash (staking's max-not-sum rule).
//!
//! ## Finishing
//!
//! A run trains `final_steps` steps (`max_steps`, else the schedule's `total_steps`). When a
//! commitment of step `final_steps − 1` settles (in its selection block when it is not
//! audited, at its attestation deadline when it is), [`finish`] checks every `(stage,
//! replica)` slot of the run: once each has committed that step and each of those
//! commitments is settled (credited, voided or inconclusive, and its audit closed), the
//! owners receive the credentials of the epoch it finishes in (`ownership::mint_epoch`, pro
//! rata to the units just credited: a finished run leaves the active runs, so no later
//! boundary would mint them) and the run moves to `Finished` through `runs::set_status` (the
//! designer's bond is returned). A run that is not `Training` then (halted) is left as it is.
//!
//! Per-block hook work is bounded by the queues keyed by block number: commitments due for
//! selection in this block and audits whose deadline is this block.
//!
//! **One item, one transaction.** A hook takes its queue entry out of storage and keeps that
//! removal; then each commitment (or audit) is processed in its own nested transaction
//! (`weft_pallet_support::transactional_item`). One that fails with a dispatch error (state
//! that should not exist, such as a commitment of an unknown run) has its writes and events
//! rolled back and is recorded as `SelectionFailed` (it stays `Committed`) or
//! `AuditCloseFailed` (the audit stays unclosed); the other items go on. It is not retried:
//! its block's queue entry is gone. A storage fault aborts the hook.
//!
//! ## Layout
//!
//! This file owns the pallet's types, storage, calls, events, errors and reads; the logic is
//! one file per concern: `commitments` ([`commit_step`] and a commitment's status changes),
//! `pipeline` (seals and the neighbours' roots), `replicas` (the replicas of a stage that
//! average), `audits` (selection, [`attest`], settlement, deadlines), `hooks`
//! ([`on_initialize`], [`on_finalize`]) and [`finish`] (when a run is done).

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::SignatureBytes;
use weft_pallet_ownership as ownership;
use weft_pallet_stages as stages;
use weft_pallet_support::{
    index, randomness, CommitmentId, Deposit, Failure, Perbill, Replica, RunId, StageIndex, Step,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance, BlockNumber, DispatchError, Hash};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Work";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::WORK;
/// Domain tag of attestation messages.
pub const ATTESTATION_DOMAIN: &[u8; 13] = b"weft/audit/v1";

pub use weft_primitives::compute::ComputeClass;
pub use weft_primitives::replicas::{Included, ReceivedUpdate, ReplicaSync, Round};
pub use weft_primitives::seal::{Direction, SealSignature, StepSeals};
pub use weft_primitives::step::{CommittedLoss, StepRoots};

/// A pipeline seal the chain verified: `signature` by the p2p identity of `by` (see the
/// `pipeline` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seal {
    /// The account that answers for the sealed tensors.
    pub by: AccountId,
    /// Its ed25519 signature over the seal message.
    pub signature: SealSignature,
}

/// Another replica's update as the committing replica received and aggregated it, its seal
/// verified (see the `replicas` module): replica `replica` of the same stage sent an update
/// with Merkle root `root`, sealed by `by`, the account that answers for that replica's
/// step (its committer, or, before it had committed, the slot's holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedUpdate {
    /// The sending replica.
    pub replica: Replica,
    /// The root of the update it sent.
    pub root: Hash,
    /// Its seal over `root` (`Direction::Update`), as submitted.
    pub signature: SealSignature,
    /// The account the seal was verified against; `None` where the sending replica had no
    /// trainer to answer for it when this commitment was made (its trainer chilled or its
    /// slot empty): such an entry is kept, unverified, and can convict nobody.
    pub by: Option<AccountId>,
}

/// The round of a commitment of a run whose replicas average, as stored: the submitted
/// [`Round`] with each received update's seal verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedRound {
    /// The replicas whose updates the step aggregated.
    pub included: Included,
    /// For every included replica but the committing one, its update as received; ascending
    /// by replica.
    pub received: Vec<VerifiedUpdate>,
}

/// Where a commitment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommitStatus {
    /// Waiting for its selection block.
    #[codec(index = 0)]
    Committed,
    /// Selected; audit open.
    #[codec(index = 1)]
    Audited,
    /// Contribution credited.
    #[codec(index = 2)]
    Credited,
    /// Failed its audit or forfeited; no contribution.
    #[codec(index = 3)]
    Voided,
    /// Its audit never settled; no contribution, no slash.
    #[codec(index = 4)]
    Inconclusive,
}

/// A step commitment.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commitment {
    /// Run.
    pub run: RunId,
    /// Stage.
    pub stage: StageIndex,
    /// Replica.
    pub replica: Replica,
    /// Step.
    pub step: Step,
    /// Who committed.
    pub trainer: AccountId,
    /// The roots.
    pub roots: StepRoots,
    /// The loss × 10⁶ (last stage only).
    pub loss: Option<CommittedLoss>,
    /// The settings the step was computed under (an auditor of the same class requires
    /// bit-exact equality).
    pub compute: ComputeClass,
    /// The previous stage's seal over `roots.inputs` (see the `pipeline` module).
    pub input_seal: Option<Seal>,
    /// The next stage's seal over `roots.output_grads`.
    pub output_grad_seal: Option<Seal>,
    /// The step's round, where the run's replicas average (`None` where they train apart):
    /// the replicas it aggregated and the other replicas' updates as received, sealed.
    pub round: Option<VerifiedRound>,
    /// Block of the commitment.
    pub block: BlockNumber,
    /// Status.
    pub status: CommitStatus,
}

/// An auditor's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Recomputation matched within tolerance.
    #[codec(index = 0)]
    Pass,
    /// It did not, or there was nothing to check.
    #[codec(index = 1)]
    Fail,
}

/// Why an auditor says `Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailReason {
    /// Recomputation outside tolerance, or the reveal does not match the roots.
    #[codec(index = 0)]
    Mismatch,
    /// Nothing revealed by the reveal deadline.
    #[codec(index = 1)]
    NoReveal,
    /// Revealed after the reveal deadline.
    #[codec(index = 2)]
    Late,
}

/// An auditor of an audit, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seat {
    /// Validator.
    pub account: AccountId,
    /// Its stake in the epoch's validator set.
    pub stake: Balance,
    /// Its BLS key.
    pub bls_key: weft_bls::PublicKeyBytes,
}

/// A recorded attestation.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// Auditor.
    pub auditor: AccountId,
    /// Verdict.
    pub verdict: Verdict,
    /// Reason of a `Fail`.
    pub reason: Option<FailReason>,
    /// BLS signature over [`attestation_message`].
    pub signature: SignatureBytes,
}

/// The aggregate proof of a settled audit.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// The settled verdict.
    pub verdict: Verdict,
    /// Who signed it.
    pub signers: Vec<AccountId>,
    /// Their aggregated BLS signature over `attestation_message(audit, verdict)`.
    pub aggregate: SignatureBytes,
}

/// An audit.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Opened in this block.
    pub opened_at: BlockNumber,
    /// The trainer must reveal by then (off chain).
    pub reveal_deadline: BlockNumber,
    /// Attestations are accepted until then.
    pub attest_deadline: BlockNumber,
    /// Settlement threshold (copied from the run at opening).
    pub threshold: Perbill,
    /// The auditors.
    pub seats: Vec<Seat>,
    /// Attestations so far.
    pub attestations: Vec<Attestation>,
    /// The settled certificate, if settled.
    pub certificate: Option<Certificate>,
    /// Deadline processing done.
    pub closed: bool,
}

/// Commitments by id.
pub const COMMITMENTS: StorageMap<CommitmentId, Commitment> =
    StorageMap::new(PALLET, "Commitments");
/// The next commitment id.
pub const NEXT_ID: StorageValue<CommitmentId> = StorageValue::new(PALLET, "NextId");
/// The next step of each slot.
pub const NEXT_STEP: StorageMap<(RunId, StageIndex, Replica), Step> =
    StorageMap::new(PALLET, "NextStep");
/// The commitment of each `(run, stage, replica, step)` (auditors check that a step
/// continues its predecessor).
pub const STEP_COMMITMENT: StorageMap<(RunId, StageIndex, Replica, Step), CommitmentId> =
    StorageMap::new(PALLET, "StepCommitment");
/// Commitments by the block in which they are considered for selection.
pub const SELECTION_QUEUE: StorageMap<BlockNumber, Vec<CommitmentId>> =
    StorageMap::new(PALLET, "SelectionQueue");
/// Audits by id (= commitment id).
pub const AUDITS: StorageMap<CommitmentId, Audit> = StorageMap::new(PALLET, "Audits");
/// Audits by attestation deadline.
pub const DEADLINES: StorageMap<BlockNumber, Vec<CommitmentId>> =
    StorageMap::new(PALLET, "Deadlines");
/// Commitments that must be audited at their selection block whatever the draw (replicas
/// that diverged, see the `replicas` module); the mark is removed when the commitment's
/// selection runs.
pub const FORCED_AUDITS: StorageMap<CommitmentId, ()> = StorageMap::new(PALLET, "ForcedAudits");

/// Calls. Indices are stable.
// `CommitStep` carries its nine roots inline: a call is decoded once per extrinsic and
// never stored in bulk, so the enum's size does not matter, and boxing would only add an
// allocation per commitment.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Commits one step of one slot.
    #[codec(index = 0)]
    CommitStep {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Replica.
        replica: Replica,
        /// Step.
        step: Step,
        /// Merkle roots.
        roots: StepRoots,
        /// Loss × 10⁶ (last stage only).
        loss: Option<CommittedLoss>,
        /// The settings the step was computed under.
        compute: ComputeClass,
        /// The neighbours' seals over what this step received.
        seals: StepSeals,
        /// The step's round: `Some` where the run's replicas average (the replicas whose
        /// updates the step aggregated, non-empty and within the run's replicas, and every
        /// other included replica's update root with its seal, ascending), `None` where they
        /// train apart.
        round: Option<Round>,
    },
    /// An auditor's signed verdict.
    #[codec(index = 1)]
    Attest {
        /// Audit id.
        audit: CommitmentId,
        /// Verdict.
        verdict: Verdict,
        /// Reason (only with `Fail`).
        reason: Option<FailReason>,
        /// BLS signature over `attestation_message(audit, verdict)`.
        signature: SignatureBytes,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A step was committed.
    #[codec(index = 0)]
    StepCommitted {
        /// Commitment id.
        id: CommitmentId,
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Replica.
        replica: Replica,
        /// Step.
        step: Step,
        /// Trainer.
        trainer: AccountId,
    },
    /// A commitment was selected for audit.
    #[codec(index = 1)]
    AuditOpened {
        /// Audit id.
        audit: CommitmentId,
        /// Trainer.
        trainer: AccountId,
        /// Auditors.
        auditors: Vec<AccountId>,
        /// Reveal deadline.
        reveal_deadline: BlockNumber,
        /// Attestation deadline.
        attest_deadline: BlockNumber,
    },
    /// An auditor attested.
    #[codec(index = 2)]
    Attested {
        /// Audit.
        audit: CommitmentId,
        /// Auditor.
        auditor: AccountId,
        /// Verdict.
        verdict: Verdict,
        /// Reason.
        reason: Option<FailReason>,
    },
    /// An audit settled.
    #[codec(index = 3)]
    AuditSettled {
        /// Audit.
        audit: CommitmentId,
        /// Outcome.
        verdict: Verdict,
        /// Stake that signed it.
        stake: Balance,
    },
    /// An audit reached its deadline without settling.
    #[codec(index = 4)]
    AuditInconclusive {
        /// Audit.
        audit: CommitmentId,
    },
    /// A step was voided (failed audit, or its trainer forfeited it).
    #[codec(index = 5)]
    StepVoided {
        /// Commitment.
        id: CommitmentId,
    },
    /// The selection of a commitment failed in its selection block; its writes and events
    /// were rolled back and it stays `Committed` (it is not considered again).
    #[codec(index = 6)]
    SelectionFailed {
        /// Commitment.
        commitment: CommitmentId,
        /// Why.
        error: DispatchError,
    },
    /// The deadline processing of an audit failed; its writes and events were rolled back
    /// and the audit stays open (it is not closed again).
    #[codec(index = 7)]
    AuditCloseFailed {
        /// Audit.
        audit: CommitmentId,
        /// Why.
        error: DispatchError,
    },
    /// Two neighbours committed different roots for what crossed their boundary in a step.
    #[codec(index = 8)]
    PipelineInconsistent {
        /// Run.
        run: RunId,
        /// The boundary: between stage `boundary` and `boundary + 1`.
        boundary: StageIndex,
        /// Replica.
        replica: Replica,
        /// Step.
        step: Step,
        /// Activations or gradients.
        direction: Direction,
        /// Who the seals show lied (slashed), if anyone can be shown to.
        liar: Option<AccountId>,
    },
    /// Two replicas of a stage that average committed different `weights_after` roots for
    /// the same step; both commitments are audited if still before their selection.
    #[codec(index = 9)]
    ReplicasDiverged {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Step.
        step: Step,
        /// The two replicas, the lower first.
        replicas: (Replica, Replica),
    },
    /// A replica of a stage that averages committed another `update` root for a step than
    /// the one another replica of its stage holds its seal over (see the `replicas` module).
    #[codec(index = 10)]
    ReplicaUpdateContradiction {
        /// Run.
        run: RunId,
        /// Stage.
        stage: StageIndex,
        /// Step.
        step: Step,
        /// The replica that sent one update and committed another.
        replica: Replica,
        /// Its committer, slashed, where the seal is its own; `None` where the seal is by an
        /// earlier holder of the slot (nobody provably lied).
        by: Option<AccountId>,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// The run is not training (pending, halted, paused or finished).
    #[codec(index = 0)]
    #[error("RunNotTraining: the run does not accept work now")]
    RunNotTraining,
    /// Stage or replica out of range.
    #[codec(index = 1)]
    #[error("BadSlot: stage or replica out of range")]
    BadSlot,
    /// The signer is not assigned to this slot.
    #[codec(index = 2)]
    #[error("NotAssigned: the signer is not the trainer of this slot")]
    NotAssigned,
    /// This step was already committed.
    #[codec(index = 3)]
    #[error("AlreadyCommitted: this step was already committed")]
    AlreadyCommitted,
    /// Steps must be committed in order.
    #[codec(index = 4)]
    #[error("OutOfOrder: this is not the slot's next step")]
    OutOfOrder,
    /// Beyond the run's step limit.
    #[codec(index = 5)]
    #[error("StepLimit: the run does not allow this step yet")]
    StepLimit,
    /// A loss on a stage other than the last, or none on the last.
    #[codec(index = 6)]
    #[error("LossMismatch: only the last stage commits a loss, and it must")]
    LossMismatch,
    /// No such open audit.
    #[codec(index = 7)]
    #[error("UnknownAudit: no such audit")]
    UnknownAudit,
    /// The signer is not an auditor of this audit.
    #[codec(index = 8)]
    #[error("NotAuditor: the signer is not an auditor of this audit")]
    NotAuditor,
    /// Already attested.
    #[codec(index = 9)]
    #[error("AlreadyAttested: already attested")]
    AlreadyAttested,
    /// Past the attestation deadline.
    #[codec(index = 10)]
    #[error("AuditClosed: past the attestation deadline")]
    AuditClosed,
    /// The BLS signature does not verify.
    #[codec(index = 11)]
    #[error("BadSignature: the BLS signature does not verify")]
    BadSignature,
    /// `Pass` with a reason or `Fail` without one.
    #[codec(index = 12)]
    #[error("BadReason: Pass takes no reason, Fail needs one")]
    BadReason,
    /// `NoReveal` before the reveal deadline.
    #[codec(index = 13)]
    #[error("TooEarly: the reveal deadline has not passed")]
    TooEarly,
    /// Overflow.
    #[codec(index = 14)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
    /// The step does not start from the state the slot's previous step ended in: its
    /// `weights_before` / `optimizer_before` roots differ from the `weights_after` /
    /// `optimizer_after` roots committed for `step − 1` (by whoever held the slot).
    #[codec(index = 15)]
    #[error("Discontinuous: the step does not start from the slot's last committed state")]
    Discontinuous,
    /// A seal that does not verify: a pipeline seal that is not a signature by the sending
    /// slot's trainer over this commitment's root, or one from a neighbour the stage does not
    /// have; or an update seal of the round that is not a signature by the sending replica's
    /// trainer over the root it names.
    #[codec(index = 16)]
    #[error("BadSeal: a seal does not verify against the sender's trainer")]
    BadSeal,
    /// The replica round does not fit the run: where its replicas average, the round must
    /// be present, `included` must name at least one replica and only replicas below the
    /// run's replica count, and `received` must hold exactly one entry for every included
    /// replica but the committing one, ascending by replica; where they train apart, the
    /// round must be absent and the `update` root zero.
    #[codec(index = 17)]
    #[error("BadRound: the round or the update root does not fit the run's replica sync")]
    BadRound,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: stages::Sink + ownership::Sink + Deposit<Event> {}
impl<T: stages::Sink + ownership::Sink + Deposit<Event> + ?Sized> Sink for T {}

/// The message an auditor signs: `SCALE(("weft/audit/v1", audit, verdict))`.
pub fn attestation_message(audit: CommitmentId, verdict: Verdict) -> Vec<u8> {
    (ATTESTATION_DOMAIN, audit, verdict).encode()
}

/// Whether commitment `id` is selected under randomness `r` with probability `p`.
pub fn is_selected(r: &Hash, id: CommitmentId, p: Perbill) -> bool {
    randomness::draw_u64(r, &id.encode()) % (Perbill::ACCURACY as u64) < p.parts() as u64
}

/// The commitment `id`.
pub fn commitment(
    s: &(impl StateReader + ?Sized),
    id: CommitmentId,
) -> Result<Option<Commitment>, StorageError> {
    COMMITMENTS.get(s, &id)
}

/// The commitment of one step of a slot, by the chain's step index.
pub fn step_commitment(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
) -> Result<Option<CommitmentId>, StorageError> {
    STEP_COMMITMENT.get(s, &(run, stage, replica, step))
}

/// The audit `id`.
pub fn audit(
    s: &(impl StateReader + ?Sized),
    id: CommitmentId,
) -> Result<Option<Audit>, StorageError> {
    AUDITS.get(s, &id)
}

/// The next step of a slot.
pub fn next_step(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    stage: StageIndex,
    replica: Replica,
) -> Result<Step, StorageError> {
    Ok(NEXT_STEP.get(s, &(run, stage, replica))?.unwrap_or(0))
}

/// Dispatches a call signed by `origin`.
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::CommitStep {
            run,
            stage,
            replica,
            step,
            roots,
            loss,
            compute,
            seals,
            round,
        } => commit_step(
            s,
            ev,
            now,
            origin,
            *run,
            *stage,
            *replica,
            *step,
            *roots,
            *loss,
            *compute,
            *seals,
            round.clone(),
        )
        .map(|_| ()),
        Call::Attest {
            audit,
            verdict,
            reason,
            signature,
        } => attest(s, ev, now, origin, *audit, *verdict, *reason, *signature),
    }
}

mod audits;
mod commitments;
pub mod finish;
mod hooks;
mod pipeline;
mod replicas;

pub use audits::attest;
pub use commitments::commit_step;
pub use hooks::{on_finalize, on_initialize};

#[cfg(test)]
mod tests;
