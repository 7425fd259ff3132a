//! `weft-trainer train`: trains the stage the chain assigns to an account, committing every
//! step on chain ([`crate::submit`]) and serving reveals to the stage's auditors until their
//! windows close.

use super::after_training::{
    auditor_access, refresh_auditors, serve_after_training, serve_finished, stage_net,
    AfterTraining,
};
use super::handover::take_over;
use super::leave::{submit_leave, LeaveSignal};
pub use super::train_args::TrainArgs;
use super::{derive_p2p_seed, listen_with_retry, open_data, parse_seed, AbortOnDrop, Heads};
use crate::chain::{self, ChainView, NodeState, RunSetup, TrainerState};
use crate::metrics::{self, Progress, TrainerMetrics};
use crate::stage;
use crate::submit::{SlotId, Submitter, SyncState};
use crate::Error as TrainerError;
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use weft_ml::commit::StepCommitment;
use weft_ml::config::DeviceSpec;
use weft_ml::data::Batcher;
use weft_ml::model::StageSpec;
use weft_ml::worker::StepHook;
use weft_primitives::{AccountId, Keypair};
use weft_rpc_client::{Client, SubmitOptions, WaitFor};
use weft_runtime::RuntimeCall;
use weft_stage_net::access::RevealAccess;

/// What the chain side tells the training thread between steps.
#[derive(Debug, Default)]
struct GateState {
    /// Steps the chain has (from the submitter).
    chain_next: u64,
    /// Steps trained locally (from the training thread).
    trained_next: u64,
    /// Why training must wait now (halted, paused).
    paused: Option<String>,
    /// A leave was asked for: train no further (see [`super::leave`]).
    leaving: bool,
    /// The training thread is waiting between steps.
    parked: bool,
    /// Why training must stop.
    stop: Option<String>,
    /// Why the pipeline must start again (a neighbour's holder changed).
    restart: Option<String>,
}

type Gate = Arc<(Mutex<GateState>, Condvar)>;

fn gate_update(g: &Gate, f: impl FnOnce(&mut GateState)) {
    let mut st = g.0.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut st);
    g.1.notify_all();
}

pub(super) fn open_batcher(setup: &RunSetup, data: &str) -> anyhow::Result<Batcher> {
    let source = open_data(data, setup.model.seed)?;
    Ok(Batcher::new(
        source,
        setup.train.micro_batch_size,
        setup.model.seq_len,
        setup.model.vocab_size,
    )?)
}

async fn submit(
    client: &Client,
    key: &Keypair,
    call: RuntimeCall,
    what: &str,
) -> anyhow::Result<()> {
    let opts = SubmitOptions {
        wait: WaitFor::InBlock,
        ..SubmitOptions::default()
    };
    let r = client.submit(key, call, &opts).await?.ensure_success()?;
    println!("{what}: in block #{}", r.block_number.unwrap_or_default());
    Ok(())
}

/// Registers the trainer (bond, train, join) as far as needed.
async fn register(
    client: &Client,
    key: &Keypair,
    run: u32,
    peer_id: &weft_p2p::PeerId,
    addr: &str,
    args: &TrainArgs,
) -> anyhow::Result<()> {
    let me = key.account_id();
    let view = ChainView::new(NodeState { client, at: None });
    let cfg = view.staking_config().await?;
    let active = view.active_bond(&me).await?;
    if active < cfg.min_trainer_bond {
        let value = args.bond.unwrap_or(cfg.min_trainer_bond);
        let call = if active == 0 {
            weft_runtime::staking::Call::Bond { value }
        } else {
            weft_runtime::staking::Call::BondExtra {
                value: value.saturating_sub(active),
            }
        };
        submit(client, key, RuntimeCall::Staking(call), "bonded").await?;
    }
    let declared = view
        .trainer(&me)
        .await?
        .and_then(|t| chain::trainer_peer(&t).ok());
    if declared.as_ref().map(|p| p.peer_id) != Some(*peer_id) {
        let call = weft_runtime::staking::Call::Train {
            peer_id: peer_id.to_bytes(),
            addrs: vec![addr.as_bytes().to_vec()],
            capacity: args.capacity,
        };
        submit(
            client,
            key,
            RuntimeCall::Staking(call),
            "declared as trainer",
        )
        .await?;
    }
    if !view.is_candidate(run, &me).await? && view.slots_of(run, &me).await?.is_empty() {
        let call = weft_runtime::stages::Call::JoinRun { run };
        submit(client, key, RuntimeCall::Stages(call), "joined the run").await?;
    }
    Ok(())
}

fn instructions(
    state: &TrainerState,
    args: &TrainArgs,
    peer_id: &weft_p2p::PeerId,
    addr: &str,
) -> Option<String> {
    let train = format!(
        "weft stake train --from <KEY> --peer-id {peer_id} --addr {addr} --capacity {}",
        args.capacity
    );
    let join = format!("weft run join --from <KEY> {}", args.run);
    match state {
        TrainerState::NotTrainer => Some(format!(
            "this account is not a registered trainer. Bond at least the minimum trainer bond \
             (weft stake bond --from <KEY> --amount <WEFT>), then run:\n    {train}\n    {join}\n\
             (or restart with --register to let the trainer submit them)"
        )),
        TrainerState::WrongPeer { declared } => Some(format!(
            "the chain has peer id {declared} for this account, this process is {peer_id}. \
             Declare this one:\n    {train}\n(or restart with --register, or pass the \
             --node-key of {declared})"
        )),
        TrainerState::NotCandidate => Some(format!(
            "this trainer has not joined run {}:\n    {join}\n(or restart with --register)",
            args.run
        )),
        _ => None,
    }
}

/// What a test tool installs into [`train_with`] to simulate a dishonest trainer: a
/// [`StepHook`] for the worker, a [`stage::CommitHook`], and whether reveals are withheld.
/// `weft-trainer train` installs nothing ([`Hooks::default`]).
#[derive(Default)]
pub struct Hooks {
    /// Builds the worker's step hook (called once per pipeline start).
    pub step: Option<Box<dyn Fn() -> Box<dyn StepHook> + Send + Sync>>,
    /// Builds the commit hook (called once per pipeline start).
    pub commit: Option<Box<dyn Fn() -> Box<dyn stage::CommitHook> + Send + Sync>>,
    /// Admit no auditor to the reveals.
    pub withhold_reveals: bool,
    /// Rewrites activations after they are committed, before they are sent.
    pub tamper: Option<stage::SendTamper>,
}

/// `weft-trainer train`.
pub async fn train(args: TrainArgs) -> anyhow::Result<()> {
    train_with(args, Hooks::default()).await
}

/// [`train`] with [`Hooks`].
pub async fn train_with(args: TrainArgs, hooks: Hooks) -> anyhow::Result<()> {
    let key = Keypair::from_suri(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    let me: AccountId = key.account_id();
    let seed = match &args.node_key {
        Some(h) => parse_seed(h)?,
        None => derive_p2p_seed("weft-trainer p2p identity v1", &args.key),
    };
    let p2p_key = weft_p2p::keypair_from_seed(seed)?;
    let peer_id = p2p_key.public().to_peer_id();
    println!("account {me}");
    println!("p2p peer id {peer_id}");
    let listen: weft_p2p::Address = args
        .listen
        .parse()
        .with_context(|| format!("bad --listen {}", args.listen))?;
    let addr = match &args.external_addr {
        Some(a) => a.clone(),
        None if args.listen.ends_with("/tcp/0") => bail!(
            "--listen {} has no fixed port: give a port, or --external-addr",
            args.listen
        ),
        None if args.listen.contains("/0.0.0.0/") => {
            let a = args.listen.replace("/0.0.0.0/", "/127.0.0.1/");
            eprintln!(
                "warning: no --external-addr; declaring {a}, reachable from this machine only"
            );
            a
        }
        None => args.listen.clone(),
    };
    println!("declared address {addr}");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    let client = Arc::new(Client::connect(&args.url).await?);
    let run = args.run;
    let setup = ChainView::new(NodeState {
        client: &client,
        at: None,
    })
    .run_setup(run)
    .await
    .context("reading the run from the chain")?;
    let batcher = open_batcher(&setup, &args.data)?;
    println!(
        "run {run}: {} stages × {} replicas, d_model {} layers {} seq {}, seed {:#x}; data {}",
        setup.info.stages,
        setup.info.replicas,
        setup.model.d_model,
        setup.model.n_layers,
        setup.model.seq_len,
        setup.model.seed,
        batcher.source().describe()
    );
    let steps = args.steps.unwrap_or(setup.info.final_steps());
    let metrics = TrainerMetrics::new();
    // Metrics are an aid, not a duty: a taken port (several trainers on one machine with
    // the default) leaves them off rather than stopping the trainer.
    let _metrics_server = match metrics::serve_local(&metrics, args.prometheus_port).await {
        Ok(task) => task.map(AbortOnDrop),
        Err(e) => {
            eprintln!("warning: {e:#}; Prometheus metrics are off");
            None
        }
    };
    let mut failures = 0u32;
    let mut registered = false;
    let mut leave = LeaveSignal::install();
    loop {
        // (c) Wait until assigned and the pipeline can start.
        let mut heads = Heads::new(client.clone()).await;
        let mut last_msg = String::new();
        let (stage, replica, table) = loop {
            let view = ChainView::new(NodeState {
                client: &client,
                at: None,
            });
            let state = view.trainer_state(run, &me, &peer_id).await?;
            let msg = match &state {
                TrainerState::Ready {
                    stage,
                    replica,
                    table,
                } => break (*stage, *replica, table.clone()),
                TrainerState::Finished => {
                    println!("run {run} is finished");
                    if args.serve {
                        return serve_finished(&args, &client, &key, &setup, listen, &p2p_key)
                            .await;
                    }
                    return Ok(());
                }
                s @ (TrainerState::NotTrainer
                | TrainerState::WrongPeer { .. }
                | TrainerState::NotCandidate) => {
                    if args.register && !registered {
                        register(&client, &key, run, &peer_id, &addr, &args).await?;
                        registered = true;
                        continue;
                    }
                    instructions(s, &args, &peer_id, &addr).unwrap_or_default()
                }
                TrainerState::Unassigned => {
                    "joined; waiting for an epoch boundary to assign a stage".to_string()
                }
                TrainerState::Waiting {
                    stage,
                    replica,
                    why,
                } => {
                    format!("assigned stage {stage} replica {replica}; waiting: {why}")
                }
            };
            if msg != last_msg {
                println!("{msg}");
                last_msg = msg;
            }
            tokio::select! {
                h = heads.next() => tracing::debug!(block = h?.number, "new head"),
                _ = leave.wait() => {
                    // Nothing trained yet in this slot: leave at once.
                    submit_leave(&client, &key, run).await?;
                    return Ok(());
                }
            }
        };
        println!("assigned stage {stage} replica {replica} of run {run}; starting the pipeline");
        match run_assigned(
            &args,
            &client,
            &key,
            &setup,
            &batcher,
            device,
            (stage, replica),
            table,
            steps,
            listen.clone(),
            p2p_key.clone(),
            &metrics,
            &hooks,
            &leave,
        )
        .await
        {
            Ok(Outcome::Finished(summary)) => {
                println!(
                    "stage {stage} done: {} steps, resumed at {}, sent {} B, received {} B",
                    steps, summary.resumed_at, summary.bytes_sent, summary.bytes_received
                );
                return Ok(());
            }
            Ok(Outcome::Restart(why)) => {
                println!("{why}: restarting the pipeline with the new holder");
            }
            Ok(Outcome::Released { committed }) => {
                println!(
                    "released stage {stage} replica {replica} of run {run} with {committed}                      steps on chain; its auditors have been served"
                );
                return Ok(());
            }
            Err(e) => {
                let unassigned = matches!(
                    e.downcast_ref::<TrainerError>(),
                    Some(TrainerError::Stopped(_))
                );
                failures += 1;
                if unassigned || failures > 5 {
                    return Err(e);
                }
                eprintln!("the pipeline stopped ({e:#}); waiting for the chain and restarting");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// How a stage holder's time in a slot ended.
enum Outcome {
    /// Its steps are done.
    Finished(stage::Summary),
    /// The chain no longer assigns it the slot (it left, or was reassigned) and it is not
    /// slashed; it served its auditors until their windows closed.
    Released {
        /// The slot's steps on chain.
        committed: u64,
    },
    /// The pipeline must start again: a neighbouring stage changed hands.
    Restart(String),
}

#[allow(clippy::too_many_arguments)]
async fn run_assigned(
    args: &TrainArgs,
    client: &Arc<Client>,
    key: &Keypair,
    setup: &RunSetup,
    batcher: &Batcher,
    device: tch::Device,
    (stage, replica): (u16, u16),
    table: weft_stage_net::topology::PeerTable,
    steps: u64,
    listen: weft_p2p::Address,
    p2p_key: weft_p2p::Keypair,
    metrics: &Arc<TrainerMetrics>,
    hooks: &Hooks,
    leave: &LeaveSignal,
) -> anyhow::Result<Outcome> {
    let run = setup.run;
    let spec = StageSpec::new(stage as usize, setup.stages())?;
    let stage_model = weft_ml::model::Stage::new(&setup.model, spec, device)?;
    let data = (spec.is_first() || spec.is_last()).then(|| batcher.clone());
    let mut worker = weft_ml::worker::StageWorker::new(
        stage_model,
        setup.train.clone(),
        data,
        weft_ml::worker::WorkerOptions { commit: true },
    )?;
    worker.set_replica(replica);
    if let Some(make) = &hooks.step {
        worker.set_hook(make());
    }
    // Listen first: a slot with steps on chain is taken over from its previous holder
    // before anything else (see `super::handover`).
    let (limits, net_cfg) = stage_net(listen);
    let (net, inbound) = listen_with_retry(&p2p_key, &net_cfg).await?;
    println!("listening on {:?}", net.listen_addrs());
    take_over(
        client,
        key,
        &net,
        (run, stage, replica),
        setup.stages(),
        &mut worker,
        &args.data_dir,
    )
    .await?;
    let withhold = hooks.withhold_reveals;
    let access = if withhold {
        Arc::new(RevealAccess::default())
    } else {
        auditor_access(client, run, stage).await?
    };
    let slot = SlotId {
        run,
        stage,
        replica,
    };
    let data_dir = args.data_dir.clone();
    let inference = crate::serve::desk_for(
        setup,
        spec,
        &data_dir,
        args.retention.max(args.checkpoint_every),
        client,
        key,
        args.serve_sessions,
    )?;
    // Replicas that average: this replica's desk, its peers kept current by the watcher
    // (a spare that takes another replica's slot is answered from the head that assigns it).
    let replica_desk = match worker.train_config().update_codec() {
        Some(_) => Some(stage::replicas::store_desk(
            (run, stage, replica),
            table.replicas.clone(),
            weft_stage_net::store::TensorStore::open(
                &data_dir,
                args.retention.max(args.checkpoint_every),
            )?,
            p2p_key.clone(),
        )),
        None => None,
    };
    let local_next =
        weft_stage_net::journal::Journal::read(&data_dir)?.map_or(0, |j| j.last_committed + 1);
    let gate: Gate = Arc::new((Mutex::new(GateState::default()), Condvar::new()));
    let (next_tx, next_rx) = tokio::sync::watch::channel(local_next);
    let peers = table.stages.len().saturating_sub(1);
    metrics.set_peers(peers);
    let display = Progress::new(steps, peers, std::io::stderr().is_terminal());

    // The submitter: closes the gap between the store and the chain, declaring the settings
    // the steps are computed under.
    let compute = weft_ml::compute::class_of(device, false);
    println!("compute class {}", compute.describe());
    let submitter = {
        let (client, key, gate, data_dir, metrics) = (
            client.clone(),
            key.clone(),
            gate.clone(),
            data_dir.clone(),
            metrics.clone(),
        );
        let store = weft_stage_net::store::TensorStore::open(
            &data_dir,
            args.retention.max(args.checkpoint_every),
        )?;
        let mut rx = next_rx;
        tokio::spawn(async move {
            let mut sub = match Submitter::new(&client, key, slot, &data_dir, store) {
                Ok(mut s) => {
                    s.metrics = Some(metrics);
                    s.compute = compute;
                    s
                }
                Err(e) => {
                    gate_update(&gate, |g| g.stop = Some(e.to_string()));
                    return;
                }
            };
            loop {
                let target = *rx.borrow_and_update();
                match sub.sync(target).await {
                    Ok(SyncState::UpToDate) => {
                        gate_update(&gate, |g| g.chain_next = g.chain_next.max(target));
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                    Ok(SyncState::Waiting(why)) => {
                        tracing::info!(%why, "commitments wait");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Err(TrainerError::Stopped(why)) => {
                        gate_update(&gate, |g| g.stop = Some(why));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "commit submission failed; retrying");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    };

    // The watcher: run status, our slot, the auditors, on every new head. Losing the slot
    // also stops a stage that is blocked waiting for a partner.
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(None::<String>);
    let watcher = {
        let (client, gate, access, me, replica_desk) = (
            client.clone(),
            gate.clone(),
            access.clone(),
            key.account_id(),
            replica_desk.clone(),
        );
        let started_with: Vec<_> = table.stages.iter().map(|p| p.peer_id).collect();
        tokio::spawn(async move {
            let mut heads = Heads::new(client.clone()).await;
            loop {
                let Ok(h) = heads.next().await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let view = ChainView::new(NodeState {
                    client: &client,
                    at: Some(h.hash()),
                });
                let (Ok(info), Ok(holder)) =
                    (view.run(run).await, view.slot(run, stage, replica).await)
                else {
                    continue;
                };
                if holder != Some(me) {
                    let why = format!(
                        "this account no longer holds stage {stage} replica {replica} of run {run} \
                         (left, slashed, removed or reassigned)"
                    );
                    gate_update(&gate, |g| g.stop = Some(why.clone()));
                    let _ = kill_tx.send(Some(why));
                    return;
                }
                // A neighbour handed its slot over: start the pipeline again with the new
                // peer table (the crash-recovery path: replay, resend, go on). The run and our
                // slot are read above; only the pipeline's holders are read here.
                if info.status == chain::runs::RunStatus::Training && !info.paused {
                    if let Ok(Ok(now)) = view.pipeline(run, info.stages, replica).await {
                        let now: Vec<_> = now.into_iter().map(|(_, p)| p.peer_id).collect();
                        if now != started_with {
                            let why = "a neighbouring stage changed hands".to_string();
                            gate_update(&gate, |g| g.restart = Some(why.clone()));
                            let _ = kill_tx.send(Some(why));
                            return;
                        }
                    }
                }
                let paused = match info.status {
                    chain::runs::RunStatus::Halted => {
                        Some("the run is halted by governance".to_string())
                    }
                    chain::runs::RunStatus::Finished => None,
                    _ if info.paused => {
                        Some("the run is paused (a stage has no trainer)".to_string())
                    }
                    _ => None,
                };
                gate_update(&gate, |g| g.paused = paused);
                // The other replicas of the stage: whom the desk answers, and who may fetch
                // this replica's state to take a slot of the stage over (in that order, so
                // a spare that can fetch the state is also answered in the rounds).
                let holders = match &replica_desk {
                    Some(desk) => {
                        let holders = view
                            .replica_holders(run, stage, replica, info.replicas)
                            .await
                            .ok();
                        if let Some(h) = &holders {
                            if let Ok(now) = view.peers_of_holders(h).await {
                                desk.set_peers(now);
                            }
                        }
                        holders
                    }
                    None => None,
                };
                if withhold {
                    continue;
                }
                if let Some(holders) = holders {
                    access.set_siblings(holders);
                }
                let _ = refresh_auditors(&view, &access, run, stage).await;
            }
        })
    };

    // The leaver: on SIGTERM/SIGINT, stop training, let the submitter commit everything
    // trained, then leave the run (see `super::leave`).
    let leaver = {
        let (client, gate, key, mut leave) =
            (client.clone(), gate.clone(), key.clone(), leave.clone());
        AbortOnDrop(tokio::spawn(async move {
            leave.wait().await;
            gate_update(&gate, |g| g.leaving = true);
            // Leave once every trained step is on chain and the training thread is parked
            // between steps; a thread stuck inside a step (a partner gone) is not waited
            // for beyond a grace period, its step was never committed.
            let asked = Instant::now();
            loop {
                let (drained, parked, stopped) = {
                    let st = gate.0.lock().unwrap_or_else(|e| e.into_inner());
                    (
                        st.chain_next >= st.trained_next,
                        st.parked,
                        st.stop.is_some(),
                    )
                };
                if stopped {
                    return;
                }
                if drained && (parked || asked.elapsed() > Duration::from_secs(10)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if let Err(e) = submit_leave(&client, &key, run).await {
                eprintln!("could not leave run {run}: {e:#}");
            }
        }))
    };

    let max_backlog = args.max_backlog.max(1);
    let hook_gate = gate.clone();
    let hook_display = display.clone();
    let after_step: stage::AfterStep = Box::new(move |c: &StepCommitment| {
        let _ = next_tx.send(c.step + 1);
        let (lock, cv) = &*hook_gate;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.trained_next = st.trained_next.max(c.step + 1);
        let mut said = None;
        loop {
            st.parked = false;
            if let Some(why) = st.stop.as_ref().or(st.restart.as_ref()) {
                return Err(TrainerError::Stopped(why.clone()));
            }
            let why = match &st.paused {
                _ if st.leaving => Some("leaving: committing what was trained".to_string()),
                Some(p) => Some(p.clone()),
                None if c.step + 1 > st.chain_next + max_backlog => Some(format!(
                    "{} steps trained ahead of the chain",
                    c.step + 1 - st.chain_next
                )),
                None => None,
            };
            let Some(why) = why else { return Ok(()) };
            if said.as_ref() != Some(&why) {
                hook_display.println(format!("paused after step {}: {why}", c.step));
                said = Some(why);
            }
            st.parked = true;
            st = cv
                .wait_timeout(st, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    });

    let cfg = stage::NodeConfig {
        run,
        replica,
        steps,
        data_dir: data_dir.clone(),
        checkpoint_every: args.checkpoint_every,
        retention: args.retention.max(args.checkpoint_every),
        peers: table,
        auditors: access.clone(),
        limits,
        peer_timeout: Duration::from_secs(args.peer_timeout),
        retry: weft_stage_net::link::RetryPolicy::default(),
        desks: vec![inference.clone()],
        identity: p2p_key.clone(),
        tamper: hooks.tamper.clone(),
        replica_deadline: args.replica_deadline,
        replica_desk: replica_desk.clone(),
    };
    let (step_metrics, step_display) = (metrics.clone(), display.clone());
    let progress = Box::new(move |p: &stage::StepProgress| {
        step_metrics.observe_step(p);
        step_display.step(p, || {
            let loss = p.loss.map_or("-".to_string(), |l| format!("{l:.4}"));
            format!(
                "stage {} step {} loss {loss} tok/s {:.0} sent {} recv {}",
                p.stage, p.step, p.tokens_per_s, p.bytes_sent, p.bytes_received
            )
        });
    });
    let retention = cfg.retention;
    let commit_hook = hooks.commit.as_ref().map(|make| make());
    let stage_hooks = stage::StageHooks {
        after_step: Some(after_step),
        commit: commit_hook,
        stop: Some(kill_rx),
    };
    let result = stage::run_stage_with(cfg, worker, net, inbound, progress, stage_hooks).await;
    display.finish();
    // Let the last commitments land before leaving.
    if result.is_ok() {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (done, stop) = {
                let st = gate.0.lock().unwrap_or_else(|e| e.into_inner());
                (st.chain_next >= steps, st.stop.clone())
            };
            if done || stop.is_some() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    submitter.abort();
    drop(leaver);
    let restart = gate
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restart
        .clone();
    if let (Err(_), Some(why)) = (&result, restart) {
        watcher.abort();
        return Ok(Outcome::Restart(why));
    }
    // A stage that stopped because the chain no longer assigns it the slot, while its
    // account is still a trainer (it left, or was reassigned; not slashed), answers its
    // auditors before it goes.
    let released = match &result {
        Ok(_) => None,
        Err(_) => {
            let view = ChainView::new(NodeState { client, at: None });
            let me = key.account_id();
            let holds = view.slot(run, stage, replica).await.ok().flatten() == Some(me);
            let trainer = view.trainer(&me).await.ok().flatten().is_some();
            match (holds, trainer) {
                (false, true) => Some(view.next_step(run, stage, replica).await?),
                _ => None,
            }
        }
    };
    if result.is_ok() || released.is_some() {
        let params = &setup.info.params;
        let best = client.best_header().await.map(|h| h.number).unwrap_or(0);
        serve_after_training(AfterTraining {
            client,
            slot: (run, stage, replica),
            access,
            store: weft_stage_net::store::TensorStore::open(&data_dir, retention)?,
            inference,
            replicas: replica_desk.map(|d| d as Arc<dyn weft_stage_net::desk::RequestDesk>),
            limits,
            p2p: (&p2p_key, &net_cfg),
            serve: args.serve && released.is_none(),
            until_block: best
                + u64::from(params.selection_delay)
                + u64::from(params.attest_window)
                + 2,
            released: released.map(|steps| (key.account_id(), steps)),
        })
        .await?;
    }
    watcher.abort();
    match released {
        Some(committed) => Ok(Outcome::Released { committed }),
        None => Ok(Outcome::Finished(result?)),
    }
}
