//! Replicas that average, over the network: one stage's side of the round of every step
//! (the protocol is in `weft_stage_net::replica_desk`'s docs).
//!
//! After its backward pass a replica publishes its update (the gradient of every parameter
//! after the run's codec) on its [`ReplicaDesk`], then asks every other replica of its stage
//! (as the desk names them now: the chain may reassign a slot during the round) for theirs
//! until it has them all or its deadline passes, backing off from 5 ms to 200 ms between
//! rounds of asking, and asks those still missing once more at the deadline. It aggregates the updates of the set it decides (or adopts: see
//! the desk's docs) and keeps the others' updates and the set in the step's
//! [`StepAux`], so a replay after a restart aggregates exactly the same.
//!
//! Every update is sealed: the sender signs `seal_message(run, step, stage, replica,
//! Direction::Update, root)` with its p2p identity (`weft_primitives::seal`), `root` the
//! Merkle root of the update's canonical bytes, what it commits as `roots.update`. What
//! arrives is checked before it is kept: its length must be the stage's parameter count
//! (int8: one scale per parameter tensor), its values finite, and the seal must be by the
//! peer the table names for that replica over the root of what arrived. An answer that fails
//! is treated as no answer (that replica is left out of the round) and logged. The roots and
//! seals of the updates a step aggregated go into its commitment ([`committed_round`]), so a
//! replica that sends one update and commits another is caught by the chain.
//!
//! The desk answers steps that have left its memory from the tensor store ([`StoreArchive`]):
//! the committed update, a fresh seal over its committed root (ed25519 signatures are
//! deterministic: the same bytes as sent), and the committed set. A replica far behind — a
//! spare catching up from the step it took over, or one restarted after a long outage —
//! learns every set the others used from it and stays bit-identical.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;
use weft_ml::aggregate::{flatten, int8_decode, int8_encode, unflatten, UpdateCodec};
use weft_ml::commit::{canonical_bytes, root_of};
use weft_ml::schedule::ReplicaRound;
use weft_p2p::Network;
use weft_primitives::replicas::{Included, ReceivedUpdate, Round};
use weft_primitives::seal::{seal_message, verify_by_peer_id, Direction, SealSignature};
use weft_primitives::step::StepItem;
use weft_primitives::step::{Replica, RunId, StageIndex, Step};
use weft_stage_net::replica_desk::{Archived, ReplicaDesk, UpdateArchive};
use weft_stage_net::store::{ReceivedUpdateBytes, StepAux, TensorStore};
use weft_stage_net::topology::StagePeer;
use weft_stage_net::wire::{decode_response_checked, EncodedUpdate, Limits, Request, Response};

/// Carries one request to a peer and returns its answer's bytes (libp2p in a trainer; a
/// test may carry it otherwise).
pub trait Transport: Send + Sync {
    /// Sends `bytes` to `peer` and waits up to `timeout` for the answer.
    fn request(
        &self,
        peer: &StagePeer,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String>;
}

/// [`Transport`] over a stage's libp2p network, from the blocking training thread.
pub struct NetworkTransport {
    /// The network.
    pub network: Network,
    /// The runtime it runs on.
    pub runtime: tokio::runtime::Handle,
}

impl Transport for NetworkTransport {
    fn request(
        &self,
        peer: &StagePeer,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let fut = self
            .network
            .request(peer.peer_id, peer.addrs.clone(), bytes);
        // The timer is made inside the runtime: this thread need not be one of its own.
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// A replica's part in the rounds of its stage.
pub struct ReplicaExchange {
    /// Where this replica publishes its updates.
    pub desk: Arc<ReplicaDesk>,
    /// How it asks the others (the other replicas of the stage are the desk's peers).
    pub transport: Arc<dyn Transport>,
    /// How long it waits for the others' updates after publishing its own.
    pub deadline: Duration,
    /// How updates cross.
    pub codec: UpdateCodec,
    /// Limits on what is received.
    pub limits: Limits,
    /// The replica's p2p identity, which seals its updates.
    pub identity: weft_p2p::Keypair,
}

/// How long the last ask after the deadline may take per replica (see [`ReplicaExchange::round`]).
const LAST_ASK_TIMEOUT: Duration = Duration::from_secs(1);

fn io_err(why: String) -> weft_ml::Error {
    weft_ml::Error::StepIo(why)
}

/// Seals `root` as replica `replica`'s update of `step`: the ed25519 signature of
/// `identity` over the seal message.
fn seal_update(
    identity: &weft_p2p::Keypair,
    (run, stage, replica): (RunId, StageIndex, Replica),
    step: Step,
    root: &weft_primitives::Hash,
) -> Option<[u8; 64]> {
    let msg = seal_message(run, step, stage, replica, Direction::Update, root);
    identity.sign(&msg).ok().and_then(|s| s.try_into().ok())
}

/// A replica's committed steps, as its desk answers them once they left memory (see the
/// module docs).
pub struct StoreArchive {
    /// The replica's tensor store.
    pub store: TensorStore,
    /// Its p2p identity.
    pub identity: weft_p2p::Keypair,
    /// `(run, stage, replica)`.
    pub slot: (RunId, StageIndex, Replica),
}

impl UpdateArchive for StoreArchive {
    fn archived(&self, step: Step) -> Option<Archived> {
        if !self.store.has(step) {
            return None;
        }
        let decided = self.store.aux(step).ok()?.replica_included?;
        let root = self.store.commitment(step).ok()?.roots.update;
        let update = self.store.item(step, StepItem::Update).ok()?;
        Some(Archived {
            update: EncodedUpdate::Fp32(update),
            signature: seal_update(&self.identity, self.slot, step, &root)?,
            decided,
        })
    }
}

/// The replica desk of `slot`, answering `peers` and, for the steps it no longer holds,
/// `store`.
pub fn store_desk(
    slot: (RunId, StageIndex, Replica),
    peers: Vec<(Replica, StagePeer)>,
    store: TensorStore,
    identity: weft_p2p::Keypair,
) -> Arc<ReplicaDesk> {
    Arc::new(
        ReplicaDesk::new(slot.0, slot.1, peers).with_archive(StoreArchive {
            store,
            identity,
            slot,
        }),
    )
}

/// `sent` (already through `codec`) as it crosses: int8 when its values survive the
/// encoding unchanged, else f32 (always exact), so the receiver decodes exactly `sent`.
pub fn encode_update(codec: UpdateCodec, sent: &[Tensor]) -> weft_ml::Result<EncodedUpdate> {
    let fp32 = |sent: &[Tensor]| -> weft_ml::Result<EncodedUpdate> {
        Ok(EncodedUpdate::Fp32(
            flatten(sent)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ))
    };
    if codec == UpdateCodec::Fp32 {
        return fp32(sent);
    }
    let (mut scales, mut values) = (Vec::new(), Vec::new());
    for t in sent {
        let v = flatten(std::slice::from_ref(t))?;
        let (scale, q) = int8_encode(&v);
        if int8_decode(scale, &q)
            .iter()
            .zip(&v)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return fp32(sent);
        }
        scales.push(scale.to_bits());
        values.extend(q.iter().map(|&x| x as u8));
    }
    Ok(EncodedUpdate::Int8 { scales, values })
}

/// A received update, shaped like `like` (this replica's own update), or why it cannot be.
pub fn decode_update(update: &EncodedUpdate, like: &[Tensor]) -> weft_ml::Result<Vec<Tensor>> {
    let total: usize = like.iter().map(Tensor::numel).sum();
    let values: Vec<f32> = match update {
        EncodedUpdate::Fp32(bytes) => {
            if bytes.len() != 4 * total {
                return Err(io_err(format!(
                    "an f32 update of {} bytes for {total} parameters",
                    bytes.len()
                )));
            }
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        EncodedUpdate::Int8 { scales, values } => {
            if scales.len() != like.len() || values.len() != total {
                return Err(io_err(format!(
                    "an int8 update of {} scales and {} values for {} tensors of {total} \
                     parameters",
                    scales.len(),
                    values.len(),
                    like.len()
                )));
            }
            let mut out = Vec::with_capacity(total);
            let mut at = 0;
            for (t, &scale) in like.iter().zip(scales) {
                let n = t.numel();
                let q: Vec<i8> = values[at..at + n].iter().map(|&b| b as i8).collect();
                out.extend(int8_decode(f32::from_bits(scale), &q));
                at += n;
            }
            out
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(io_err(format!("a non-finite value at {i}")));
    }
    unflatten(&values, like)
}

impl ReplicaExchange {
    /// The round of `step` for replica `me` of `stage` (see the module docs); records the
    /// set and the others' updates in `aux`.
    pub fn round(
        &self,
        run: RunId,
        stage: StageIndex,
        me: Replica,
        step: Step,
        sent: &[Tensor],
        aux: &mut StepAux,
    ) -> weft_ml::Result<ReplicaRound> {
        let seal = |replica: Replica, root: &weft_primitives::Hash| {
            seal_message(run, step, stage, replica, Direction::Update, root)
        };
        let own_root = root_of(sent)?;
        let signature = seal_update(&self.identity, (run, stage, me), step, &own_root)
            .ok_or_else(|| io_err("the p2p identity cannot seal an update".into()))?;
        self.desk
            .publish(step, encode_update(self.codec, sent)?, signature);
        let ask = parity_scale_codec::Encode::encode(&Request::ReplicaUpdate {
            run,
            step,
            stage,
            replica: me,
        });
        let mut got: std::collections::BTreeMap<Replica, (ReceivedUpdateBytes, Vec<Tensor>)> =
            Default::default();
        let mut adopted: Option<Included> = None;
        let deadline = Instant::now() + self.deadline;
        let mut pause = Duration::from_millis(5);
        let mut peers;
        // After the deadline, every replica still missing is asked once more, so that an
        // update published just before it is not missed between two polls (which would
        // leave this replica deciding without it while its sender decides with it).
        let mut last_ask = false;
        loop {
            // The chain may give a slot of the stage to another peer during the round.
            peers = self.desk.peers();
            let wanted: Vec<&(Replica, StagePeer)> = peers
                .iter()
                .filter(|(r, _)| !got.contains_key(r))
                .filter(|(r, _)| adopted.is_none_or(|set| set.contains(*r)))
                .collect();
            if wanted.is_empty() {
                break;
            }
            for (r, peer) in wanted {
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = match (last_ask, left.is_zero()) {
                    (true, _) => LAST_ASK_TIMEOUT,
                    (false, true) => break,
                    (false, false) => left.min(Duration::from_secs(5)),
                };
                let answer = self
                    .transport
                    .request(peer, ask.clone(), timeout)
                    .and_then(|b| {
                        decode_response_checked(&b, &self.limits).map_err(|e| e.to_string())
                    });
                match answer {
                    Ok(Response::ReplicaUpdate {
                        update,
                        signature,
                        decided,
                    }) => {
                        let checked = decode_update(&update, sent).and_then(|t| {
                            let root = root_of(&t)?;
                            if !verify_by_peer_id(
                                &peer.peer_id.to_bytes(),
                                &seal(*r, &root),
                                &SealSignature(*signature),
                            ) {
                                return Err(io_err(format!(
                                    "its seal over root {root} is not by its peer {}",
                                    peer.peer_id
                                )));
                            }
                            Ok((root, t))
                        });
                        match checked {
                            Ok((root, t)) => {
                                let kept = ReceivedUpdateBytes {
                                    replica: *r,
                                    bytes: canonical_bytes(&t)?,
                                    root: root.0,
                                    signature: *signature,
                                };
                                got.insert(*r, (kept, t));
                            }
                            Err(e) => {
                                tracing::warn!(step, replica = r, error = %e, "update refused")
                            }
                        }
                        if adopted.is_none() {
                            adopted = decided;
                        }
                    }
                    Ok(Response::NotReady) => {}
                    Ok(other) => {
                        tracing::debug!(step, replica = r, ?other, "no update from replica")
                    }
                    Err(e) => tracing::debug!(step, replica = r, error = %e, "replica unreachable"),
                }
            }
            if last_ask {
                break;
            }
            if Instant::now() >= deadline {
                last_ask = true;
                continue;
            }
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        let held = |r: Replica| r == me || got.contains_key(&r);
        let included = match adopted {
            Some(set) if set.iter().all(held) => set,
            Some(set) => {
                tracing::warn!(
                    step,
                    ?set,
                    "the set another replica decided includes updates this one could not get; \
                     aggregating what it has (the chain will see the replicas diverge)"
                );
                own_set(me, got.keys().copied())?
            }
            None => own_set(me, got.keys().copied())?,
        };
        if included.count() < 1 + peers.len() as u32 {
            tracing::info!(step, ?included, "replica round without every replica");
        }
        self.desk.decide(step, included);
        let mut updates = Vec::new();
        aux.replica_updates.clear();
        for r in included.iter() {
            if r == me {
                updates.push(sent.iter().map(Tensor::shallow_clone).collect());
            } else if let Some((bytes, t)) = got.remove(&r) {
                aux.replica_updates.push(bytes);
                updates.push(t);
            }
        }
        aux.replica_included = Some(included);
        Ok(ReplicaRound { updates, included })
    }
}

fn own_set(me: Replica, others: impl Iterator<Item = Replica>) -> weft_ml::Result<Included> {
    Included::of(std::iter::once(me).chain(others))
        .ok_or_else(|| io_err("a replica number out of range".into()))
}

/// What a step's commitment says about its round, from its [`StepAux`]: the set and the
/// sealed roots of the others' updates (`None` where the replicas train apart).
pub fn committed_round(aux: &StepAux) -> Option<Round> {
    aux.replica_included.map(|included| Round {
        included,
        received: aux
            .replica_updates
            .iter()
            .map(|u| ReceivedUpdate {
                replica: u.replica,
                root: weft_primitives::Hash(u.root),
                signature: SealSignature(u.signature),
            })
            .collect(),
    })
}

/// The round of a replayed step, from its [`StepAux`]: the stored set, the stored updates of
/// the others and this replica's recomputed `sent`.
pub fn replayed_round(
    aux: &StepAux,
    me: Replica,
    sent: &[Tensor],
) -> weft_ml::Result<Option<ReplicaRound>> {
    let Some(included) = aux.replica_included else {
        return Ok(None);
    };
    let mut updates = Vec::new();
    for r in included.iter() {
        if r == me {
            updates.push(sent.iter().map(Tensor::shallow_clone).collect());
            continue;
        }
        let stored = aux
            .replica_updates
            .iter()
            .find(|u| u.replica == r)
            .ok_or_else(|| io_err(format!("replica {r}'s update is not stored")))?;
        updates.push(decode_update(
            &EncodedUpdate::Fp32(stored.bytes.clone()),
            sent,
        )?);
    }
    Ok(Some(ReplicaRound { updates, included }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn updates_cross_exactly_in_both_codecs_and_bad_ones_are_refused() {
        let like = vec![
            Tensor::from_slice(&[0.5f32, -1.25, 3.0, 0.0]).reshape([2, 2]),
            Tensor::from_slice(&[1e-3f32, -2e-3]),
        ];
        for codec in [UpdateCodec::Fp32, UpdateCodec::Int8] {
            let sent = codec.round_trip(&like).unwrap();
            let enc = encode_update(codec, &sent).unwrap();
            assert_eq!(
                matches!(enc, EncodedUpdate::Int8 { .. }),
                codec == UpdateCodec::Int8
            );
            let back = decode_update(&enc, &sent).unwrap();
            assert_eq!(flatten(&back).unwrap(), flatten(&sent).unwrap());
            assert_eq!(back[0].size(), vec![2, 2]);
        }
        assert!(decode_update(&EncodedUpdate::Fp32(vec![0; 20]), &like).is_err());
        let nan: Vec<u8> = [f32::NAN; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(decode_update(&EncodedUpdate::Fp32(nan), &like).is_err());
        assert!(decode_update(
            &EncodedUpdate::Int8 {
                scales: vec![0],
                values: vec![0; 6]
            },
            &like
        )
        .is_err());
    }
}
