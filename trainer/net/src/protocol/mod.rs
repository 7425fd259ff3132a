//! The stage protocol as a pure state machine: [`StageProtocol::handle`] takes one
//! [`Input`] and returns the [`Effect`]s the driver must carry out. It does no I/O, reads no
//! clock and draws no randomness: the tokio driver ([`crate::link`]) does the sending, the
//! timers and the waking, and a simulation can drive the very same machine over a seeded,
//! lossy, reordering network in one process.
//!
//! # Inputs and effects
//!
//! ```text
//! Request{from, request}  a pipeline message from a peer      → Reply (+ Wake when buffered,
//!                                                                + Transmit for a Resend)
//! Advance{step}           the compute side starts `step`      → (forgets steps < step − 1)
//! Send{to, step, request} the compute side sends; logged      → Transmit
//! Control{to, request}    a control message (Resend, Done)    → Transmit
//! Delivered{id, outcome}  an attempt to deliver `id` finished → RetryAfter | Wake | Fatal
//! RetryDue{id}            the retry timer of `id` fired       → Transmit
//! ```
//!
//! # Buffering and validation
//!
//! Received tensors wait in an inbox keyed by `(step, slot)` (slot = forward µ, backward µ,
//! shared gradient, or a stage's sum of squares). Only steps `current − 1 ..= current + 1`
//! are accepted (a neighbour is never more than one step ahead), and slots are validated
//! (`µ < M`, the stage's expected `from_stage`), so the inbox holds at most `2·(2M + S)`
//! tensors. Before buffering, a request must come from the [`PeerId`] the table assigns to
//! `from_stage` (authenticated by noise), carry this run, come from the neighbour that sends
//! that kind of message, and hold a finite float tensor of exactly the expected shape
//! (decoding and the wire limits are checked before, by [`crate::wire::decode_request`]).
//! Otherwise the sender gets [`Response::Error`] with an [`ErrorCode`] and nothing is
//! trained on it. A message for a slot already received is acknowledged if identical (a
//! retry, a duplicate) and refused as [`ErrorCode::Conflict`] otherwise; a message for a
//! step before `current − 1` gets [`ErrorCode::StaleStep`], which the sender drops.
//!
//! # Delivery, retry, restart
//!
//! Every outgoing message gets an id and is transmitted; a failed attempt (network failure,
//! or a retryable refusal, [`ErrorCode::retryable`]) is retried after an exponential backoff
//! (`initial · 2^k`, capped at `max`) up to [`RetryPolicy::attempts`]; a non-retryable
//! refusal is fatal (this stage or its peer is broken). A pipeline message to a partner that
//! said `Done` is dropped once undeliverable: that partner needs no more tensors. Our own
//! `Done` to it is tried up to [`DONE_ATTEMPTS_AFTER_PARTNER_DONE`] times: the partner waits
//! for it before it leaves, so an unreachable partner has most likely left with it (its
//! acknowledgement lost), while a partner still waiting gets it on a later attempt. Every pipeline
//! message sent is also kept in a resend log for the current and the previous step; a
//! restarted partner asks for it with [`Request::Resend`], and gets it transmitted again.

use crate::link::{RetryPolicy, StageShape};
use crate::wire::{Direction, ErrorCode, Request, Response, WireTensor};
use parity_scale_codec::Encode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use weft_p2p::PeerId;
use weft_primitives::step::{RunId, StageIndex, Step};

/// What a received message fills, within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Activations of micro-batch µ from the previous stage.
    Forward(u32),
    /// The gradient of micro-batch µ's output from the next stage.
    Backward(u32),
    /// Tied embeddings: the other holder's embedding gradient.
    SharedGrad,
    /// Global clipping: a stage's Σ‖g‖² (f64 bits).
    GradSq(StageIndex),
    /// The neighbour's seal over what it sent in a direction (activations from the previous
    /// stage, gradients from the next).
    Seal(Direction),
}

/// A slot of a step.
pub type Key = (Step, Slot);

/// A received value.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A tensor.
    Tensor(WireTensor),
    /// A scalar (f64 bits).
    Scalar(u64),
    /// A seal: the root of what was sent and the sender's signature over it.
    Seal {
        /// Merkle root of the tensors sent.
        root: [u8; 32],
        /// ed25519 signature over the seal message.
        signature: [u8; 64],
    },
}

/// What makes two payloads of a slot the same message. A seal is identified by its root
/// alone: ed25519 signing is deterministic, but a restarted sender may sign with the same
/// key again, and any valid signature over the same root is the same statement.
fn digest(p: &Payload) -> blake3::Hash {
    match p {
        Payload::Tensor(t) => blake3::hash(&t.encode()),
        Payload::Scalar(b) => blake3::hash(&b.to_le_bytes()),
        Payload::Seal { root, .. } => blake3::hash(root),
    }
}

/// The id of an outgoing message, unique within one protocol instance.
pub type MsgId = u64;

/// How an attempt to deliver a message ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The partner answered.
    Answered(Response),
    /// The partner answered bytes that are not a response.
    Undecodable(String),
    /// The partner could not be reached (dial failure, timeout, closed stream).
    Unreachable(String),
}

/// One input of the state machine (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A pipeline message from `from` (decoded and within the wire limits).
    Request {
        /// The noise-authenticated sender.
        from: PeerId,
        /// The message.
        request: Request,
    },
    /// The compute side starts `step`.
    Advance {
        /// The step.
        step: Step,
    },
    /// The compute side sends a pipeline message of `step` to stage `to`; it is logged for
    /// resends.
    Send {
        /// The receiving stage.
        to: usize,
        /// The step it belongs to.
        step: Step,
        /// The message.
        request: Request,
    },
    /// The compute side sends a control message (`Resend`, `Done`) to stage `to`, not logged.
    Control {
        /// The receiving stage.
        to: usize,
        /// The message.
        request: Request,
    },
    /// An attempt to deliver message `id` ended.
    Delivered {
        /// The message.
        id: MsgId,
        /// How.
        outcome: Delivery,
    },
    /// The retry timer of message `id` fired.
    RetryDue {
        /// The message.
        id: MsgId,
    },
}

/// What the driver must do (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer the request just handled with this.
    Reply(Response),
    /// Try once to deliver `bytes` (an encoded request) to stage `to`, then feed
    /// [`Input::Delivered`] with the same `id`.
    Transmit {
        /// The message.
        id: MsgId,
        /// The receiving stage.
        to: usize,
        /// The encoded request.
        bytes: Arc<Vec<u8>>,
    },
    /// Feed [`Input::RetryDue`] for `id` after `delay`.
    RetryAfter {
        /// The message.
        id: MsgId,
        /// The backoff.
        delay: Duration,
    },
    /// What the compute side may be waiting for changed (a slot filled, a delivery ended,
    /// a partner finished).
    Wake,
    /// The link cannot continue; every wait fails with this reason from now on.
    Fatal(String),
}

/// Settings of a [`StageProtocol`].
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// The run.
    pub run: RunId,
    /// What arrives must fit this.
    pub shape: StageShape,
    /// The peer of each stage, by stage.
    pub peers: Vec<PeerId>,
    /// Delivery retries.
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
struct Outgoing {
    to: usize,
    bytes: Arc<Vec<u8>>,
    attempts: u32,
    delay: Duration,
    /// A `Done`: its partner needs it even after saying `Done` itself (it waits for ours).
    is_done: bool,
}

/// Attempts of our `Done` to a partner that has said `Done` itself: it leaves as soon as it
/// has ours, so an unreachable partner most likely has it (its acknowledgement died with
/// it), but a lost first attempt must not strand a partner that still waits.
pub const DONE_ATTEMPTS_AFTER_PARTNER_DONE: u32 = 5;

/// A logged message: its bytes, and whether it is a `Done`.
type Logged = (Arc<Vec<u8>>, bool);

/// One stage's side of the stage protocol (see the module docs).
#[derive(Debug, Clone)]
pub struct StageProtocol {
    cfg: ProtocolConfig,
    current: Step,
    inbox: BTreeMap<Key, Payload>,
    seen: BTreeMap<Key, blake3::Hash>,
    done_from: BTreeSet<usize>,
    fatal: Option<String>,
    sent_log: BTreeMap<(Step, usize), Vec<Logged>>,
    outgoing: BTreeMap<MsgId, Outgoing>,
    next_id: MsgId,
    bytes_delivered: u64,
}

impl StageProtocol {
    /// A protocol instance starting at step `current`.
    pub fn new(cfg: ProtocolConfig, current: Step) -> Self {
        StageProtocol {
            cfg,
            current,
            inbox: BTreeMap::new(),
            seen: BTreeMap::new(),
            done_from: BTreeSet::new(),
            fatal: None,
            sent_log: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            next_id: 0,
            bytes_delivered: 0,
        }
    }

    /// The shape received tensors are checked against.
    pub fn shape(&self) -> &StageShape {
        &self.cfg.shape
    }

    /// The run.
    pub fn run(&self) -> RunId {
        self.cfg.run
    }

    /// Takes the payload of `slot` in `step`, if it has arrived.
    pub fn take(&mut self, step: Step, slot: Slot) -> Option<Payload> {
        self.inbox.remove(&(step, slot))
    }

    /// Messages transmitted and not yet delivered, dropped or given up.
    pub fn in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// Whether every stage in `partners` has said it is done.
    pub fn all_done(&self, partners: &[usize]) -> bool {
        partners.iter().all(|p| self.done_from.contains(p))
    }

    /// Why the link cannot continue, once it cannot.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Payload bytes delivered (acknowledged) so far.
    pub fn bytes_delivered(&self) -> u64 {
        self.bytes_delivered
    }

    /// Handles one input (see the module docs).
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Request { from, request } => {
                let reply = self.on_request(from, request, &mut out);
                out.push(Effect::Reply(reply));
            }
            Input::Advance { step } => {
                self.current = step;
                let keep = step.saturating_sub(1);
                self.inbox.retain(|(s, _), _| *s >= keep);
                self.seen.retain(|(s, _), _| *s >= keep);
                self.sent_log.retain(|(s, _), _| *s >= keep);
            }
            Input::Send { to, step, request } => {
                let bytes = Arc::new(request.encode());
                let is_done = matches!(request, Request::Done { .. });
                self.sent_log
                    .entry((step, to))
                    .or_default()
                    .push((bytes.clone(), is_done));
                self.transmit_new(to, bytes, is_done, &mut out);
            }
            Input::Control { to, request } => {
                let is_done = matches!(request, Request::Done { .. });
                self.transmit_new(to, Arc::new(request.encode()), is_done, &mut out);
            }
            Input::Delivered { id, outcome } => self.on_delivered(id, outcome, &mut out),
            Input::RetryDue { id } => {
                if let Some(o) = self.outgoing.get(&id) {
                    out.push(Effect::Transmit {
                        id,
                        to: o.to,
                        bytes: o.bytes.clone(),
                    });
                }
            }
        }
        out
    }

    fn transmit_new(
        &mut self,
        to: usize,
        bytes: Arc<Vec<u8>>,
        is_done: bool,
        out: &mut Vec<Effect>,
    ) {
        if to >= self.cfg.peers.len() {
            self.fail(format!("no peer for stage {to}"), out);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.outgoing.insert(
            id,
            Outgoing {
                to,
                bytes: bytes.clone(),
                attempts: 1,
                delay: self.cfg.retry.initial,
                is_done,
            },
        );
        out.push(Effect::Transmit { id, to, bytes });
    }

    fn fail(&mut self, why: String, out: &mut Vec<Effect>) {
        if self.fatal.is_none() {
            self.fatal = Some(why.clone());
            out.push(Effect::Fatal(why));
        }
        out.push(Effect::Wake);
    }

    /// Ends message `id`: delivered (`ok`) or dropped.
    fn finish(&mut self, id: MsgId, ok: bool, out: &mut Vec<Effect>) {
        if let Some(o) = self.outgoing.remove(&id) {
            if ok {
                self.bytes_delivered += o.bytes.len() as u64;
            }
        }
        out.push(Effect::Wake);
    }

    fn retry_or_give_up(&mut self, id: MsgId, out: &mut Vec<Effect>) {
        let policy = self.cfg.retry;
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        if o.attempts >= policy.attempts.max(1) {
            tracing::warn!(
                stage = o.to,
                "giving up delivery after {} attempts; the message stays in the resend log",
                o.attempts
            );
            self.finish(id, false, out);
            return;
        }
        o.attempts += 1;
        let delay = o.delay;
        o.delay = (o.delay * 2).min(policy.max);
        out.push(Effect::RetryAfter { id, delay });
    }

    fn on_delivered(&mut self, id: MsgId, outcome: Delivery, out: &mut Vec<Effect>) {
        let Some((to, is_done)) = self.outgoing.get(&id).map(|o| (o.to, o.is_done)) else {
            return;
        };
        match outcome {
            Delivery::Answered(Response::Ack) => self.finish(id, true, out),
            Delivery::Answered(Response::Error {
                code: ErrorCode::StaleStep,
                message,
            }) => {
                tracing::debug!(stage = to, %message, "partner is past this step; dropped");
                self.finish(id, false, out);
            }
            Delivery::Answered(Response::Error { code, message }) if code.retryable() => {
                tracing::debug!(stage = to, ?code, %message, "will retry");
                self.retry_or_give_up(id, out);
            }
            Delivery::Answered(Response::Error { code, message }) => {
                self.outgoing.remove(&id);
                self.fail(
                    format!("stage {to} refused our message: {code:?}: {message}"),
                    out,
                );
            }
            Delivery::Answered(other) => {
                self.outgoing.remove(&id);
                self.fail(format!("stage {to} answered {other:?}"), out);
            }
            Delivery::Undecodable(e) => {
                self.outgoing.remove(&id);
                self.fail(format!("stage {to} sent an invalid response: {e}"), out);
            }
            Delivery::Unreachable(e) => {
                // A partner that said Done has completed every step and needs no more
                // tensors from us (it may have left right after acknowledging our own Done);
                // our Done it still needs, since it waits for it before leaving.
                let attempts = self.outgoing.get(&id).map_or(0, |o| o.attempts);
                let finished = self.done_from.contains(&to);
                if finished && (!is_done || attempts >= DONE_ATTEMPTS_AFTER_PARTNER_DONE) {
                    tracing::debug!(stage = to, error = %e, "partner has finished; dropped");
                    self.finish(id, false, out);
                } else {
                    tracing::debug!(stage = to, error = %e, "send failed; will retry");
                    self.retry_or_give_up(id, out);
                }
            }
        }
    }

    fn check_sender(
        &self,
        peer: &PeerId,
        run: RunId,
        from_stage: StageIndex,
    ) -> Result<usize, Response> {
        if run != self.cfg.run {
            return Err(Response::error(
                ErrorCode::WrongRun,
                format!("this is run {}, not {run}", self.cfg.run),
            ));
        }
        let from = usize::from(from_stage);
        match self.cfg.peers.get(from) {
            None => Err(Response::error(
                ErrorCode::WrongStage,
                format!("there is no stage {from}"),
            )),
            Some(p) if p != peer => Err(Response::error(
                ErrorCode::NotNeighbour,
                format!("{peer} is not the trainer of stage {from}"),
            )),
            Some(_) => Ok(from),
        }
    }

    /// Checks a per-micro-batch tensor message: its sender, that it comes from `expected`
    /// (the neighbour that sends that kind; `None`: no stage does), the micro-batch and the
    /// activation shape.
    fn check_micro_tensor(
        &self,
        peer: &PeerId,
        (run, from_stage): (RunId, StageIndex),
        expected: Option<usize>,
        micro: u32,
        tensor: &WireTensor,
    ) -> Result<(), Response> {
        let shape = &self.cfg.shape;
        let from = self.check_sender(peer, run, from_stage)?;
        if expected != Some(from) {
            return Err(Response::error(
                ErrorCode::WrongStage,
                format!(
                    "stage {} does not take this message from stage {from}",
                    shape.stage
                ),
            ));
        }
        let m = u32::try_from(shape.micro_batches).unwrap_or(u32::MAX);
        if micro >= m {
            return Err(Response::error(
                ErrorCode::WrongStage,
                format!("micro-batch {micro} out of range (0..{m})"),
            ));
        }
        tensor
            .expect(None, &shape.activation)
            .map_err(|e| Response::error(ErrorCode::Malformed, e.to_string()))
    }

    fn on_request(&mut self, peer: PeerId, req: Request, out: &mut Vec<Effect>) -> Response {
        let shape = &self.cfg.shape;
        let (k, n) = (shape.stage, shape.n_stages);
        let wrong = |msg: String| Response::error(ErrorCode::WrongStage, msg);
        let (step, slot, payload) = match req {
            Request::Reveal(_) | Request::AuditorHello { .. } | Request::SuccessorHello { .. } => {
                return wrong("reveals are answered by the store, not the pipeline".into());
            }
            Request::InferForward(_) | Request::InferClose(_) => {
                return wrong("this stage serves no inference".into());
            }
            Request::ReplicaUpdate { .. } => {
                return wrong("the replicas of this run train apart".into());
            }
            Request::Forward {
                run,
                step,
                micro,
                from_stage,
                tensor,
            } => {
                // Activations come from the previous stage.
                let expected = k.checked_sub(1);
                match self.check_micro_tensor(&peer, (run, from_stage), expected, micro, &tensor) {
                    Ok(()) => (step, Slot::Forward(micro), Payload::Tensor(tensor)),
                    Err(r) => return r,
                }
            }
            Request::Backward {
                run,
                step,
                micro,
                from_stage,
                tensor,
            } => {
                // Gradients come from the next stage.
                let expected = (k + 1 < n).then_some(k + 1);
                match self.check_micro_tensor(&peer, (run, from_stage), expected, micro, &tensor) {
                    Ok(()) => (step, Slot::Backward(micro), Payload::Tensor(tensor)),
                    Err(r) => return r,
                }
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
                let Some(expected) = &shape.shared else {
                    return wrong(format!("stage {k} shares no embedding"));
                };
                let other = if k == 0 { n - 1 } else { 0 };
                if from != other {
                    return wrong(format!("stage {k} shares its embedding with stage {other}"));
                }
                if let Err(e) = tensor.expect(None, expected) {
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
                if !shape.global_clip || from == k {
                    return wrong("this run does not clip globally".into());
                }
                (step, Slot::GradSq(from_stage), Payload::Scalar(bits))
            }
            Request::Seal {
                run,
                step,
                from_stage,
                direction,
                root,
                signature,
            } => {
                let from = match self.check_sender(&peer, run, from_stage) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                // Activations are sealed by the previous stage, gradients by the next.
                let expected = match direction {
                    Direction::Activations => k.checked_sub(1),
                    Direction::Gradients => (k + 1 < n).then_some(k + 1),
                    Direction::Update => None,
                };
                if expected != Some(from) {
                    return wrong(format!(
                        "stage {k} takes no {direction:?} seal from stage {from}"
                    ));
                }
                (
                    step,
                    Slot::Seal(direction),
                    Payload::Seal { root, signature },
                )
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
                let again: Vec<Logged> = self
                    .sent_log
                    .iter()
                    .filter(|((s, to), _)| *s >= from_step && *to == from)
                    .flat_map(|(_, v)| v.iter().cloned())
                    .collect();
                tracing::info!(
                    stage = from,
                    from_step,
                    messages = again.len(),
                    "resending to a restarted partner"
                );
                for (bytes, is_done) in again {
                    self.transmit_new(from, bytes, is_done, out);
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
                self.done_from.insert(from);
                out.push(Effect::Wake);
                return Response::Ack;
            }
        };
        let key = (step, slot);
        let d = digest(&payload);
        if let Some(prev) = self.seen.get(&key) {
            return if *prev == d {
                Response::Ack
            } else {
                Response::error(
                    ErrorCode::Conflict,
                    format!("a different tensor was already received for {key:?}"),
                )
            };
        }
        if step + 1 < self.current {
            return Response::error(
                ErrorCode::StaleStep,
                format!("step {step} is done (now at {})", self.current),
            );
        }
        if step > self.current + 1 {
            return Response::error(
                ErrorCode::FutureStep,
                format!("step {step} is ahead (now at {})", self.current),
            );
        }
        self.seen.insert(key, d);
        self.inbox.insert(key, payload);
        out.push(Effect::Wake);
        Response::Ack
    }
}

#[cfg(test)]
mod tests;
