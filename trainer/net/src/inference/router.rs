//! The router: drives one generation through one holder per stage, as a client of the
//! stage holders (see the [module docs](super) for the request path).
//!
//! # Choosing holders
//!
//! For every stage the caller lists the candidates (the replicas whose holders committed
//! the serving step). The router keeps, per peer, an exponentially weighted mean of its
//! round-trip time (α = 1/4) and the number of hops in flight, and picks per stage the
//! candidate with the lowest `ewma_ms × (1 + in_flight)`; a peer never measured scores 0,
//! so new holders get tried. Peers that failed during this request are excluded.
//!
//! # Re-routing
//!
//! A hop that fails (transport error, timeout, a refusal other than `Unpaid` or `Busy`)
//! excludes its peer, closes the sessions of the broken route (not delivered) and starts
//! the next attempt on a new route, replaying prompt and generated tokens as one prefill.
//! After [`Router::max_attempts`] attempts, or when a stage has no candidate left, the
//! request fails and nothing is settled.
//!
//! # Streaming and stop sequences
//!
//! Tokens are handed to the caller as soon as no stop sequence can still match them: the
//! longest suffix of the output that is a prefix of a stop sequence is held back until the
//! next token decides it. A matched stop sequence is cut from the output.

use super::{InferClose, InferForward, InferInput, RequestBody, RequestId, SessionId};
use crate::wire::{decode_response_checked, ErrorCode, Limits, Request, Response, Step};
use crate::wire::{Replica, StageIndex, WireTensor};
use parity_scale_codec::Encode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft_p2p::{Address, Network, PeerId};

/// A holder that can serve one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The replica it holds.
    pub replica: Replica,
    /// Its libp2p identity.
    pub peer: PeerId,
    /// Where it listens.
    pub addrs: Vec<Address>,
}

/// One generation to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The escrowed request.
    pub request: RequestId,
    /// What was paid for.
    pub body: RequestBody,
    /// The step whose weights serve.
    pub step: Step,
    /// Candidates per stage, stage 0 first.
    pub stages: Vec<Vec<Holder>>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` were generated.
    Length,
    /// A stop sequence matched.
    Stop,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The generated tokens (without a matched stop sequence).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: Finish,
    /// The holders of the route that finished it, stage 0 first.
    pub route: Vec<PeerId>,
    /// Attempts used (1 without re-routing).
    pub attempts: u16,
}

/// Why a generation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No usable holder is left for a stage.
    #[error("no holder can serve stage {stage}{}", last.as_ref().map(|l| format!(" (last failure: {l})")).unwrap_or_default())]
    NoHolder {
        /// The stage.
        stage: usize,
        /// The failure that excluded the last candidate, if any.
        last: Option<String>,
    },
    /// A holder is at its session limit.
    #[error("stage {stage} is busy; retry after {retry_after_ms} ms")]
    Busy {
        /// The stage.
        stage: usize,
        /// Milliseconds to wait.
        retry_after_ms: u32,
    },
    /// A holder refused the payment.
    #[error("stage {stage} refused the payment: {message}")]
    Unpaid {
        /// The stage.
        stage: usize,
        /// Its reason.
        message: String,
    },
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts; last failure: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u16,
        /// The last failure.
        last: String,
    },
    /// The caller stopped listening.
    #[error("the caller went away")]
    Cancelled,
}

/// What the router measured of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerStats {
    /// Mean round-trip of a hop, milliseconds (EWMA); `None` before the first.
    pub latency_ms: Option<f64>,
    /// Hops in flight now.
    pub in_flight: u32,
    /// Hops answered.
    pub served: u64,
    /// Hops failed.
    pub failed: u64,
}

impl PeerStats {
    fn score(&self) -> f64 {
        self.latency_ms.unwrap_or(0.0) * f64::from(1 + self.in_flight)
    }
}

/// The failure of one hop.
enum HopError {
    /// Route around this peer.
    Reroute { peer: PeerId, why: String },
    /// End the request.
    Fatal(RouteError),
}

/// Runs generations over a [`Network`] (see the module docs).
pub struct Router {
    network: Network,
    limits: Limits,
    stats: Mutex<BTreeMap<PeerId, PeerStats>>,
    /// Longest wait for one hop.
    pub hop_timeout: Duration,
    /// Routes tried per request at most.
    pub max_attempts: u16,
}

impl Router {
    /// A router sending over `network`, checking received tensors against `limits`.
    pub fn new(network: Network, limits: Limits) -> Self {
        Router {
            network,
            limits,
            stats: Mutex::new(BTreeMap::new()),
            hop_timeout: Duration::from_secs(30),
            max_attempts: 4,
        }
    }

    /// What was measured of every peer so far.
    pub fn stats(&self) -> BTreeMap<PeerId, PeerStats> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, PeerStats>> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The best candidate of each stage, avoiding `excluded`.
    fn choose(
        &self,
        plan: &Plan,
        excluded: &BTreeSet<PeerId>,
        last: &Option<String>,
    ) -> Result<Vec<Holder>, RouteError> {
        let stats = self.lock();
        plan.stages
            .iter()
            .enumerate()
            .map(|(stage, candidates)| {
                candidates
                    .iter()
                    .filter(|h| !excluded.contains(&h.peer))
                    .min_by(|a, b| {
                        let sa = stats.get(&a.peer).copied().unwrap_or_default().score();
                        let sb = stats.get(&b.peer).copied().unwrap_or_default().score();
                        sa.total_cmp(&sb).then(a.replica.cmp(&b.replica))
                    })
                    .cloned()
                    .ok_or_else(|| RouteError::NoHolder {
                        stage,
                        last: last.clone(),
                    })
            })
            .collect()
    }

    /// Runs `plan`, handing each token to `on_token` once it is final (see the module
    /// docs); `on_token` returning `false` cancels the request.
    pub async fn generate(
        &self,
        plan: &Plan,
        mut on_token: impl FnMut(u32) -> bool + Send,
    ) -> Result<Completion, RouteError> {
        let mut generated: Vec<u32> = Vec::new();
        let mut emitted = 0usize;
        let mut excluded = BTreeSet::new();
        let mut last_failure: Option<String> = None;
        for attempt in 0..self.max_attempts {
            let route = self.choose(plan, &excluded, &last_failure)?;
            let session = SessionId {
                request: plan.request,
                attempt,
            };
            let outcome = self
                .run_route(
                    plan,
                    &route,
                    session,
                    &mut generated,
                    &mut emitted,
                    &mut on_token,
                )
                .await;
            match outcome {
                Ok(finish) => {
                    self.close(plan, &route, session, true).await;
                    return Ok(Completion {
                        tokens: generated,
                        finish,
                        route: route.iter().map(|h| h.peer).collect(),
                        attempts: attempt + 1,
                    });
                }
                Err(HopError::Fatal(e)) => {
                    self.close(plan, &route, session, false).await;
                    return Err(e);
                }
                Err(HopError::Reroute { peer, why }) => {
                    tracing::warn!(%peer, %why, attempt, "inference hop failed; re-routing");
                    excluded.insert(peer);
                    self.close(plan, &route, session, false).await;
                    last_failure = Some(format!("{peer}: {why}"));
                }
            }
        }
        Err(RouteError::Exhausted {
            attempts: self.max_attempts,
            last: last_failure.unwrap_or_default(),
        })
    }

    /// One route: a prefill of everything so far, then decoding until the end.
    async fn run_route(
        &self,
        plan: &Plan,
        route: &[Holder],
        session: SessionId,
        generated: &mut Vec<u32>,
        emitted: &mut usize,
        on_token: &mut (impl FnMut(u32) -> bool + Send),
    ) -> Result<Finish, HopError> {
        let body = &plan.body;
        let mut pending: Vec<u32> = body
            .prompt
            .iter()
            .chain(generated.iter())
            .copied()
            .collect();
        let mut start = 0u32;
        loop {
            let n = u32::try_from(pending.len()).unwrap_or(u32::MAX);
            let token = self
                .pass(plan, route, session, start, std::mem::take(&mut pending))
                .await?;
            start += n;
            generated.push(token);
            let (finish, keep) = match body.stop_at(generated) {
                Some(cut) => (Some(Finish::Stop), cut),
                None if generated.len() >= body.max_new_tokens as usize => {
                    (Some(Finish::Length), generated.len())
                }
                None => (None, generated.len() - held_back(generated, &body.stop)),
            };
            while *emitted < keep {
                if !on_token(generated[*emitted]) {
                    return Err(HopError::Fatal(RouteError::Cancelled));
                }
                *emitted += 1;
            }
            if let Some(f) = finish {
                generated.truncate(keep);
                return Ok(f);
            }
            pending = vec![token];
        }
    }

    /// Positions `start..start+tokens.len()` through every stage; the last stage's token.
    async fn pass(
        &self,
        plan: &Plan,
        route: &[Holder],
        session: SessionId,
        start: u32,
        tokens: Vec<u32>,
    ) -> Result<u32, HopError> {
        let last = route.len().saturating_sub(1);
        let mut input = InferInput::Tokens(tokens);
        for (stage, holder) in route.iter().enumerate() {
            let forward = InferForward {
                run: plan.body.run,
                step: plan.step,
                stage: StageIndex::try_from(stage).unwrap_or(StageIndex::MAX),
                session,
                start,
                input,
                body: (stage == 0 && start == 0).then(|| plan.body.clone()),
                sampling: (stage == last).then_some(plan.body.sampling),
            };
            let resp = self
                .hop(holder, Request::InferForward(forward), stage)
                .await?;
            match (resp, stage == last) {
                (Response::InferToken(t), true) => return Ok(t),
                (Response::InferHidden(h), false) => input = InferInput::Hidden(h),
                (other, _) => {
                    return Err(HopError::Reroute {
                        peer: holder.peer,
                        why: format!("unexpected answer {}", describe(&other)),
                    })
                }
            }
        }
        Err(HopError::Fatal(RouteError::NoHolder {
            stage: 0,
            last: None,
        }))
    }

    /// One request to one holder, measured.
    async fn hop(
        &self,
        holder: &Holder,
        request: Request,
        stage: usize,
    ) -> Result<Response, HopError> {
        self.lock().entry(holder.peer).or_default().in_flight += 1;
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.hop_timeout,
            self.network
                .request(holder.peer, holder.addrs.clone(), request.encode()),
        )
        .await;
        let result = match sent {
            Err(_) => Err(format!("no answer within {:?}", self.hop_timeout)),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(bytes)) => {
                decode_response_checked(&bytes, &self.limits).map_err(|e| e.to_string())
            }
        };
        {
            let mut stats = self.lock();
            let s = stats.entry(holder.peer).or_default();
            s.in_flight = s.in_flight.saturating_sub(1);
            match &result {
                Ok(Response::Error { .. }) | Err(_) => s.failed += 1,
                Ok(_) => {
                    s.served += 1;
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    s.latency_ms = Some(s.latency_ms.map_or(ms, |m| 0.75 * m + 0.25 * ms));
                }
            }
        }
        match result {
            Err(why) => Err(HopError::Reroute {
                peer: holder.peer,
                why,
            }),
            Ok(Response::Busy { retry_after_ms }) => Err(HopError::Fatal(RouteError::Busy {
                stage,
                retry_after_ms,
            })),
            Ok(Response::Error {
                code: ErrorCode::Unpaid,
                message,
            }) => Err(HopError::Fatal(RouteError::Unpaid { stage, message })),
            Ok(Response::Error { code, message }) => Err(HopError::Reroute {
                peer: holder.peer,
                why: format!("{code:?}: {message}"),
            }),
            Ok(r) => Ok(r),
        }
    }

    /// Ends `session` on every stage of `route` (best effort: a holder that is gone frees
    /// its cache by idle timeout).
    async fn close(&self, plan: &Plan, route: &[Holder], session: SessionId, delivered: bool) {
        for (stage, holder) in route.iter().enumerate() {
            let close = InferClose {
                run: plan.body.run,
                stage: StageIndex::try_from(stage).unwrap_or(StageIndex::MAX),
                session,
                delivered,
            };
            let req = Request::InferClose(close).encode();
            let _ = tokio::time::timeout(
                self.hop_timeout,
                self.network.request(holder.peer, holder.addrs.clone(), req),
            )
            .await;
        }
    }
}

/// The number of trailing tokens of `out` that could still begin a stop sequence.
pub fn held_back(out: &[u32], stop: &[Vec<u32>]) -> usize {
    stop.iter()
        .map(|s| {
            (1..s.len().min(out.len() + 1))
                .rev()
                .find(|&k| out.ends_with(&s[..k]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

fn describe(r: &Response) -> String {
    match r {
        Response::InferHidden(WireTensor { shape, .. }) => format!("hidden states {shape:?}"),
        Response::InferToken(t) => format!("token {t}"),
        Response::Ack => "Ack".into(),
        Response::Busy { .. } => "Busy".into(),
        Response::Error { code, .. } => format!("{code:?}"),
        Response::RevealChunk { .. } => "a reveal chunk".into(),
        Response::ReplicaUpdate { .. } => "a replica update".into(),
        Response::NotReady => "NotReady".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_keeps_possible_stop_prefixes() {
        let stop = vec![vec![7, 8, 9]];
        assert_eq!(held_back(&[1, 2], &stop), 0);
        assert_eq!(held_back(&[1, 7], &stop), 1);
        assert_eq!(held_back(&[1, 7, 8], &stop), 2);
        assert_eq!(held_back(&[7, 8, 1], &stop), 0);
        assert_eq!(held_back(&[], &stop), 0);
        assert_eq!(held_back(&[7], &[vec![7]]), 0);
    }
}
