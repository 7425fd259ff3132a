//! `weft-trainer pipeline`: one stage as its own process, with its neighbours over libp2p
//! (peers from a static table), committing every step; `peer-id` prints the id of a seed.

use super::model_args::ModelArgs;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use weft_trainer::ml::data::Batcher;
use weft_trainer::ml::worker::{StageWorker, WorkerOptions};
use weft_trainer::service::{open_data, parse_seed};

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// This process's stage (0-based).
    #[arg(long)]
    stage: usize,
    /// Number of stages of the run.
    #[arg(long)]
    stages: usize,
    /// Peer table (TOML): per stage a peer id and addresses, optionally auditors.
    #[arg(long)]
    peers: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: String,
    /// Checkpoint, journal, tensor store (and the node key when no --key-seed).
    #[arg(long)]
    data_dir: PathBuf,
    /// Training data: `synthetic`, a text file or directory, or `.bin` u16 token files.
    #[arg(long, default_value = "synthetic")]
    data: String,
    /// Train until this many steps are complete.
    #[arg(long)]
    steps: u64,
    /// The run id.
    #[arg(long, default_value_t = 0)]
    run: weft_primitives::step::RunId,
    /// This trainer's replica of the stage.
    #[arg(long, default_value_t = 0)]
    replica: weft_primitives::step::Replica,
    /// 32-byte ed25519 secret seed, hex (default: `<data-dir>/node-key`, created at random).
    #[arg(long)]
    key_seed: Option<String>,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u64,
    /// Steps kept in the tensor store for reveals (at least --checkpoint-every).
    #[arg(long, default_value_t = 64)]
    retention: u64,
    /// Peer allowed to fetch reveals of this stage (repeatable; adds to the table's auditors).
    #[arg(long)]
    auditor: Vec<String>,
    /// Seconds to wait for a partner's message before giving up.
    #[arg(long, default_value_t = 600)]
    peer_timeout: u64,
    /// Largest message, MiB.
    #[arg(long, default_value_t = 256)]
    max_message_mib: usize,
    /// Serve Prometheus metrics on 127.0.0.1 at this port (0 = off).
    #[arg(long, default_value_t = 0)]
    prometheus_port: u16,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn peer_id_of(hex_seed: &str) -> anyhow::Result<weft_p2p::PeerId> {
    let kp = weft_p2p::keypair_from_seed(parse_seed(hex_seed)?)?;
    Ok(kp.public().to_peer_id())
}

fn node_seed(args: &PipelineArgs) -> anyhow::Result<[u8; 32]> {
    if let Some(s) = &args.key_seed {
        return parse_seed(s);
    }
    let path = args.data_dir.join("node-key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return parse_seed(&text);
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    weft_trainer::net::files::write_atomic(&path, hex::encode(seed).as_bytes())?;
    Ok(seed)
}

pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    use weft_trainer::net::link::RetryPolicy;
    use weft_trainer::net::topology::PeerTable;
    use weft_trainer::stage::{run_stage, NodeConfig};
    let (model, train, device) = args.model.load(args.steps)?;
    model.validate_stages(args.stages)?;
    if args.stage >= args.stages {
        anyhow::bail!("stage {} of {} does not exist", args.stage, args.stages);
    }
    let peers = PeerTable::load(&args.peers)?;
    let mut auditors = peers.auditors_of(args.stage);
    for a in &args.auditor {
        auditors.insert(
            a.parse()
                .with_context(|| format!("bad auditor peer id {a}"))?,
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let seed = node_seed(&args)?;
    let spec = weft_trainer::ml::model::StageSpec::new(args.stage, args.stages)?;
    let data = if spec.is_first() || spec.is_last() {
        let source = open_data(&args.data, model.seed)?;
        Some(Batcher::new(
            source,
            train.micro_batch_size,
            model.seq_len,
            model.vocab_size,
        )?)
    } else {
        None
    };
    let stage = weft_trainer::ml::model::Stage::new(&model, spec, device)?;
    let params = stage.num_params();
    let mut worker = StageWorker::new(stage, train.clone(), data, WorkerOptions { commit: true })?;
    if args.model.bf16 {
        worker.set_autocast_bf16(true);
    }
    let listen: weft_p2p::Address = args
        .listen
        .parse()
        .with_context(|| format!("bad listen address {}", args.listen))?;
    let max_bytes = args.max_message_mib * 1024 * 1024;
    let cfg = NodeConfig {
        run: args.run,
        replica: args.replica,
        steps: args.steps,
        data_dir: args.data_dir.clone(),
        checkpoint_every: args.checkpoint_every,
        retention: args.retention.max(args.checkpoint_every),
        peers,
        auditors: Arc::new(weft_trainer::net::access::RevealAccess::fixed(auditors)),
        limits: weft_trainer::net::wire::Limits {
            max_bytes,
            ..Default::default()
        },
        peer_timeout: std::time::Duration::from_secs(args.peer_timeout),
        retry: RetryPolicy::default(),
        desks: Vec::new(),
        identity: weft_p2p::keypair_from_seed(seed)?,
        tamper: None,
        replica_deadline: std::time::Duration::from_secs(20),
        replica_desk: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stage_no = args.stage;
    let metrics = weft_trainer::metrics::TrainerMetrics::new();
    let peers = cfg.peers.stages.len().saturating_sub(1);
    metrics.set_peers(peers);
    let display = weft_trainer::metrics::Progress::new(
        args.steps,
        peers,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let summary = rt.block_on(async move {
        let server = weft_trainer::metrics::serve_local(&metrics, args.prometheus_port).await?;
        let net_cfg = weft_p2p::Config {
            listen: vec![listen],
            max_message_bytes: max_bytes + 4096,
            ..Default::default()
        };
        let (net, inbound) = weft_p2p::spawn(weft_p2p::keypair_from_seed(seed)?, net_cfg).await?;
        println!(
            "stage {stage_no}/{}: peer {} listening on {:?}; {params} parameters; device {device:?}",
            args.stages,
            net.local_peer_id(),
            net.listen_addrs()
        );
        let step_display = display.clone();
        let progress = Box::new(move |p: &weft_trainer::stage::StepProgress| {
            metrics.observe_step(p);
            step_display.step(p, || {
                let loss = p.loss.map_or("-".to_string(), |l| format!("{l:.9}"));
                format!(
                    "stage {} step {} loss {loss} tok/s {:.0} sent {} recv {} time {:.4}",
                    p.stage, p.step, p.tokens_per_s, p.bytes_sent, p.bytes_received, p.seconds
                )
            });
        });
        let result = run_stage(cfg, worker, net, inbound, progress).await;
        display.finish();
        if let Some(task) = server {
            task.abort();
        }
        anyhow::Ok(result?)
    })?;
    println!(
        "stage {stage_no} done: resumed at step {} (replayed {}), sent {} B, received {} B, peak RSS {:.1} MiB",
        summary.resumed_at,
        summary.replayed,
        summary.bytes_sent,
        summary.bytes_received,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
