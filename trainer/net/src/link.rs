//! The link of one stage to its partners: the driver of the stage protocol.
//!
//! [`crate::protocol::StageProtocol`] decides everything (what is buffered, refused,
//! retried, resent, dropped); a [`StageLink`] holds it behind a mutex and carries out its
//! effects: an [`Executor`] transmits messages and runs retry timers (over libp2p with
//! tokio in production, [`TokioExecutor`]; over a simulated network in tests), and waking
//! goes through a condition variable on which the compute side waits for its slots.
//!
//! # Threads
//!
//! The compute side (a blocking thread) waits on the condition variable; the tokio side only
//! moves bytes: a dispatcher hands each inbound request to the blocking pool (decode,
//! validate, buffer), and each transmission runs on its own task, so the network stays
//! responsive while a stage computes, and stage k computes micro-batch µ+1 while µ's
//! activations are in flight.
//!
//! # Quiescence
//!
//! Every wake bumps a generation counter and every wait records the generation it has seen;
//! [`StageLink::is_settled`] (a link whose compute side is blocked and has seen every wake)
//! is what a deterministic simulation waits for before it lets the network move.

use crate::desk::{self, Desks};
use crate::error::{Error, Result};
use crate::protocol::{
    Delivery, Effect, Input, MsgId, Payload, ProtocolConfig, Slot, StageProtocol,
};
use crate::topology::PeerTable;
use crate::wire::{
    decode_request, decode_response, Direction, ErrorCode, Limits, Request, Response, WireTensor,
};
use parity_scale_codec::Encode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_p2p::{InboundRequest, Network, PeerId};
use weft_primitives::step::{RunId, StageIndex, Step};

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

/// Settings of a [`StageLink`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The run.
    pub run: RunId,
    /// What arrives must fit this.
    pub shape: StageShape,
    /// The peers.
    pub peers: PeerTable,
    /// Limits on received tensors.
    pub limits: Limits,
    /// Delivery retries.
    pub retry: RetryPolicy,
}

/// Carries out a link's transmissions and timers. When an attempt ends it must call
/// [`StageLink::delivered`]; when a timer fires, [`StageLink::retry_due`].
pub trait Executor: Send + Sync {
    /// Tries once to deliver `bytes` to stage `to` (the peer `peer`).
    fn transmit(&self, link: &StageLink, id: MsgId, to: usize, bytes: Arc<Vec<u8>>);
    /// Calls [`StageLink::retry_due`] for `id` after `delay`.
    fn retry_after(&self, link: &StageLink, id: MsgId, delay: Duration);
}

struct WaitState {
    proto: StageProtocol,
    generation: u64,
    seen: u64,
    waiting: bool,
    waiting_for: String,
    killed: Option<String>,
}

struct Inner {
    state: Mutex<WaitState>,
    cond: Condvar,
    stage_id: StageIndex,
    shape: StageShape,
    peers: PeerTable,
    limits: Limits,
    desks: Desks,
    received: AtomicU64,
    executor: Box<dyn Executor>,
}

/// A running link (see the module docs). Cloning shares it.
#[derive(Clone)]
pub struct StageLink {
    inner: Arc<Inner>,
}

impl StageLink {
    /// A link at step `current` whose effects `executor` carries out; reveal requests,
    /// auditor hellos and inference are answered by `desks` (refused without one).
    pub fn new(
        cfg: LinkConfig,
        current: Step,
        desks: Desks,
        executor: Box<dyn Executor>,
    ) -> Result<Self> {
        let stage_id = StageIndex::try_from(cfg.shape.stage)
            .map_err(|_| Error::Config(format!("stage {} out of range", cfg.shape.stage)))?;
        let shape = cfg.shape.clone();
        let proto = StageProtocol::new(
            ProtocolConfig {
                run: cfg.run,
                shape: cfg.shape,
                peers: cfg.peers.stages.iter().map(|p| p.peer_id).collect(),
                retry: cfg.retry,
            },
            current,
        );
        Ok(StageLink {
            inner: Arc::new(Inner {
                state: Mutex::new(WaitState {
                    proto,
                    generation: 0,
                    seen: 0,
                    waiting: false,
                    waiting_for: String::new(),
                    killed: None,
                }),
                cond: Condvar::new(),
                stage_id,
                shape,
                peers: cfg.peers,
                limits: cfg.limits,
                desks,
                received: AtomicU64::new(0),
                executor,
            }),
        })
    }

    /// Starts the link of a stage over `network`'s `inbound` requests (from
    /// [`weft_p2p::spawn`]) with the [`TokioExecutor`]; its dispatcher stops when `inbound`
    /// closes or the returned guard is dropped. Must be called inside a tokio runtime.
    pub fn start(
        cfg: LinkConfig,
        current: Step,
        desks: Desks,
        network: Network,
        inbound: mpsc::Receiver<InboundRequest>,
    ) -> Result<(Self, LinkTasks)> {
        let executor = TokioExecutor {
            network,
            peers: cfg.peers.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let link = StageLink::new(cfg, current, desks, Box::new(executor))?;
        let dispatcher = tokio::spawn(dispatch(link.clone(), inbound));
        Ok((link, LinkTasks(vec![dispatcher])))
    }

    fn lock(&self) -> MutexGuard<'_, WaitState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds one input to the protocol and carries out its effects; returns the reply, if
    /// the input was a request.
    fn feed(&self, input: Input) -> Option<Response> {
        let effects = {
            let mut st = self.lock();
            st.proto.handle(input)
        };
        let mut reply = None;
        let mut wake = false;
        for e in effects {
            match e {
                Effect::Reply(r) => reply = Some(r),
                Effect::Transmit { id, to, bytes } => {
                    self.inner.executor.transmit(self, id, to, bytes)
                }
                Effect::RetryAfter { id, delay } => {
                    self.inner.executor.retry_after(self, id, delay)
                }
                Effect::Wake => wake = true,
                Effect::Fatal(why) => {
                    tracing::error!("{why}");
                    wake = true;
                }
            }
        }
        if wake {
            let mut st = self.lock();
            st.generation += 1;
            self.inner.cond.notify_all();
        }
        reply
    }

    /// Handles one inbound request from `peer`: decodes and validates it, answers reveals
    /// and hellos from the desk, and feeds pipeline traffic to the protocol.
    pub fn handle_inbound(&self, peer: PeerId, bytes: &[u8]) -> Response {
        self.inner
            .received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let resp = match decode_request(bytes, &self.inner.limits) {
            Err(e) => Response::error(ErrorCode::Malformed, e.to_string()),
            Ok(req) => match desk::answer(&self.inner.desks, &peer, &req) {
                Some(r) => r,
                None => self
                    .feed(Input::Request {
                        from: peer,
                        request: req,
                    })
                    .unwrap_or_else(|| Response::error(ErrorCode::Internal, "no reply")),
            },
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

    /// An attempt to deliver message `id` ended (for executors).
    pub fn delivered(&self, id: MsgId, outcome: Delivery) {
        self.feed(Input::Delivered { id, outcome });
    }

    /// The retry timer of message `id` fired (for executors).
    pub fn retry_due(&self, id: MsgId) {
        self.feed(Input::RetryDue { id });
    }

    /// The peer of stage `to`, if the table has one.
    pub fn peer_of(&self, to: usize) -> Option<PeerId> {
        self.inner.peers.stages.get(to).map(|p| p.peer_id)
    }

    /// The shape the link validates against.
    pub fn shape(&self) -> &StageShape {
        &self.inner.shape
    }

    /// This stage's index as the wire carries it.
    pub fn stage_id(&self) -> StageIndex {
        self.inner.stage_id
    }

    /// The run.
    pub fn run(&self) -> RunId {
        self.lock().proto.run()
    }

    /// Moves to `step`: what is older than `step − 1` is forgotten.
    pub fn set_current(&self, step: Step) {
        self.feed(Input::Advance { step });
    }

    /// Sends `req` to stage `to`, logging it under `step` for resends.
    pub fn send(&self, to: usize, step: Step, req: &Request) {
        self.feed(Input::Send {
            to,
            step,
            request: req.clone(),
        });
    }

    /// Sends `req` to stage `to` without logging it (control messages).
    pub fn send_unlogged(&self, to: usize, req: &Request) {
        self.feed(Input::Control {
            to,
            request: req.clone(),
        });
    }

    /// Makes every wait fail from now on (a stage being stopped).
    pub fn kill(&self, why: &str) {
        let mut st = self.lock();
        st.killed = Some(why.to_string());
        st.generation += 1;
        self.inner.cond.notify_all();
    }

    /// Whether the compute side is blocked in a wait and has seen every wake since (see the
    /// module docs).
    pub fn is_settled(&self) -> bool {
        let st = self.lock();
        st.waiting && st.seen == st.generation
    }

    /// What the compute side is blocked on, if it is.
    pub fn waiting_for(&self) -> Option<String> {
        let st = self.lock();
        st.waiting.then(|| st.waiting_for.clone())
    }

    fn wait_until<T>(
        &self,
        deadline: Instant,
        what: &str,
        mut ready: impl FnMut(&mut StageProtocol) -> Option<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        loop {
            if let Some(why) = st.killed.clone() {
                st.waiting = false;
                return Err(Error::Network(format!("stopped: {why}")));
            }
            if let Some(f) = st.proto.fatal() {
                let f = f.to_string();
                st.waiting = false;
                return Err(Error::Network(f));
            }
            if let Some(v) = ready(&mut st.proto) {
                st.waiting = false;
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                st.waiting = false;
                return Err(Error::Network(format!("timed out waiting for {what}")));
            }
            st.seen = st.generation;
            st.waiting = true;
            if st.waiting_for != what {
                st.waiting_for = what.to_string();
            }
            st = self
                .inner
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for the tensor of `slot` in `step`.
    pub fn wait_tensor(&self, step: Step, slot: Slot, timeout: Duration) -> Result<WireTensor> {
        let what = format!("{slot:?} of step {step}");
        match self.wait_until(Instant::now() + timeout, &what, |p| p.take(step, slot))? {
            Payload::Tensor(t) => Ok(t),
            _ => Err(Error::Network(format!("{what} holds no tensor"))),
        }
    }

    /// Waits up to `timeout` for the scalar (f64 bits) of `slot` in `step`.
    pub fn wait_scalar(&self, step: Step, slot: Slot, timeout: Duration) -> Result<u64> {
        let what = format!("{slot:?} of step {step}");
        match self.wait_until(Instant::now() + timeout, &what, |p| p.take(step, slot))? {
            Payload::Scalar(b) => Ok(b),
            _ => Err(Error::Network(format!("{what} holds no scalar"))),
        }
    }

    /// Waits up to `timeout` for the neighbour's seal over what it sent in `direction`
    /// during `step`: `(root, signature)`, not yet verified.
    pub fn wait_seal(
        &self,
        step: Step,
        direction: Direction,
        timeout: Duration,
    ) -> Result<([u8; 32], [u8; 64])> {
        let slot = Slot::Seal(direction);
        let what = format!("{slot:?} of step {step}");
        match self.wait_until(Instant::now() + timeout, &what, |p| p.take(step, slot))? {
            Payload::Seal { root, signature } => Ok((root, signature)),
            _ => Err(Error::Network(format!("{what} holds no seal"))),
        }
    }

    /// Waits up to `timeout` until every message sent is delivered, dropped or given up.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.wait_until(Instant::now() + timeout, "deliveries", |p| {
            (p.in_flight() == 0).then_some(())
        })
    }

    /// Waits up to `timeout` until every stage in `partners` has said it is done.
    pub fn wait_done(&self, partners: &[usize], timeout: Duration) -> Result<()> {
        self.wait_until(Instant::now() + timeout, "partners to finish", |p| {
            p.all_done(partners).then_some(())
        })
    }

    /// Payload bytes delivered so far.
    pub fn bytes_sent(&self) -> u64 {
        self.lock().proto.bytes_delivered()
    }

    /// Payload bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }
}

/// The tasks of a link started with [`StageLink::start`]; dropping it stops them.
pub struct LinkTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for LinkTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Transmissions over libp2p and timers on tokio.
pub struct TokioExecutor {
    network: Network,
    peers: PeerTable,
    runtime: tokio::runtime::Handle,
}

impl Executor for TokioExecutor {
    fn transmit(&self, link: &StageLink, id: MsgId, to: usize, bytes: Arc<Vec<u8>>) {
        let Some(target) = self.peers.stages.get(to).cloned() else {
            link.delivered(id, Delivery::Unreachable(format!("no peer for stage {to}")));
            return;
        };
        let (net, link) = (self.network.clone(), link.clone());
        self.runtime.spawn(async move {
            let outcome = match net
                .request(target.peer_id, target.addrs.clone(), bytes.to_vec())
                .await
            {
                Ok(resp) => match decode_response(&resp) {
                    Ok(r) => Delivery::Answered(r),
                    Err(e) => Delivery::Undecodable(e.to_string()),
                },
                Err(e) => Delivery::Unreachable(e.to_string()),
            };
            // The protocol's bookkeeping may touch the store; keep it off the reactor.
            let _ = tokio::task::spawn_blocking(move || link.delivered(id, outcome)).await;
        });
    }

    fn retry_after(&self, link: &StageLink, id: MsgId, delay: Duration) {
        let link = link.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tokio::task::spawn_blocking(move || link.retry_due(id)).await;
        });
    }
}

async fn dispatch(link: StageLink, mut inbound: mpsc::Receiver<InboundRequest>) {
    while let Some(InboundRequest {
        peer,
        request,
        reply,
    }) = inbound.recv().await
    {
        let link = link.clone();
        tokio::spawn(async move {
            let resp = tokio::task::spawn_blocking(move || link.handle_inbound(peer, &request))
                .await
                .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()));
            let _ = reply.send(resp.encode());
        });
    }
}
