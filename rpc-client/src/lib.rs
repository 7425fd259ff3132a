//! # weft-rpc-client
//!
//! A typed client for a Weft node (shared by the `weft` CLI and the trainer): connect over WebSocket, read accounts and blocks, and
//! sign, submit and follow extrinsics until they are in a block or final.
//!
//! [`Client::submit`] is the whole path a wallet takes:
//!
//! 1. read the genesis hash (`chain_getBlockHash(0)`), the best header (`chain_getHeader`) for
//!    the mortal era's birth block, and the signer's nonce (`weft_account`);
//! 2. sign an [`Extrinsic`] with [`UncheckedExtrinsic::new_signed`] and SCALE-encode it;
//! 3. send it with `author_submitAndWatchExtrinsic` and follow its [`TransactionStatus`]
//!    until [`WaitFor`] is satisfied;
//! 4. fetch where it landed and what it did (`weft_extrinsic`) into a [`Receipt`], with the
//!    fee taken from the `Balances::FeePaid` event.
//!
//! A node that refuses the extrinsic (bad signature, stale nonce, cannot pay the fee) answers
//! with a JSON-RPC error; that becomes [`ClientError::Rejected`] carrying the node's message.
//! An included extrinsic whose call failed is *not* an error of `submit` (the fee was paid
//! and the nonce used): the receipt says so, and [`Receipt::ensure_success`] turns it into
//! [`ClientError::DispatchFailed`].

use jsonrpsee::core::ClientError as RpcError;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use parity_scale_codec::Encode;
use serde::{Serialize, Serializer};
use std::time::Duration;
use weft_primitives::{
    AccountId, Balance, BlockNumber, Bytes, DispatchError, Era, Hash, Header, Keypair, Nonce,
    SigningContext, UncheckedExtrinsic,
};
use weft_rpc_api::protocol::{
    AppliedSlashJson, AuditJson, CommitmentJson, CredentialsJson, EpochJson, LedgerJson,
    LossCurveJson, OwnershipJson, ProposalJson, RunJson, SlashJson, StageAssignmentsJson,
    StepRecordJson, TrainerJson, ValidatorsJson,
};
use weft_rpc_api::{
    AccountJson, ChainApiClient, ExtrinsicReceipt, ProtocolApiClient, SignedBlock,
    TransactionStatus,
};
use weft_runtime::support::{CommitmentId, Replica, RunId, StageIndex, Step};
use weft_runtime::{EventRecord, Extrinsic, RuntimeCall, RuntimeEvent};

/// The default mortality of a transaction, in blocks.
pub const DEFAULT_MORTALITY: u64 = 64;
/// How long [`Client::submit`] follows an extrinsic by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for `weft_extrinsic` to know an extrinsic reported as included.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to ask for the receipt meanwhile.
const RECEIPT_POLL: Duration = Duration::from_millis(50);

/// Everything that can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to the node at {url}: {error}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why (shown in the message, so not chained as a source).
        error: RpcError,
    },
    /// The node answered a JSON-RPC call with an error.
    #[error("RPC call {method} failed: {message} (code {code})")]
    Node {
        /// The JSON-RPC method.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i32,
        /// The node's message.
        message: String,
    },
    /// A JSON-RPC call failed without an answer (connection, timeout, undecodable reply).
    #[error("RPC call {method} failed: {error}")]
    Rpc {
        /// The JSON-RPC method.
        method: &'static str,
        /// The error (shown in the message, so not chained as a source).
        error: RpcError,
    },
    /// The node refused the extrinsic when it was submitted.
    #[error("the node rejected the extrinsic: {message} (code {code})")]
    Rejected {
        /// The JSON-RPC error code (1010 invalid transaction, 1011 pool full / duplicate).
        code: i32,
        /// The node's reason, e.g. `bad signature`, `stale nonce: already used`.
        message: String,
    },
    /// The extrinsic was accepted, then became invalid and left the pool.
    #[error("extrinsic {0} became invalid and was removed from the pool")]
    Invalid(Hash),
    /// The extrinsic was accepted, then dropped without being included.
    #[error("extrinsic {0} was dropped from the pool without being included")]
    Dropped(Hash),
    /// The status subscription ended before the extrinsic reached the wanted state.
    #[error("the node closed the status subscription of extrinsic {0} before it was included")]
    SubscriptionClosed(Hash),
    /// A status notification could not be decoded.
    #[error("undecodable status notification: {0}")]
    Notification(serde_json::Error),
    /// The wanted state was not reached in time.
    #[error("extrinsic {hash} did not reach the wanted state within {timeout:?}")]
    Timeout {
        /// The extrinsic.
        hash: Hash,
        /// The limit.
        timeout: Duration,
    },
    /// The node reported the extrinsic as included but has no receipt for it.
    #[error("extrinsic {hash} was reported in block {block} but weft_extrinsic does not know it")]
    ReceiptMissing {
        /// The extrinsic.
        hash: Hash,
        /// The block named by the status.
        block: Hash,
    },
    /// The node does not have a block it should have (genesis, the best block).
    #[error("the node does not know {0}")]
    MissingBlock(String),
    /// The requested mortality is outside `1..=MAX_ERA_PERIOD`.
    #[error("mortality must be between 1 and {max} blocks, got {got}")]
    BadMortality {
        /// Requested period.
        got: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The extrinsic was included but its call failed; fee and nonce are spent.
    #[error("extrinsic {hash} was included in block #{block_number} but its call failed: {error}")]
    DispatchFailed {
        /// The extrinsic.
        hash: Hash,
        /// Where it was included.
        block_number: BlockNumber,
        /// The dispatch error's message.
        error: String,
    },
}

/// How far to follow a submitted extrinsic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitFor {
    /// Return once the node accepted it into its pool.
    None,
    /// Return once it is in a block.
    InBlock,
    /// Return once the block including it is final.
    #[default]
    Finalized,
}

/// How to build and follow an extrinsic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Tip for the block author, plancks.
    pub tip: Balance,
    /// Validity window in blocks after the best block; `None` for an immortal extrinsic.
    pub mortality: Option<u64>,
    /// How far to follow it.
    pub wait: WaitFor,
    /// The nonce to use; `None` reads the account's nonce from the best block.
    pub nonce: Option<Nonce>,
    /// Give up following after this long.
    pub timeout: Duration,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            tip: 0,
            mortality: Some(DEFAULT_MORTALITY),
            wait: WaitFor::Finalized,
            nonce: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// How far an extrinsic got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Accepted into the pool; not followed further.
    Submitted,
    /// In a block.
    InBlock,
    /// In a final block.
    Finalized,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Submitted => "submitted (in the pool)",
            Stage::InBlock => "in block",
            Stage::Finalized => "finalized",
        })
    }
}

/// What happened to a submitted extrinsic.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The extrinsic hash.
    pub hash: Hash,
    /// How far it got.
    pub stage: Stage,
    /// The signer.
    pub signer: AccountId,
    /// The signer's nonce used.
    pub nonce: Nonce,
    /// The including block's hash, once in a block.
    pub block_hash: Option<Hash>,
    /// The including block's height, once in a block.
    pub block_number: Option<BlockNumber>,
    /// Position in the block, once in a block.
    pub index: Option<u32>,
    /// Whether the call succeeded, once in a block.
    pub success: Option<bool>,
    /// The dispatch error, if the call failed.
    pub error: Option<DispatchError>,
    /// The fee burned, plancks (from `Balances::FeePaid`), once in a block.
    #[serde(serialize_with = "opt_balance_as_string")]
    pub fee: Option<Balance>,
    /// The tip paid to the author, plancks, once in a block.
    #[serde(serialize_with = "opt_balance_as_string")]
    pub tip: Option<Balance>,
    /// The events the extrinsic emitted.
    pub events: Vec<EventRecord>,
}

fn opt_balance_as_string<S: Serializer>(v: &Option<Balance>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&b.to_string()),
        None => s.serialize_none(),
    }
}

impl Receipt {
    fn submitted(hash: Hash, signer: AccountId, nonce: Nonce) -> Self {
        Receipt {
            hash,
            stage: Stage::Submitted,
            signer,
            nonce,
            block_hash: None,
            block_number: None,
            index: None,
            success: None,
            error: None,
            fee: None,
            tip: None,
            events: Vec::new(),
        }
    }

    fn include(&mut self, stage: Stage, receipt: ExtrinsicReceipt) {
        let fee_paid = receipt.events.iter().find_map(|r| match &r.event {
            RuntimeEvent::Balances(weft_runtime::balances::Event::FeePaid { who, fee, tip })
                if *who == self.signer =>
            {
                Some((*fee, *tip))
            }
            _ => None,
        });
        self.stage = stage;
        self.block_hash = Some(receipt.block_hash);
        self.block_number = Some(receipt.block_number);
        self.index = Some(receipt.index);
        self.success = Some(receipt.success);
        self.error = receipt.error;
        self.fee = fee_paid.map(|(fee, _)| fee);
        self.tip = fee_paid.map(|(_, tip)| tip);
        self.events = receipt.events;
    }

    /// Whether the extrinsic is known to have failed (included, call failed).
    pub fn failed(&self) -> bool {
        self.success == Some(false)
    }

    /// `Err(DispatchFailed)` if the call failed, the receipt otherwise.
    pub fn ensure_success(self) -> Result<Self, ClientError> {
        if self.failed() {
            return Err(ClientError::DispatchFailed {
                hash: self.hash,
                block_number: self.block_number.unwrap_or_default(),
                error: self
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_else(|| "unknown dispatch error".to_string()),
            });
        }
        Ok(self)
    }
}

/// A connection to a node.
#[derive(Debug)]
pub struct Client {
    rpc: WsClient,
}

fn rpc_err(method: &'static str) -> impl FnOnce(RpcError) -> ClientError {
    move |error| match error {
        RpcError::Call(obj) => ClientError::Node {
            method,
            code: obj.code(),
            message: obj.message().to_string(),
        },
        error => ClientError::Rpc { method, error },
    }
}

/// Turns an error answer to a submission into [`ClientError::Rejected`].
fn submission_err(method: &'static str) -> impl FnOnce(RpcError) -> ClientError {
    move |source| match source {
        RpcError::Call(obj) => ClientError::Rejected {
            code: obj.code(),
            message: obj.message().to_string(),
        },
        error => ClientError::Rpc { method, error },
    }
}

impl Client {
    /// Connects to the node at `url` (`ws://host:port`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let rpc = WsClientBuilder::default()
            .request_timeout(Duration::from_secs(60))
            .build(url)
            .await
            .map_err(|error| ClientError::Connect {
                url: url.to_string(),
                error,
            })?;
        Ok(Client { rpc })
    }

    /// The underlying JSON-RPC client, for calls this type does not wrap
    /// (it implements [`ChainApiClient`] and [`ProtocolApiClient`]).
    pub fn rpc(&self) -> &WsClient {
        &self.rpc
    }

    /// The genesis hash.
    pub async fn genesis_hash(&self) -> Result<Hash, ClientError> {
        self.rpc
            .block_hash(Some(0))
            .await
            .map_err(rpc_err("chain_getBlockHash"))?
            .ok_or_else(|| ClientError::MissingBlock("block 0".into()))
    }

    /// The best header.
    pub async fn best_header(&self) -> Result<Header, ClientError> {
        self.rpc
            .header(None)
            .await
            .map_err(rpc_err("chain_getHeader"))?
            .ok_or_else(|| ClientError::MissingBlock("the best block".into()))
    }

    /// The hash of block `number` on the best chain, if there is one.
    pub async fn block_hash(&self, number: BlockNumber) -> Result<Option<Hash>, ClientError> {
        self.rpc
            .block_hash(Some(number))
            .await
            .map_err(rpc_err("chain_getBlockHash"))
    }

    /// The hash of the last finalized block.
    pub async fn finalized_head(&self) -> Result<Hash, ClientError> {
        self.rpc
            .finalized_head()
            .await
            .map_err(rpc_err("chain_getFinalizedHead"))
    }

    /// The header of block `hash`, if the node has it.
    pub async fn header(&self, hash: Hash) -> Result<Option<Header>, ClientError> {
        self.rpc
            .header(Some(hash))
            .await
            .map_err(rpc_err("chain_getHeader"))
    }

    /// The block `hash` with its encoded extrinsics, if the node has it.
    pub async fn block(&self, hash: Hash) -> Result<Option<SignedBlock>, ClientError> {
        self.rpc
            .block(Some(hash))
            .await
            .map_err(rpc_err("chain_getBlock"))
    }

    /// The decoded events of block `at` (default: best block).
    pub async fn events(&self, at: Option<Hash>) -> Result<Vec<EventRecord>, ClientError> {
        self.rpc.events(at).await.map_err(rpc_err("weft_events"))
    }

    /// An account's nonce and balances at `at` (default: best block).
    pub async fn account(
        &self,
        who: AccountId,
        at: Option<Hash>,
    ) -> Result<AccountJson, ClientError> {
        self.rpc
            .account(who, at)
            .await
            .map_err(rpc_err("weft_account"))
    }

    /// `weft_stakingLedger`: the staking ledger of `who`, if bonded.
    pub async fn staking_ledger(
        &self,
        who: AccountId,
        at: Option<Hash>,
    ) -> Result<Option<LedgerJson>, ClientError> {
        self.rpc
            .staking_ledger(who, at)
            .await
            .map_err(rpc_err("weft_stakingLedger"))
    }

    /// `weft_validators`: the active set and the candidates.
    pub async fn validators(&self, at: Option<Hash>) -> Result<ValidatorsJson, ClientError> {
        self.rpc
            .validators(at)
            .await
            .map_err(rpc_err("weft_validators"))
    }

    /// `weft_trainers`: trainers that joined or serve a run.
    pub async fn trainers(&self, at: Option<Hash>) -> Result<Vec<TrainerJson>, ClientError> {
        self.rpc
            .trainers(at)
            .await
            .map_err(rpc_err("weft_trainers"))
    }

    /// `weft_trainer`: one trainer's registration, if registered.
    pub async fn trainer(
        &self,
        who: AccountId,
        at: Option<Hash>,
    ) -> Result<Option<TrainerJson>, ClientError> {
        self.rpc
            .trainer(who, at)
            .await
            .map_err(rpc_err("weft_trainer"))
    }

    /// `weft_run`.
    pub async fn run(&self, id: RunId, at: Option<Hash>) -> Result<RunJson, ClientError> {
        self.rpc.run(id, at).await.map_err(rpc_err("weft_run"))
    }

    /// `weft_runs`.
    pub async fn runs(&self, at: Option<Hash>) -> Result<Vec<RunJson>, ClientError> {
        self.rpc.runs(at).await.map_err(rpc_err("weft_runs"))
    }

    /// `weft_stageAssignments`.
    pub async fn stage_assignments(
        &self,
        id: RunId,
        at: Option<Hash>,
    ) -> Result<StageAssignmentsJson, ClientError> {
        self.rpc
            .stage_assignments(id, at)
            .await
            .map_err(rpc_err("weft_stageAssignments"))
    }

    /// `weft_commitment`.
    pub async fn commitment(
        &self,
        run: RunId,
        stage: StageIndex,
        replica: Replica,
        step: Step,
        at: Option<Hash>,
    ) -> Result<Option<CommitmentJson>, ClientError> {
        self.rpc
            .commitment(run, stage, replica, step, at)
            .await
            .map_err(rpc_err("weft_commitment"))
    }

    /// `weft_audits`.
    pub async fn audits(
        &self,
        run: RunId,
        at: Option<Hash>,
    ) -> Result<Vec<AuditJson>, ClientError> {
        self.rpc
            .audits(run, at)
            .await
            .map_err(rpc_err("weft_audits"))
    }

    /// `weft_audit`.
    pub async fn audit(
        &self,
        id: CommitmentId,
        at: Option<Hash>,
    ) -> Result<AuditJson, ClientError> {
        self.rpc.audit(id, at).await.map_err(rpc_err("weft_audit"))
    }

    /// `weft_ownership`.
    pub async fn ownership(
        &self,
        run: RunId,
        at: Option<Hash>,
    ) -> Result<OwnershipJson, ClientError> {
        self.rpc
            .ownership(run, at)
            .await
            .map_err(rpc_err("weft_ownership"))
    }

    /// `weft_credentials`.
    pub async fn credentials(
        &self,
        who: AccountId,
        run: Option<RunId>,
        at: Option<Hash>,
    ) -> Result<CredentialsJson, ClientError> {
        self.rpc
            .credentials(who, run, at)
            .await
            .map_err(rpc_err("weft_credentials"))
    }

    /// `weft_proposals`.
    pub async fn proposals(&self, at: Option<Hash>) -> Result<Vec<ProposalJson>, ClientError> {
        self.rpc
            .proposals(at)
            .await
            .map_err(rpc_err("weft_proposals"))
    }

    /// `weft_slashes`.
    pub async fn slashes(&self, at: Option<Hash>) -> Result<Vec<SlashJson>, ClientError> {
        self.rpc.slashes(at).await.map_err(rpc_err("weft_slashes"))
    }

    /// `weft_appliedSlashes`.
    pub async fn applied_slashes(
        &self,
        at: Option<Hash>,
    ) -> Result<Vec<AppliedSlashJson>, ClientError> {
        self.rpc
            .applied_slashes(at)
            .await
            .map_err(rpc_err("weft_appliedSlashes"))
    }

    /// `weft_lossCurve`.
    pub async fn loss_curve(
        &self,
        run: RunId,
        from: Option<Step>,
        at: Option<Hash>,
    ) -> Result<LossCurveJson, ClientError> {
        self.rpc
            .loss_curve(run, from, at)
            .await
            .map_err(rpc_err("weft_lossCurve"))
    }

    /// `weft_commitmentsOf`.
    pub async fn commitments_of(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> Result<Vec<StepRecordJson>, ClientError> {
        self.rpc
            .commitments_of(account, at)
            .await
            .map_err(rpc_err("weft_commitmentsOf"))
    }

    /// `weft_epoch`.
    pub async fn epoch(&self, at: Option<Hash>) -> Result<EpochJson, ClientError> {
        self.rpc.epoch(at).await.map_err(rpc_err("weft_epoch"))
    }

    /// Builds and signs an extrinsic for `call` against the node's current chain: the genesis
    /// hash, the best block as the era's birth, and the signer's nonce (unless given).
    pub async fn sign(
        &self,
        signer: &Keypair,
        call: RuntimeCall,
        opts: &SubmitOptions,
    ) -> Result<Extrinsic, ClientError> {
        let genesis_hash = self.genesis_hash().await?;
        let (era, birth_hash) = match opts.mortality {
            None => (Era::Immortal, genesis_hash),
            Some(period) => {
                let max = weft_runtime::limits::MAX_ERA_PERIOD;
                if period == 0 || period > max {
                    return Err(ClientError::BadMortality { got: period, max });
                }
                let best = self.best_header().await?;
                (
                    Era::Mortal {
                        birth: best.number,
                        period,
                    },
                    best.hash(),
                )
            }
        };
        let nonce = match opts.nonce {
            Some(n) => n,
            None => self.account(signer.account_id(), None).await?.nonce,
        };
        let ctx = SigningContext {
            genesis_hash,
            birth_hash,
        };
        Ok(UncheckedExtrinsic::new_signed(
            call, signer, nonce, opts.tip, era, ctx,
        ))
    }

    /// Signs `call` with `signer`, submits it and follows it as `opts` says.
    pub async fn submit(
        &self,
        signer: &Keypair,
        call: RuntimeCall,
        opts: &SubmitOptions,
    ) -> Result<Receipt, ClientError> {
        let xt = self.sign(signer, call, opts).await?;
        self.submit_extrinsic(&xt, opts.wait, opts.timeout).await
    }

    /// Submits an already signed extrinsic and follows it until `wait` is satisfied (or
    /// `timeout` passes).
    pub async fn submit_extrinsic(
        &self,
        xt: &Extrinsic,
        wait: WaitFor,
        timeout: Duration,
    ) -> Result<Receipt, ClientError> {
        let bytes = Bytes(xt.encode());
        let hash = xt.hash();
        let mut receipt = Receipt::submitted(hash, xt.signer, xt.nonce);
        if wait == WaitFor::None {
            let node_hash = self
                .rpc
                .submit_extrinsic(bytes)
                .await
                .map_err(submission_err("author_submitExtrinsic"))?;
            receipt.hash = node_hash;
            return Ok(receipt);
        }
        let mut sub = self
            .rpc
            .submit_and_watch_extrinsic(bytes)
            .await
            .map_err(submission_err("author_submitAndWatchExtrinsic"))?;
        let follow = async {
            loop {
                let status = match sub.next().await {
                    None => return Err(ClientError::SubscriptionClosed(hash)),
                    Some(Err(e)) => return Err(ClientError::Notification(e)),
                    Some(Ok(status)) => status,
                };
                match status {
                    TransactionStatus::Future | TransactionStatus::Ready => {}
                    TransactionStatus::InBlock(block) if wait == WaitFor::InBlock => {
                        return Ok((Stage::InBlock, block));
                    }
                    TransactionStatus::InBlock(_) => {}
                    TransactionStatus::Finalized(block) => return Ok((Stage::Finalized, block)),
                    TransactionStatus::Invalid => return Err(ClientError::Invalid(hash)),
                    TransactionStatus::Dropped => return Err(ClientError::Dropped(hash)),
                }
            }
        };
        let (stage, block) = tokio::time::timeout(timeout, follow)
            .await
            .map_err(|_| ClientError::Timeout { hash, timeout })??;
        // Best effort: the node drops the subscription anyway once the connection closes.
        let _ = sub.unsubscribe().await;
        let included = self.wait_for_receipt(hash, block).await?;
        receipt.include(stage, included);
        Ok(receipt)
    }

    /// `weft_extrinsic(hash)`, retried briefly: the status notification may come before the
    /// node's extrinsic index is updated.
    async fn wait_for_receipt(
        &self,
        hash: Hash,
        block: Hash,
    ) -> Result<ExtrinsicReceipt, ClientError> {
        let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
        loop {
            if let Some(r) = self
                .rpc
                .extrinsic(hash)
                .await
                .map_err(rpc_err("weft_extrinsic"))?
            {
                return Ok(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::ReceiptMissing { hash, block });
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }
}
