//! # weft-rpc-api
//!
//! The JSON-RPC 2.0 interface of a Weft node, declared once and used by the server (the node)
//! and by typed clients (the `weft` CLI, the trainer, the tests). Names follow Substrate's
//! `namespace_camelCase` convention; `weft_*` methods return decoded JSON, never opaque
//! bytes. Balances are decimal strings (they exceed what JSON numbers carry exactly).
//!
//! Error codes: the JSON-RPC 2.0 codes for parse errors (-32700), unknown methods (-32601) and
//! bad params (-32602); [`INVALID_TRANSACTION`] (1010) with the reason when a submitted
//! extrinsic is rejected; [`POOL_FULL`] (1011); [`STORAGE_FAILING`] (1016) while the node
//! cannot write its database; [`UNKNOWN_BLOCK`] (4003) for an `at` hash
//! the node does not have; [`UNKNOWN_RUN`] (4004) for a run id that was never registered and
//! [`UNKNOWN_AUDIT`] (4005) for an audit id that was never opened.
//!
//! The protocol methods (`weft_stakingLedger`, `weft_validators`, `weft_trainers`,
//! `weft_trainer`, `weft_run`, `weft_runs`, `weft_stageAssignments`, `weft_commitment`,
//! `weft_audits`, `weft_audit`, `weft_ownership`, `weft_credentials`, `weft_proposals`,
//! `weft_slashes`, `weft_epoch`) each take an optional block hash `at` (default: best) and
//! answer with the types of the [`protocol`] module. Lists that the chain does not index
//! (trainers, audits of a run, proposals, slashes) are bounded scans documented on each method.
//!
//! The interface is declared as one trait per namespace group, [`ChainApi`] and
//! [`ProtocolApi`], so the server implements each in its own module and merges them into one
//! RPC module; a client imports the `…Client` trait of the methods it calls.

pub mod inference;
pub mod protocol;

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use protocol::{
    AppliedSlashJson, AuditJson, CommitmentJson, CredentialsJson, EpochJson, LedgerJson,
    LossCurveJson, OwnershipJson, ProposalJson, RunJson, SlashJson, StageAssignmentsJson,
    StepRecordJson, TrainerJson, ValidatorsJson,
};
use serde::{Deserialize, Serialize};
use weft_primitives::{AccountId, BlockNumber, Bytes, Hash, Header, Nonce};
use weft_runtime::support::{CommitmentId, Replica, RunId, StageIndex, Step};
use weft_runtime::EventRecord;

/// Error code: the extrinsic was rejected (bad signature, stale nonce, low balance, …).
pub const INVALID_TRANSACTION: i32 = 1010;
/// Error code: the transaction pool is full or already has the transaction.
pub const POOL_FULL: i32 = 1011;
/// `author_submit*`: the node cannot write its database, so it admits no transactions
/// until it can (`system_health.storageError` says why); send them to another node.
pub const STORAGE_FAILING: i32 = 1016;
/// Error code: the requested block is unknown.
pub const UNKNOWN_BLOCK: i32 = 4003;
/// Error code: the request is well-formed but cannot be served (e.g. bad storage key).
pub const BAD_REQUEST: i32 = 4000;
/// Error code: no run with this id was ever registered.
pub const UNKNOWN_RUN: i32 = 4004;
/// Error code: no audit with this id was ever opened.
pub const UNKNOWN_AUDIT: i32 = 4005;

/// A block as `chain_getBlock` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedBlock {
    /// The block.
    pub block: BlockJson,
    /// The finality proof, SCALE-encoded, if any.
    pub justification: Option<Bytes>,
}

/// A block with its extrinsics as SCALE hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockJson {
    /// The header.
    pub header: Header,
    /// Encoded extrinsics.
    pub extrinsics: Vec<Bytes>,
}

/// `chain_getFinalityProof`: why a block is final, checked by the node that serves it and
/// checkable by anyone (the `encoded` justification with the validator set of the parent
/// state, see `weft_finality::certificate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FinalityProof {
    /// The block.
    pub block: Hash,
    /// Its number.
    pub number: BlockNumber,
    /// The engine: `tmbf` (Tendermint commit certificate) or `dev0` (the dev author's
    /// signature).
    pub engine: String,
    /// The round the block was decided at (Tendermint).
    pub round: Option<u32>,
    /// The validators whose precommits are aggregated, in set order.
    pub signers: Vec<AccountId>,
    /// Their share of the set's voting power, in parts per billion.
    pub signed_power_ppb: u64,
    /// The BN254 aggregate signature (Tendermint) or the author's signature (dev).
    pub signature: Bytes,
    /// The SCALE-encoded justification as stored with the block.
    pub encoded: Bytes,
}

/// `system_health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Connected peers.
    pub peers: usize,
    /// Whether the node is catching up.
    pub is_syncing: bool,
    /// Whether the node expects peers (false for `--dev`).
    pub should_have_peers: bool,
    /// Why the node's last database write failed, while writes fail (disk full, I/O
    /// errors): it then produces no blocks and admits no transactions. `null` when healthy.
    #[serde(default)]
    pub storage_error: Option<String>,
}

/// `state_getReadProof`: the values at a block and a Merkle proof of each against the
/// header's state root (Jellyfish Merkle tree sparse proofs, SCALE-encoded).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadProof {
    /// The block.
    pub at: Hash,
    /// Its state root.
    pub state_root: Hash,
    /// One entry per requested key, in request order.
    pub proofs: Vec<StorageProof>,
}

/// One key's value and proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProof {
    /// The storage key.
    pub key: Bytes,
    /// Its value, if present.
    pub value: Option<Bytes>,
    /// The proof (borsh-encoded `jmt::proof::SparseMerkleProof<Blake3>`).
    pub proof: Bytes,
}

/// An account as `weft_account` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountJson {
    /// The account, SS58.
    pub account: AccountId,
    /// Next nonce.
    pub nonce: Nonce,
    /// Free balance, plancks, decimal string.
    pub free: String,
    /// Reserved balance, plancks, decimal string.
    pub reserved: String,
}

/// Where an extrinsic landed, as `weft_extrinsic` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtrinsicReceipt {
    /// The extrinsic hash.
    pub hash: Hash,
    /// The block that includes it.
    pub block_hash: Hash,
    /// That block's height.
    pub block_number: BlockNumber,
    /// Its position in the block.
    pub index: u32,
    /// Whether its call succeeded.
    pub success: bool,
    /// The error if it failed.
    pub error: Option<weft_primitives::DispatchError>,
    /// The events it emitted.
    pub events: Vec<EventRecord>,
}

/// The life of a submitted extrinsic (`author_submitAndWatchExtrinsic`), as in Substrate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TransactionStatus {
    /// Waiting for an earlier nonce.
    Future,
    /// In the pool, ready for the next block.
    Ready,
    /// Included in this block.
    InBlock(Hash),
    /// The including block is final.
    Finalized(Hash),
    /// Removed from the pool: it became invalid (e.g. its nonce was used by another).
    Invalid,
    /// Removed from the pool without being included (pool full, expired).
    Dropped,
}

/// The chain half of the Weft JSON-RPC interface: blocks, state, submission, the node
/// itself, and the account, events and receipts of the chain (`chain_*`, `state_*`,
/// `author_*`, `system_*`, `weft_account`, `weft_events`, `weft_extrinsic`).
#[rpc(server, client)]
pub trait ChainApi {
    /// The header of `hash`, or of the best block.
    #[method(name = "chain_getHeader")]
    async fn header(&self, hash: Option<Hash>) -> RpcResult<Option<Header>>;

    /// The block `hash`, or the best block.
    #[method(name = "chain_getBlock")]
    async fn block(&self, hash: Option<Hash>) -> RpcResult<Option<SignedBlock>>;

    /// The finality proof of block `hash` (default: the finalized head), verified by this
    /// node against the validator set of its parent state; `null` for an unknown block.
    #[method(name = "chain_getFinalityProof")]
    async fn finality_proof(&self, hash: Option<Hash>) -> RpcResult<Option<FinalityProof>>;

    /// The hash of block `number`, or of the best block.
    #[method(name = "chain_getBlockHash")]
    async fn block_hash(&self, number: Option<BlockNumber>) -> RpcResult<Option<Hash>>;

    /// The hash of the last finalized block.
    #[method(name = "chain_getFinalizedHead")]
    async fn finalized_head(&self) -> RpcResult<Hash>;

    /// New best headers as they are imported.
    #[subscription(name = "chain_subscribeNewHeads" => "chain_newHead", unsubscribe = "chain_unsubscribeNewHeads", item = Header)]
    async fn subscribe_new_heads(&self) -> jsonrpsee::core::SubscriptionResult;

    /// Newly finalized headers.
    #[subscription(name = "chain_subscribeFinalizedHeads" => "chain_finalizedHead", unsubscribe = "chain_unsubscribeFinalizedHeads", item = Header)]
    async fn subscribe_finalized_heads(&self) -> jsonrpsee::core::SubscriptionResult;

    /// The raw value under `key` at block `at` (default: best).
    #[method(name = "state_getStorage")]
    async fn storage(&self, key: Bytes, at: Option<Hash>) -> RpcResult<Option<Bytes>>;

    /// Values and Merkle proofs of `keys` against the state root of `at`.
    #[method(name = "state_getReadProof")]
    async fn read_proof(&self, keys: Vec<Bytes>, at: Option<Hash>) -> RpcResult<ReadProof>;

    /// Submits a SCALE-encoded extrinsic; returns its hash.
    #[method(name = "author_submitExtrinsic")]
    async fn submit_extrinsic(&self, extrinsic: Bytes) -> RpcResult<Hash>;

    /// Submits and follows an extrinsic through the pool and the chain.
    #[subscription(name = "author_submitAndWatchExtrinsic" => "author_extrinsicUpdate", unsubscribe = "author_unwatchExtrinsic", item = TransactionStatus)]
    async fn submit_and_watch_extrinsic(
        &self,
        extrinsic: Bytes,
    ) -> jsonrpsee::core::SubscriptionResult;

    /// Extrinsics waiting in the pool.
    #[method(name = "author_pendingExtrinsics")]
    async fn pending_extrinsics(&self) -> RpcResult<Vec<Bytes>>;

    /// Peers and sync state.
    #[method(name = "system_health")]
    async fn system_health(&self) -> RpcResult<Health>;

    /// The node implementation's name.
    #[method(name = "system_name")]
    async fn system_name(&self) -> RpcResult<String>;

    /// The node implementation's version.
    #[method(name = "system_version")]
    async fn system_version(&self) -> RpcResult<String>;

    /// The chain's name from the chain spec.
    #[method(name = "system_chain")]
    async fn system_chain(&self) -> RpcResult<String>;

    /// The chain spec's properties (tokenSymbol, tokenDecimals, ss58Format).
    #[method(name = "system_properties")]
    async fn system_properties(&self) -> RpcResult<serde_json::Value>;

    /// Connected peers.
    #[method(name = "system_peers")]
    async fn system_peers(&self) -> RpcResult<Vec<serde_json::Value>>;

    /// This node's libp2p peer id (Tendermint chains; empty on `--dev`).
    #[method(name = "system_localPeerId")]
    async fn system_local_peer_id(&self) -> RpcResult<String>;

    /// Dials a peer now (a multiaddress ending in `/p2p/<peer id>`). Unsafe: only served
    /// with `--rpc-methods unsafe` (the default on loopback).
    #[method(name = "system_addReservedPeer")]
    async fn system_add_reserved_peer(&self, addr: String) -> RpcResult<()>;

    /// An account's nonce and balances at `at` (default: best).
    #[method(name = "weft_account")]
    async fn account(&self, account: AccountId, at: Option<Hash>) -> RpcResult<AccountJson>;

    /// The events of block `at` (default: best), decoded.
    #[method(name = "weft_events")]
    async fn events(&self, at: Option<Hash>) -> RpcResult<Vec<EventRecord>>;

    /// Where an extrinsic landed and what it did, if it is in the chain.
    #[method(name = "weft_extrinsic")]
    async fn extrinsic(&self, hash: Hash) -> RpcResult<Option<ExtrinsicReceipt>>;
}

/// The protocol half of the Weft JSON-RPC interface: the `weft_*` methods over the protocol
/// pallets (staking, runs, stages, work, audits, ownership, credentials, governance, slashes,
/// epochs), each answering with the types of [`protocol`].
#[rpc(server, client)]
pub trait ProtocolApi {
    /// An account's staking ledger (active bond, unlocking chunks, roles, pending slashes) at
    /// `at`; `null` when it has never bonded (or withdrew everything).
    #[method(name = "weft_stakingLedger")]
    async fn staking_ledger(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Option<LedgerJson>>;

    /// The current epoch's active validator set and all validator candidates, with stake and
    /// BLS keys.
    #[method(name = "weft_validators")]
    async fn validators(&self, at: Option<Hash>) -> RpcResult<ValidatorsJson>;

    /// Registered trainers that are candidates or slot holders of a run not yet finished,
    /// sorted by account (the chain does not index trainers without a run; ask
    /// `weft_trainer` for one account).
    #[method(name = "weft_trainers")]
    async fn trainers(&self, at: Option<Hash>) -> RpcResult<Vec<TrainerJson>>;

    /// One trainer's registration (peer id, addresses, capacity), stake and slots; `null`
    /// when the account is not a registered trainer.
    #[method(name = "weft_trainer")]
    async fn trainer(&self, account: AccountId, at: Option<Hash>)
        -> RpcResult<Option<TrainerJson>>;

    /// A run: its specification, parameters and lifecycle. Error 4004 for an unknown run.
    #[method(name = "weft_run")]
    async fn run(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<RunJson>;

    /// Every run ever registered, by id.
    #[method(name = "weft_runs")]
    async fn runs(&self, at: Option<Hash>) -> RpcResult<Vec<RunJson>>;

    /// Who trains each (stage, replica) of a run (with peer id and addresses, so stages can
    /// find each other), each slot's next step, each stage's auditors and the run's
    /// candidates. Error 4004 for an unknown run.
    #[method(name = "weft_stageAssignments")]
    async fn stage_assignments(
        &self,
        run_id: RunId,
        at: Option<Hash>,
    ) -> RpcResult<StageAssignmentsJson>;

    /// The commitment of one step of one slot (the chain indexes them by step); `null` when
    /// the step was not committed. Error 4004 for an unknown run.
    #[method(name = "weft_commitment")]
    async fn commitment(
        &self,
        run_id: RunId,
        stage: StageIndex,
        replica: Replica,
        step: Step,
        at: Option<Hash>,
    ) -> RpcResult<Option<CommitmentJson>>;

    /// The audits of a run among the most recent [`protocol::SCAN_LIMIT`] commitments, newest
    /// first. Error 4004 for an unknown run.
    #[method(name = "weft_audits")]
    async fn audits(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<Vec<AuditJson>>;

    /// One audit: status, deadlines, auditors, attestations and certificate. Error 4005 for
    /// an unknown audit.
    #[method(name = "weft_audit")]
    async fn audit(&self, audit_id: CommitmentId, at: Option<Hash>) -> RpcResult<AuditJson>;

    /// A run's owners: contribution units, shares in parts per billion (summing to exactly
    /// 1 000 000 000 when there are owners) and credentials. Error 4004 for an unknown run.
    #[method(name = "weft_ownership")]
    async fn ownership(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<OwnershipJson>;

    /// An account's credentials and units, in one run or in every run where it has any.
    /// Error 4004 for an unknown run.
    #[method(name = "weft_credentials")]
    async fn credentials(
        &self,
        account: AccountId,
        run_id: Option<RunId>,
        at: Option<Hash>,
    ) -> RpcResult<CredentialsJson>;

    /// Governance proposals (the most recent [`protocol::SCAN_LIMIT`]), newest first, with
    /// votes and the current tally.
    #[method(name = "weft_proposals")]
    async fn proposals(&self, at: Option<Hash>) -> RpcResult<Vec<ProposalJson>>;

    /// Deferred slashes not yet applied or cancelled (among the most recent
    /// [`protocol::SCAN_LIMIT`] slash ids), by the block they apply in.
    #[method(name = "weft_slashes")]
    async fn slashes(&self, at: Option<Hash>) -> RpcResult<Vec<SlashJson>>;

    /// The epoch: its index, boundaries and the staking timing parameters.
    #[method(name = "weft_epoch")]
    async fn epoch(&self, at: Option<Hash>) -> RpcResult<EpochJson>;

    /// Slashes that applied (among the most recent [`protocol::SCAN_LIMIT`] slash ids), newest
    /// first, with what each burnt.
    #[method(name = "weft_appliedSlashes")]
    async fn applied_slashes(&self, at: Option<Hash>) -> RpcResult<Vec<AppliedSlashJson>>;

    /// The losses a run's last stage committed, a point per step and replica, from step
    /// `from` (default: the last [`protocol::SCAN_LIMIT`] steps), read through the chain's
    /// step index. Error 4004 for an unknown run.
    #[method(name = "weft_lossCurve")]
    async fn loss_curve(
        &self,
        run_id: RunId,
        from: Option<Step>,
        at: Option<Hash>,
    ) -> RpcResult<LossCurveJson>;

    /// The commitments an account made (among the most recent [`protocol::SCAN_LIMIT`]
    /// commitments), newest first, with their status and audit verdicts.
    #[method(name = "weft_commitmentsOf")]
    async fn commitments_of(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Vec<StepRecordJson>>;
}
