//! `weft-trainer train`: trains the stage the chain assigns to an account, committing every
//! step on chain ([`crate::submit`]) and serving reveals to the stage's auditors until their
//! windows close.

use super::after_training::{
    auditor_access, refresh_auditors, serve_after_training, serve_finished, stage_net,
    AfterTraining,
};
use super::{derive_p2p_seed, listen_with_retry, open_data, parse_seed, AbortOnDrop, Heads};
use crate::chain::{self, ChainView, NodeState, RunSetup, TrainerState};
use crate::metrics::{self, Progress, TrainerMetrics};
use crate::stage;
use crate::submit::{SlotId, Submitter, SyncState};
use crate::Error as TrainerError;
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::PathBuf;
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
    /// Why training must wait now (halted, paused).
    paused: Option<String>,
    /// Why training must stop.
    stop: Option<String>,
}

type Gate = Arc<(Mutex<GateState>, Condvar)>;

fn gate_update(g: &Gate, f: impl FnOnce(&mut GateState)) {
    let mut st = g.0.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut st);
    g.1.notify_all();
}

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The node's WebSocket RPC.
    #[arg(long, default_value = "ws://127.0.0.1:9944")]
    pub url: String,
    /// The trainer account's secret URI (//Alice, a mnemonic, 0x seed).
    #[arg(long)]
    pub key: String,
    /// The run id.
    #[arg(long)]
    pub run: u32,
    /// Training data: `synthetic`, a text file or directory, or `.bin` u16 token files.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Checkpoint, journals, tensor store.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/30555")]
    pub listen: String,
    /// Address others dial (declared on chain); default: --listen when it is not 0.0.0.0.
    #[arg(long)]
    pub external_addr: Option<String>,
    /// Train until this many steps are complete (default: the run's max_steps, else the
    /// schedule's total_steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// TOML file with any of these options (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Submit Staking::bond (if needed), Staking::train and Stages::join_run itself.
    #[arg(long)]
    pub register: bool,
    /// Bond to put up with --register when the account has none (plancks; default: the
    /// chain's minimum trainer bond).
    #[arg(long)]
    pub bond: Option<u128>,
    /// Stage slots declared with --register.
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    /// 32-byte hex seed of the p2p identity (default: derived from --key).
    #[arg(long)]
    pub node_key: Option<String>,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    /// Steps kept for reveals (should cover the run's reveal window).
    #[arg(long, default_value_t = 64)]
    pub retention: u64,
    /// Most steps trained ahead of what the chain has accepted.
    #[arg(long, default_value_t = 4)]
    pub max_backlog: u64,
    /// Seconds to wait for a neighbour's message.
    #[arg(long, default_value_t = 600)]
    pub peer_timeout: u64,
    /// CPU threads for libtorch (0 = default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Serve Prometheus metrics on 127.0.0.1 at this port (0 = off).
    #[arg(long, default_value_t = 9616)]
    pub prometheus_port: u16,
    /// After the last step, keep serving inference (and reveals) until stopped, instead of
    /// leaving once the audit windows have closed.
    #[arg(long)]
    pub serve: bool,
    /// Inference sessions served at once (further requests are answered busy).
    #[arg(long, default_value_t = 16)]
    pub serve_sessions: usize,
}

/// The `--config` TOML of `train` (every field optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainFile {
    url: Option<String>,
    key: Option<String>,
    run: Option<u32>,
    data: Option<String>,
    data_dir: Option<PathBuf>,
    device: Option<String>,
    listen: Option<String>,
    external_addr: Option<String>,
    steps: Option<u64>,
    checkpoint_every: Option<u64>,
    retention: Option<u64>,
    max_backlog: Option<u64>,
    threads: Option<i32>,
    prometheus_port: Option<u16>,
    serve: Option<bool>,
    serve_sessions: Option<usize>,
}

/// Applies `--config` under the flags given on the command line (`matches`).
pub fn apply_train_file(args: &mut TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let f: TrainFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let from_cli =
        |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    macro_rules! take {
        ($field:ident, $id:literal) => {
            if let Some(v) = f.$field {
                if !from_cli($id) {
                    args.$field = v.into();
                }
            }
        };
    }
    take!(url, "url");
    take!(key, "key");
    take!(run, "run");
    take!(data, "data");
    take!(data_dir, "data_dir");
    take!(device, "device");
    take!(listen, "listen");
    take!(checkpoint_every, "checkpoint_every");
    take!(retention, "retention");
    take!(max_backlog, "max_backlog");
    take!(threads, "threads");
    take!(prometheus_port, "prometheus_port");
    take!(serve, "serve");
    take!(serve_sessions, "serve_sessions");
    if f.external_addr.is_some() && !from_cli("external_addr") {
        args.external_addr = f.external_addr;
    }
    if f.steps.is_some() && !from_cli("steps") {
        args.steps = f.steps;
    }
    Ok(())
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

/// `weft-trainer train`.
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
            let h = heads.next().await?;
            tracing::debug!(block = h.number, "new head");
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
        )
        .await
        {
            Ok(summary) => {
                println!(
                    "stage {stage} done: {} steps, resumed at {}, sent {} B, received {} B",
                    steps, summary.resumed_at, summary.bytes_sent, summary.bytes_received
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
) -> anyhow::Result<stage::Summary> {
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
    let local_next =
        weft_stage_net::journal::Journal::read(&data_dir)?.map_or(0, |j| j.last_committed + 1);
    let gate: Gate = Arc::new((Mutex::new(GateState::default()), Condvar::new()));
    let (next_tx, next_rx) = tokio::sync::watch::channel(local_next);
    let peers = table.stages.len().saturating_sub(1);
    metrics.set_peers(peers);
    let display = Progress::new(steps, peers, std::io::stderr().is_terminal());

    // The submitter: closes the gap between the store and the chain.
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

    // The watcher: run status, our slot, the auditors, on every new head.
    let watcher = {
        let (client, gate, access, me) = (
            client.clone(),
            gate.clone(),
            access.clone(),
            key.account_id(),
        );
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
                    gate_update(&gate, |g| {
                        g.stop = Some(format!(
                            "this account no longer holds stage {stage} replica {replica} of run {run} \
                             (slashed, removed or reassigned)"
                        ))
                    });
                    return;
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
                if withhold {
                    continue;
                }
                let _ = refresh_auditors(&view, &access, run, stage).await;
            }
        })
    };

    let max_backlog = args.max_backlog.max(1);
    let hook_gate = gate.clone();
    let hook_display = display.clone();
    let after_step: stage::AfterStep = Box::new(move |c: &StepCommitment| {
        let _ = next_tx.send(c.step + 1);
        let (lock, cv) = &*hook_gate;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut said = None;
        loop {
            if let Some(why) = &st.stop {
                return Err(TrainerError::Stopped(why.clone()));
            }
            let why = match &st.paused {
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
            st = cv
                .wait_timeout(st, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    });

    let (limits, net_cfg) = stage_net(listen);
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
    };
    let (net, inbound) = listen_with_retry(&p2p_key, &net_cfg).await?;
    println!("listening on {:?}", net.listen_addrs());
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
    if result.is_ok() {
        let params = &setup.info.params;
        let best = client.best_header().await.map(|h| h.number).unwrap_or(0);
        serve_after_training(AfterTraining {
            client,
            slot: (run, stage, replica),
            access,
            store: weft_stage_net::store::TensorStore::open(&data_dir, retention)?,
            inference,
            limits,
            p2p: (&p2p_key, &net_cfg),
            serve: args.serve,
            until_block: best
                + u64::from(params.selection_delay)
                + u64::from(params.attest_window)
                + 2,
        })
        .await?;
    }
    watcher.abort();
    Ok(result?)
}
