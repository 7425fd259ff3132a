//! The replicas of a stage that average: the desk that answers the other replicas' requests
//! for this replica's update of a step ([`ReplicaDesk`]).
//!
//! # The round of step `t` (stage `k`, replicas `0 … R − 1`)
//!
//! ```text
//! after the backward pass:  replica r publishes its update U_r(t) here, sealed (its p2p
//!                           key signs seal_message(…, Direction::Update, root(U_r(t))))
//! every other replica j:    asks r for U_r(t) (Request::ReplicaUpdate) until it has it or
//!                           its deadline passes; NotReady while r is still computing;
//!                           j keeps U_r(t) only if r's seal verifies over what it got
//! at j's deadline:          j decides its set S_j(t) = {j} ∪ {i : U_i(t) arrived} — unless
//!                           an answer carried a set some replica had already decided, which
//!                           j then adopts (and fetches what it lacks of it)
//! every replica:            applies trimmed_mean({U_i(t) : i ∈ S(t)}), commits S(t) as its
//!                           bitmap and the root of U_r(t) as its update root
//! ```
//!
//! The deciding replica publishes its set here, and every later answer carries it, so a
//! replica that was late (its update came after the others had decided without it) learns
//! the set they used and applies the same aggregate: it is left out of the round, not split
//! off from its stage. Two replicas that decide at the same moment on different sets (an
//! update that arrived just before one deadline and just after the other) end the step with
//! different weights; the chain sees it (their `weights_after` roots differ) and audits both.
//!
//! Only the peers of the stage's other replicas may ask (`Forbidden` otherwise); the list
//! follows the chain ([`ReplicaDesk::set_peers`]: a spare that takes a replica's slot is
//! answered from the head that assigns it). The desk keeps the updates of the last
//! [`KEPT_STEPS`] steps in memory; older steps, and steps committed before a restart, are
//! answered from what the replica committed ([`UpdateArchive`]: its stored update, its seal
//! and the set it aggregated), so a replica that is far behind — a spare catching up from
//! the step it took over — still learns every set the others used and applies the same
//! aggregates.

use crate::desk::RequestDesk;
use crate::topology::StagePeer;
use crate::wire::{EncodedUpdate, ErrorCode, Request, Response};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use weft_p2p::PeerId;
use weft_primitives::replicas::Included;
use weft_primitives::step::{Replica, RunId, StageIndex, Step};

/// Steps whose updates the desk keeps.
pub const KEPT_STEPS: u64 = 8;

#[derive(Default)]
struct Published {
    update: Option<(EncodedUpdate, [u8; 64])>,
    decided: Option<Included>,
    /// The peers this step's update was given to.
    served: HashSet<PeerId>,
}

/// What a replica committed of one step, as its desk answers it once the step has left
/// memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The update it sent (its canonical f32 bytes: what every receiver decoded).
    pub update: EncodedUpdate,
    /// Its seal over the update's root.
    pub signature: [u8; 64],
    /// The set the step aggregated.
    pub decided: Included,
}

/// Where a desk finds the steps it no longer holds in memory (the replica's tensor store).
pub trait UpdateArchive: Send + Sync {
    /// The committed update, seal and set of `step`; `None` when the step is not committed.
    fn archived(&self, step: Step) -> Option<Archived>;
}

/// Answers the other replicas' requests for this replica's updates (see the module docs).
pub struct ReplicaDesk {
    run: RunId,
    stage: StageIndex,
    peers: Mutex<Vec<(Replica, StagePeer)>>,
    steps: Mutex<BTreeMap<Step, Published>>,
    served: Condvar,
    archive: Option<Box<dyn UpdateArchive>>,
}

impl std::fmt::Debug for ReplicaDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaDesk")
            .field("run", &self.run)
            .field("stage", &self.stage)
            .field("peers", &self.peers())
            .field("archive", &self.archive.is_some())
            .finish_non_exhaustive()
    }
}

impl ReplicaDesk {
    /// The desk of a replica of `stage` in `run`, answering `peers` (the other replicas of
    /// the stage).
    pub fn new(run: RunId, stage: StageIndex, peers: Vec<(Replica, StagePeer)>) -> Self {
        ReplicaDesk {
            run,
            stage,
            peers: Mutex::new(peers),
            steps: Mutex::new(BTreeMap::new()),
            served: Condvar::new(),
            archive: None,
        }
    }

    /// This desk, answering the steps it no longer holds from `archive`.
    pub fn with_archive(mut self, archive: impl UpdateArchive + 'static) -> Self {
        self.archive = Some(Box::new(archive));
        self
    }

    /// The other replicas of the stage, as last set.
    pub fn peers(&self) -> Vec<(Replica, StagePeer)> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the other replicas of the stage (the chain reassigned a slot); a peer no
    /// longer among them is refused from now on.
    pub fn set_peers(&self, peers: Vec<(Replica, StagePeer)>) {
        let mut now = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if *now != peers {
            tracing::info!(
                replicas = ?peers.iter().map(|(r, p)| (*r, p.peer_id.to_string())).collect::<Vec<_>>(),
                "the stage's other replicas changed"
            );
            *now = peers;
        }
    }

    fn allowed(&self) -> HashSet<PeerId> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, p)| p.peer_id)
            .collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<Step, Published>) -> T) -> T {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut steps)
    }

    /// Publishes this replica's update of `step` with its seal over the update's root;
    /// forgets the steps before `step − KEPT_STEPS + 1`.
    pub fn publish(&self, step: Step, update: EncodedUpdate, signature: [u8; 64]) {
        self.with(|steps| {
            steps.entry(step).or_default().update = Some((update, signature));
            let keep_from = step.saturating_sub(KEPT_STEPS - 1);
            *steps = steps.split_off(&keep_from);
        });
    }

    /// Records the set this replica decided for `step`.
    pub fn decide(&self, step: Step, included: Included) {
        self.with(|steps| steps.entry(step).or_default().decided = Some(included));
    }

    /// Waits up to `timeout` until every other replica has been given this replica's update
    /// of `step` (a stage that has trained its last step waits so before it stops answering,
    /// so a replica a little behind still gets it); whether they all were.
    pub fn wait_served(&self, step: Step, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let allowed = self.allowed();
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let all = steps
                .get(&step)
                .is_some_and(|p| allowed.iter().all(|peer| p.served.contains(peer)));
            let now = Instant::now();
            if all || now >= deadline {
                return all;
            }
            steps = self
                .served
                .wait_timeout(steps, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl RequestDesk for ReplicaDesk {
    fn answer(&self, peer: &PeerId, request: &Request) -> Option<Response> {
        let Request::ReplicaUpdate {
            run, step, stage, ..
        } = request
        else {
            return None;
        };
        Some(if *run != self.run {
            Response::error(
                ErrorCode::WrongRun,
                format!("this replica trains run {}", self.run),
            )
        } else if *stage != self.stage {
            Response::error(
                ErrorCode::WrongStage,
                format!("this replica trains stage {}", self.stage),
            )
        } else if !self.allowed().contains(peer) {
            Response::error(
                ErrorCode::Forbidden,
                format!("{peer} is not a replica of stage {}", self.stage),
            )
        } else {
            let answer = self.with(|steps| match steps.get_mut(step) {
                Some(Published {
                    update: Some((update, signature)),
                    decided,
                    served,
                }) => {
                    served.insert(*peer);
                    Response::ReplicaUpdate {
                        update: update.clone(),
                        signature: Box::new(*signature),
                        decided: *decided,
                    }
                }
                _ => Response::NotReady,
            });
            self.served.notify_all();
            match (&answer, &self.archive) {
                (Response::NotReady, Some(archive)) => match archive.archived(*step) {
                    Some(a) => Response::ReplicaUpdate {
                        update: a.update,
                        signature: Box::new(a.signature),
                        decided: Some(a.decided),
                    },
                    None => answer,
                },
                _ => answer,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        weft_p2p::keypair_from_seed([seed; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    fn stage_peer(seed: u8) -> StagePeer {
        StagePeer {
            peer_id: peer(seed),
            addrs: Vec::new(),
        }
    }

    fn ask(step: Step, stage: StageIndex, run: RunId) -> Request {
        Request::ReplicaUpdate {
            run,
            step,
            stage,
            replica: 1,
        }
    }

    #[test]
    fn answers_only_the_stage_replicas_with_what_was_published() {
        let desk = ReplicaDesk::new(3, 1, vec![(1, stage_peer(1))]);
        let code = |r: Option<Response>| match r {
            Some(Response::Error { code, .. }) => Some(code),
            _ => None,
        };
        assert!(desk
            .answer(
                &peer(1),
                &Request::Done {
                    run: 3,
                    from_stage: 0,
                    steps: 1
                }
            )
            .is_none());
        assert_eq!(
            desk.answer(&peer(1), &ask(0, 1, 3)),
            Some(Response::NotReady)
        );
        assert_eq!(
            code(desk.answer(&peer(2), &ask(0, 1, 3))),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code(desk.answer(&peer(1), &ask(0, 0, 3))),
            Some(ErrorCode::WrongStage)
        );
        assert_eq!(
            code(desk.answer(&peer(1), &ask(0, 1, 4))),
            Some(ErrorCode::WrongRun)
        );
        let u = EncodedUpdate::Fp32(vec![0, 0, 128, 63]);
        desk.publish(0, u.clone(), [7; 64]);
        assert!(!desk.wait_served(0, Duration::from_millis(1)));
        assert_eq!(
            desk.answer(&peer(1), &ask(0, 1, 3)),
            Some(Response::ReplicaUpdate {
                update: u.clone(),
                signature: Box::new([7; 64]),
                decided: None
            })
        );
        assert!(
            desk.wait_served(0, Duration::from_millis(1)),
            "peer 1 has it"
        );
        let set = Included::of([0]).unwrap();
        desk.decide(0, set);
        assert_eq!(
            desk.answer(&peer(1), &ask(0, 1, 3)),
            Some(Response::ReplicaUpdate {
                update: u.clone(),
                signature: Box::new([7; 64]),
                decided: Some(set)
            })
        );
        // Old steps are forgotten.
        desk.publish(KEPT_STEPS, u, [7; 64]);
        assert_eq!(
            desk.answer(&peer(1), &ask(0, 1, 3)),
            Some(Response::NotReady)
        );
        assert!(matches!(
            desk.answer(&peer(1), &ask(KEPT_STEPS, 1, 3)),
            Some(Response::ReplicaUpdate { .. })
        ));
    }

    /// Committed steps, as a tensor store would hold them.
    struct Committed(BTreeMap<Step, Archived>);

    impl UpdateArchive for Committed {
        fn archived(&self, step: Step) -> Option<Archived> {
            self.0.get(&step).cloned()
        }
    }

    #[test]
    fn steps_out_of_memory_are_answered_from_the_archive_and_peers_follow_the_chain() {
        let old = Archived {
            update: EncodedUpdate::Fp32(vec![0, 0, 0, 64]),
            signature: [9; 64],
            decided: Included::of([0]).unwrap(),
        };
        let desk = ReplicaDesk::new(3, 1, vec![(1, stage_peer(1))])
            .with_archive(Committed([(2, old.clone())].into()));
        // A step committed before (a restart, or beyond KEPT_STEPS): the committed update,
        // seal and set.
        assert_eq!(
            desk.answer(&peer(1), &ask(2, 1, 3)),
            Some(Response::ReplicaUpdate {
                update: old.update.clone(),
                signature: Box::new(old.signature),
                decided: Some(old.decided)
            })
        );
        // Not committed, not published: not ready.
        assert_eq!(
            desk.answer(&peer(1), &ask(3, 1, 3)),
            Some(Response::NotReady)
        );
        // Memory first: what was published now wins over the archive.
        let now = EncodedUpdate::Fp32(vec![0, 0, 128, 63]);
        desk.publish(2, now.clone(), [7; 64]);
        assert!(matches!(
            desk.answer(&peer(1), &ask(2, 1, 3)),
            Some(Response::ReplicaUpdate { update, decided: None, .. }) if update == now
        ));
        // The chain gives replica 1's slot to another peer: the old one is refused, the new
        // one answered.
        desk.set_peers(vec![(1, stage_peer(5))]);
        assert_eq!(desk.peers(), vec![(1, stage_peer(5))]);
        assert!(matches!(
            desk.answer(&peer(1), &ask(2, 1, 3)),
            Some(Response::Error {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
        assert!(matches!(
            desk.answer(&peer(5), &ask(2, 1, 3)),
            Some(Response::ReplicaUpdate { .. })
        ));
        assert!(
            desk.wait_served(2, Duration::from_millis(1)),
            "served to the current peers"
        );
    }
}
