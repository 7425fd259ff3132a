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
use jsonrpsee::server::{
    PendingSubscriptionSink, Server, ServerConfig, ServerHandle, SubscriptionMessage,
};
use jsonrpsee::types::ErrorObjectOwned;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use weft_primitives::storage::StateReader;
use weft_primitives::{AccountId, BlockNumber, Bytes, Hash, Header};
use weft_rpc_api::protocol::{
    bytes_to_text, peer_id_to_string, AuditJson, AuditStatus, CandidateJson, CommitmentJson,
    CredentialsJson, EpochJson, LedgerJson, OwnerJson, OwnershipJson, ProposalJson,
    RunCredentialsJson, RunJson, SlashJson, SlotJson, StageAssignmentsJson, StageJson, TrainerJson,
    UnlockChunkJson, ValidatorJson, ValidatorsJson, VoteJson, SCAN_LIMIT,
};
use weft_rpc_api::{
    AccountJson, BlockJson, ExtrinsicReceipt, Health, ReadProof, SignedBlock, StorageProof,
    TransactionStatus, WeftApiServer, BAD_REQUEST, INVALID_TRANSACTION, POOL_FULL, UNKNOWN_AUDIT,
    UNKNOWN_BLOCK, UNKNOWN_RUN,
};
use weft_runtime::support::{CommitmentId, Replica, RunId, StageIndex, Step};
use weft_runtime::{
    balances, governance, ownership, runs, stages, staking, system, work, EventRecord, Phase,
    RuntimeEvent,
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
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        e.to_string(),
        None::<()>,
    )
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
    pub fn new(
        chain: Arc<Chain>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        properties: Properties,
        is_dev: bool,
    ) -> Self {
        RpcImpl {
            chain,
            pool,
            metrics,
            properties,
            is_dev,
        }
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
                None => Err(ErrorObjectOwned::owned(
                    UNKNOWN_BLOCK,
                    format!("unknown block {hash}"),
                    None::<()>,
                )),
            },
        }
    }

    fn submit(
        &self,
        bytes: &Bytes,
        watcher: Option<mpsc::UnboundedSender<TransactionStatus>>,
    ) -> RpcResult<Hash> {
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

    /// The state at `at` (default: best) and that block's number.
    fn view(&self, at: Option<Hash>) -> RpcResult<(crate::state::StateView<'_>, BlockNumber)> {
        let (_, header) = self.resolve(at)?;
        Ok((self.chain.state_at(header.number), header.number))
    }

    fn events_at(&self, number: BlockNumber) -> RpcResult<Vec<EventRecord>> {
        Ok(system::EVENTS
            .get(&self.chain.state_at(number))
            .map_err(internal)?
            .unwrap_or_default())
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
        Ok(Health {
            peers: 0,
            is_syncing: false,
            should_have_peers: !self.is_dev,
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
        Ok(vec![])
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

    async fn staking_ledger(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Option<LedgerJson>> {
        self.metrics.rpc("weft_stakingLedger");
        let (s, _) = self.view(at)?;
        ledger_json(&s, &account)
    }

    async fn validators(&self, at: Option<Hash>) -> RpcResult<ValidatorsJson> {
        self.metrics.rpc("weft_validators");
        let (s, _) = self.view(at)?;
        let set = staking::active_set(&s).map_err(internal)?;
        let active_stake: u128 = set.iter().fold(0u128, |t, v| t.saturating_add(v.stake));
        let mut candidates = Vec::new();
        for who in staking::CANDIDATES
            .get(&s)
            .map_err(internal)?
            .unwrap_or_default()
        {
            candidates.push(CandidateJson {
                account: who,
                stake: staking::active_stake(&s, &who)
                    .map_err(internal)?
                    .to_string(),
                bls_key: staking::VALIDATORS
                    .get(&s, &who)
                    .map_err(internal)?
                    .map(|v| v.bls_key),
                in_active_set: set.iter().any(|v| v.account == who),
            });
        }
        Ok(ValidatorsJson {
            epoch: staking::current_epoch(&s).map_err(internal)?,
            active: set.iter().map(validator_json).collect(),
            active_stake: active_stake.to_string(),
            candidates,
        })
    }

    async fn trainers(&self, at: Option<Hash>) -> RpcResult<Vec<TrainerJson>> {
        self.metrics.rpc("weft_trainers");
        let (s, _) = self.view(at)?;
        let mut who = BTreeSet::new();
        for run in runs::active_runs(&s).map_err(internal)? {
            who.extend(stages::candidates(&s, run).map_err(internal)?);
            if let Some(r) = runs::run(&s, run).map_err(internal)? {
                for st in 0..r.stages {
                    for rep in 0..r.replicas {
                        who.extend(stages::slot(&s, run, st, rep).map_err(internal)?);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(who.len());
        for a in who {
            out.extend(trainer_json(&s, &a)?);
        }
        Ok(out)
    }

    async fn trainer(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Option<TrainerJson>> {
        self.metrics.rpc("weft_trainer");
        let (s, _) = self.view(at)?;
        trainer_json(&s, &account)
    }

    async fn run(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<RunJson> {
        self.metrics.rpc("weft_run");
        let (s, _) = self.view(at)?;
        Ok(run_json(run_id, load_run(&s, run_id)?))
    }

    async fn runs(&self, at: Option<Hash>) -> RpcResult<Vec<RunJson>> {
        self.metrics.rpc("weft_runs");
        let (s, _) = self.view(at)?;
        let next = runs::NEXT_RUN_ID.get(&s).map_err(internal)?.unwrap_or(0);
        let first = next.saturating_sub(SCAN_LIMIT.min(RunId::MAX as u64) as RunId);
        let mut out = Vec::new();
        for id in first..next {
            if let Some(r) = runs::run(&s, id).map_err(internal)? {
                out.push(run_json(id, r));
            }
        }
        Ok(out)
    }

    async fn stage_assignments(
        &self,
        run_id: RunId,
        at: Option<Hash>,
    ) -> RpcResult<StageAssignmentsJson> {
        self.metrics.rpc("weft_stageAssignments");
        let (s, _) = self.view(at)?;
        let r = load_run(&s, run_id)?;
        let mut stage_list = Vec::with_capacity(r.stages as usize);
        for st in 0..r.stages {
            let mut replicas = Vec::with_capacity(r.replicas as usize);
            for rep in 0..r.replicas {
                let trainer = stages::slot(&s, run_id, st, rep).map_err(internal)?;
                let info = match &trainer {
                    Some(t) => staking::trainer(&s, t).map_err(internal)?,
                    None => None,
                };
                replicas.push(SlotJson {
                    replica: rep,
                    trainer,
                    peer_id: info.as_ref().map(|i| peer_id_to_string(&i.peer_id)),
                    addrs: info
                        .map(|i| i.addrs.iter().map(|a| bytes_to_text(a)).collect())
                        .unwrap_or_default(),
                    next_step: work::next_step(&s, run_id, st, rep).map_err(internal)?,
                });
            }
            stage_list.push(StageJson {
                stage: st,
                replicas,
                auditors: stages::auditors(&s, run_id, st).map_err(internal)?,
            });
        }
        Ok(StageAssignmentsJson {
            run_id,
            status: r.status,
            paused: r.paused,
            epoch: staking::current_epoch(&s).map_err(internal)?,
            stages: stage_list,
            candidates: stages::candidates(&s, run_id).map_err(internal)?,
        })
    }

    async fn commitment(
        &self,
        run_id: RunId,
        stage: StageIndex,
        replica: Replica,
        step: Step,
        at: Option<Hash>,
    ) -> RpcResult<Option<CommitmentJson>> {
        self.metrics.rpc("weft_commitment");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        if step >= work::next_step(&s, run_id, stage, replica).map_err(internal)? {
            return Ok(None);
        }
        for id in recent_ids(work::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0)) {
            if let Some(c) = work::commitment(&s, id).map_err(internal)? {
                if (c.run, c.stage, c.replica, c.step) == (run_id, stage, replica, step) {
                    return Ok(Some(commitment_json(id, c)));
                }
            }
        }
        Ok(None)
    }

    async fn audits(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<Vec<AuditJson>> {
        self.metrics.rpc("weft_audits");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        let mut out = Vec::new();
        for id in recent_ids(work::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0)) {
            let Some(c) = work::commitment(&s, id).map_err(internal)? else {
                continue;
            };
            if c.run != run_id || c.status == work::CommitStatus::Committed {
                continue;
            }
            if let Some(a) = work::audit(&s, id).map_err(internal)? {
                out.push(audit_json(id, c, a));
            }
        }
        Ok(out)
    }

    async fn audit(&self, audit_id: CommitmentId, at: Option<Hash>) -> RpcResult<AuditJson> {
        self.metrics.rpc("weft_audit");
        let (s, _) = self.view(at)?;
        let unknown = || {
            ErrorObjectOwned::owned(
                UNKNOWN_AUDIT,
                format!("unknown audit {audit_id}"),
                None::<()>,
            )
        };
        let a = work::audit(&s, audit_id)
            .map_err(internal)?
            .ok_or_else(unknown)?;
        let c = work::commitment(&s, audit_id)
            .map_err(internal)?
            .ok_or_else(unknown)?;
        Ok(audit_json(audit_id, c, a))
    }

    async fn ownership(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<OwnershipJson> {
        self.metrics.rpc("weft_ownership");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        let mut owners = Vec::new();
        for (who, share) in ownership::shares_of(&s, run_id).map_err(internal)? {
            owners.push(OwnerJson {
                account: who,
                units: ownership::units(&s, run_id, &who)
                    .map_err(internal)?
                    .to_string(),
                share: share.parts().to_string(),
                credentials: ownership::credentials(&s, run_id, &who)
                    .map_err(internal)?
                    .to_string(),
            });
        }
        Ok(OwnershipJson {
            run_id,
            total_units: ownership::total_units(&s, run_id)
                .map_err(internal)?
                .to_string(),
            owners,
            credential_issuance: ownership::credential_issuance(&s, run_id)
                .map_err(internal)?
                .to_string(),
            reissue_pool: ownership::reissue_pool(&s, run_id)
                .map_err(internal)?
                .to_string(),
        })
    }

    async fn credentials(
        &self,
        account: AccountId,
        run_id: Option<RunId>,
        at: Option<Hash>,
    ) -> RpcResult<CredentialsJson> {
        self.metrics.rpc("weft_credentials");
        let (s, _) = self.view(at)?;
        let ids: Vec<RunId> = match run_id {
            Some(id) => {
                load_run(&s, id)?;
                vec![id]
            }
            None => {
                let next = runs::NEXT_RUN_ID.get(&s).map_err(internal)?.unwrap_or(0);
                (next.saturating_sub(SCAN_LIMIT.min(RunId::MAX as u64) as RunId)..next).collect()
            }
        };
        let mut out = Vec::new();
        for id in ids {
            let credentials = ownership::credentials(&s, id, &account).map_err(internal)?;
            let units = ownership::units(&s, id, &account).map_err(internal)?;
            if run_id.is_some() || credentials > 0 || units > 0 {
                out.push(RunCredentialsJson {
                    run_id: id,
                    credentials: credentials.to_string(),
                    units: units.to_string(),
                });
            }
        }
        Ok(CredentialsJson { account, runs: out })
    }

    async fn proposals(&self, at: Option<Hash>) -> RpcResult<Vec<ProposalJson>> {
        self.metrics.rpc("weft_proposals");
        let (s, _) = self.view(at)?;
        let next = governance::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0);
        let total = staking::total_active(&s).map_err(internal)?;
        let mut out = Vec::new();
        for id in recent_ids(u64::from(next)) {
            let Ok(id) = u32::try_from(id) else { continue };
            let Some(p) = governance::proposal(&s, id).map_err(internal)? else {
                continue;
            };
            let mut votes = Vec::with_capacity(p.votes.len());
            let mut ayes: u128 = 0;
            for (voter, aye) in &p.votes {
                let stake = staking::active_stake(&s, voter).map_err(internal)?;
                if *aye {
                    ayes = ayes.saturating_add(stake);
                }
                votes.push(VoteJson {
                    voter: *voter,
                    aye: *aye,
                    stake: stake.to_string(),
                });
            }
            let threshold = match &p.action {
                governance::Action::HaltRun { run } => runs::run(&s, *run)
                    .map_err(internal)?
                    .map(|r| r.params.halt_threshold.parts()),
                governance::Action::ResumeRun { run }
                | governance::Action::SetRunParams { run, .. } => runs::run(&s, *run)
                    .map_err(internal)?
                    .map(|r| r.params.resume_threshold.parts()),
                governance::Action::CancelSlash { .. } => Some(
                    governance::config(&s)
                        .map_err(internal)?
                        .cancel_slash_threshold
                        .parts(),
                ),
            };
            out.push(ProposalJson {
                id,
                proposer: p.proposer,
                action: p.action,
                deposit: p.deposit.to_string(),
                end: p.end,
                status: p.status,
                votes,
                ayes: ayes.to_string(),
                total_stake: total.to_string(),
                threshold,
            });
        }
        Ok(out)
    }

    async fn slashes(&self, at: Option<Hash>) -> RpcResult<Vec<SlashJson>> {
        self.metrics.rpc("weft_slashes");
        let (s, _) = self.view(at)?;
        let next = staking::NEXT_SLASH_ID
            .get(&s)
            .map_err(internal)?
            .unwrap_or(0);
        let mut out = Vec::new();
        for id in recent_ids(next) {
            if let Some(p) = staking::pending_slash(&s, id).map_err(internal)? {
                out.push(SlashJson {
                    id,
                    offender: p.offender,
                    amount: p.amount.to_string(),
                    reporter: p.reporter,
                    epoch: p.epoch,
                    apply_at: p.apply_at,
                    kind: p.kind,
                });
            }
        }
        out.sort_by_key(|x| (x.apply_at, x.id));
        Ok(out)
    }

    async fn epoch(&self, at: Option<Hash>) -> RpcResult<EpochJson> {
        self.metrics.rpc("weft_epoch");
        let (s, number) = self.view(at)?;
        let cfg = staking::config(&s).map_err(internal)?;
        let len = cfg.epoch_length.max(1);
        let epoch_start = number - number % len;
        Ok(EpochJson {
            epoch: staking::current_epoch(&s).map_err(internal)?,
            block_number: number,
            epoch_length: len,
            epoch_start,
            next_epoch_at: epoch_start.saturating_add(len),
            bonding_period: cfg.bonding_period,
            slash_defer: cfg.slash_defer,
            validators: staking::active_set(&s).map_err(internal)?.len() as u32,
            total_active_stake: staking::total_active(&s).map_err(internal)?.to_string(),
            total_bonded: staking::total_bonded(&s).map_err(internal)?.to_string(),
        })
    }
}

/// The ids `next − 1, next − 2, …` down to `next − SCAN_LIMIT` (or 0).
fn recent_ids(next: u64) -> impl Iterator<Item = u64> {
    (next.saturating_sub(SCAN_LIMIT)..next).rev()
}

fn unknown_run(id: RunId) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(UNKNOWN_RUN, format!("unknown run {id}"), None::<()>)
}

fn load_run(s: &impl StateReader, id: RunId) -> RpcResult<runs::RunInfo> {
    runs::run(s, id)
        .map_err(internal)?
        .ok_or_else(|| unknown_run(id))
}

fn run_json(id: RunId, r: runs::RunInfo) -> RunJson {
    RunJson {
        id,
        designer: r.designer,
        bond: r.bond.to_string(),
        status: r.status,
        paused: r.paused,
        accepting_work: r.is_training(),
        model_config: r.model_config,
        config_hash: r.config_hash,
        stages: r.stages,
        replicas: r.replicas,
        dataset_hash: r.dataset_hash,
        hyper_params: r.hyper_params,
        max_steps: r.max_steps,
        final_steps: r.final_steps(),
        seed: r.seed,
        registered_at: r.registered_at,
        epochs_trained: r.epochs_trained,
        params: r.params,
    }
}

fn validator_json(v: &staking::ActiveValidator) -> ValidatorJson {
    ValidatorJson {
        account: v.account,
        stake: v.stake.to_string(),
        bls_key: v.bls_key,
    }
}

fn ledger_json(s: &impl StateReader, who: &AccountId) -> RpcResult<Option<LedgerJson>> {
    let Some(l) = staking::ledger(s, who).map_err(internal)? else {
        return Ok(None);
    };
    let validator = staking::VALIDATORS.get(s, who).map_err(internal)?;
    Ok(Some(LedgerJson {
        account: *who,
        active: l.active.to_string(),
        unlocking: l
            .unlocking
            .iter()
            .map(|c| UnlockChunkJson {
                value: c.value.to_string(),
                unlock_at: c.unlock_at,
            })
            .collect(),
        total: l.total().to_string(),
        validator: validator.is_some(),
        trainer: staking::trainer(s, who).map_err(internal)?.is_some(),
        bls_key: validator.map(|v| v.bls_key),
        pending_slashes: staking::PENDING_SLASHES
            .get(s, who)
            .map_err(internal)?
            .unwrap_or(0),
    }))
}

fn trainer_json(s: &impl StateReader, who: &AccountId) -> RpcResult<Option<TrainerJson>> {
    let Some(t) = staking::trainer(s, who).map_err(internal)? else {
        return Ok(None);
    };
    Ok(Some(TrainerJson {
        account: *who,
        peer_id: peer_id_to_string(&t.peer_id),
        addrs: t.addrs.iter().map(|a| bytes_to_text(a)).collect(),
        capacity: t.capacity,
        load: stages::LOAD.get(s, who).map_err(internal)?.unwrap_or(0),
        stake: staking::active_stake(s, who).map_err(internal)?.to_string(),
        runs: stages::TRAINER_RUNS
            .get(s, who)
            .map_err(internal)?
            .unwrap_or_default(),
    }))
}

fn commitment_json(id: CommitmentId, c: work::Commitment) -> CommitmentJson {
    CommitmentJson {
        id,
        run_id: c.run,
        stage: c.stage,
        replica: c.replica,
        step: c.step,
        trainer: c.trainer,
        roots: c.roots,
        loss: c.loss,
        block: c.block,
        status: c.status,
    }
}

fn audit_json(id: CommitmentId, c: work::Commitment, a: work::Audit) -> AuditJson {
    let status = match (&a.certificate, a.closed) {
        (Some(_), _) => AuditStatus::Settled,
        (None, true) => AuditStatus::Inconclusive,
        (None, false) => AuditStatus::Open,
    };
    AuditJson {
        id,
        run_id: c.run,
        stage: c.stage,
        replica: c.replica,
        step: c.step,
        trainer: c.trainer,
        status,
        verdict: a.certificate.as_ref().map(|x| x.verdict),
        opened_at: a.opened_at,
        reveal_deadline: a.reveal_deadline,
        attest_deadline: a.attest_deadline,
        threshold: a.threshold.parts(),
        auditors: a
            .seats
            .iter()
            .map(|x| ValidatorJson {
                account: x.account,
                stake: x.stake.to_string(),
                bls_key: x.bls_key,
            })
            .collect(),
        attestations: a.attestations,
        certificate: a.certificate,
        closed: a.closed,
    }
}

fn to_message(value: &impl serde::Serialize) -> Result<SubscriptionMessage, serde_json::Error> {
    Ok(SubscriptionMessage::from(serde_json::value::to_raw_value(
        value,
    )?))
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

/// Starts the server on `addr`.
pub async fn start(
    addr: SocketAddr,
    handlers: RpcImpl,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_connections(256)
        .build();
    let server = Server::builder().set_config(config).build(addr).await?;
    let local = server.local_addr()?;
    let handle = server.start(handlers.into_rpc());
    Ok((local, handle))
}
