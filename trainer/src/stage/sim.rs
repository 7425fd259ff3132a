//! A deterministic simulation of a pipeline: every stage runs the real stage code
//! ([`super::train_on_link`]: the stage protocol, the one step schedule, the tensor store, the
//! journal, crash recovery) in one process, over a simulated network that drops, duplicates
//! and reorders messages as a seeded random generator decides, and can restart a stage.
//!
//! # How it stays deterministic
//!
//! Each stage computes on its own thread, but the network only moves when the whole pipeline
//! is settled: every stage is blocked in a wait of its link and has seen every wake
//! ([`StageLink::is_settled`]), or has finished. Then the scheduler picks one pending event
//! — a message in transit or a retry timer, kept in a map ordered by `(stage, incarnation,
//! message id)` — with the seeded generator, and carries it out: a message is delivered to its
//! receiver's [`StageLink::handle_inbound`] (possibly twice) or dropped, and the sender learns
//! the outcome through [`StageLink::delivered`]. Between two events each stage's computation
//! depends only on what it received, so the same seed replays the same run, event for event.
//! Timers have no clock: a pending retry is just another event the scheduler may pick.
//!
//! # Restart
//!
//! [`SimPlan::restart`] names a stage and a step: once the stage's journal shows that step
//! committed, the stage is killed in its next wait (as `kill -9` would stop it: what it had
//! not stored is lost), messages addressed to it fail while it is down, and a new incarnation
//! starts from the same data directory: checkpoint, replay from the store, `Resend` to its
//! partners.

use super::{prepare, train_on_link, NodeConfig, StageHooks, Summary};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weft_ml::worker::StageWorker;
use weft_p2p::PeerId;
use weft_stage_net::journal::Journal;
use weft_stage_net::link::{Executor, StageLink};
use weft_stage_net::protocol::{Delivery, MsgId};

/// What the simulated network does to messages, and whom it restarts.
#[derive(Debug, Clone)]
pub struct SimPlan {
    /// The seed of every random choice.
    pub seed: u64,
    /// Probability that a delivery attempt is lost (the sender sees a network failure).
    pub drop: f64,
    /// Probability that a delivered message is delivered a second time.
    pub duplicate: f64,
    /// Restart this stage once its journal shows this step committed.
    pub restart: Option<(usize, u64)>,
    /// Give up (an error) after this many events.
    pub max_events: u64,
}

/// What happened in a simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Messages delivered.
    pub delivered: u64,
    /// Delivery attempts dropped.
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Retry timers fired.
    pub retries: u64,
    /// Stages restarted.
    pub restarts: u64,
    /// The first events, `(kind, from stage, to stage)`, to check that a seed replays.
    pub trace: Vec<(char, usize, usize)>,
}

type EventKey = (usize, u64, MsgId);

#[derive(Default)]
struct Wires {
    links: Vec<Option<(u64, StageLink)>>,
    in_transit: BTreeMap<EventKey, (usize, Arc<Vec<u8>>)>,
    timers: BTreeMap<EventKey, ()>,
}

struct SimExecutor {
    wires: Arc<Mutex<Wires>>,
    stage: usize,
    incarnation: u64,
}

fn lock(w: &Mutex<Wires>) -> MutexGuard<'_, Wires> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl Executor for SimExecutor {
    fn transmit(&self, _link: &StageLink, id: MsgId, to: usize, bytes: Arc<Vec<u8>>) {
        lock(&self.wires)
            .in_transit
            .insert((self.stage, self.incarnation, id), (to, bytes));
    }
    fn retry_after(&self, _link: &StageLink, id: MsgId, _delay: Duration) {
        lock(&self.wires)
            .timers
            .insert((self.stage, self.incarnation, id), ());
    }
}

/// Builds the worker of a stage (again, for a restarted incarnation).
pub type MakeWorker = dyn Fn(usize) -> Result<StageWorker> + Send + Sync;

/// Builds the hooks of a stage (a dishonest stage's [`crate::adversary`] mocks, say).
pub type MakeHooks = dyn Fn(usize) -> StageHooks + Send + Sync;

struct Running {
    incarnation: u64,
    link: StageLink,
    thread: JoinHandle<Result<Summary>>,
}

/// Runs a pipeline of `configs.len()` stages (stage `k`'s settings at index `k`; their peer
/// tables name `peers`; their workers and hooks from `make_worker` and `make_hooks`) to
/// completion under `plan`, and returns each stage's summary.
pub fn run(
    configs: Vec<NodeConfig>,
    peers: Vec<PeerId>,
    make_worker: Arc<MakeWorker>,
    make_hooks: Arc<MakeHooks>,
    plan: &SimPlan,
) -> Result<(Vec<Summary>, SimReport)> {
    let n = configs.len();
    let wires = Arc::new(Mutex::new(Wires {
        links: (0..n).map(|_| None).collect(),
        ..Wires::default()
    }));
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    let mut report = SimReport::default();
    let start = |k: usize, incarnation: u64| -> Result<Running> {
        let cfg = configs[k].clone();
        let mut worker = make_worker(k)?;
        let prepared = prepare(&cfg, &mut worker, None)?;
        let executor = SimExecutor {
            wires: wires.clone(),
            stage: k,
            incarnation,
        };
        let link = StageLink::new(
            prepared.link,
            prepared.current,
            prepared.desks,
            Box::new(executor),
        )?;
        lock(&wires).links[k] = Some((incarnation, link.clone()));
        let (store, thread_link) = (prepared.store, link.clone());
        let mut hooks = make_hooks(k);
        let thread = std::thread::spawn(move || {
            train_on_link(
                cfg,
                worker,
                thread_link,
                store,
                None,
                &mut |_| {},
                &mut hooks,
            )
        });
        Ok(Running {
            incarnation,
            link,
            thread,
        })
    };
    let mut running: Vec<Option<Running>> = Vec::with_capacity(n);
    for k in 0..n {
        running.push(Some(start(k, 0)?));
    }
    let mut summaries: Vec<Option<Summary>> = (0..n).map(|_| None).collect();
    let mut restart = plan.restart;
    let mut events = 0u64;
    loop {
        // Wait until every stage is settled or finished.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let settled = running
                .iter()
                .flatten()
                .all(|r| r.thread.is_finished() || r.link.is_settled());
            if settled {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Config("the simulation did not settle".into()));
            }
            // A poll of the condition above while the stages compute.
            std::thread::sleep(Duration::from_micros(200));
        }
        // Collect finished stages.
        for (k, slot) in running.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|r| r.thread.is_finished()) {
                if let Some(r) = slot.take() {
                    lock(&wires).links[k] = None;
                    let result = r
                        .thread
                        .join()
                        .map_err(|_| Error::Config(format!("stage {k} panicked")))?;
                    summaries[k] = Some(result?);
                }
            }
        }
        if running.iter().all(Option::is_none) {
            break;
        }
        // A planned restart, once the stage has committed the step.
        if let Some((k, step)) = restart {
            let committed =
                Journal::read(&configs[k].data_dir)?.is_some_and(|j| j.last_committed >= step);
            if committed {
                if let Some(r) = running[k].take() {
                    r.link.kill("restarted by the simulation");
                    lock(&wires).links[k] = None;
                    // It stopped in a wait; what it had not stored is lost, as with kill -9.
                    let _ = r
                        .thread
                        .join()
                        .map_err(|_| Error::Config(format!("stage {k} panicked")))?;
                    running[k] = Some(start(k, r.incarnation + 1)?);
                    report.restarts += 1;
                }
                restart = None;
                continue;
            }
        }
        // Pick one event.
        let (keys, timer_keys): (Vec<EventKey>, Vec<EventKey>) = {
            let w = lock(&wires);
            (
                w.in_transit.keys().copied().collect(),
                w.timers.keys().copied().collect(),
            )
        };
        let total = keys.len() + timer_keys.len();
        if total == 0 {
            let waiting: Vec<(usize, Option<String>)> = running
                .iter()
                .enumerate()
                .filter_map(|(k, r)| r.as_ref().map(|r| (k, r.link.waiting_for())))
                .collect();
            return Err(Error::Config(format!(
                "the simulated pipeline is stuck: stages {waiting:?} wait and nothing is in \
                 flight after {report:?}"
            )));
        }
        events += 1;
        if events > plan.max_events {
            return Err(Error::Config(format!(
                "the simulation did not finish in {} events",
                plan.max_events
            )));
        }
        let pick = rng.gen_range(0..total);
        let sender_of = |w: &Wires, (from, inc, _): EventKey| -> Option<StageLink> {
            match &w.links[from] {
                Some((i, l)) if *i == inc => Some(l.clone()),
                _ => None,
            }
        };
        if pick < keys.len() {
            let key = keys[pick];
            let (packet, sender, receiver) = {
                let mut w = lock(&wires);
                let packet = w.in_transit.remove(&key);
                let sender = sender_of(&w, key);
                let receiver = packet
                    .as_ref()
                    .and_then(|(to, _)| w.links[*to].as_ref().map(|(_, l)| l.clone()));
                (packet, sender, receiver)
            };
            let (Some((to, bytes)), Some(sender)) = (packet, sender) else {
                continue; // the sender restarted since: its old messages are gone
            };
            let from_peer = peers[key.0];
            if report.trace.len() < 64 {
                report.trace.push(('m', key.0, to));
            }
            let outcome = match receiver {
                None => Delivery::Unreachable(format!("stage {to} is down")),
                Some(_) if rng.gen_bool(plan.drop) => {
                    report.dropped += 1;
                    Delivery::Unreachable("dropped by the simulation".into())
                }
                Some(receiver) => {
                    let resp = receiver.handle_inbound(from_peer, &bytes);
                    report.delivered += 1;
                    if rng.gen_bool(plan.duplicate) {
                        report.duplicated += 1;
                        let _ = receiver.handle_inbound(from_peer, &bytes);
                    }
                    Delivery::Answered(resp)
                }
            };
            sender.delivered(key.2, outcome);
        } else {
            let key = timer_keys[pick - keys.len()];
            let sender = {
                let mut w = lock(&wires);
                w.timers.remove(&key);
                sender_of(&w, key)
            };
            if report.trace.len() < 64 {
                report.trace.push(('t', key.0, key.0));
            }
            if let Some(sender) = sender {
                report.retries += 1;
                sender.retry_due(key.2);
            }
        }
    }
    let summaries = summaries
        .into_iter()
        .enumerate()
        .map(|(k, s)| s.ok_or_else(|| Error::Config(format!("stage {k} left no summary"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((summaries, report))
}
