//! The chain methods ([`ChainApiServer`]): headers, blocks and their subscriptions, raw
//! storage and read proofs, extrinsic submission (plain and watched) and the pool, the
//! node's `system_*` identity, and an account's balances, a block's events and an
//! extrinsic's receipt.

use super::{chain_error, internal, to_message, RpcImpl};
use crate::chain::{Chain, ChainEvent};
use crate::pool::PoolError;
use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::server::PendingSubscriptionSink;
use jsonrpsee::types::ErrorObjectOwned;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use weft_primitives::{AccountId, BlockNumber, Bytes, Hash, Header};
use weft_rpc_api::FinalityProof;
use weft_rpc_api::{
    AccountJson, BlockJson, ChainApiServer, ExtrinsicReceipt, Health, ReadProof, SignedBlock,
    StorageProof, TransactionStatus, BAD_REQUEST, INVALID_TRANSACTION, POOL_FULL, STORAGE_FAILING,
};
use weft_runtime::{balances, system, EventRecord, Phase, RuntimeEvent};

fn pool_error(e: PoolError) -> ErrorObjectOwned {
    let code = match e {
        PoolError::Full(_)
        | PoolError::AlreadyImported
        | PoolError::TooLowPriority
        | PoolError::SenderQuota(_) => POOL_FULL,
        _ => INVALID_TRANSACTION,
    };
    ErrorObjectOwned::owned(code, e.to_string(), None::<()>)
}

impl RpcImpl {
    /// Validates `bytes` and admits them to the pool, reporting its status to `watcher`.
    fn submit(
        &self,
        bytes: &Bytes,
        watcher: Option<mpsc::UnboundedSender<TransactionStatus>>,
    ) -> RpcResult<Hash> {
        if let Some(error) = self.chain.db().storage_error() {
            return Err(ErrorObjectOwned::owned(
                STORAGE_FAILING,
                format!("this node cannot use its database ({error}); it admits no transactions until it can: send them to another node"),
                None::<()>,
            ));
        }
        let chain = self.chain.clone();
        let result = self.pool.submit(
            &bytes.0,
            |xt, len| chain.validate_transaction(xt, len),
            watcher,
        );
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
}

#[async_trait]
impl ChainApiServer for RpcImpl {
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
        let Some((header, body, justification)) = self.chain.block(&hash).map_err(chain_error)?
        else {
            return Ok(None);
        };
        Ok(Some(SignedBlock {
            block: BlockJson {
                header,
                extrinsics: body.into_iter().map(Bytes).collect(),
            },
            justification: justification.map(|j| Bytes(parity_scale_codec::Encode::encode(&j))),
        }))
    }

    async fn finality_proof(&self, hash: Option<Hash>) -> RpcResult<Option<FinalityProof>> {
        self.metrics.rpc("chain_getFinalityProof");
        let hash = hash.unwrap_or_else(|| self.chain.heads().finalized_hash);
        let Some((header, _, justification)) = self.chain.block(&hash).map_err(chain_error)? else {
            return Ok(None);
        };
        let Some(justification) = justification else {
            return Ok(None);
        };
        crate::bft::proof::describe(&self.chain, &header, &justification)
            .map(Some)
            .map_err(chain_error)
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

    async fn subscribe_finalized_heads(
        &self,
        pending: PendingSubscriptionSink,
    ) -> SubscriptionResult {
        self.metrics.rpc("chain_subscribeFinalizedHeads");
        forward_heads(self.chain.clone(), pending, true).await
    }

    async fn storage(&self, key: Bytes, at: Option<Hash>) -> RpcResult<Option<Bytes>> {
        self.metrics.rpc("state_getStorage");
        let (_, header) = self.resolve(at)?;
        use weft_primitives::storage::StateReader;
        Ok(self
            .chain
            .state_at(header.number)
            .read(&key.0)
            .map_err(internal)?
            .map(Bytes))
    }

    async fn read_proof(&self, keys: Vec<Bytes>, at: Option<Hash>) -> RpcResult<ReadProof> {
        self.metrics.rpc("state_getReadProof");
        if keys.len() > 1024 {
            return Err(ErrorObjectOwned::owned(
                BAD_REQUEST,
                "at most 1024 keys per proof",
                None::<()>,
            ));
        }
        let (hash, header) = self.resolve(at)?;
        let view = self.chain.state_at(header.number);
        let mut proofs = Vec::with_capacity(keys.len());
        for key in keys {
            let (value, proof) = view.prove(&key.0).map_err(internal)?;
            let proof = borsh::to_vec(&proof).map_err(internal)?;
            proofs.push(StorageProof {
                key,
                value: value.map(Bytes),
                proof: Bytes(proof),
            });
        }
        Ok(ReadProof {
            at: hash,
            state_root: header.state_root,
            proofs,
        })
    }

    async fn submit_extrinsic(&self, extrinsic: Bytes) -> RpcResult<Hash> {
        self.metrics.rpc("author_submitExtrinsic");
        self.submit(&extrinsic, None)
    }

    async fn submit_and_watch_extrinsic(
        &self,
        pending: PendingSubscriptionSink,
        extrinsic: Bytes,
    ) -> SubscriptionResult {
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
                TransactionStatus::Finalized(_)
                    | TransactionStatus::Invalid
                    | TransactionStatus::Dropped
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
        let net = self.network.snapshot();
        Ok(Health {
            peers: net.peers.len(),
            is_syncing: net.is_syncing,
            should_have_peers: !self.is_dev,
            storage_error: self.chain.db().storage_error(),
        })
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
        self.network
            .snapshot()
            .peers
            .iter()
            .map(|p| serde_json::to_value(p).map_err(internal))
            .collect()
    }

    async fn system_local_peer_id(&self) -> RpcResult<String> {
        self.metrics.rpc("system_localPeerId");
        Ok(self.network.snapshot().local_peer_id)
    }

    async fn system_add_reserved_peer(&self, addr: String) -> RpcResult<()> {
        self.metrics.rpc("system_addReservedPeer");
        let bad = |m: String| ErrorObjectOwned::owned(weft_rpc_api::BAD_REQUEST, m, None::<()>);
        let multiaddr: weft_node_net::Multiaddr = addr
            .parse()
            .map_err(|e| bad(format!("{addr:?} is not a multiaddress: {e}")))?;
        let Some(net) = self.network.handle() else {
            return Err(bad("this node has no peer-to-peer network (--dev)".into()));
        };
        net.add_peer(multiaddr)
            .await
            .map_err(|e| bad(e.to_string()))
    }

    async fn account(&self, account: AccountId, at: Option<Hash>) -> RpcResult<AccountJson> {
        self.metrics.rpc("weft_account");
        let (_, header) = self.resolve(at)?;
        let info =
            balances::account(&self.chain.state_at(header.number), &account).map_err(internal)?;
        Ok(AccountJson {
            account,
            nonce: info.nonce,
            free: info.free.to_string(),
            reserved: info.reserved.to_string(),
        })
    }

    async fn events(&self, at: Option<Hash>) -> RpcResult<Vec<EventRecord>> {
        self.metrics.rpc("weft_events");
        let (_, header) = self.resolve(at)?;
        self.events_at(header.number)
    }

    async fn extrinsic(&self, hash: Hash) -> RpcResult<Option<ExtrinsicReceipt>> {
        self.metrics.rpc("weft_extrinsic");
        let Some((block_hash, index)) =
            self.chain.extrinsic_location(&hash).map_err(chain_error)?
        else {
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

async fn forward_heads(
    chain: Arc<Chain>,
    pending: PendingSubscriptionSink,
    finalized_only: bool,
) -> SubscriptionResult {
    let mut rx = chain.subscribe();
    let sink = pending.accept().await?;
    // Start with the current head, as Substrate does.
    let heads = chain.heads();
    let first = if finalized_only {
        heads.finalized
    } else {
        heads.best
    };
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
