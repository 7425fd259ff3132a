//! The JSON-RPC server: HTTP and WebSocket on one port (jsonrpsee), implementing
//! [`weft_rpc_api::WeftApiServer`].
//!
//! Reads never block block production for long: they go straight to rocksdb through the
//! chain's read methods. Submissions are validated by the runtime before they enter the pool;
//! a rejection is an error with code 1010 and the reason in the message, and nothing is stored.
//!
//! The protocol methods (`weft_run`, `weft_stageAssignments`, …) read the pallets' typed
//! storage at the requested block and answer with the decoded types of
//! [`weft_rpc_api::protocol`]. The chain's storage has no iteration, so lists are built from
//! what the pallets index (active runs, candidates, slots, the validator set) or by scanning
//! the most recent [`SCAN_LIMIT`] ids downwards from the pallet's next id (commitments,
//! proposals, slashes); each read is one state lookup, so a request costs at most a few
//! thousand lookups.

use crate::chain::{Chain, ChainError, ChainEvent};
use crate::chain_spec::Properties;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolError};
use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::server::{PendingSubscriptionSink, Server, ServerConfig, ServerHandle, SubscriptionMessage};
use jsonrpsee::types::ErrorObjectOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use weft_primitives::{AccountId, BlockNumber, Bytes, Hash, Header};
use std::collections::BTreeSet;
use weft_primitives::storage::StateReader;
use weft_rpc_api::protocol::{
    bytes_to_text, peer_id_to_string, AuditJson, AuditStatus, CandidateJson, CommitmentJson, CredentialsJson,
    EpochJson, LedgerJson, OwnerJson, OwnershipJson, ProposalJson, RunCredentialsJson, RunJson, SlashJson, SlotJson,
    StageAssignmentsJson, StageJson, TrainerJson, UnlockChunkJson, ValidatorJson, ValidatorsJson, VoteJson,
    SCAN_LIMIT,
};
use weft_rpc_api::{
    AccountJson, BlockJson, ExtrinsicReceipt, Health, ReadProof, SignedBlock, StorageProof, TransactionStatus,
    WeftApiServer, BAD_REQUEST, INVALID_TRANSACTION, POOL_FULL, UNKNOWN_AUDIT, UNKNOWN_BLOCK, UNKNOWN_RUN,
};
use weft_runtime::support::{CommitmentId, Replica, RunId, StageIndex, Step};
use weft_runtime::{
    balances, governance, ownership, runs, stages, staking, system, work, EventRecord, Phase, RuntimeEvent,
};

/// Largest accepted request body.
pub const MAX_REQUEST_BYTES: u32 = 2 * 1024 * 1024;

/// The RPC handlers.
pub struct RpcImpl {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    properties: Properties,
    is_dev: bool,
}

fn internal(e: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(jsonrpsee::types::error::INTERNAL_ERROR_CODE, e.to_string(), None::<()>)
}

fn pool_error(e: PoolError) -> ErrorObjectOwned {
    let code = match e {
        PoolError::Full(_) | PoolError::AlreadyImported | PoolError::TooLowPriority => POOL_FULL,
        _ => INVALID_TRANSACTION,
    };
    ErrorObjectOwned::owned(code, e.to_string(), None::<()>)
}

fn chain_error(e: ChainError) -> ErrorObjectOwned {
    internal(e)
}

impl RpcImpl {
    /// Handlers over the node's parts.
    pub fn new(chain: Arc<Chain>, pool: Arc<Pool>, metrics: Arc<Metrics>, properties: Properties, is_dev: bool) -> Self {
        RpcImpl { chain, pool, metrics, properties, is_dev }
    }

    /// The header at `at`, or the best; an error for an unknown hash.
    fn resolve(&self, at: Option<Hash>) -> RpcResult<(Hash, Header)> {
        match at {
            None => {
                let heads = self.chain.heads();
                Ok((heads.best_hash, heads.best))
            }
            Some(hash) => match self.chain.header(&hash).map_err(chain_error)? {
                Some(h) => Ok((hash, h)),
                None => Err(ErrorObjectOwned::owned(UNKNOWN_BLOCK, format!("unknown block {hash}"), None::<()>)),
            },
        }
    }

    fn submit(&self, bytes: &Bytes, watcher: Option<mpsc::UnboundedSender<TransactionStatus>>) -> RpcResult<Hash> {
        let chain = self.chain.clone();
        let result = self.pool.submit(&bytes.0, |xt, len| chain.validate_transaction(xt, len), watcher);
        self.metrics.txpool_size.set(self.pool.len() as i64);
        match result {
            Ok(s) => {
                tracing::debug!(hash = %s.hash, ready = s.ready, "transaction admitted");
                Ok(s.hash)
            }
            Err(e) => {
                tracing::debug!(error = %e, "transaction rejected");
                Err(pool_error(e))
            }
        }
    }

    /// The state at `at` (default: best) and that block's number.
    fn view(&self, at: Option<Hash>) -> RpcResult<(crate::state::StateView<'_>, BlockNumber)> {
        let (_, header) = self.resolve(at)?;
        Ok((self.chain.state_at(header.number), header.number))
    }

    fn events_at(&self, number: BlockNumber) -> RpcResult<Vec<EventRecord>> {
        Ok(system::EVENTS.get(&self.chain.state_at(number)).map_err(internal)?.unwrap_or_default())
    }
}

#[async_trait]
impl WeftApiServer for RpcImpl {
    async fn header(&self, hash: Option<Hash>) -> RpcResult<Option<Header>> {
        self.metrics.rpc("chain_getHeader");
        match hash {
            None => Ok(Some(self.chain.heads().best)),
            Some(h) => self.chain.header(&h).map_err(chain_error),
        }
    }

    async fn block(&self, hash: Option<Hash>) -> RpcResult<Option<SignedBlock>> {
        self.metrics.rpc("chain_getBlock");
        let hash = hash.unwrap_or_else(|| self.chain.heads().best_hash);
        let Some((header, body, justification)) = self.chain.block(&hash).map_err(chain_error)? else {
            return Ok(None);
        };
        Ok(Some(SignedBlock {
            block: BlockJson { header, extrinsics: body.into_iter().map(Bytes).collect() },
            justification: justification.map(|j| Bytes(parity_scale_codec::Encode::encode(&j))),
        }))
    }

    async fn block_hash(&self, number: Option<BlockNumber>) -> RpcResult<Option<Hash>> {
        self.metrics.rpc("chain_getBlockHash");
        match number {
            None => Ok(Some(self.chain.heads().best_hash)),
            Some(n) => self.chain.hash_of(n).map_err(chain_error),
        }
    }

    async fn finalized_head(&self) -> RpcResult<Hash> {
        self.metrics.rpc("chain_getFinalizedHead");
        Ok(self.chain.heads().finalized_hash)
    }

    async fn subscribe_new_heads(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        self.metrics.rpc("chain_subscribeNewHeads");
        forward_heads(self.chain.clone(), pending, false).await
    }

    async fn subscribe_finalized_heads(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        self.metrics.rpc("chain_subscribeFinalizedHeads");
        forward_heads(self.chain.clone(), pending, true).await
    }

    async fn storage(&self, key: Bytes, at: Option<Hash>) -> RpcResult<Option<Bytes>> {
        self.metrics.rpc("state_getStorage");
        let (_, header) = self.resolve(at)?;
        use weft_primitives::storage::StateReader;
        Ok(self.chain.state_at(header.number).read(&key.0).map_err(internal)?.map(Bytes))
    }

    async fn read_proof(&self, keys: Vec<Bytes>, at: Option<Hash>) -> RpcResult<ReadProof> {
        self.metrics.rpc("state_getReadProof");
        if keys.len() > 1024 {
            return Err(ErrorObjectOwned::owned(BAD_REQUEST, "at most 1024 keys per proof", None::<()>));
        }
        let (hash, header) = self.resolve(at)?;
        let view = self.chain.state_at(header.number);
        let mut proofs = Vec::with_capacity(keys.len());
        for key in keys {
            let (value, proof) = view.prove(&key.0).map_err(internal)?;
            let proof = borsh::to_vec(&proof).map_err(internal)?;
            proofs.push(StorageProof { key, value: value.map(Bytes), proof: Bytes(proof) });
        }
        Ok(ReadProof { at: hash, state_root: header.state_root, proofs })
    }

    async fn submit_extrinsic(&self, extrinsic: Bytes) -> RpcResult<Hash> {
        self.metrics.rpc("author_submitExtrinsic");
        self.submit(&extrinsic, None)
    }

    async fn submit_and_watch_extrinsic(&self, pending: PendingSubscriptionSink, extrinsic: Bytes) -> SubscriptionResult {
        self.metrics.rpc("author_submitAndWatchExtrinsic");
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Err(e) = self.submit(&extrinsic, Some(tx)) {
            pending.reject(e).await;
            return Ok(());
        }
        let sink = pending.accept().await?;
        while let Some(status) = rx.recv().await {
            let last = matches!(
                status,
                TransactionStatus::Finalized(_) | TransactionStatus::Invalid | TransactionStatus::Dropped
            );
            let msg = to_message(&status)?;
            if sink.send(msg).await.is_err() || last {
                break;
            }
        }
        Ok(())
    }

    async fn pending_extrinsics(&self) -> RpcResult<Vec<Bytes>> {
        self.metrics.rpc("author_pendingExtrinsics");
        Ok(self.pool.pending().into_iter().map(Bytes).collect())
    }

    async fn system_health(&self) -> RpcResult<Health> {
        self.metrics.rpc("system_health");
        Ok(Health { peers: 0, is_syncing: false, should_have_peers: !self.is_dev })
    }

    async fn system_name(&self) -> RpcResult<String> {
        self.metrics.rpc("system_name");
        Ok("weft-node".into())
    }

    async fn system_version(&self) -> RpcResult<String> {
        self.metrics.rpc("system_version");
        Ok(env!("CARGO_PKG_VERSION").into())
    }

    async fn system_chain(&self) -> RpcResult<String> {
        self.metrics.rpc("system_chain");
        Ok(self.chain.name().to_string())
    }

    async fn system_properties(&self) -> RpcResult<serde_json::Value> {
        self.metrics.rpc("system_properties");
        serde_json::to_value(&self.properties).map_err(internal)
    }

    async fn system_peers(&self) -> RpcResult<Vec<serde_json::Value>> {
        self.metrics.rpc("system_peers");
        Ok(vec![])
    }

    async fn account(&self, account: AccountId, at: Option<Hash>) -> RpcResult<AccountJson> {
        self.metrics.rpc("weft_account");
        let (_, header) = self.resolve(at)?;
        let info = balances::account(&self.chain.state_at(header.number), &account).map_err(internal)?;
        Ok(AccountJson { account, nonce: info.nonce, free: info.free.to_string(), reserved: info.reserved.to_string() })
    }

    async fn events(&self, at: Option<Hash>) -> RpcResult<Vec<EventRecord>> {
        self.metrics.rpc("weft_events");
        let (_, header) = self.resolve(at)?;
        self.events_at(header.number)
    }

    async fn extrinsic(&self, hash: Hash) -> RpcResult<Option<ExtrinsicReceipt>> {
        self.metrics.rpc("weft_extrinsic");
        let Some((block_hash, index)) = self.chain.extrinsic_location(&hash).map_err(chain_error)? else {
            return Ok(None);
        };
        let (_, header) = self.resolve(Some(block_hash))?;
        let events: Vec<EventRecord> = self
            .events_at(header.number)?
            .into_iter()
            .filter(|e| e.phase == Phase::ApplyExtrinsic(index))
            .collect();
        let error = events.iter().find_map(|e| match &e.event {
            RuntimeEvent::System(system::Event::ExtrinsicFailed { error }) => Some(error.clone()),
            _ => None,
        });
        Ok(Some(ExtrinsicReceipt {
            hash,
            block_hash,
            block_number: header.number,
            index,
            success: error.is_none(),
            error,
            events,
        }))
    }
}

fn to_message(value: &impl serde::Serialize) -> Result<SubscriptionMessage, serde_json::Error> {
    Ok(SubscriptionMessage::from(serde_json::value::to_raw_value(value)?))
}

async fn forward_heads(chain: Arc<Chain>, pending: PendingSubscriptionSink, finalized_only: bool) -> SubscriptionResult {
    let mut rx = chain.subscribe();
    let sink = pending.accept().await?;
    // Start with the current head, as Substrate does.
    let heads = chain.heads();
    let first = if finalized_only { heads.finalized } else { heads.best };
    sink.send(to_message(&first)?).await?;
    loop {
        tokio::select! {
            _ = sink.closed() => break,
            event = rx.recv() => match event {
                Ok(ChainEvent::Imported { header, finalized, .. }) => {
                    if finalized_only && !finalized {
                        continue;
                    }
                    if sink.send(to_message(&header)?).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "head subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    Ok(())
}

/// Starts the server on `addr`.
pub async fn start(addr: SocketAddr, handlers: RpcImpl) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let config = ServerConfig::builder().max_request_body_size(MAX_REQUEST_BYTES).max_connections(256).build();
    let server = Server::builder().set_config(config).build(addr).await?;
    let local = server.local_addr()?;
    let handle = server.start(handlers.into_rpc());
    Ok((local, handle))
}
