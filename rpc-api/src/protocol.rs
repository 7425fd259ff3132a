//! The decoded JSON of the protocol methods (`weft_run`, `weft_stageAssignments`, …).
//!
//! Conventions, the same in every type here:
//!
//! * fields are camelCase; accounts are SS58 strings; hashes, BLS keys and signatures are
//!   `0x` hex;
//! * token balances, contribution units and credentials are **decimal strings** (they exceed
//!   the 2^53 that JSON numbers carry exactly);
//! * fractions are the pallets' `Perbill`: an integer number of parts per billion
//!   (`1000000000` is one); ownership shares are decimal strings of parts per billion that
//!   sum to exactly `"1000000000"` over a run's owners;
//! * enums (run status, verdicts, offence kinds, proposal actions) use the pallets' own serde
//!   forms, so a client can deserialize them into the pallet types.
//!
//! Trainer peer ids are stored on chain as the libp2p peer id's bytes (its multihash) and
//! shown in base58 (`12D3KooW…`), as libp2p prints them; addresses are stored as multiaddr
//! text (`/ip4/1.2.3.4/tcp/4001`). [`peer_id_to_string`], [`parse_peer_id`] and
//! [`bytes_to_text`] convert between the two forms; bytes that are not a valid peer id or
//! UTF-8 text are shown as `0x` hex instead, never dropped.

use serde::{Deserialize, Serialize};
use weft_primitives::{AccountId, BlockNumber, Hash};
use weft_runtime::bls::PublicKeyBytes;
use weft_runtime::support::{
    CommitmentId, EpochIndex, ProposalId, Replica, RunId, SlashId, StageIndex, Step,
};
use weft_runtime::{governance, runs, staking, work};

/// How many of the most recent ids the list methods that the chain does not index
/// (commitments, audits, proposals, slashes) look at.
pub const SCAN_LIMIT: u64 = 4096;

/// Parts per billion in one (the `Perbill` accuracy).
pub const PARTS_PER_BILLION: u32 = 1_000_000_000;

/// An account's staking ledger (`weft_stakingLedger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerJson {
    /// The account.
    pub account: AccountId,
    /// Bonded and at stake for roles, plancks.
    pub active: String,
    /// Unbonding chunks, oldest first (still slashable).
    pub unlocking: Vec<UnlockChunkJson>,
    /// `active` plus everything unlocking, plancks.
    pub total: String,
    /// Whether the account is a validator candidate.
    pub validator: bool,
    /// Whether the account is a registered trainer.
    pub trainer: bool,
    /// Its BLS key, when it is a validator candidate.
    pub bls_key: Option<PublicKeyBytes>,
    /// Deferred slashes pending against it (withdrawals wait while this is not zero).
    pub pending_slashes: u32,
}

/// Funds on their way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockChunkJson {
    /// Amount, plancks.
    pub value: String,
    /// First block at which it can be withdrawn.
    pub unlock_at: BlockNumber,
}

/// `weft_validators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorsJson {
    /// The current epoch.
    pub epoch: EpochIndex,
    /// Its validator set, by stake descending: the auditors and emergency voters.
    pub active: Vec<ValidatorJson>,
    /// The sum of the set's stake, plancks.
    pub active_stake: String,
    /// Every validator candidate (elected at the next epoch boundary if bonded enough).
    pub candidates: Vec<CandidateJson>,
}

/// A member of the epoch's validator set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorJson {
    /// The account.
    pub account: AccountId,
    /// Its active stake when the set was chosen, plancks.
    pub stake: String,
    /// Its BN254 BLS key.
    pub bls_key: PublicKeyBytes,
}

/// A validator candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateJson {
    /// The account.
    pub account: AccountId,
    /// Its active bond now, plancks.
    pub stake: String,
    /// Its BN254 BLS key.
    pub bls_key: Option<PublicKeyBytes>,
    /// Whether it is in the current epoch's set.
    pub in_active_set: bool,
}

/// A registered trainer (`weft_trainer`, `weft_trainers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerJson {
    /// The account.
    pub account: AccountId,
    /// Its libp2p peer id (base58, or `0x` hex when the bytes are not a peer id).
    pub peer_id: String,
    /// Its multiaddrs.
    pub addrs: Vec<String>,
    /// Stage slots it can serve at once, over all runs.
    pub capacity: u32,
    /// Stage slots it serves now, over all runs.
    pub load: u32,
    /// Its active bond, plancks.
    pub stake: String,
    /// Runs it joined as a candidate.
    pub runs: Vec<RunId>,
}

/// A run (`weft_run`, `weft_runs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunJson {
    /// The run id.
    pub id: RunId,
    /// Who registered it.
    pub designer: AccountId,
    /// The designer's reserved bond, plancks.
    pub bond: String,
    /// Lifecycle status.
    pub status: runs::RunStatus,
    /// Whether some stage has no trainer (no work is accepted then).
    pub paused: bool,
    /// Whether work is accepted now (training and not paused).
    pub accepting_work: bool,
    /// The model specification (fixed-point units: see `weft_pallet_runs::spec`).
    pub model_config: runs::ModelSpec,
    /// blake3 of the SCALE encoding of the model specification.
    pub config_hash: Hash,
    /// Pipeline stages.
    pub stages: StageIndex,
    /// Replicas per stage.
    pub replicas: u16,
    /// The dataset manifest hash.
    pub dataset_hash: Hash,
    /// The hyper-parameters (fixed-point units: see `weft_pallet_runs::spec`).
    pub hyper_params: runs::HyperParams,
    /// Step limit as registered (0: the schedule's `total_steps`).
    pub max_steps: u64,
    /// Steps the run trains before it finishes (`max_steps`, else `total_steps`).
    pub final_steps: u64,
    /// The data-order seed.
    pub seed: Hash,
    /// Block of registration.
    pub registered_at: BlockNumber,
    /// Epoch boundaries passed while training.
    pub epochs_trained: u64,
    /// The parameters governance may change (fractions in parts per billion).
    pub params: runs::RunParams,
}

/// `weft_stageAssignments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageAssignmentsJson {
    /// The run.
    pub run_id: RunId,
    /// Its status.
    pub status: runs::RunStatus,
    /// Whether some stage has no trainer.
    pub paused: bool,
    /// The epoch these assignments belong to.
    pub epoch: EpochIndex,
    /// One entry per stage, in order.
    pub stages: Vec<StageJson>,
    /// Trainers that joined the run (assigned at epoch boundaries).
    pub candidates: Vec<AccountId>,
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageJson {
    /// The stage index.
    pub stage: StageIndex,
    /// One entry per replica, in order.
    pub replicas: Vec<SlotJson>,
    /// The validators auditing this stage this epoch.
    pub auditors: Vec<AccountId>,
}

/// One (stage, replica) slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotJson {
    /// The replica index.
    pub replica: Replica,
    /// The trainer holding it, if any.
    pub trainer: Option<AccountId>,
    /// Its peer id (see [`TrainerJson::peer_id`]).
    pub peer_id: Option<String>,
    /// Its multiaddrs.
    pub addrs: Vec<String>,
    /// The next step this slot must commit.
    pub next_step: Step,
}

/// A step commitment (`weft_commitment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitmentJson {
    /// The commitment id (= its audit id when audited).
    pub id: CommitmentId,
    /// The run.
    pub run_id: RunId,
    /// The stage.
    pub stage: StageIndex,
    /// The replica.
    pub replica: Replica,
    /// The step.
    pub step: Step,
    /// Who committed.
    pub trainer: AccountId,
    /// The Merkle roots.
    pub roots: work::StepRoots,
    /// The loss × 10⁶ (last stage only).
    pub loss: Option<u64>,
    /// The settings the step was computed under (`weft_primitives::compute`).
    pub compute: work::ComputeClass,
    /// The previous stage's seal over `roots.inputs`, with the account it was verified
    /// against (`docs/commitments-and-audits.md`, "Pipeline seals").
    pub input_seal: Option<work::Seal>,
    /// The next stage's seal over `roots.outputGrads`.
    pub output_grad_seal: Option<work::Seal>,
    /// Where the run's replicas average: the replicas whose updates the step aggregated,
    /// as replica numbers ascending (the on-chain `Included` bitmap, bit `r` ⇔ replica `r`);
    /// `null` where they train apart. The root of the update this replica sent is
    /// `roots.update`.
    #[serde(default)]
    pub included: Option<Vec<Replica>>,
    /// Where the run's replicas average: every other included replica's update as this
    /// replica received it, ascending by replica, with the sender's seal and the account it
    /// was verified against; empty where they train apart
    /// (`docs/commitments-and-audits.md`, "Replicas that average").
    #[serde(default)]
    pub received: Vec<ReceivedUpdateJson>,
    /// Block of the commitment.
    pub block: BlockNumber,
    /// Committed, audited, credited, voided or inconclusive.
    pub status: work::CommitStatus,
}

/// Another replica's update as a commitment received it (`CommitmentJson::received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedUpdateJson {
    /// The sending replica.
    pub replica: Replica,
    /// The root of its update (what its own commitment must carry as `roots.update`).
    pub root: Hash,
    /// Its seal over `root` (0x + 128 hex digits).
    pub signature: work::SealSignature,
    /// The account the seal was verified against: the committer of the sender's step, or,
    /// before it had committed, the slot's holder; `null` where the sender had no trainer to
    /// answer for it then (kept unverified; it convicts nobody).
    pub by: Option<AccountId>,
}

/// Where an audit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditStatus {
    /// Accepting attestations, not settled.
    Open,
    /// Settled by a certificate (see `verdict`).
    Settled,
    /// Its deadline passed without a settlement: no credit, no slash.
    Inconclusive,
}

/// An audit (`weft_audit`, `weft_audits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditJson {
    /// The audit id (= the commitment id).
    pub id: CommitmentId,
    /// The audited commitment's run.
    pub run_id: RunId,
    /// Its stage.
    pub stage: StageIndex,
    /// Its replica.
    pub replica: Replica,
    /// Its step.
    pub step: Step,
    /// The audited trainer.
    pub trainer: AccountId,
    /// Open, settled or inconclusive.
    pub status: AuditStatus,
    /// The settled verdict, once settled.
    pub verdict: Option<work::Verdict>,
    /// Opened in this block.
    pub opened_at: BlockNumber,
    /// The trainer must reveal by then (off chain).
    pub reveal_deadline: BlockNumber,
    /// Attestations are accepted until then.
    pub attest_deadline: BlockNumber,
    /// Share of the auditors' stake that settles it, parts per billion.
    pub threshold: u32,
    /// The auditors with their stake.
    pub auditors: Vec<ValidatorJson>,
    /// Attestations so far.
    pub attestations: Vec<work::Attestation>,
    /// The aggregate BLS certificate, once settled.
    pub certificate: Option<work::Certificate>,
    /// Whether its deadline processing is done.
    pub closed: bool,
}

/// `weft_ownership`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipJson {
    /// The run.
    pub run_id: RunId,
    /// Sum of all owners' units.
    pub total_units: String,
    /// Owners by account.
    pub owners: Vec<OwnerJson>,
    /// Credentials ever minted for the run (= all balances + the re-issue pool).
    pub credential_issuance: String,
    /// Redeemed credentials waiting to be re-issued at the next epoch boundary.
    pub reissue_pool: String,
}

/// One owner of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerJson {
    /// The account.
    pub account: AccountId,
    /// Its contribution units.
    pub units: String,
    /// Its share in parts per billion (largest remainder: the owners' shares sum to exactly
    /// one billion).
    pub share: String,
    /// The credentials it holds.
    pub credentials: String,
}

/// `weft_credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsJson {
    /// The account.
    pub account: AccountId,
    /// One entry per run asked about (or per run where it holds credentials or units).
    pub runs: Vec<RunCredentialsJson>,
}

/// An account's holdings in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCredentialsJson {
    /// The run.
    pub run_id: RunId,
    /// Credentials held.
    pub credentials: String,
    /// Credentials in escrow for open inference requests (not spendable until settled or
    /// refunded).
    pub escrowed: String,
    /// Contribution units owned.
    pub units: String,
}

/// A governance proposal (`weft_proposals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposalJson {
    /// The proposal id.
    pub id: ProposalId,
    /// Who proposed it.
    pub proposer: AccountId,
    /// What it does.
    pub action: governance::Action,
    /// The proposer's reserved deposit, plancks.
    pub deposit: String,
    /// Voting ends after this block.
    pub end: BlockNumber,
    /// Voting, passed (with its enactment block), expired, enacted or enactment failed.
    pub status: governance::ProposalStatus,
    /// The votes, with each voter's current active bond.
    pub votes: Vec<VoteJson>,
    /// Aye stake now, plancks.
    pub ayes: String,
    /// All active stake now, plancks.
    pub total_stake: String,
    /// The share of all active stake the ayes must exceed, parts per billion (`null` when
    /// the run is gone).
    pub threshold: Option<u32>,
}

/// One vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteJson {
    /// The voter.
    pub voter: AccountId,
    /// Aye?
    pub aye: bool,
    /// Its active bond now, plancks.
    pub stake: String,
}

/// A deferred slash (`weft_slashes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlashJson {
    /// The slash id (what `CancelSlash` names).
    pub id: SlashId,
    /// Who pays.
    pub offender: AccountId,
    /// Amount fixed at report time, plancks (the span's maximum is deducted when it applies).
    pub amount: String,
    /// Who receives the reporter share.
    pub reporter: Option<AccountId>,
    /// Epoch of the offence.
    pub epoch: EpochIndex,
    /// Block at which it applies.
    pub apply_at: BlockNumber,
    /// What happened.
    pub kind: staking::OffenceKind,
}

/// A slash that applied (`weft_appliedSlashes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSlashJson {
    /// The slash id.
    pub id: SlashId,
    /// Who paid.
    pub offender: AccountId,
    /// The amount fixed at report time, plancks.
    pub amount: String,
    /// What was burnt (after the span's maximum), plancks.
    pub burnt: String,
    /// Who received the reporter share.
    pub reporter: Option<AccountId>,
    /// What the reporter received, plancks.
    pub reporter_reward: String,
    /// Epoch of the offence.
    pub epoch: EpochIndex,
    /// The block it applied in.
    pub applied_at: BlockNumber,
    /// What happened.
    pub kind: staking::OffenceKind,
}

/// One committed step in a list (`weft_lossCurve`, `weft_commitmentsOf`): where it stands
/// and, once audited, the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecordJson {
    /// The commitment id (also its audit's id).
    pub id: CommitmentId,
    /// The run.
    pub run_id: RunId,
    /// The stage.
    pub stage: StageIndex,
    /// The replica.
    pub replica: Replica,
    /// The step.
    pub step: Step,
    /// Who committed it.
    pub trainer: AccountId,
    /// The committed loss × 10⁶ (last stage only).
    pub loss: Option<u64>,
    /// The block it was committed in.
    pub block: BlockNumber,
    /// Committed, audited, credited, voided or inconclusive.
    pub status: work::CommitStatus,
    /// The settled verdict of its audit, when it was audited and the audit settled.
    pub verdict: Option<work::Verdict>,
}

/// `weft_lossCurve`: the losses committed by a run's last stage, a point per step and
/// replica, by step then replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LossCurveJson {
    /// The run.
    pub run_id: RunId,
    /// Its last stage (the one that computes the loss).
    pub stage: StageIndex,
    /// Tokens one replica trains per step (micro-batch size × micro-batches × sequence
    /// length).
    pub tokens_per_step: u64,
    /// The first step listed (at most [`SCAN_LIMIT`] steps per replica are).
    pub from: Step,
    /// The committed steps.
    pub points: Vec<StepRecordJson>,
}

/// `weft_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochJson {
    /// The current epoch.
    pub epoch: EpochIndex,
    /// The block the answer is about.
    pub block_number: BlockNumber,
    /// Blocks per epoch.
    pub epoch_length: BlockNumber,
    /// The first block of the current epoch.
    pub epoch_start: BlockNumber,
    /// The block that starts the next epoch (assignments, elections and minting happen in it).
    pub next_epoch_at: BlockNumber,
    /// Blocks from `unbond` to withdrawable.
    pub bonding_period: BlockNumber,
    /// Blocks from an offence to its slash.
    pub slash_defer: BlockNumber,
    /// Validators in the current set.
    pub validators: u32,
    /// Sum of all active bonds (the voting stake), plancks.
    pub total_active_stake: String,
    /// Sum of all bonds, unlocking included, plancks.
    pub total_bonded: String,
}

/// Why a peer id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// Neither base58 nor `0x` hex.
    #[error("{0:?} is not a peer id: use the base58 form (12D3KooW…) or 0x hex of its bytes")]
    Encoding(String),
    /// Decoded, but not a multihash of the right shape.
    #[error("{0:?} is not a libp2p peer id (expected an identity or sha2-256 multihash)")]
    NotMultihash(String),
}

/// Whether `b` is a multihash of the shape libp2p peer ids have: identity (code 0x00) of at
/// most 42 bytes, or sha2-256 (code 0x12) of 32 bytes.
fn is_peer_multihash(b: &[u8]) -> bool {
    match b {
        [0x00, len, rest @ ..] => {
            *len as usize == rest.len() && rest.len() <= 42 && !rest.is_empty()
        }
        [0x12, 32, rest @ ..] => rest.len() == 32,
        _ => false,
    }
}

/// Reads a peer id given as base58 (`12D3KooW…`, `Qm…`) or `0x` hex of its bytes, and
/// returns its bytes as stored on chain.
pub fn parse_peer_id(s: &str) -> Result<Vec<u8>, PeerIdError> {
    let t = s.trim();
    let bytes = match t.strip_prefix("0x") {
        Some(h) => hex::decode(h).map_err(|_| PeerIdError::Encoding(s.to_string()))?,
        None => bs58::decode(t)
            .into_vec()
            .map_err(|_| PeerIdError::Encoding(s.to_string()))?,
    };
    if !is_peer_multihash(&bytes) {
        return Err(PeerIdError::NotMultihash(s.to_string()));
    }
    Ok(bytes)
}

/// A peer id's bytes as libp2p prints them (base58), or `0x` hex when they are not a peer id.
pub fn peer_id_to_string(bytes: &[u8]) -> String {
    if is_peer_multihash(bytes) {
        bs58::encode(bytes).into_string()
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

/// Bytes as UTF-8 text when they are, else `0x` hex.
pub fn bytes_to_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    }
}

/// A share in parts per billion as a percentage with up to seven decimals (`"33.3333334%"`).
pub fn ppb_to_percent(ppb: u128) -> String {
    let whole = ppb / 10_000_000;
    let frac = ppb % 10_000_000;
    if frac == 0 {
        format!("{whole}%")
    } else {
        let f = format!("{frac:07}");
        format!("{whole}.{}%", f.trim_end_matches('0'))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// An ed25519 peer id: identity multihash of the protobuf-encoded public key.
    fn ed25519_peer(key: u8) -> Vec<u8> {
        [&[0x00u8, 0x24, 0x08, 0x01, 0x12, 0x20][..], &[key; 32][..]].concat()
    }

    #[test]
    fn peer_ids_round_trip() {
        let b = ed25519_peer(7);
        let text = peer_id_to_string(&b);
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(parse_peer_id(&text).unwrap(), b);
        let hex = format!("0x{}", hex::encode(&b));
        assert_eq!(parse_peer_id(&hex).unwrap(), b);
        assert!(parse_peer_id("not a peer").is_err());
        assert!(parse_peer_id("0x1234").is_err());
        assert_eq!(peer_id_to_string(&[1, 2, 3]), "0x010203");
        let sha = [&[0x12u8, 32][..], &[7u8; 32][..]].concat();
        assert_eq!(parse_peer_id(&peer_id_to_string(&sha)).unwrap(), sha);
    }

    #[test]
    fn text_and_percent() {
        assert_eq!(bytes_to_text(b"/ip4/1.2.3.4/tcp/1"), "/ip4/1.2.3.4/tcp/1");
        assert_eq!(bytes_to_text(&[0xff, 0x00]), "0xff00");
        assert_eq!(ppb_to_percent(1_000_000_000), "100%");
        assert_eq!(ppb_to_percent(333_333_334), "33.3333334%");
        assert_eq!(ppb_to_percent(250_000_000), "25%");
        assert_eq!(ppb_to_percent(0), "0%");
    }
}
