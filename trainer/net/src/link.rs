//! The link of one stage to its partners: the inbox of what they sent, the outbox that
//! delivers what this stage sends, and the resend log.
//!
//! # Buffering and validation
//!
//! Received tensors wait in an inbox keyed by `(step, slot)` (slot = forward µ, backward µ,
//! shared gradient, or a stage's sum of squares). Only steps `current − 1 ..= current + 1`
//! are accepted (a neighbour is never more than one step ahead), and slots are validated
//! (`µ < M`, the stage's expected `from_stage`), so the inbox holds at most `2·(2M + S)`
//! tensors. Before buffering, a request must: decode exactly ([`crate::wire`]), come from
//! the [`PeerId`] the table assigns to `from_stage` (authenticated by noise), carry this
//! run, come from the neighbour that sends that kind of message, and hold a finite float
//! tensor of exactly the expected shape. Otherwise the sender gets [`Response::Error`] with
//! an [`ErrorCode`], it is logged, and nothing is trained on it. A message for a slot already
//! received is acknowledged if identical (a retry) and refused as [`ErrorCode::Conflict`]
//! otherwise; a message for a step before `current − 1` gets [`ErrorCode::StaleStep`], which
//! the sender drops. Reveal requests and auditor hellos are answered from the tensor store
//! ([`crate::store`], [`crate::access`]).
//!
//! # Delivery, retry, restart
//!
//! Each message is retried with exponential backoff on network failure or a retryable error
//! ([`ErrorCode::retryable`]) up to [`RetryPolicy::attempts`]; a non-retryable error is
//! fatal to the step (this stage or its peer is broken). Every message sent is also kept in
//! a resend log for the current and the previous step; a restarted partner asks for it with
//! [`Request::Resend`]. [`Request::Done`] tells a partner this stage has finished.
//!
//! # Threads
//!
//! The compute side (a blocking thread) waits on a condition variable; the tokio side only
//! moves bytes: a dispatcher hands each inbound request to the blocking pool (decode,
//! validate, buffer), and an outbox task delivers each outgoing message on its own task.

use crate::access::RevealAccess;
use crate::error::{Error, Result};
use crate::store::TensorStore;
use crate::topology::PeerTable;
use crate::wire::{
    decode_request, decode_response, ErrorCode, Limits, Request, Response, WireTensor,
};
use parity_scale_codec::Encode;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_p2p::{InboundRequest, Network, PeerId};
use weft_primitives::step::{Replica, RunId, StageIndex, Step};

/// Backoff for outgoing messages.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per message.
    pub attempts: u32,
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 40,
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

/// What a received message fills, within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Activations of micro-batch µ from the previous stage.
    Forward(u32),
    /// The gradient of micro-batch µ's output from the next stage.
    Backward(u32),
    /// Tied embeddings: the other holder's embedding gradient.
    SharedGrad,
    /// Global clipping: a stage's Σ‖g‖² (f64 bits).
    GradSq(StageIndex),
}

type Key = (Step, Slot);

/// A received value.
#[derive(Debug)]
pub enum Payload {
    /// A tensor.
    Tensor(WireTensor),
    /// A scalar (f64 bits).
    Scalar(u64),
}

#[derive(Default)]
struct State {
    current: Step,
    inbox: HashMap<Key, Payload>,
    seen: HashMap<Key, blake3::Hash>,
    done_from: HashSet<usize>,
    fatal: Option<String>,
    in_flight: usize,
    sent_log: BTreeMap<(Step, usize), Vec<Arc<Vec<u8>>>>,
}

struct Outgoing {
    to: usize,
    bytes: Arc<Vec<u8>>,
}

/// What the stage knows about its model, for validating what arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageShape {
    /// This stage.
    pub stage: usize,
    /// Stages in the pipeline.
    pub n_stages: usize,
    /// Micro-batches per step.
    pub micro_batches: usize,
    /// The activation (and activation gradient) shape `[B, T, d_model]`.
    pub activation: Vec<i64>,
    /// Tied embeddings across stages: the shared embedding's shape, on stage 0 and the
    /// last stage.
    pub shared: Option<Vec<i64>>,
    /// Whether the run clips by the global norm (every stage exchanges Σ‖g‖²).
    pub global_clip: bool,
}

impl StageShape {
    /// The stages this one exchanges messages with.
    pub fn partners(&self) -> Vec<usize> {
        let (k, n) = (self.stage, self.n_stages);
        let mut p: Vec<usize> = Vec::new();
        if self.global_clip {
            p.extend((0..n).filter(|&s| s != k));
        } else {
            if k > 0 {
                p.push(k - 1);
            }
            if k + 1 < n {
                p.push(k + 1);
            }
            if self.shared.is_some() {
                p.push(if k == 0 { n - 1 } else { 0 });
            }
        }
        p.sort_unstable();
        p.dedup();
        p
    }
}

struct Shared {
    run: RunId,
    stage_id: StageIndex,
    replica: Replica,
    shape: StageShape,
    peers: PeerTable,
    auditors: Arc<RevealAccess>,
    limits: Limits,
    store: TensorStore,
    state: Mutex<State>,
    cond: Condvar,
    outbox: mpsc::UnboundedSender<Outgoing>,
    sent: AtomicU64,
    received: AtomicU64,
}

fn digest(p: &Payload) -> blake3::Hash {
    match p {
        Payload::Tensor(t) => blake3::hash(&t.encode()),
        Payload::Scalar(b) => blake3::hash(&b.to_le_bytes()),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_current(&self, step: Step) {
        let mut st = self.lock();
        st.current = step;
        let keep = step.saturating_sub(1);
        st.inbox.retain(|(s, _), _| *s >= keep);
        st.seen.retain(|(s, _), _| *s >= keep);
        st.sent_log.retain(|(s, _), _| *s >= keep);
    }

    /// Queues `req` for stage `to`, logging it under `step` for resends.
    fn send(&self, to: usize, step: Step, req: &Request) {
        let bytes = Arc::new(req.encode());
        let mut st = self.lock();
        st.sent_log
            .entry((step, to))
            .or_default()
            .push(bytes.clone());
        st.in_flight += 1;
        drop(st);
        self.enqueue(to, bytes);
    }

    /// Queues bytes for delivery; `in_flight` must already count them.
    fn enqueue(&self, to: usize, bytes: Arc<Vec<u8>>) {
        if self.outbox.send(Outgoing { to, bytes }).is_err() {
            let mut st = self.lock();
            st.in_flight = st.in_flight.saturating_sub(1);
            st.fatal
                .get_or_insert_with(|| "the outbox has stopped".to_string());
            self.cond.notify_all();
        }
    }

    fn send_unlogged(&self, to: usize, req: &Request) {
        self.lock().in_flight += 1;
        self.enqueue(to, Arc::new(req.encode()));
    }

    fn fail(&self, why: String) {
        tracing::error!("{why}");
        let mut st = self.lock();
        st.fatal.get_or_insert(why);
        self.cond.notify_all();
    }

    fn delivered(&self, bytes: usize, ok: bool) {
        if ok {
            self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        self.cond.notify_all();
    }

    fn wait_until<T>(
        &self,
        deadline: Instant,
        what: &str,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        loop {
            if let Some(f) = &st.fatal {
                return Err(Error::Network(f.clone()));
            }
            if let Some(v) = ready(&mut st) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Network(format!("timed out waiting for {what}")));
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn wait_payload(&self, key: Key, timeout: Duration) -> Result<Payload> {
        self.wait_until(Instant::now() + timeout, &format!("{key:?}"), |st| {
            st.inbox.remove(&key)
        })
    }

    fn wait_tensor(&self, key: Key, timeout: Duration) -> Result<WireTensor> {
        match self.wait_payload(key, timeout)? {
            Payload::Tensor(t) => Ok(t),
            Payload::Scalar(_) => Err(Error::Network(format!("{key:?} holds no tensor"))),
        }
    }

    /// Handles one inbound request (on the blocking pool).
    fn handle(&self, peer: PeerId, bytes: &[u8]) -> Response {
        self.received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let resp = match decode_request(bytes, &self.limits) {
            Err(e) => Response::error(ErrorCode::Malformed, e.to_string()),
            Ok(req) => self.handle_request(peer, req),
        };
        match &resp {
            // A late retry of something already superseded by a resend: harmless.
            Response::Error {
                code: ErrorCode::StaleStep,
                message,
            } => tracing::debug!(%peer, %message, "stale message refused"),
            Response::Error { code, message } => {
                tracing::warn!(%peer, ?code, %message, "request refused")
            }
            _ => {}
        }
        resp
    }

    fn check_sender(
        &self,
        peer: &PeerId,
        run: RunId,
        from_stage: StageIndex,
    ) -> Result<usize, Response> {
        if run != self.run {
            return Err(Response::error(
                ErrorCode::WrongRun,
                format!("this is run {}, not {run}", self.run),
            ));
        }
        let from = from_stage as usize;
        match self.peers.stages.get(from) {
            None => Err(Response::error(
                ErrorCode::WrongStage,
                format!("there is no stage {from}"),
            )),
            Some(p) if p.peer_id != *peer => Err(Response::error(
                ErrorCode::NotNeighbour,
                format!("{peer} is not the trainer of stage {from}"),
            )),
            Some(_) => Ok(from),
        }
    }

    fn handle_request(&self, peer: PeerId, req: Request) -> Response {
        let (k, n) = (self.shape.stage, self.shape.n_stages);
        let m = self.shape.micro_batches as u32;
        let wrong = |msg: String| Response::error(ErrorCode::WrongStage, msg);
        let (step, slot, payload) = match req {
            Request::Reveal(r) => {
                let allowed: HashSet<PeerId> = if self.auditors.allows(&peer) {
                    HashSet::from([peer])
                } else {
                    HashSet::new()
                };
                return self.store.answer_reveal(
                    &allowed,
                    (self.run, self.stage_id, self.replica),
                    &peer,
                    &r,
                );
            }
            Request::AuditorHello {
                run,
                stage,
                account,
                signature,
            } => {
                if run != self.run {
                    return Response::error(
                        ErrorCode::WrongRun,
                        format!("this is run {}", self.run),
                    );
                }
                if stage as usize != k {
                    return wrong(format!("this is stage {k}"));
                }
                return match self.auditors.hello((run, stage), &peer, account, signature) {
                    Ok(()) => {
                        tracing::info!(%peer, account = %hex::encode(account), "auditor admitted");
                        Response::Ack
                    }
                    Err(why) => Response::error(ErrorCode::Forbidden, why.to_string()),
                };
            }
            Request::Forward {
                run,
                step,
                micro,
                from_stage,
                tensor,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                if k == 0 || from != k - 1 {
                    return wrong(format!(
                        "stage {k} takes activations only from stage {}",
                        k.wrapping_sub(1) as i64
                    ));
                }
                if micro >= m {
                    return wrong(format!("micro-batch {micro} out of range (0..{m})"));
                }
                if let Err(e) = tensor.expect(None, &self.shape.activation) {
                    return Response::error(ErrorCode::Malformed, e.to_string());
                }
                (step, Slot::Forward(micro), Payload::Tensor(tensor))
            }
            Request::Backward {
                run,
                step,
                micro,
                from_stage,
                tensor,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                if from != k + 1 {
                    return wrong(format!(
                        "stage {k} takes gradients only from stage {}",
                        k + 1
                    ));
                }
                if micro >= m {
                    return wrong(format!("micro-batch {micro} out of range (0..{m})"));
                }
                if let Err(e) = tensor.expect(None, &self.shape.activation) {
                    return Response::error(ErrorCode::Malformed, e.to_string());
                }
                (step, Slot::Backward(micro), Payload::Tensor(tensor))
            }
            Request::SharedGrad {
                run,
                step,
                from_stage,
                tensor,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                let Some(shape) = &self.shape.shared else {
                    return wrong(format!("stage {k} shares no embedding"));
                };
                let other = if k == 0 { n - 1 } else { 0 };
                if from != other {
                    return wrong(format!("stage {k} shares its embedding with stage {other}"));
                }
                if let Err(e) = tensor.expect(None, shape) {
                    return Response::error(ErrorCode::Malformed, e.to_string());
                }
                (step, Slot::SharedGrad, Payload::Tensor(tensor))
            }
            Request::GradSqSum {
                run,
                step,
                from_stage,
                bits,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                if !self.shape.global_clip || from == k {
                    return wrong("this run does not clip globally".into());
                }
                (step, Slot::GradSq(from_stage), Payload::Scalar(bits))
            }
            Request::Resend {
                run,
                from_stage,
                from_step,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                let again: Vec<Arc<Vec<u8>>> = {
                    let mut st = self.lock();
                    let msgs: Vec<Arc<Vec<u8>>> = st
                        .sent_log
                        .iter()
                        .filter(|((s, to), _)| *s >= from_step && *to == from)
                        .flat_map(|(_, v)| v.iter().cloned())
                        .collect();
                    st.in_flight += msgs.len();
                    msgs
                };
                tracing::info!(
                    stage = from,
                    from_step,
                    messages = again.len(),
                    "resending to a restarted partner"
                );
                for b in again {
                    self.enqueue(from, b);
                }
                return Response::Ack;
            }
            Request::Done {
                run, from_stage, ..
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                let mut st = self.lock();
                st.done_from.insert(from);
                self.cond.notify_all();
                return Response::Ack;
            }
        };
        let key = (step, slot);
        let d = digest(&payload);
        let mut st = self.lock();
        if let Some(prev) = st.seen.get(&key) {
            return if *prev == d {
                Response::Ack
            } else {
                Response::error(
                    ErrorCode::Conflict,
                    format!("a different tensor was already received for {key:?}"),
                )
            };
        }
        if step + 1 < st.current {
            return Response::error(
                ErrorCode::StaleStep,
                format!("step {step} is done (now at {})", st.current),
            );
        }
        if step > st.current + 1 {
            return Response::error(
                ErrorCode::FutureStep,
                format!("step {step} is ahead (now at {})", st.current),
            );
        }
        st.seen.insert(key, d);
        st.inbox.insert(key, payload);
        self.cond.notify_all();
        Response::Ack
    }
}

async fn dispatch(shared: Arc<Shared>, mut inbound: mpsc::Receiver<InboundRequest>) {
    while let Some(InboundRequest {
        peer,
        request,
        reply,
    }) = inbound.recv().await
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let resp = tokio::task::spawn_blocking(move || shared.handle(peer, &request))
                .await
                .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()));
            let _ = reply.send(resp.encode());
        });
    }
}

async fn deliver(shared: Arc<Shared>, net: Network, retry: RetryPolicy, out: Outgoing) {
    let Some(target) = shared.peers.stages.get(out.to).cloned() else {
        shared.fail(format!("no peer for stage {}", out.to));
        shared.delivered(0, false);
        return;
    };
    let mut delay = retry.initial;
    for attempt in 1..=retry.attempts.max(1) {
        match net
            .request(target.peer_id, target.addrs.clone(), out.bytes.to_vec())
            .await
        {
            Ok(resp) => match decode_response(&resp) {
                Ok(Response::Ack) => {
                    shared.delivered(out.bytes.len(), true);
                    return;
                }
                Ok(Response::Error {
                    code: ErrorCode::StaleStep,
                    message,
                }) => {
                    tracing::debug!(stage = out.to, %message, "partner is past this step; dropped");
                    shared.delivered(0, false);
                    return;
                }
                Ok(Response::Error { code, message }) if code.retryable() => {
                    tracing::debug!(stage = out.to, ?code, %message, attempt, "will retry");
                }
                Ok(Response::Error { code, message }) => {
                    shared.fail(format!(
                        "stage {} refused our message: {code:?}: {message}",
                        out.to
                    ));
                    shared.delivered(0, false);
                    return;
                }
                Ok(other) => {
                    shared.fail(format!("stage {} answered {other:?}", out.to));
                    shared.delivered(0, false);
                    return;
                }
                Err(e) => {
                    shared.fail(format!("stage {} sent an invalid response: {e}", out.to));
                    shared.delivered(0, false);
                    return;
                }
            },
            Err(e) => {
                // A partner that said Done has completed every step and needs nothing more
                // from us (it may have left right after acknowledging our own Done).
                if shared.lock().done_from.contains(&out.to) {
                    tracing::debug!(stage = out.to, error = %e, "partner has finished; dropped");
                    shared.delivered(0, false);
                    return;
                }
                tracing::debug!(stage = out.to, error = %e, attempt, "send failed; will retry");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(retry.max);
    }
    tracing::warn!(
        stage = out.to,
        "giving up delivery after {} attempts; the message stays in the resend log",
        retry.attempts
    );
    shared.delivered(0, false);
}

async fn outbox(
    shared: Arc<Shared>,
    net: Network,
    retry: RetryPolicy,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        tokio::spawn(deliver(shared.clone(), net.clone(), retry, out));
    }
}

/// Settings of a [`StageLink`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The run.
    pub run: RunId,
    /// This trainer's replica of its stage (reveal requests name it).
    pub replica: Replica,
    /// What arrives must fit this.
    pub shape: StageShape,
    /// The peers.
    pub peers: PeerTable,
    /// Who may fetch reveals (the stage's auditors).
    pub auditors: Arc<RevealAccess>,
    /// Limits on received tensors.
    pub limits: Limits,
    /// Delivery retries.
    pub retry: RetryPolicy,
}

/// A running link (see the module docs): its dispatcher and outbox tasks stop when it is
/// dropped.
pub struct StageLink {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StageLink {
    /// Starts the link of a stage at step `current`, over `network`'s `inbound` requests
    /// (from [`weft_p2p::spawn`]), answering reveals from `store`. Must be called inside a
    /// tokio runtime.
    pub fn start(
        cfg: LinkConfig,
        store: TensorStore,
        current: Step,
        network: Network,
        inbound: mpsc::Receiver<InboundRequest>,
    ) -> Result<Self> {
        let stage_id = StageIndex::try_from(cfg.shape.stage)
            .map_err(|_| Error::Config(format!("stage {} out of range", cfg.shape.stage)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            run: cfg.run,
            stage_id,
            replica: cfg.replica,
            shape: cfg.shape,
            peers: cfg.peers,
            auditors: cfg.auditors,
            limits: cfg.limits,
            store,
            state: Mutex::new(State {
                current,
                ..State::default()
            }),
            cond: Condvar::new(),
            outbox: tx,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        let tasks = vec![
            tokio::spawn(dispatch(shared.clone(), inbound)),
            tokio::spawn(outbox(shared.clone(), network, cfg.retry, rx)),
        ];
        Ok(StageLink { shared, tasks })
    }

    /// The shape the link validates against.
    pub fn shape(&self) -> &StageShape {
        &self.shared.shape
    }

    /// This stage's index as the wire carries it.
    pub fn stage_id(&self) -> StageIndex {
        self.shared.stage_id
    }

    /// The run.
    pub fn run(&self) -> RunId {
        self.shared.run
    }

    /// Moves to `step`: what is older than `step − 1` is forgotten.
    pub fn set_current(&self, step: Step) {
        self.shared.set_current(step);
    }

    /// Queues `req` for stage `to`, logging it under `step` for resends.
    pub fn send(&self, to: usize, step: Step, req: &Request) {
        self.shared.send(to, step, req);
    }

    /// Queues `req` for stage `to` without logging it (control messages).
    pub fn send_unlogged(&self, to: usize, req: &Request) {
        self.shared.send_unlogged(to, req);
    }

    /// Waits up to `timeout` for the tensor of `slot` in `step`.
    pub fn wait_tensor(&self, step: Step, slot: Slot, timeout: Duration) -> Result<WireTensor> {
        self.shared.wait_tensor((step, slot), timeout)
    }

    /// Waits up to `timeout` for the scalar (f64 bits) of `slot` in `step`.
    pub fn wait_scalar(&self, step: Step, slot: Slot, timeout: Duration) -> Result<u64> {
        match self.shared.wait_payload((step, slot), timeout)? {
            Payload::Scalar(b) => Ok(b),
            Payload::Tensor(_) => Err(Error::Network(format!(
                "{slot:?} of step {step} holds a tensor where a scalar was due"
            ))),
        }
    }

    /// Waits up to `timeout` until every queued message is delivered or given up.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.shared
            .wait_until(Instant::now() + timeout, "deliveries", |st| {
                (st.in_flight == 0).then_some(())
            })
    }

    /// Waits up to `timeout` until every stage in `partners` has said it is done.
    pub fn wait_done(&self, partners: &[usize], timeout: Duration) -> Result<()> {
        self.shared
            .wait_until(Instant::now() + timeout, "partners to finish", |st| {
                partners
                    .iter()
                    .all(|p| st.done_from.contains(p))
                    .then_some(())
            })
    }

    /// Payload bytes delivered so far.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Payload bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }
}

impl Drop for StageLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
