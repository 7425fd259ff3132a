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
//! The numerics are exactly those of [`crate::schedule::run_step_in_process`]: tensors cross
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
//! # Network, store, recovery
//!
//! The inbox, the outbox with its retries and resend log, and the validation of everything
//! received are [`weft_stage_net::link`]; the tensor store and the journal are
//! [`weft_stage_net::store`] and [`weft_stage_net::journal`]; [`weft_stage_net::recovery`]
//! says what a restarted stage must replay. A stage that restarts (after `kill -9`) resumes
//! from its checkpoint, replays the committed steps after it from its tensor store
//! (verifying that each replay reproduces the stored commitment), and asks its partners to
//! `Resend` what they sent it from the next step on. At the end each stage sends `Done` and
//! waits for its partners' `Done`, so nobody leaves while a partner may still need a resend.
mod net_io;
mod replay;
pub mod replicas;
pub mod sim;

pub use replay::{checkpoint_path, resume, Resumed};

use crate::error::{Error, Result};
use net_io::NetIo;
use replicas::{NetworkTransport, ReplicaExchange, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_ml::checkpoint;
use weft_ml::commit::{canonical_bytes, StepCommitment, StepItem};
use weft_ml::schedule::run_step;
use weft_ml::worker::StageWorker;
use weft_p2p::{InboundRequest, Network, PeerId};
use weft_primitives::step::{Replica, RunId, StageIndex, Step};
use weft_stage_net::access::RevealAccess;
use weft_stage_net::desk::{Desks, RequestDesk};
use weft_stage_net::journal::Journal;
use weft_stage_net::link::{LinkConfig, RetryPolicy, StageLink, StageShape};
use weft_stage_net::recovery;
use weft_stage_net::replica_desk::ReplicaDesk;
use weft_stage_net::reveal_server::RevealDesk;
use weft_stage_net::store::{StepAux, StepBytes, TensorStore};
use weft_stage_net::topology::PeerTable;
use weft_stage_net::wire::{Limits, Request};

/// Settings of a stage process.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The run.
    pub run: RunId,
    /// This trainer's replica of its stage (reveal requests name it).
    pub replica: Replica,
    /// Train until this many steps are complete.
    pub steps: Step,
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
    /// Desks besides the reveal desk that answer this stage's requests (inference).
    pub desks: Desks,
    /// The stage's p2p identity (the key behind its peer id): it signs the stage's seals.
    pub identity: weft_p2p::Keypair,
    /// Test seam: rewrites activations and input gradients after they are committed, before
    /// they are sent (the adversary's `forged-messages`); the trainer installs none.
    pub tamper: Option<SendTamper>,
    /// Replicas that average: how long a replica waits for the others' updates of a step
    /// before it leaves the missing ones out of the round.
    pub replica_deadline: Duration,
    /// Replicas that average: a desk the caller made ([`replicas::store_desk`]) to keep its
    /// peers current as the chain reassigns slots; `None`: [`prepare`] makes one for
    /// `peers.replicas`.
    pub replica_desk: Option<Arc<ReplicaDesk>>,
}

/// Rewrites what leaves for a neighbour in `(step, direction, micro)`, after the worker
/// committed it (see [`NodeConfig::tamper`]).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct SendTamper(
    pub  Arc<
        dyn Fn(
                Step,
                weft_primitives::seal::Direction,
                usize,
                &mut tch::Tensor,
            ) -> weft_ml::Result<()>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for SendTamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendTamper")
    }
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

/// Called on the training thread after each step is stored and journaled, with its
/// commitment; an error stops the stage (the step stays committed locally).
pub type AfterStep = Box<dyn FnMut(&StepCommitment) -> Result<()> + Send>;

/// Sees, and may rewrite, a step's commitment and the bytes kept for its reveal just before
/// they are stored and journaled. A seam for test tools that simulate dishonest trainers
/// (replayed steps, reveals that differ from the commitment); the trainer installs none.
pub trait CommitHook: Send {
    /// Rewrites `commitment` and/or `bytes` of step `commitment.step`.
    fn commit(&mut self, commitment: &mut StepCommitment, bytes: &mut StepBytes) -> Result<()>;
}

struct Ctx {
    link: StageLink,
    store: TensorStore,
    cfg: NodeConfig,
    replicas: Option<ReplicaExchange>,
}

impl Ctx {
    fn run_step(
        &self,
        worker: &mut StageWorker,
        step: u64,
        hook: &mut Option<Box<dyn CommitHook>>,
    ) -> Result<(Option<f64>, Step, StepCommitment)> {
        let sh = &self.link;
        let (k, n) = (sh.shape().stage, sh.shape().n_stages);
        let run = self.cfg.run;
        let timeout = self.cfg.peer_timeout;
        sh.set_current(step);
        let moments = |w: &StageWorker| -> Result<Vec<u8>> {
            Ok(canonical_bytes(
                w.optimizer().moments().iter().flat_map(|s| [&s.m, &s.v]),
            )?)
        };
        let weights = |w: &StageWorker| -> Result<Vec<u8>> {
            Ok(canonical_bytes(w.stage().params().iter().map(|(_, t)| t))?)
        };
        // The previous step's store entry holds the "before" bytes (hard-linked); compute them
        // only when it is missing (the first step of a process).
        let before = match step.checked_sub(1) {
            Some(p) if self.store.has(p) => None,
            _ => Some((weights(worker)?, moments(worker)?)),
        };
        let mut io = NetIo {
            link: sh,
            run,
            replica: self.cfg.replica,
            identity: &self.cfg.identity,
            timeout,
            aux: StepAux::default(),
            tamper: self.cfg.tamper.as_ref(),
            replicas: self.replicas.as_ref(),
            sent: Default::default(),
            received: Default::default(),
        };
        let report = run_step(worker, step, &mut io)?;
        let aux = io.aux;
        let mut commitment = report
            .commitment
            .ok_or_else(|| Error::Config("the worker does not commit".into()))?;
        let record = report
            .record
            .ok_or_else(|| Error::Config("the worker kept no record".into()))?;
        let (wb, ob) = match before {
            Some((w, o)) => (Some(w), Some(o)),
            None => (None, None),
        };
        let mut bytes = StepBytes {
            items: vec![
                (StepItem::WeightsBefore, wb),
                (StepItem::Inputs, Some(canonical_bytes(&record.inputs)?)),
                (StepItem::Outputs, Some(canonical_bytes(&record.outputs)?)),
                (
                    StepItem::OutputGrads,
                    Some(canonical_bytes(&record.output_grads)?),
                ),
                (
                    StepItem::InputGrads,
                    Some(canonical_bytes(&record.input_grads)?),
                ),
                (StepItem::WeightsAfter, Some(weights(worker)?)),
                (StepItem::OptimizerBefore, ob),
                (StepItem::OptimizerAfter, Some(moments(worker)?)),
                (StepItem::Update, Some(canonical_bytes(&record.update)?)),
            ],
        };
        if let Some(h) = hook.as_mut() {
            h.commit(&mut commitment, &mut bytes)?;
        }
        self.store.write_step(&commitment, &bytes, &aux)?;
        Journal::for_commitment(run, k, n, &commitment).write(&self.cfg.data_dir)?;
        if (step + 1).checked_rem(self.cfg.checkpoint_every) == Some(0) {
            checkpoint::save(worker, &checkpoint_path(&self.cfg.data_dir))?;
        }
        Ok((report.loss, step + 1, commitment))
    }

    fn train(
        &self,
        mut worker: StageWorker,
        progress: &mut (dyn FnMut(&StepProgress) + Send),
        after_step: &mut Option<AfterStep>,
        commit_hook: &mut Option<Box<dyn CommitHook>>,
    ) -> Result<Summary> {
        let sh = &self.link;
        let r = resume(&mut worker, &self.cfg.data_dir, &self.store, self.cfg.run)?;
        sh.set_current(r.next_step);
        let partners = sh.shape().partners();
        if r.had_journal {
            // What we sent in our last committed step may have died with the previous
            // process before it was delivered: send it again.
            if let Some(last) = r.next_step.checked_sub(1) {
                let again = recovery::last_step_messages(
                    &self.store,
                    last,
                    sh.shape(),
                    self.cfg.run,
                    sh.stage_id(),
                )?;
                for (to, req) in again {
                    sh.send(to, last, &req);
                }
            }
            // Whatever partners sent us for the steps we are about to (re)do died with the
            // previous process.
            for &p in &partners {
                sh.send_unlogged(
                    p,
                    &Request::Resend {
                        run: self.cfg.run,
                        from_stage: sh.stage_id(),
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
                stage: sh.shape().stage,
                loss,
                seconds,
                tokens_per_s: tokens / seconds.max(1e-9),
                bytes_sent: sh.bytes_sent(),
                bytes_received: sh.bytes_received(),
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
        if let (Some(ex), Some(last)) = (&self.replicas, finished.checked_sub(1)) {
            if r.next_step < self.cfg.steps && !ex.desk.wait_served(last, self.cfg.replica_deadline)
            {
                tracing::info!(
                    step = last,
                    "not every replica fetched this one's last update"
                );
            }
        }
        sh.set_current(finished);
        sh.flush(self.cfg.peer_timeout)?;
        for &p in &partners {
            let req = Request::Done {
                run: self.cfg.run,
                from_stage: sh.stage_id(),
                steps: finished,
            };
            sh.send(p, finished, &req);
        }
        sh.flush(self.cfg.peer_timeout)?;
        // A stage that restarts with nothing left to train only says it is done: its
        // partners may have left already.
        if r.next_step < self.cfg.steps {
            sh.wait_done(&partners, self.cfg.peer_timeout)?;
        }
        Ok(Summary {
            resumed_at: r.next_step,
            replayed: r.replayed,
            losses,
            bytes_sent: sh.bytes_sent(),
            bytes_received: sh.bytes_received(),
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
    run_stage_with(
        cfg,
        worker,
        network,
        inbound,
        progress,
        StageHooks::default(),
    )
    .await
}

/// What a stage calls besides training: after every step (the chain trainer submits the
/// commitment from it, and pauses or stops training through it), and before a step is stored
/// (test tools only, see [`CommitHook`]).
#[derive(Default)]
pub struct StageHooks {
    /// Called after every step is stored and journaled.
    pub after_step: Option<AfterStep>,
    /// Rewrites a step's commitment and bytes before they are stored.
    pub commit: Option<Box<dyn CommitHook>>,
    /// Once this holds a reason, every wait of the stage fails with it (the stage is being
    /// stopped from outside, e.g. its slot was taken away while it waits for a partner).
    pub stop: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

/// [`run_stage`] with [`StageHooks`].
pub async fn run_stage_with(
    cfg: NodeConfig,
    mut worker: StageWorker,
    network: Network,
    inbound: mpsc::Receiver<InboundRequest>,
    mut progress: Box<dyn FnMut(&StepProgress) + Send>,
    mut hooks: StageHooks,
) -> Result<Summary> {
    let prepared = prepare(&cfg, &mut worker, Some(network.local_peer_id()))?;
    let network_for_replicas = network.clone();
    let replica_desk = prepared.replica_desk.clone();
    let (link, _tasks) = StageLink::start(
        prepared.link,
        prepared.current,
        prepared.desks,
        network,
        inbound,
    )?;
    let store = prepared.store;
    let transport: Arc<dyn Transport> = Arc::new(NetworkTransport {
        network: network_for_replicas,
        runtime: tokio::runtime::Handle::current(),
    });
    let _stopper = hooks.stop.take().map(|mut stop| {
        let link = link.clone();
        AbortOnDrop(tokio::spawn(async move {
            if let Ok(why) = stop.wait_for(Option::is_some).await {
                link.kill(why.as_deref().unwrap_or("stopped"));
            }
        }))
    });
    let replicas = replica_desk.map(|desk| (desk, transport));
    tokio::task::spawn_blocking(move || {
        train_on_link(
            cfg,
            worker,
            link,
            store,
            replicas,
            &mut *progress,
            &mut hooks,
        )
    })
    .await
    .map_err(|e| Error::Config(format!("the training thread failed: {e}")))?
}

/// Aborts a spawned task when dropped (a helper task that lives as long as its owner).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a stage needs before its link starts (see [`prepare`]).
pub struct Prepared {
    /// The link's settings.
    pub link: LinkConfig,
    /// The step the link starts at (after the journal's last step).
    pub current: Step,
    /// The stage's tensor store.
    pub store: TensorStore,
    /// What answers the stage's requests outside the pipeline protocol: reveals and
    /// auditor hellos first, then the replicas' update requests, then the config's other
    /// desks.
    pub desks: Desks,
    /// Where the run's replicas average: the desk this replica publishes its updates on
    /// (also among `desks`).
    pub replica_desk: Option<Arc<ReplicaDesk>>,
}

/// Checks a stage's settings against its worker and peer table (`local`: this node's peer
/// id, when it has one), opens its store and describes its link.
pub fn prepare(
    cfg: &NodeConfig,
    worker: &mut StageWorker,
    local: Option<PeerId>,
) -> Result<Prepared> {
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
        return Err(Error::Config(format!(
            "the table lists {} stages, the run has {}",
            cfg.peers.stages.len(),
            spec.n_stages
        )));
    }
    if let Some(r) = cfg.peers.run.filter(|&r| r != cfg.run) {
        return Err(Error::Config(format!(
            "the table is for run {r}, not {}",
            cfg.run
        )));
    }
    if let Some(me) = local.filter(|me| cfg.peers.stages[spec.stage].peer_id != *me) {
        return Err(Error::Config(format!(
            "the table assigns stage {} to {}, this node is {me}",
            spec.stage, cfg.peers.stages[spec.stage].peer_id,
        )));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| weft_stage_net::Error::io(&cfg.data_dir, e))?;
    let store = TensorStore::open(&cfg.data_dir, cfg.retention)?;
    let model = worker.stage().config();
    let train = worker.train_config();
    let coupling = worker.coupling();
    let shape = StageShape {
        stage: spec.stage,
        n_stages: spec.n_stages,
        micro_batches: worker.micro_batches(),
        activation: vec![train.micro_batch_size, model.seq_len, model.d_model],
        shared: coupling
            .shared_embedding
            .then(|| vec![model.vocab_size, model.d_model]),
        global_clip: coupling.global_clip,
    };
    let current = Journal::read(&cfg.data_dir)?.map_or(0, |j| j.last_committed + 1);
    let stage_id = spec_stage_id(spec.stage)?;
    let desk = RevealDesk {
        store: store.clone(),
        auditors: cfg.auditors.clone(),
        slot: (cfg.run, stage_id, cfg.replica),
    };
    let replica_desk = worker.train_config().update_codec().map(|_| {
        cfg.replica_desk.clone().unwrap_or_else(|| {
            replicas::store_desk(
                (cfg.run, stage_id, cfg.replica),
                cfg.peers.replicas.clone(),
                store.clone(),
                cfg.identity.clone(),
            )
        })
    });
    let mut desks: Desks = vec![Arc::new(desk) as Arc<dyn RequestDesk>];
    if let Some(d) = &replica_desk {
        desks.push(d.clone() as Arc<dyn RequestDesk>);
    }
    desks.extend(cfg.desks.iter().cloned());
    Ok(Prepared {
        link: LinkConfig {
            run: cfg.run,
            shape,
            peers: cfg.peers.clone(),
            limits: cfg.limits,
            retry: cfg.retry,
        },
        current,
        store,
        desks,
        replica_desk,
    })
}

/// Trains a prepared stage on a running `link` until `cfg.steps` steps are complete
/// (blocking; see the module docs): resume, steps, checkpoints, then `Done` with every
/// partner. Where the run's replicas average, `replicas` is the desk from [`prepare`] and
/// the transport to the other replicas.
pub fn train_on_link(
    cfg: NodeConfig,
    worker: StageWorker,
    link: StageLink,
    store: TensorStore,
    replicas: Option<(Arc<ReplicaDesk>, Arc<dyn Transport>)>,
    progress: &mut (dyn FnMut(&StepProgress) + Send),
    hooks: &mut StageHooks,
) -> Result<Summary> {
    let replicas = match (worker.train_config().update_codec(), replicas) {
        (None, _) => None,
        (Some(codec), Some((desk, transport))) => Some(ReplicaExchange {
            desk,
            transport,
            deadline: cfg.replica_deadline,
            codec,
            limits: cfg.limits,
            identity: cfg.identity.clone(),
        }),
        (Some(_), None) => {
            return Err(Error::Config(
                "the run's replicas average, but this stage has no way to reach them".into(),
            ))
        }
    };
    let ctx = Ctx {
        link,
        store,
        cfg,
        replicas,
    };
    ctx.train(worker, progress, &mut hooks.after_step, &mut hooks.commit)
}

fn spec_stage_id(stage: usize) -> Result<StageIndex> {
    StageIndex::try_from(stage).map_err(|_| Error::Config(format!("stage {stage} out of range")))
}
