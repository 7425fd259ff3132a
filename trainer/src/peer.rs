//! One pipeline stage as its own process: a [`StageWorker`], a `weft-p2p` network and a
//! [`PeerTable`], running the GPipe schedule with its neighbours over libp2p.
//!
//! # Message flow (stage `k` of `S`, step `t`, `M` micro-batches)
//!
//! ```text
//! for µ in 0..M:      k = 0 builds µ's tokens from the data assignment; k > 0 waits for
//!                     Forward{t, µ, from k-1}; forward; k < S-1 sends Forward{t, µ} to k+1
//! for µ in M-1..=0:   k = S-1 back-propagates its loss; k < S-1 waits for Backward{t, µ,
//!                     from k+1}; backward; k > 0 sends Backward{t, µ} to k-1
//! tied embeddings:    stages 0 and S-1 exchange SharedGrad{t} and both use g₀ + g_{S-1}
//! global clipping:    every stage sends GradSqSum{t} to every other; all sum in stage order
//! finish_step         clip + AdamW + commitment; tensor store; journal; checkpoint every N
//! ```
//!
//! The numerics are exactly those of [`crate::pipeline::run_step_in_process`]: tensors cross
//! as f32 little-endian bytes (lossless), the receiver detaches them and makes them fresh
//! leaves, the reductions run in the same order.
//!
//! # Threads
//!
//! libtorch runs on one blocking thread that owns the worker. The tokio side only moves bytes:
//! a dispatcher hands each inbound request to the blocking pool (decode, validate, buffer),
//! and an outbox task delivers each outgoing message on its own task, so the network stays
//! responsive while a stage computes, and stage k computes micro-batch µ+1 while µ's
//! activations are in flight.
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
//! tensor of exactly the expected shape. Otherwise the sender gets
//! [`Response::Error`] with an [`ErrorCode`], it is logged, and nothing is trained on it.
//! A message for a slot already received is acknowledged if identical (a retry) and refused
//! as [`ErrorCode::Conflict`] otherwise; a message for a step before `current − 1` gets
//! [`ErrorCode::StaleStep`], which the sender drops.
//!
//! # Delivery, retry, restart
//!
//! Each message is retried with exponential backoff on network failure or a retryable error
//! ([`ErrorCode::retryable`]) up to [`RetryPolicy::attempts`]; a non-retryable error is
//! fatal to the step (this stage or its peer is broken). Every message sent is also kept in
//! a resend log for the current and the previous step. A stage that restarts (after
//! `kill -9`) resumes from its checkpoint, replays the committed steps after it from its
//! tensor store (verifying that each replay reproduces the stored commitment), and asks its
//! partners to [`Request::Resend`] what they sent it from the next step on; what it sends
//! again for steps its partners already finished is acknowledged as a duplicate. At the
//! end each stage sends [`Request::Done`] and waits for its partners' `Done`, so nobody
//! leaves while a partner may still need a resend.

use crate::checkpoint;
use crate::commit::canonical_bytes;
use crate::config::ClipScope;
use crate::error::{Error, Result};
use crate::pipeline::{ForwardOutput, StageWorker};
use crate::store::{Journal, StepAux, StepBytes, TensorStore};
use crate::wire::{
    decode_request, decode_response, ErrorCode, Limits, Request, Response, RevealItem, WireTensor,
};
use parity_scale_codec::Encode;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};
use tokio::sync::mpsc;
use weft_p2p::{Address, InboundRequest, Network, PeerId};

/// Where one stage's trainer is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePeer {
    /// Its identity.
    pub peer_id: PeerId,
    /// Its addresses.
    pub addrs: Vec<Address>,
}

/// Who trains which stage, and who audits it: the static form of what chain assignment
/// will provide (the pallets' stage records hold the same: per stage a peer id and
/// addresses, and the auditors drawn for it).
///
/// TOML form:
///
/// ```toml
/// run = 0                      # optional; must match --run when present
/// [[stage]]
/// stage = 0
/// peer_id = "12D3KooW…"
/// addrs = ["/ip4/127.0.0.1/tcp/40100"]
/// [[auditor]]                  # optional, any number
/// stage = 0
/// peer_id = "12D3KooW…"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTable {
    /// The run, if the table names one.
    pub run: Option<u64>,
    /// Stage `i`'s trainer at index `i`.
    pub stages: Vec<StagePeer>,
    /// `(stage, auditor)` pairs.
    pub auditors: Vec<(usize, PeerId)>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<u64>,
    stage: Vec<StageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    auditor: Vec<AuditorEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StageEntry {
    stage: usize,
    peer_id: String,
    addrs: Vec<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditorEntry {
    stage: usize,
    peer_id: String,
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.parse()
        .map_err(|e| Error::Peers(format!("bad peer id {s:?}: {e}")))
}

impl PeerTable {
    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: TableFile =
            toml::from_str(text).map_err(|e| Error::Peers(format!("invalid TOML: {e}")))?;
        let n = file.stage.len();
        let mut stages: Vec<Option<StagePeer>> = vec![None; n];
        for e in file.stage {
            if e.stage >= n {
                return Err(Error::Peers(format!(
                    "stage {} listed, but only {n} stages",
                    e.stage
                )));
            }
            let addrs = e
                .addrs
                .iter()
                .map(|a| {
                    a.parse::<Address>()
                        .map_err(|err| Error::Peers(format!("bad address {a:?}: {err}")))
                })
                .collect::<Result<Vec<_>>>()?;
            if stages[e.stage].is_some() {
                return Err(Error::Peers(format!("stage {} listed twice", e.stage)));
            }
            stages[e.stage] = Some(StagePeer {
                peer_id: parse_peer(&e.peer_id)?,
                addrs,
            });
        }
        let stages = stages
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Peers("stages must be numbered 0..S without gaps".into()))?;
        let auditors = file
            .auditor
            .iter()
            .map(|a| Ok((a.stage, parse_peer(&a.peer_id)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(PeerTable {
            run: file.run,
            stages,
            auditors,
        })
    }

    /// Reads the TOML form from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text)
    }

    /// The TOML form.
    pub fn to_toml(&self) -> Result<String> {
        let file = TableFile {
            run: self.run,
            stage: self
                .stages
                .iter()
                .enumerate()
                .map(|(i, p)| StageEntry {
                    stage: i,
                    peer_id: p.peer_id.to_string(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            auditor: self
                .auditors
                .iter()
                .map(|(s, p)| AuditorEntry {
                    stage: *s,
                    peer_id: p.to_string(),
                })
                .collect(),
        };
        toml::to_string(&file).map_err(|e| Error::Peers(e.to_string()))
    }

    /// The auditors of `stage`.
    pub fn auditors_of(&self, stage: usize) -> HashSet<PeerId> {
        self.auditors
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, p)| *p)
            .collect()
    }
}

/// Who may fetch this stage's reveals: a fixed set of peers (a static peer table), plus
/// peers that proved with [`Request::AuditorHello`] that they speak for a validator the chain
/// assigns to audit this stage (see [`crate::chain`] for the message and the checks). The
/// chain side keeps the directory of auditor accounts and their BLS keys current with
/// [`RevealAccess::set_auditors`]; a peer whose account leaves the directory loses access.
#[derive(Debug, Default)]
pub struct RevealAccess {
    fixed: HashSet<PeerId>,
    inner: Mutex<AccessInner>,
}

#[derive(Debug, Default)]
struct AccessInner {
    keys: HashMap<[u8; 32], weft_bls::PublicKeyBytes>,
    bound: HashMap<PeerId, [u8; 32]>,
}

impl RevealAccess {
    /// Access for exactly `peers` (and whoever proves to be an auditor later).
    pub fn fixed(peers: HashSet<PeerId>) -> Self {
        RevealAccess {
            fixed: peers,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AccessInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the directory of auditor accounts and their keys; peers bound to an
    /// account no longer in it (or whose key changed) lose access.
    pub fn set_auditors(&self, auditors: &[([u8; 32], weft_bls::PublicKeyBytes)]) {
        let mut g = self.lock();
        let keys: HashMap<_, _> = auditors.iter().copied().collect();
        let old = std::mem::take(&mut g.keys);
        g.bound
            .retain(|_, acc| keys.contains_key(acc) && keys.get(acc) == old.get(acc));
        g.keys = keys;
    }

    /// Whether `peer` may fetch reveals.
    pub fn allows(&self, peer: &PeerId) -> bool {
        self.fixed.contains(peer) || self.lock().bound.contains_key(peer)
    }

    /// Checks an auditor's hello from `peer` and, if it holds, grants `peer` access.
    pub fn hello(
        &self,
        (run, stage): (u64, u32),
        peer: &PeerId,
        account: [u8; 32],
        signature: [u8; 32],
    ) -> std::result::Result<(), String> {
        let (Ok(run32), Ok(stage16)) = (u32::try_from(run), u16::try_from(stage)) else {
            return Err("run or stage out of range".into());
        };
        let mut g = self.lock();
        let Some(key) = g.keys.get(&account).copied() else {
            return Err(format!(
                "account 0x{} is not an auditor of stage {stage} on chain",
                hex::encode(account)
            ));
        };
        let msg = crate::chain::auditor_hello_message(run32, stage16, peer);
        if !weft_bls::verify_bytes(&key, &msg, &weft_bls::SignatureBytes(signature)) {
            return Err("the hello signature does not verify under the auditor's key".into());
        }
        g.bound.insert(*peer, account);
        Ok(())
    }
}

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

/// Settings of a stage process.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The run.
    pub run: u64,
    /// This trainer's replica of its stage (reveal requests name it).
    pub replica: u32,
    /// Train until this many steps are complete.
    pub steps: u64,
    /// Checkpoint, journal and tensor store live here.
    pub data_dir: PathBuf,
    /// Checkpoint after every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Steps kept in the tensor store; at least `checkpoint_every`.
    pub retention: u64,
    /// The peers.
    pub peers: PeerTable,
    /// Who may fetch reveals (the stage's auditors).
    pub auditors: Arc<RevealAccess>,
    /// Limits on received tensors.
    pub limits: Limits,
    /// How long to wait for a message from a partner before giving up the run.
    pub peer_timeout: Duration,
    /// Delivery retries.
    pub retry: RetryPolicy,
}

/// Progress of one step of this stage.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// The step.
    pub step: u64,
    /// The stage.
    pub stage: usize,
    /// The step's mean loss (last stage).
    pub loss: Option<f64>,
    /// Wall time of the step, waiting included.
    pub seconds: f64,
    /// Tokens of the step ÷ `seconds`.
    pub tokens_per_s: f64,
    /// Payload bytes delivered so far.
    pub bytes_sent: u64,
    /// Payload bytes received so far.
    pub bytes_received: u64,
}

/// What a stage process did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The step training (re)started at.
    pub resumed_at: u64,
    /// Steps replayed from the store on start.
    pub replayed: u64,
    /// `(step, loss)` on the last stage.
    pub losses: Vec<(u64, f64)>,
    /// Payload bytes delivered.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Forward(u32),
    Backward(u32),
    SharedGrad,
    GradSq(u32),
}

type Key = (u64, Slot);

#[derive(Debug)]
enum Payload {
    Tensor(WireTensor),
    Scalar(u64),
}

#[derive(Default)]
struct State {
    current: u64,
    inbox: HashMap<Key, Payload>,
    seen: HashMap<Key, blake3::Hash>,
    done_from: HashSet<usize>,
    fatal: Option<String>,
    in_flight: usize,
    sent_log: BTreeMap<(u64, usize), Vec<Arc<Vec<u8>>>>,
}

struct Outgoing {
    to: usize,
    bytes: Arc<Vec<u8>>,
}

/// What the stage knows about its model, for validating what arrives.
#[derive(Debug, Clone)]
struct Shape {
    stage: usize,
    n_stages: usize,
    micro_batches: usize,
    activation: Vec<i64>,
    shared: Option<Vec<i64>>,
    global_clip: bool,
}

struct Shared {
    run: u64,
    replica: u32,
    shape: Shape,
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

    /// The stages this one exchanges messages with.
    fn partners(&self) -> Vec<usize> {
        let (k, n) = (self.shape.stage, self.shape.n_stages);
        let mut p: Vec<usize> = Vec::new();
        if self.shape.global_clip {
            p.extend((0..n).filter(|&s| s != k));
        } else {
            if k > 0 {
                p.push(k - 1);
            }
            if k + 1 < n {
                p.push(k + 1);
            }
            if self.shape.shared.is_some() {
                p.push(if k == 0 { n - 1 } else { 0 });
            }
        }
        p.sort_unstable();
        p.dedup();
        p
    }

    fn set_current(&self, step: u64) {
        let mut st = self.lock();
        st.current = step;
        let keep = step.saturating_sub(1);
        st.inbox.retain(|(s, _), _| *s >= keep);
        st.seen.retain(|(s, _), _| *s >= keep);
        st.sent_log.retain(|(s, _), _| *s >= keep);
    }

    /// Queues `req` for stage `to`, logging it under `step` for resends.
    fn send(&self, to: usize, step: u64, req: &Request) {
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

    fn check_sender(&self, peer: &PeerId, run: u64, from_stage: u32) -> Result<usize, Response> {
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
                    (self.run, k as u32, self.replica),
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
                    Err(why) => Response::error(ErrorCode::Forbidden, why),
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

/// Where a restarted stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The next step to train.
    pub next_step: u64,
    /// The step the checkpoint continued from.
    pub checkpoint_step: u64,
    /// Steps recomputed from the store after the checkpoint.
    pub replayed: u64,
    /// Whether a journal was found (the stage had committed before).
    pub had_journal: bool,
}

/// The checkpoint file of a stage's data directory.
pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint.safetensors")
}

/// Restores `worker` to the state after its last committed step: loads the checkpoint (if
/// any), then recomputes each journaled step after it from the tensor store, checking that
/// the recomputation reproduces the stored commitment bit for bit.
pub fn resume(
    worker: &mut StageWorker,
    data_dir: &Path,
    store: &TensorStore,
    run: u64,
) -> Result<Resumed> {
    let ck = checkpoint_path(data_dir);
    let checkpoint_step = if ck.exists() {
        checkpoint::load(worker, &ck)?
    } else {
        0
    };
    let spec = worker.stage().spec();
    let Some(j) = Journal::read(data_dir)? else {
        return Ok(Resumed {
            next_step: checkpoint_step,
            checkpoint_step,
            replayed: 0,
            had_journal: false,
        });
    };
    if j.run != run || j.stage != spec.stage || j.n_stages != spec.n_stages {
        return Err(Error::Checkpoint(format!(
            "the journal in {} is for run {} stage {} of {}, not run {run} stage {} of {}",
            data_dir.display(),
            j.run,
            j.stage,
            j.n_stages,
            spec.stage,
            spec.n_stages
        )));
    }
    if checkpoint_step > j.last_committed + 1 {
        return Err(Error::Checkpoint(format!(
            "the checkpoint (step {checkpoint_step}) is ahead of the journal (step {})",
            j.last_committed
        )));
    }
    for step in checkpoint_step..=j.last_committed {
        replay_step(worker, store, step)?;
    }
    let replayed = j.last_committed + 1 - checkpoint_step;
    if replayed > 0 {
        tracing::info!(
            from = checkpoint_step,
            to = j.last_committed,
            "replayed committed steps from the store"
        );
    }
    Ok(Resumed {
        next_step: j.last_committed + 1,
        checkpoint_step,
        replayed,
        had_journal: true,
    })
}

fn slice_tensor(bytes: &[u8], index: usize, shape: &[i64]) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    let per = numel as usize * 4;
    let part = bytes
        .get(index * per..(index + 1) * per)
        .ok_or_else(|| Error::Checkpoint(format!("stored tensors too short for item {index}")))?;
    Ok(Tensor::f_from_data_size(part, shape, Kind::Float)?)
}

/// Recomputes step `step` from the stored inputs and gradients.
fn replay_step(worker: &mut StageWorker, store: &TensorStore, step: u64) -> Result<()> {
    let stored = store.commitment(step)?;
    let aux = store.aux(step)?;
    let spec = worker.stage().spec();
    let m = worker.micro_batches();
    let shape = worker.stage().input_shape(
        worker.train_config().micro_batch_size,
        worker.stage().config().seq_len,
    );
    let inputs = if spec.is_first() {
        Vec::new()
    } else {
        store.item(step, RevealItem::Inputs)?
    };
    let grads = if spec.is_last() {
        Vec::new()
    } else {
        store.item(step, RevealItem::OutputGrads)?
    };
    worker.begin_step(step)?;
    for micro in 0..m {
        let input = if spec.is_first() {
            None
        } else {
            Some(slice_tensor(&inputs, micro, &shape)?)
        };
        worker.forward(micro, input.as_ref())?;
    }
    for micro in (0..m).rev() {
        // Gradients are stored in the order they were received: M-1 down to 0.
        let g = if spec.is_last() {
            None
        } else {
            Some(slice_tensor(&grads, m - 1 - micro, &shape)?)
        };
        worker.backward(micro, g.as_ref())?;
    }
    if let Some(own) = worker.shared_grad()? {
        let theirs = aux
            .shared_grad_other
            .as_ref()
            .ok_or_else(|| Error::Checkpoint(format!("step {step}: no stored shared gradient")))?
            .to_tensor()?
            .f_to_device(own.device())?;
        let sum = if spec.is_first() {
            own.f_add(&theirs)?
        } else {
            theirs.f_add(&own)?
        };
        worker.set_shared_grad(&sum)?;
    }
    let global = aux.global_sq_sum_bits.map(f64::from_bits);
    let report = worker.finish_step(global)?;
    if report.commitment.as_ref() != Some(&stored) {
        return Err(Error::Checkpoint(format!(
            "replaying step {step} does not reproduce its stored commitment (non-deterministic \
             compute?); checkpoint every step on this device"
        )));
    }
    Ok(())
}

/// Called on the training thread after each step is stored and journaled, with its
/// commitment; an error stops the stage (the step stays committed locally).
pub type AfterStep = Box<dyn FnMut(&crate::commit::StepCommitment) -> Result<()> + Send>;

/// Sees, and may rewrite, a step's commitment and the bytes kept for its reveal just before
/// they are stored and journaled. A seam for test tools that simulate dishonest trainers
/// (replayed steps, reveals that differ from the commitment); the trainer installs none.
pub trait CommitHook: Send {
    /// Rewrites `commitment` and/or `bytes` of step `commitment.step`.
    fn commit(
        &mut self,
        commitment: &mut crate::commit::StepCommitment,
        bytes: &mut StepBytes,
    ) -> Result<()>;
}

struct Ctx {
    shared: Arc<Shared>,
    cfg: NodeConfig,
}

impl Ctx {
    fn run_step(
        &self,
        worker: &mut StageWorker,
        step: u64,
        hook: &mut Option<Box<dyn CommitHook>>,
    ) -> Result<(Option<f64>, u64, crate::commit::StepCommitment)> {
        let sh = &self.shared;
        let (k, n) = (sh.shape.stage, sh.shape.n_stages);
        let m = sh.shape.micro_batches;
        let run = self.cfg.run;
        let timeout = self.cfg.peer_timeout;
        sh.set_current(step);
        let moments = |w: &StageWorker| -> Result<Vec<u8>> {
            canonical_bytes(w.optimizer().moments().iter().flat_map(|s| [&s.m, &s.v]))
        };
        let weights = |w: &StageWorker| canonical_bytes(w.stage().params().iter().map(|(_, t)| t));
        // The previous step's store entry holds the "before" bytes (hard-linked); compute them
        // only when it is missing (the first step of a process).
        let before = match step.checked_sub(1) {
            Some(p) if sh.store.has(p) => None,
            _ => Some((weights(worker)?, moments(worker)?)),
        };
        worker.begin_step(step)?;
        for micro in 0..m {
            let input = if k == 0 {
                None
            } else {
                let t = sh.wait_tensor((step, Slot::Forward(micro as u32)), timeout)?;
                Some(t.to_tensor()?)
            };
            if let ForwardOutput::Activations(a) = worker.forward(micro, input.as_ref())? {
                let req = Request::Forward {
                    run,
                    step,
                    micro: micro as u32,
                    from_stage: k as u32,
                    tensor: WireTensor::from_tensor(&a)?,
                };
                sh.send(k + 1, step, &req);
            }
        }
        for micro in (0..m).rev() {
            let g = if k + 1 == n {
                None
            } else {
                let t = sh.wait_tensor((step, Slot::Backward(micro as u32)), timeout)?;
                Some(t.to_tensor()?)
            };
            if let Some(ig) = worker.backward(micro, g.as_ref())? {
                let req = Request::Backward {
                    run,
                    step,
                    micro: micro as u32,
                    from_stage: k as u32,
                    tensor: WireTensor::from_tensor(&ig)?,
                };
                sh.send(k - 1, step, &req);
            }
        }
        let mut aux = StepAux::default();
        if let Some(own) = worker.shared_grad()? {
            let other = if k == 0 { n - 1 } else { 0 };
            let req = Request::SharedGrad {
                run,
                step,
                from_stage: k as u32,
                tensor: WireTensor::from_tensor(&own)?,
            };
            sh.send(other, step, &req);
            let theirs_w = sh.wait_tensor((step, Slot::SharedGrad), timeout)?;
            let theirs = theirs_w.to_tensor()?.f_to_device(own.device())?;
            let sum = if k == 0 {
                own.f_add(&theirs)?
            } else {
                theirs.f_add(&own)?
            };
            worker.set_shared_grad(&sum)?;
            aux.shared_grad_other = Some(theirs_w);
        }
        let global = if sh.shape.global_clip {
            let own = worker.grad_sq_sum()?;
            for s in (0..n).filter(|&s| s != k) {
                let req = Request::GradSqSum {
                    run,
                    step,
                    from_stage: k as u32,
                    bits: own.to_bits(),
                };
                sh.send(s, step, &req);
            }
            let mut total = 0.0f64;
            for s in 0..n {
                total += if s == k {
                    own
                } else {
                    match sh.wait_payload((step, Slot::GradSq(s as u32)), timeout)? {
                        Payload::Scalar(b) => f64::from_bits(b),
                        Payload::Tensor(_) => {
                            return Err(Error::Network("a tensor where a scalar was due".into()))
                        }
                    }
                };
            }
            aux.global_sq_sum_bits = Some(total.to_bits());
            Some(total)
        } else {
            None
        };
        let report = worker.finish_step(global)?;
        let mut commitment = report
            .commitment
            .ok_or_else(|| Error::Pipeline("the worker does not commit".into()))?;
        let record = report
            .record
            .ok_or_else(|| Error::Pipeline("the worker kept no record".into()))?;
        let (wb, ob) = match before {
            Some((w, o)) => (Some(w), Some(o)),
            None => (None, None),
        };
        let mut bytes = StepBytes {
            items: vec![
                (RevealItem::WeightsBefore, wb),
                (RevealItem::Inputs, Some(canonical_bytes(&record.inputs)?)),
                (RevealItem::Outputs, Some(canonical_bytes(&record.outputs)?)),
                (
                    RevealItem::OutputGrads,
                    Some(canonical_bytes(&record.output_grads)?),
                ),
                (
                    RevealItem::InputGrads,
                    Some(canonical_bytes(&record.input_grads)?),
                ),
                (RevealItem::WeightsAfter, Some(weights(worker)?)),
                (RevealItem::OptimizerBefore, ob),
                (RevealItem::OptimizerAfter, Some(moments(worker)?)),
            ],
        };
        if let Some(h) = hook.as_mut() {
            h.commit(&mut commitment, &mut bytes)?;
        }
        sh.store.write_step(&commitment, &bytes, &aux)?;
        Journal::for_commitment(run, k, n, &commitment).write(&self.cfg.data_dir)?;
        if (step + 1).checked_rem(self.cfg.checkpoint_every) == Some(0) {
            checkpoint::save(worker, &checkpoint_path(&self.cfg.data_dir))?;
        }
        Ok((report.loss, step + 1, commitment))
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.shared
            .wait_until(Instant::now() + timeout, "deliveries", |st| {
                (st.in_flight == 0).then_some(())
            })
    }

    fn train(
        &self,
        mut worker: StageWorker,
        progress: &mut (dyn FnMut(&StepProgress) + Send),
        after_step: &mut Option<AfterStep>,
        commit_hook: &mut Option<Box<dyn CommitHook>>,
    ) -> Result<Summary> {
        let sh = &self.shared;
        let r = resume(&mut worker, &self.cfg.data_dir, &sh.store, self.cfg.run)?;
        sh.set_current(r.next_step);
        let partners = sh.partners();
        if r.had_journal {
            // Whatever partners sent us for the steps we are about to (re)do died with the
            // previous process.
            for &p in &partners {
                sh.send_unlogged(
                    p,
                    &Request::Resend {
                        run: self.cfg.run,
                        from_stage: sh.shape.stage as u32,
                        from_step: r.next_step,
                    },
                );
            }
        }
        let tokens = (worker.train_config().micro_batch_size
            * worker.micro_batches() as i64
            * worker.stage().config().seq_len) as f64;
        let mut losses = Vec::new();
        let mut last_ckpt = r.checkpoint_step;
        for step in r.next_step..self.cfg.steps {
            let t0 = Instant::now();
            let (loss, done, commitment) = self.run_step(&mut worker, step, commit_hook)?;
            if done.checked_rem(self.cfg.checkpoint_every) == Some(0) {
                last_ckpt = done;
            }
            if let Some(l) = loss {
                losses.push((step, l));
            }
            let seconds = t0.elapsed().as_secs_f64();
            progress(&StepProgress {
                step,
                stage: sh.shape.stage,
                loss,
                seconds,
                tokens_per_s: tokens / seconds.max(1e-9),
                bytes_sent: sh.sent.load(Ordering::Relaxed),
                bytes_received: sh.received.load(Ordering::Relaxed),
            });
            if let Some(hook) = after_step.as_mut() {
                if let Err(e) = hook(&commitment) {
                    if done.checked_rem(self.cfg.checkpoint_every) != Some(0) {
                        // Leave a checkpoint so a restart need not replay many steps.
                        let _ = checkpoint::save(&worker, &checkpoint_path(&self.cfg.data_dir));
                    }
                    return Err(e);
                }
            }
        }
        if last_ckpt != worker.completed_steps() {
            checkpoint::save(&worker, &checkpoint_path(&self.cfg.data_dir))?;
        }
        let finished = worker.completed_steps();
        sh.set_current(finished);
        self.flush(self.cfg.peer_timeout)?;
        for &p in &partners {
            let req = Request::Done {
                run: self.cfg.run,
                from_stage: sh.shape.stage as u32,
                steps: finished,
            };
            sh.send(p, finished, &req);
        }
        self.flush(self.cfg.peer_timeout)?;
        // A stage that restarts with nothing left to train only says it is done: its
        // partners may have left already.
        if r.next_step < self.cfg.steps {
            sh.wait_until(
                Instant::now() + self.cfg.peer_timeout,
                "partners to finish",
                |st| {
                    partners
                        .iter()
                        .all(|p| st.done_from.contains(p))
                        .then_some(())
                },
            )?;
        }
        Ok(Summary {
            resumed_at: r.next_step,
            replayed: r.replayed,
            losses,
            bytes_sent: sh.sent.load(Ordering::Relaxed),
            bytes_received: sh.received.load(Ordering::Relaxed),
        })
    }
}

/// Runs stage `worker` (built with `commit: true`) of the run until `cfg.steps` steps are
/// complete, resuming from `cfg.data_dir` after a crash. `network` and `inbound` come from
/// [`weft_p2p::spawn`]; `progress` is called after every step.
pub async fn run_stage(
    cfg: NodeConfig,
    worker: StageWorker,
    network: Network,
    inbound: mpsc::Receiver<InboundRequest>,
    progress: Box<dyn FnMut(&StepProgress) + Send>,
) -> Result<Summary> {
    run_stage_with(cfg, worker, network, inbound, progress, None, None).await
}

/// [`run_stage`] with a hook called after every step (the chain trainer submits the
/// commitment from it, and pauses or stops training through it) and an optional
/// [`CommitHook`] (test tools only).
#[allow(clippy::too_many_arguments)]
pub async fn run_stage_with(
    cfg: NodeConfig,
    worker: StageWorker,
    network: Network,
    inbound: mpsc::Receiver<InboundRequest>,
    mut progress: Box<dyn FnMut(&StepProgress) + Send>,
    mut after_step: Option<AfterStep>,
    mut commit_hook: Option<Box<dyn CommitHook>>,
) -> Result<Summary> {
    let mut worker = worker;
    worker.set_replica(cfg.replica);
    if !worker.options().commit {
        return Err(Error::Config(
            "a pipeline stage commits every step: build its worker with commit".into(),
        ));
    }
    if cfg.checkpoint_every == 0 || cfg.retention < cfg.checkpoint_every {
        return Err(Error::Config(format!(
            "checkpoint_every ({}) must be ≥ 1 and ≤ the store retention ({}), so that a restart \
             can replay from the store",
            cfg.checkpoint_every, cfg.retention
        )));
    }
    let spec = worker.stage().spec();
    if cfg.peers.stages.len() != spec.n_stages {
        return Err(Error::Peers(format!(
            "the table lists {} stages, the run has {}",
            cfg.peers.stages.len(),
            spec.n_stages
        )));
    }
    if let Some(r) = cfg.peers.run.filter(|&r| r != cfg.run) {
        return Err(Error::Peers(format!(
            "the table is for run {r}, not {}",
            cfg.run
        )));
    }
    if cfg.peers.stages[spec.stage].peer_id != network.local_peer_id() {
        return Err(Error::Peers(format!(
            "the table assigns stage {} to {}, this node is {}",
            spec.stage,
            cfg.peers.stages[spec.stage].peer_id,
            network.local_peer_id()
        )));
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::io(&cfg.data_dir, e))?;
    let store = TensorStore::open(&cfg.data_dir, cfg.retention)?;
    let model = worker.stage().config();
    let train = worker.train_config();
    let shape = Shape {
        stage: spec.stage,
        n_stages: spec.n_stages,
        micro_batches: worker.micro_batches(),
        activation: vec![train.micro_batch_size, model.seq_len, model.d_model],
        shared: (model.tied_embeddings && spec.n_stages > 1 && (spec.is_first() || spec.is_last()))
            .then(|| vec![model.vocab_size, model.d_model]),
        global_clip: train.clip_scope == ClipScope::Global && spec.n_stages > 1,
    };
    let current = Journal::read(&cfg.data_dir)?.map_or(0, |j| j.last_committed + 1);
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        run: cfg.run,
        replica: cfg.replica,
        shape,
        peers: cfg.peers.clone(),
        auditors: cfg.auditors.clone(),
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
    let dispatcher = tokio::spawn(dispatch(shared.clone(), inbound));
    let sender = tokio::spawn(outbox(shared.clone(), network, cfg.retry, rx));
    let ctx = Ctx {
        shared: shared.clone(),
        cfg,
    };
    let result = tokio::task::spawn_blocking(move || {
        ctx.train(worker, &mut *progress, &mut after_step, &mut commit_hook)
    })
    .await
    .map_err(|e| Error::Pipeline(format!("the training thread failed: {e}")))?;
    dispatcher.abort();
    sender.abort();
    result
}

/// After the last step: keeps answering reveal requests (and auditor hellos) of this stage
/// from the tensor store until `until` resolves, so steps committed near the end can still be
/// audited; pipeline traffic is refused. A trainer that stopped serving before its audit
/// windows closed would fail those audits with `NoReveal`.
pub async fn serve_reveals(
    mut inbound: mpsc::Receiver<InboundRequest>,
    store: Arc<TensorStore>,
    auditors: Arc<RevealAccess>,
    (run, stage, replica): (u64, u32, u32),
    limits: Limits,
    until: impl std::future::Future<Output = ()>,
) {
    let handle = move |peer: PeerId, bytes: &[u8]| -> Response {
        match decode_request(bytes, &limits) {
            Err(e) => Response::error(ErrorCode::Malformed, e.to_string()),
            Ok(Request::Reveal(r)) => {
                let allowed: HashSet<PeerId> = if auditors.allows(&peer) {
                    HashSet::from([peer])
                } else {
                    HashSet::new()
                };
                store.answer_reveal(&allowed, (run, stage, replica), &peer, &r)
            }
            Ok(Request::AuditorHello {
                run: r,
                stage: s,
                account,
                signature,
            }) => {
                if r != run || s != stage {
                    return Response::error(
                        ErrorCode::WrongStage,
                        format!("this is run {run} stage {stage}"),
                    );
                }
                match auditors.hello((r, s), &peer, account, signature) {
                    Ok(()) => Response::Ack,
                    Err(why) => Response::error(ErrorCode::Forbidden, why),
                }
            }
            Ok(_) => Response::error(
                ErrorCode::StaleStep,
                "training has finished; only reveals are served",
            ),
        }
    };
    let handle = Arc::new(handle);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => break,
            req = inbound.recv() => {
                let Some(InboundRequest { peer, request, reply }) = req else { break };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let resp = tokio::task::spawn_blocking(move || handle(peer, &request))
                        .await
                        .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()));
                    let _ = reply.send(resp.encode());
                });
            }
        }
    }
}
