//! Inference on a node: the `inference_*` JSON-RPC methods ([`weft_rpc_api::inference`]).
//!
//! The node holds no weights. For a request it
//!
//! 1. builds the [`RequestBody`] from the parameters and checks it against the run's model
//!    (vocabulary, context);
//! 2. finds the **serving step** ([`serving_plan`]): the latest step `s` such that every
//!    stage has a replica whose commitment of `s` is `Credited` (its audit window passed
//!    without a failed audit) and whose current slot holder made that commitment; those
//!    holders are the stage's candidates. No step, or a halted run: the request is refused
//!    before anything is paid;
//! 3. checks the payment: a signed `inference.open(run, request_hash, max_tokens)` whose
//!    hash is the body's and which covers prompt plus completion; submits it through the
//!    pool and waits for its block; the `RequestOpened` event gives the request id (a
//!    payment the chain refuses, e.g. for lack of credentials, ends the request);
//! 4. drives the generation through one holder per stage with the
//!    [`weft_stage_net::inference::router::Router`] over its own libp2p client.
//!
//! The last stage settles the escrow when the node closes the session as delivered; a
//! request that fails after payment is closed as not delivered and refunded by the chain at
//! its expiry.

use crate::chain::Chain;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::rpc::{internal, to_message};
use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::server::PendingSubscriptionSink;
use jsonrpsee::types::ErrorObjectOwned;
use parity_scale_codec::Decode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use weft_primitives::inference::{RequestBody, RequestId};
use weft_primitives::storage::StateReader;
use weft_primitives::{Bytes, Hash};
use weft_rpc_api::inference::{
    tokens_text, CompletionJson, EstimateJson, GenerateEvent, HolderJson, InferenceApiServer,
    InferenceParams, InferenceStatusJson, INFERENCE_BAD_PARAMS, INFERENCE_BUSY,
    INFERENCE_UNAVAILABLE, INFERENCE_UNPAID,
};
use weft_rpc_api::{TransactionStatus, UNKNOWN_RUN};
use weft_runtime::support::{RunId, Step};
use weft_runtime::{inference, runs, stages, staking, system, work, Extrinsic, Phase};
use weft_runtime::{RuntimeCall, RuntimeEvent};
use weft_stage_net::inference::router::{Completion, Finish, Holder, Plan, RouteError, Router};
use weft_stage_net::topology::StagePeer;

/// Steps looked back from the newest common one for a credited step.
pub const SERVING_SCAN: u64 = 256;
/// Generations this node runs at once.
pub const MAX_CONCURRENT: usize = 32;
/// Longest wait for the payment's block.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a run cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Halted by governance.
    #[error("run {0} is halted")]
    Halted(RunId),
    /// Not started.
    #[error("run {0} has not started training")]
    Pending(RunId),
    /// No step is committed by every stage and past its audit window.
    #[error("run {run} has no step that every stage committed and that passed its audit window")]
    NoServingStep {
        /// The run.
        run: RunId,
    },
}

/// The candidates of every stage at the serving step.
#[derive(Debug, Clone)]
pub struct ServingPlan {
    /// The step.
    pub step: Step,
    /// Per stage `(replica, account, peer)` of each candidate.
    pub stages: Vec<Vec<(u16, weft_primitives::AccountId, StagePeer)>>,
}

/// The serving step of `run` and its holders (see the module docs).
pub fn serving_plan(
    s: &(impl StateReader + ?Sized),
    run: RunId,
    info: &runs::RunInfo,
) -> Result<Result<ServingPlan, Unavailable>, weft_primitives::storage::StorageError> {
    match info.status {
        runs::RunStatus::Halted => return Ok(Err(Unavailable::Halted(run))),
        runs::RunStatus::Pending => return Ok(Err(Unavailable::Pending(run))),
        _ => {}
    }
    // The newest step every stage has reached on some replica.
    let mut newest: Option<Step> = None;
    for stage in 0..info.stages {
        let mut best = 0;
        for replica in 0..info.replicas {
            best = best.max(work::next_step(s, run, stage, replica)?);
        }
        newest = Some(newest.map_or(best, |n: Step| n.min(best)));
    }
    let Some(next) = newest.filter(|&n| n > 0) else {
        return Ok(Err(Unavailable::NoServingStep { run }));
    };
    let lowest = next.saturating_sub(SERVING_SCAN);
    for step in (lowest..next).rev() {
        let mut stages_ok = Vec::with_capacity(info.stages as usize);
        for stage in 0..info.stages {
            let mut candidates = Vec::new();
            for replica in 0..info.replicas {
                let Some(id) = work::STEP_COMMITMENT.get(s, &(run, stage, replica, step))? else {
                    continue;
                };
                let Some(c) = work::commitment(s, id)? else {
                    continue;
                };
                if c.status != work::CommitStatus::Credited {
                    continue;
                }
                if stages::slot(s, run, stage, replica)? != Some(c.trainer) {
                    continue;
                }
                let Some(t) = staking::trainer(s, &c.trainer)? else {
                    continue;
                };
                if let Some(peer) = StagePeer::from_declared(&t.peer_id, &t.addrs) {
                    candidates.push((replica, c.trainer, peer));
                }
            }
            if candidates.is_empty() {
                break;
            }
            stages_ok.push(candidates);
        }
        if stages_ok.len() == info.stages as usize {
            return Ok(Ok(ServingPlan {
                step,
                stages: stages_ok,
            }));
        }
    }
    Ok(Err(Unavailable::NoServingStep { run }))
}

fn err(code: i32, msg: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg.to_string(), None::<()>)
}

/// An unpaid error after the payment reached the pool (`data.submitted`: its nonce may be
/// used, so a client must not sign another payment with it).
fn lost(msg: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        INFERENCE_UNPAID,
        msg.to_string(),
        Some(serde_json::json!({ "submitted": true })),
    )
}

fn route_error(e: &RouteError) -> ErrorObjectOwned {
    match e {
        RouteError::Busy { retry_after_ms, .. } => ErrorObjectOwned::owned(
            INFERENCE_BUSY,
            e.to_string(),
            Some(serde_json::json!({ "retryAfterMs": retry_after_ms })),
        ),
        RouteError::Unpaid { .. } => err(INFERENCE_UNPAID, e),
        _ => err(INFERENCE_UNAVAILABLE, e),
    }
}

/// The inference RPC handlers.
pub struct InferenceRpc {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    router: Arc<Router>,
    slots: Arc<Semaphore>,
}

/// A request checked against its run: the body, the price, the escrow it needs and whether
/// the run can serve it now.
struct Quote {
    body: RequestBody,
    cfg: inference::Config,
    cost: u128,
    plan: Result<ServingPlan, Unavailable>,
}

/// A request checked and ready to pay for.
struct Prepared {
    body: RequestBody,
    plan: ServingPlan,
}

impl InferenceRpc {
    /// Handlers over the node's chain and pool, routing over `network`.
    pub fn new(
        chain: Arc<Chain>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        network: weft_p2p::Network,
    ) -> Self {
        let limits = weft_primitives::tensor::Limits::default();
        InferenceRpc {
            chain,
            pool,
            metrics,
            router: Arc::new(Router::new(network, limits)),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }

    fn run_info(&self, s: &impl StateReader, run: RunId) -> RpcResult<runs::RunInfo> {
        runs::RUNS
            .get(s, &run)
            .map_err(internal)?
            .ok_or_else(|| err(UNKNOWN_RUN, format!("run {run} does not exist")))
    }

    /// Step 1 of the module docs, and where the run stands for step 2, at the best block.
    fn quote(&self, params: &InferenceParams) -> RpcResult<Quote> {
        let s = self.chain.state_at(self.chain.heads().best.number);
        let info = self.run_info(&s, params.run)?;
        let body = params.body().map_err(|e| err(INFERENCE_BAD_PARAMS, e))?;
        body.validate(info.model_config.vocab_size, info.model_config.seq_len)
            .map_err(|e| err(INFERENCE_BAD_PARAMS, e))?;
        let cfg = inference::config(&s).map_err(|e| err(INFERENCE_UNAVAILABLE, e))?;
        let cost = inference::estimate(&cfg, body.total_tokens())
            .map_err(|e| err(INFERENCE_BAD_PARAMS, format!("{e:?}")))?;
        let plan = serving_plan(&s, params.run, &info).map_err(internal)?;
        Ok(Quote {
            body,
            cfg,
            cost,
            plan,
        })
    }

    /// Steps 1 and 2 of the module docs: a request the run can serve now.
    fn prepare(&self, params: &InferenceParams) -> RpcResult<Prepared> {
        let q = self.quote(params)?;
        let plan = q.plan.map_err(|e| err(INFERENCE_UNAVAILABLE, e))?;
        Ok(Prepared { body: q.body, plan })
    }

    /// Step 3: checks, submits and waits for the payment; its hash and the request id.
    async fn pay(
        &self,
        body: &RequestBody,
        payment: &Option<Bytes>,
    ) -> RpcResult<(Hash, RequestId)> {
        let bytes = payment.as_ref().ok_or_else(|| {
            err(
                INFERENCE_UNPAID,
                "no payment: sign inference.open for this request",
            )
        })?;
        let xt = Extrinsic::decode(&mut &bytes.0[..]).map_err(|e| {
            err(
                INFERENCE_UNPAID,
                format!("the payment is not an extrinsic: {e}"),
            )
        })?;
        match &xt.call {
            RuntimeCall::Inference(inference::Call::Open {
                run,
                request_hash,
                max_tokens,
            }) => {
                if *run != body.run || request_hash.0 != body.hash() {
                    return Err(err(INFERENCE_UNPAID, "the payment is for another request"));
                }
                if *max_tokens < body.total_tokens() {
                    return Err(err(
                        INFERENCE_UNPAID,
                        format!(
                            "the payment covers {max_tokens} tokens; the request needs {}",
                            body.total_tokens()
                        ),
                    ));
                }
            }
            _ => {
                return Err(err(
                    INFERENCE_UNPAID,
                    "the payment must be an inference.open call",
                ))
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let chain = self.chain.clone();
        let hash = self
            .pool
            .submit(
                &bytes.0,
                |xt, len| chain.validate_transaction(xt, len),
                Some(tx),
            )
            .map_err(|e| err(INFERENCE_UNPAID, format!("the payment was refused: {e}")))?;
        self.metrics.txpool_size.set(self.pool.len() as i64);
        let hash = hash.hash;
        let included = tokio::time::timeout(PAYMENT_TIMEOUT, async {
            while let Some(status) = rx.recv().await {
                match status {
                    TransactionStatus::InBlock(_) | TransactionStatus::Finalized(_) => {
                        return Ok(())
                    }
                    TransactionStatus::Invalid | TransactionStatus::Dropped => {
                        return Err(lost("the payment was dropped from the pool"))
                    }
                    _ => {}
                }
            }
            Err(lost("the payment was dropped from the pool"))
        })
        .await
        .map_err(|_| lost("the payment was not included in time"))?;
        included?;
        let id = self.opened_request(&hash)?;
        Ok((hash, id))
    }

    /// The request id the payment `hash` opened.
    fn opened_request(&self, hash: &Hash) -> RpcResult<RequestId> {
        let (block, index) = self
            .chain
            .extrinsic_location(hash)
            .map_err(internal)?
            .ok_or_else(|| lost("the payment's block is not known"))?;
        let header = self
            .chain
            .header(&block)
            .map_err(internal)?
            .ok_or_else(|| lost("the payment's block is not known"))?;
        let events = system::EVENTS
            .get(&self.chain.state_at(header.number))
            .map_err(internal)?
            .unwrap_or_default();
        let mut failure = None;
        for e in events
            .iter()
            .filter(|e| e.phase == Phase::ApplyExtrinsic(index))
        {
            match &e.event {
                RuntimeEvent::Inference(inference::Event::RequestOpened { id, .. }) => {
                    return Ok(*id)
                }
                RuntimeEvent::System(system::Event::ExtrinsicFailed { error }) => {
                    failure = Some(format!("{error:?}"))
                }
                _ => {}
            }
        }
        Err(lost(format!(
            "the chain refused the payment: {}",
            failure.unwrap_or_else(|| "no RequestOpened event".into())
        )))
    }

    fn route(&self, request: RequestId, prepared: &Prepared) -> Plan {
        Plan {
            request,
            body: prepared.body.clone(),
            step: prepared.plan.step,
            stages: prepared
                .plan
                .stages
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|(replica, _, p)| Holder {
                            replica: *replica,
                            peer: p.peer_id,
                            addrs: p.addrs.clone(),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn completion(
        &self,
        prepared: &Prepared,
        request: RequestId,
        payment: Hash,
        c: Completion,
    ) -> CompletionJson {
        CompletionJson {
            run: prepared.body.run,
            request_id: request,
            payment,
            step: prepared.plan.step,
            text: tokens_text(&c.tokens),
            tokens: c.tokens,
            finish_reason: match c.finish {
                Finish::Length => "length",
                Finish::Stop => "stop",
            }
            .into(),
            prompt_tokens: prepared.body.prompt.len() as u32,
            route: c.route.iter().map(|p| p.to_string()).collect(),
            attempts: c.attempts,
        }
    }

    fn busy(&self) -> RpcResult<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            ErrorObjectOwned::owned(
                INFERENCE_BUSY,
                format!("this node runs {MAX_CONCURRENT} generations already"),
                Some(serde_json::json!({ "retryAfterMs": 1000 })),
            )
        })
    }
}

/// Splits byte-level tokens into text at UTF-8 boundaries as they arrive.
#[derive(Default)]
struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    fn push(&mut self, token: u32) -> String {
        if let Ok(b) = u8::try_from(token) {
            self.pending.push(b);
        }
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let s = s.to_string();
                self.pending.clear();
                s
            }
            Err(e) if e.error_len().is_none() => {
                let ok = e.valid_up_to();
                let s = String::from_utf8_lossy(&self.pending[..ok]).into_owned();
                self.pending.drain(..ok);
                s
            }
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                s
            }
        }
    }
}

#[async_trait]
impl InferenceApiServer for InferenceRpc {
    async fn estimate(&self, params: InferenceParams) -> RpcResult<EstimateJson> {
        self.metrics.rpc("inference_estimate");
        let Quote {
            body,
            cfg,
            cost,
            plan,
        } = self.quote(&params)?;
        Ok(EstimateJson {
            run: params.run,
            prompt_tokens: body.prompt.len() as u32,
            total_tokens: body.total_tokens(),
            credentials: cost.to_string(),
            credentials_per_token: cfg.credentials_per_token.to_string(),
            request_hash: Hash(body.hash()),
            step: plan.as_ref().ok().map(|p| p.step),
            unavailable: plan.err().map(|e| e.to_string()),
        })
    }

    async fn generate(&self, params: InferenceParams) -> RpcResult<CompletionJson> {
        self.metrics.rpc("inference_generate");
        let _permit = self.busy()?;
        let prepared = self.prepare(&params)?;
        let (payment, request) = self.pay(&prepared.body, &params.payment).await?;
        let plan = self.route(request, &prepared);
        let c = self
            .router
            .generate(&plan, |_| true)
            .await
            .map_err(|e| route_error(&e))?;
        Ok(self.completion(&prepared, request, payment, c))
    }

    async fn subscribe_generate(
        &self,
        pending: PendingSubscriptionSink,
        params: InferenceParams,
    ) -> SubscriptionResult {
        self.metrics.rpc("inference_subscribeGenerate");
        let started = self
            .busy()
            .and_then(|permit| Ok((permit, self.prepare(&params)?)));
        let (permit, prepared) = match started {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let (payment, request) = match self.pay(&prepared.body, &params.payment).await {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let plan = self.route(request, &prepared);
        let (tx, mut rx) = mpsc::unbounded_channel::<GenerateEvent>();
        let router = self.router.clone();
        let generation = tokio::spawn(async move {
            let _permit = permit;
            let mut text = TextStream::default();
            router
                .generate(&plan, |token| {
                    tx.send(GenerateEvent::Token {
                        token,
                        text: text.push(token),
                    })
                    .is_ok()
                })
                .await
        });
        while let Some(ev) = rx.recv().await {
            let msg = to_message(&ev)?;
            if sink.send(msg).await.is_err() {
                generation.abort();
                return Ok(());
            }
        }
        let last = match generation.await {
            Ok(Ok(c)) => GenerateEvent::Done(self.completion(&prepared, request, payment, c)),
            Ok(Err(e)) => {
                let o = route_error(&e);
                GenerateEvent::Error {
                    code: o.code(),
                    message: o.message().to_string(),
                }
            }
            Err(e) => GenerateEvent::Error {
                code: jsonrpsee::types::error::INTERNAL_ERROR_CODE,
                message: e.to_string(),
            },
        };
        let _ = sink.send(to_message(&last)?).await;
        Ok(())
    }

    async fn status(&self, run: RunId) -> RpcResult<InferenceStatusJson> {
        self.metrics.rpc("inference_status");
        let s = self.chain.state_at(self.chain.heads().best.number);
        let info = self.run_info(&s, run)?;
        let plan = serving_plan(&s, run, &info).map_err(internal)?;
        let stats = self.router.stats();
        let mut out = Vec::with_capacity(info.stages as usize);
        for stage in 0..info.stages {
            let mut holders = Vec::new();
            for replica in 0..info.replicas {
                let Some(account) = stages::slot(&s, run, stage, replica).map_err(internal)? else {
                    continue;
                };
                let Some(t) = staking::trainer(&s, &account).map_err(internal)? else {
                    continue;
                };
                let Some(peer) = StagePeer::from_declared(&t.peer_id, &t.addrs) else {
                    continue;
                };
                let serving = plan.as_ref().is_ok_and(|p| {
                    p.stages
                        .get(stage as usize)
                        .is_some_and(|c| c.iter().any(|(r, _, _)| *r == replica))
                });
                let st = stats.get(&peer.peer_id).copied().unwrap_or_default();
                holders.push(HolderJson {
                    replica,
                    account: account.to_string(),
                    peer_id: peer.peer_id.to_string(),
                    serving,
                    latency_ms: st.latency_ms,
                    in_flight: st.in_flight,
                    served: st.served,
                    failed: st.failed,
                });
            }
            out.push(holders);
        }
        Ok(InferenceStatusJson {
            run,
            step: plan.as_ref().ok().map(|p| p.step),
            unavailable: plan.err().map(|e| e.to_string()),
            stages: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stream_waits_for_whole_characters() {
        let mut t = TextStream::default();
        let bytes = "é!".as_bytes();
        assert_eq!(t.push(u32::from(bytes[0])), "");
        assert_eq!(t.push(u32::from(bytes[1])), "é");
        assert_eq!(t.push(u32::from(bytes[2])), "!");
        assert_eq!(t.push(0xff), "\u{fffd}");
    }
}
