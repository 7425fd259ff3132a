//! Serving inference from a stage holder: the [`InferenceDesk`] answers
//! `InferForward` / `InferClose` requests (the messages and the request path are in
//! [`weft_stage_net::inference`]) next to the stage's training and reveals.
//!
//! # What a stage serves
//!
//! Only its own stage, from the weights of the step the request names: the `weights_after`
//! bytes of that step in the stage's tensor store, checked against the root the stage
//! committed, loaded into a separate model (training goes on undisturbed) and kept for the
//! next requests ([`SNAPSHOTS_KEPT`] steps at most). A step no longer in the store is
//! answered `Unavailable` and the router goes elsewhere.
//!
//! # Sessions
//!
//! A session ([`SessionId`]) is opened by a prefill (`start` 0) and holds the stage's KV
//! cache; each later request must continue at exactly the cached length. At most
//! [`ServeLimits::max_sessions`] sessions are open; a prefill beyond that first evicts
//! sessions idle for longer than [`ServeLimits::idle`], and otherwise is answered `Busy`
//! with a retry-after. Hidden states and tokens are checked (shape, finiteness, vocabulary)
//! before anything runs.
//!
//! # Payment
//!
//! A prefill is served only if the [`Escrows`] say the request is open for this run (the
//! first stage also checks the body's hash against the escrow's), and no session goes past
//! the tokens the escrow covers. On `InferClose { delivered: true }` the last stage settles
//! the request once, for the positions it processed plus the last token it drew, with the
//! hash of the tokens it drew.

pub mod escrow;
pub mod loopback;
mod snapshot;

pub use escrow::{ChainEscrows, Escrow, EscrowError, Escrows};

use parity_scale_codec::Encode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};
use weft_ml::config::ModelConfig;
use weft_ml::infer::{sample_next, KvCache, SamplingParams};
use weft_ml::model::{Stage, StageSpec};
use weft_p2p::PeerId;
use weft_stage_net::desk::RequestDesk;
use weft_stage_net::inference::{
    InferClose, InferForward, InferInput, RequestId, Sampling, SessionId,
};
use weft_stage_net::store::TensorStore;
use weft_stage_net::wire::{ErrorCode, Request, Response, RunId, StageIndex, Step};

/// Steps whose weights a desk keeps loaded.
pub const SNAPSHOTS_KEPT: usize = 2;

/// How much a desk serves at once.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open sessions at most.
    pub max_sessions: usize,
    /// A session unused this long may be evicted.
    pub idle: Duration,
    /// The retry-after of a `Busy` answer.
    pub retry_after: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_sessions: 16,
            idle: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// A model shared by the sessions of one step (libtorch tensors are not `Sync`, so one
/// forward runs on it at a time).
type SharedStage = Arc<Mutex<Stage>>;

struct Session {
    model: SharedStage,
    cache: KvCache,
    last_used: Instant,
    /// Positions the escrow covers.
    max_tokens: u32,
    /// Tokens drawn (last stage).
    drawn: Vec<u32>,
}

/// The inference side of a stage holder (see the module docs).
pub struct InferenceDesk {
    run: RunId,
    stage: StageIndex,
    spec: StageSpec,
    model: ModelConfig,
    store: TensorStore,
    escrows: Arc<dyn Escrows>,
    limits: ServeLimits,
    snapshots: Mutex<Vec<(Step, SharedStage)>>,
    sessions: Mutex<BTreeMap<SessionId, Arc<Mutex<Session>>>>,
    settled: Mutex<BTreeSet<RequestId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Response {
    Response::error(code, msg)
}

impl InferenceDesk {
    /// The desk of `spec`'s stage of `run`, serving weights from `store` and checking
    /// payments with `escrows`.
    pub fn new(
        run: RunId,
        spec: StageSpec,
        model: ModelConfig,
        store: TensorStore,
        escrows: Arc<dyn Escrows>,
        limits: ServeLimits,
    ) -> Self {
        InferenceDesk {
            run,
            stage: StageIndex::try_from(spec.stage).unwrap_or(StageIndex::MAX),
            spec,
            model,
            store,
            escrows,
            limits,
            snapshots: Mutex::new(Vec::new()),
            sessions: Mutex::new(BTreeMap::new()),
            settled: Mutex::new(BTreeSet::new()),
        }
    }

    /// Open sessions now.
    pub fn open_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The model of `step`, loading it from the store if needed.
    fn weights(&self, step: Step) -> Result<SharedStage, Response> {
        if let Some((_, m)) = lock(&self.snapshots).iter().find(|(s, _)| *s == step) {
            return Ok(m.clone());
        }
        let model = snapshot::load(&self.store, step, &self.model, self.spec).map_err(|e| {
            refuse(
                ErrorCode::Unavailable,
                format!("weights of step {step}: {e}"),
            )
        })?;
        let model = Arc::new(Mutex::new(model));
        let mut snaps = lock(&self.snapshots);
        snaps.retain(|(s, _)| *s != step);
        snaps.push((step, model.clone()));
        snaps.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
        snaps.truncate(SNAPSHOTS_KEPT);
        tracing::info!(step, "serving weights loaded");
        Ok(model)
    }

    /// Opens the session of a prefill.
    fn open(&self, f: &InferForward) -> Result<Arc<Mutex<Session>>, Response> {
        let escrow = self
            .escrows
            .open_escrow(f.session.request, self.run)
            .map_err(|e| refuse(ErrorCode::Unpaid, e.to_string()))?;
        if self.spec.is_first() {
            let Some(body) = &f.body else {
                return Err(refuse(
                    ErrorCode::Malformed,
                    "a first-stage prefill carries the request body",
                ));
            };
            if body.hash() != escrow.request_hash || body.run != self.run {
                return Err(refuse(
                    ErrorCode::Unpaid,
                    "the request body does not match the escrow's hash",
                ));
            }
            let (vocab, context) = (self.model.vocab_size as u32, self.model.seq_len as u32);
            body.validate(vocab, context)
                .map_err(|e| refuse(ErrorCode::Malformed, e.to_string()))?;
        }
        {
            let mut sessions = lock(&self.sessions);
            if sessions.len() >= self.limits.max_sessions {
                let idle = self.limits.idle;
                // A session that is computing (its lock taken) is in use, not idle: never wait
                // for it here, with the whole table locked.
                sessions.retain(|_, s| s.try_lock().map_or(true, |s| s.last_used.elapsed() < idle));
            }
            if sessions.len() >= self.limits.max_sessions {
                return Err(Response::Busy {
                    retry_after_ms: self.limits.retry_after.as_millis() as u32,
                });
            }
        }
        let model = self.weights(f.step)?;
        let cache = lock(&model)
            .new_cache(1)
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let session = Arc::new(Mutex::new(Session {
            model,
            cache,
            last_used: Instant::now(),
            max_tokens: escrow.max_tokens,
            drawn: Vec::new(),
        }));
        lock(&self.sessions).insert(f.session, session.clone());
        Ok(session)
    }

    fn forward(&self, f: &InferForward) -> Response {
        if f.run != self.run {
            return refuse(ErrorCode::WrongRun, format!("this is run {}", self.run));
        }
        if f.stage != self.stage {
            return refuse(
                ErrorCode::WrongStage,
                format!("this is stage {}", self.stage),
            );
        }
        let session = if f.start == 0 {
            match self.open(f) {
                Ok(s) => s,
                Err(r) => return r,
            }
        } else {
            match lock(&self.sessions).get(&f.session) {
                Some(s) => s.clone(),
                None => {
                    return refuse(
                        ErrorCode::Unavailable,
                        format!("no session {:?} here (closed or evicted)", f.session),
                    )
                }
            }
        };
        let mut s = lock(&session);
        s.last_used = Instant::now();
        match self.compute(&mut s, f) {
            Ok(r) => r,
            Err(r) => {
                drop(s);
                if f.start == 0 {
                    lock(&self.sessions).remove(&f.session);
                }
                r
            }
        }
    }

    fn compute(&self, s: &mut Session, f: &InferForward) -> Result<Response, Response> {
        let cached = s.cache.len() as u64;
        if cached != u64::from(f.start) {
            return Err(refuse(
                ErrorCode::Unavailable,
                format!("session is at position {cached}, not {}", f.start),
            ));
        }
        let input = self.input_tensor(&f.input)?;
        let n = input.size()[1] as u64;
        let end = cached + n;
        if end + u64::from(self.spec.is_last()) > u64::from(s.max_tokens) {
            return Err(refuse(
                ErrorCode::Unpaid,
                format!("the escrow covers {} tokens", s.max_tokens),
            ));
        }
        let model = s.model.clone();
        let out = lock(&model)
            .forward_cached(&input, &mut s.cache)
            .map_err(|e| refuse(ErrorCode::Malformed, e.to_string()))?;
        if !self.spec.is_last() {
            let wire = weft_ml::tensor::to_wire(&out)
                .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
            return Ok(Response::InferHidden(wire));
        }
        let Some(sampling) = f.sampling else {
            return Err(refuse(
                ErrorCode::Malformed,
                "the last stage needs the sampling settings",
            ));
        };
        let row = out
            .f_select(0, 0)
            .and_then(|t| t.f_select(0, n as i64 - 1))
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let token = sample_next(&row, &sampling_params(&sampling), end)
            .map_err(|e| refuse(ErrorCode::Malformed, e.to_string()))?;
        s.drawn.push(token);
        Ok(Response::InferToken(token))
    }

    fn input_tensor(&self, input: &InferInput) -> Result<Tensor, Response> {
        let bad = |m: String| refuse(ErrorCode::Malformed, m);
        match input {
            InferInput::Tokens(tokens) => {
                if !self.spec.is_first() {
                    return Err(refuse(
                        ErrorCode::WrongStage,
                        "only the first stage takes tokens",
                    ));
                }
                if let Some(t) = tokens
                    .iter()
                    .find(|&&t| i64::from(t) >= self.model.vocab_size)
                {
                    return Err(bad(format!("token {t} is outside the vocabulary")));
                }
                let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
                Tensor::from_slice(&ids)
                    .f_reshape([1, ids.len() as i64])
                    .map_err(|e| bad(e.to_string()))
            }
            InferInput::Hidden(w) => {
                if self.spec.is_first() {
                    return Err(refuse(
                        ErrorCode::WrongStage,
                        "the first stage takes tokens",
                    ));
                }
                let d = self.model.d_model as u32;
                if w.shape.len() != 3 || w.shape[0] != 1 || w.shape[2] != d || w.shape[1] == 0 {
                    return Err(bad(format!(
                        "hidden states {:?}, expected [1, n, {d}]",
                        w.shape
                    )));
                }
                weft_ml::tensor::from_wire(w)
                    .and_then(|t| Ok(t.f_to_kind(Kind::Float)?))
                    .map_err(|e| bad(e.to_string()))
            }
        }
    }

    fn close(&self, c: &InferClose) -> Response {
        if c.run != self.run {
            return refuse(ErrorCode::WrongRun, format!("this is run {}", self.run));
        }
        let Some(session) = lock(&self.sessions).remove(&c.session) else {
            return Response::Ack;
        };
        let s = lock(&session);
        if self.spec.is_last() && c.delivered && !s.drawn.is_empty() {
            let request = c.session.request;
            if lock(&self.settled).insert(request) {
                let tokens = (s.cache.len() as u64 + 1).min(u64::from(s.max_tokens)) as u32;
                let output_hash = *blake3::hash(&s.drawn.encode()).as_bytes();
                tracing::info!(request, tokens, "settling an inference request");
                self.escrows.settle(request, tokens, output_hash);
            }
        }
        Response::Ack
    }
}

/// The inference desk of a stage holder on a live chain: weights from the stage's store at
/// `data_dir`, payments checked and settled with `key`.
pub fn desk_for(
    setup: &crate::chain::RunSetup,
    spec: StageSpec,
    data_dir: &std::path::Path,
    retention: u64,
    client: &Arc<weft_rpc_client::Client>,
    key: &weft_primitives::Keypair,
    max_sessions: usize,
) -> crate::Result<Arc<dyn RequestDesk>> {
    let store = TensorStore::open(data_dir, retention)?;
    let escrows = ChainEscrows::new(
        client.clone(),
        key.clone(),
        tokio::runtime::Handle::current(),
    );
    Ok(Arc::new(InferenceDesk::new(
        setup.run,
        spec,
        setup.model.clone(),
        store,
        Arc::new(escrows),
        ServeLimits {
            max_sessions: max_sessions.max(1),
            ..ServeLimits::default()
        },
    )))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The ML sampler's settings from the wire's fixed point.
pub fn sampling_params(s: &Sampling) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature_milli as f32 / 1000.0,
        top_k: s.top_k,
        top_p: s.top_p_micro as f32 / 1e6,
        seed: s.seed,
    }
}

impl RequestDesk for InferenceDesk {
    fn answer(&self, _peer: &PeerId, request: &Request) -> Option<Response> {
        match request {
            Request::InferForward(f) => Some(self.forward(f)),
            Request::InferClose(c) => Some(self.close(c)),
            _ => None,
        }
    }
}
