//! `weft-trainer`: trains one pipeline stage of a run's transformer with libtorch (tch), and
//! audits other trainers' steps.
//!
//! Subcommands:
//! * `info`: checks the libtorch installation and the devices it can use.
//! * `local-train`: trains a model with all its pipeline stages in this process (the same
//!   stage workers a networked trainer runs), printing loss and throughput per step.
//! * `bench`: throughput of the S-stage in-process pipeline relative to the unsplit model,
//!   and the memory each stage needs for training; with `--cross-process`, of S
//!   `pipeline` processes on loopback.
//! * `pipeline`: trains one stage as its own process, with its neighbours over libp2p
//!   (peers from a static table until the chain assigns them), committing every step.
//! * `peer-id`: prints the libp2p peer id of a `--key-seed`, to write a peer table.
//! * `train`: trains the stage the chain assigns to an account, committing every step on
//!   chain and serving reveals to the stage's auditors.
//! * `audit`: a validator's auditor: recomputes the steps the chain selects for audit and
//!   attests with a BLS signature.
//!
//! The p2p identity of `train` is an ed25519 key whose seed is
//! `blake3::derive_key("weft-trainer p2p identity v1", SURI)` (the `--key` text), unless
//! `--node-key` gives a seed; `audit` derives its own from `"weft-auditor p2p identity v1"`.
//! Keep the same SURI spelling across restarts: the peer id is declared on chain.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;
use weft_trainer::config::{DeviceSpec, ModelConfig, TrainConfig};
use weft_trainer::data::{Batcher, Synthetic};
use weft_trainer::pipeline::{
    build_workers, run_step_in_process_detailed, StageWorker, WorkerOptions,
};
use weft_trainer::service::{self, open_data, parse_seed};

#[derive(Debug, Parser)]
#[command(
    name = "weft-trainer",
    version,
    about = "Weft trainer: one pipeline stage of a shared model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// CPU threads for libtorch (0 = its default). On a shared machine, 1 avoids the
    /// large slow-downs of OpenMP threads waiting for a busy core.
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Model config JSON (overrides --preset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model preset when no --config: tiny, small, medium, gpt2.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Training config JSON (batch shape, optimiser); flags below override it.
    #[arg(long)]
    train_config: Option<PathBuf>,
    /// Sequences per micro-batch.
    #[arg(long)]
    micro_batch_size: Option<i64>,
    /// Micro-batches per step.
    #[arg(long)]
    micro_batches: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Run forward passes under bf16 autocast (CUDA only).
    #[arg(long)]
    bf16: bool,
}

impl ModelArgs {
    fn load(&self, steps: u64) -> anyhow::Result<(ModelConfig, TrainConfig, Device)> {
        let model = match &self.config {
            Some(p) => ModelConfig::from_file(p)?,
            None => ModelConfig::preset(&self.preset)?,
        };
        let mut train = match &self.train_config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig {
                micro_batch_size: 8,
                micro_batches: 4,
                lr: 1e-3,
                warmup_steps: (steps / 20).max(1),
                total_steps: steps.max(1),
                weight_decay: 0.1,
                ..TrainConfig::tiny()
            },
        };
        if let Some(b) = self.micro_batch_size {
            train.micro_batch_size = b;
        }
        if let Some(m) = self.micro_batches {
            train.micro_batches = m;
        }
        if let Some(lr) = self.lr {
            train.lr = lr;
        }
        train.validate()?;
        let device = self.device.parse::<DeviceSpec>()?.resolve()?;
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        Ok((model, train, device))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show libtorch and the devices the trainer can use.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Train a model with all its pipeline stages in this process.
    LocalTrain {
        /// Number of pipeline stages.
        #[arg(long, default_value_t = 4)]
        stages: usize,
        /// Number of steps.
        #[arg(long, default_value_t = 100)]
        steps: u64,
        /// Training data: `synthetic`, a text file or directory, or `.bin` u16 token files.
        #[arg(long, default_value = "synthetic")]
        data: String,
        /// Checkpoint directory: resumed from when it holds checkpoints, saved to at the end.
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
        /// Print each stage's step commitment.
        #[arg(long)]
        commit: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Train one pipeline stage in this process, with the other stages' processes over
    /// libp2p.
    Pipeline(PipelineArgs),
    /// Train the stage of a run that the chain assigns to an account.
    Train(service::TrainArgs),
    /// Audit the steps the chain selects, as a validator.
    Audit(service::AuditArgs),
    /// Print the dataset manifest hash of a data directory (what `weft run register
    /// --dataset-hash` takes).
    Manifest {
        /// A directory of text or `.bin` token files, or one file.
        #[arg(long)]
        data: std::path::PathBuf,
    },
    /// Print the libp2p peer id of a key seed.
    PeerId {
        /// 32-byte ed25519 secret seed, hex.
        #[arg(long)]
        key_seed: String,
    },
    /// Throughput of the S-stage in-process pipeline relative to the unsplit model.
    Bench {
        /// Run the S stages as S `pipeline` processes on loopback instead of in this process.
        #[arg(long)]
        cross_process: bool,
        /// Number of pipeline stages.
        #[arg(long, default_value_t = 4)]
        stages: usize,
        /// Timed steps per configuration.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Untimed warm-up steps per configuration.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceInfo {
    cuda_available: bool,
    cuda_devices: usize,
    cudnn_available: bool,
    default_device: String,
    threads: i32,
    matmul_check: f64,
}

fn info() -> anyhow::Result<DeviceInfo> {
    let device = Device::cuda_if_available();
    // A small computation proves the library loads and runs on the chosen device.
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, device));
    let check = a
        .f_matmul(&a)?
        .f_sum(tch::Kind::Double)?
        .f_double_value(&[])?;
    Ok(DeviceInfo {
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count() as usize,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        default_device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        matmul_check: check,
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn make_workers(
    model: &ModelConfig,
    train: &TrainConfig,
    stages: usize,
    data: &Batcher,
    device: Device,
    bf16: bool,
    commit: bool,
) -> anyhow::Result<Vec<StageWorker>> {
    let mut workers = build_workers(model, train, stages, data, device, WorkerOptions { commit })?;
    if bf16 {
        for w in &mut workers {
            w.set_autocast_bf16(true);
        }
    }
    Ok(workers)
}

fn local_train(
    stages: usize,
    steps: u64,
    data_spec: &str,
    checkpoint_dir: Option<PathBuf>,
    commit: bool,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let (model, train, device) = args.load(steps)?;
    model.validate_stages(stages)?;
    let source = open_data(data_spec, model.seed)?;
    println!("data: {}", source.describe());
    let batcher = Batcher::new(
        source,
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?;
    let mut workers = make_workers(&model, &train, stages, &batcher, device, args.bf16, commit)?;
    let ckpt = |i: usize| {
        checkpoint_dir
            .as_ref()
            .map(|d| d.join(format!("stage-{i}-of-{stages}.safetensors")))
    };
    let mut start = 0;
    if let Some(dir) = &checkpoint_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, w) in workers.iter_mut().enumerate() {
            if let Some(p) = ckpt(i).filter(|p| p.exists()) {
                start = weft_trainer::checkpoint::load(w, &p)?;
            }
        }
        if workers.iter().any(|w| w.completed_steps() != start) {
            anyhow::bail!(
                "the stage checkpoints in {} are from different steps",
                dir.display()
            );
        }
    }
    for (i, w) in workers.iter().enumerate() {
        println!("stage {i}: {} parameters", w.stage().num_params());
    }
    let tokens = train.tokens_per_step(model.seq_len) as f64;
    println!("device {device:?}, {stages} stages, {tokens} tokens/step, steps {start}..{steps}");
    for step in start..steps {
        let t0 = Instant::now();
        let reports = run_step_in_process_detailed(&mut workers, step)?;
        sync(device);
        let dt = t0.elapsed().as_secs_f64();
        let last = reports.last().context("no stages")?;
        let loss = last.loss.context("the last stage reported no loss")?;
        println!(
            "step {step:>6}  loss {loss:.4}  lr {:.2e}  grad-norm(last stage) {:.3}  {:.0} tok/s",
            last.lr,
            last.grad_norm,
            tokens / dt
        );
        if commit {
            for r in &reports {
                if let Some(c) = &r.commitment {
                    println!(
                        "    stage {} weights {} → {}  in {}  out {}",
                        r.stage,
                        c.weights_before.to_hex(),
                        c.weights_after.to_hex(),
                        c.inputs.to_hex(),
                        c.outputs.to_hex()
                    );
                }
            }
        }
    }
    for (i, w) in workers.iter().enumerate() {
        if let Some(p) = ckpt(i) {
            weft_trainer::checkpoint::save(w, &p)?;
        }
    }
    Ok(())
}

/// Seconds one step of `workers` takes.
fn time_step(workers: &mut [StageWorker], step: u64, device: Device) -> anyhow::Result<f64> {
    sync(device);
    let t0 = Instant::now();
    run_step_in_process_detailed(workers, step)?;
    sync(device);
    Ok(t0.elapsed().as_secs_f64())
}

fn bench(stages: usize, steps: u64, warmup: u64, args: &ModelArgs) -> anyhow::Result<()> {
    let (model, train, device) = args.load(steps + warmup)?;
    model.validate_stages(stages)?;
    let batcher = Batcher::new(
        Arc::new(Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?;
    let tokens = (train.tokens_per_step(model.seq_len) as u64 * steps) as f64;
    println!(
        "model d_model {} layers {} heads {} seq {} vocab {}; batch {}×{} per step; device {device:?}; bf16 {}",
        model.d_model,
        model.n_layers,
        model.n_heads,
        model.seq_len,
        model.vocab_size,
        train.micro_batches,
        train.micro_batch_size,
        args.bf16
    );
    let mut single = make_workers(&model, &train, 1, &batcher, device, args.bf16, false)?;
    let mut pipe = make_workers(&model, &train, stages, &batcher, device, args.bf16, false)?;
    let total_params = single[0].stage().num_params();
    // Alternate the two so that load from elsewhere on the machine hits both alike.
    let (mut t1, mut ts) = (0.0, 0.0);
    for step in 0..warmup + steps {
        let a = time_step(&mut single, step, device)?;
        let b = time_step(&mut pipe, step, device)?;
        if step >= warmup {
            t1 += a;
            ts += b;
        }
    }
    println!(
        "single stage:        {:>10.0} tokens/s ({total_params} parameters)",
        tokens / t1
    );
    println!("{stages}-stage pipeline:    {:>10.0} tokens/s", tokens / ts);
    println!("ratio pipeline/single: {:.3}", t1 / ts);
    println!(
        "per-stage training memory (parameters × 16 bytes: weights, gradients, Adam m and v):"
    );
    for w in &pipe {
        let n = w.stage().num_params();
        println!(
            "  stage {}: {:>12} parameters  {:>10.2} MiB",
            w.stage().spec().stage,
            n,
            (n * 16) as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "  whole model: {total_params:>8} parameters  {:>10.2} MiB",
        (total_params * 16) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

#[derive(Debug, Args)]
struct PipelineArgs {
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
    run: u64,
    /// This trainer's replica of the stage.
    #[arg(long, default_value_t = 0)]
    replica: u32,
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

fn peer_id_of(hex_seed: &str) -> anyhow::Result<weft_p2p::PeerId> {
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
    weft_trainer::store::write_atomic(&path, hex::encode(seed).as_bytes())?;
    Ok(seed)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    use weft_trainer::peer::{run_stage, NodeConfig, PeerTable, RetryPolicy};
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
    let spec = weft_trainer::model::StageSpec::new(args.stage, args.stages)?;
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
    let stage = weft_trainer::model::Stage::new(&model, spec, device)?;
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
        auditors: Arc::new(weft_trainer::peer::RevealAccess::fixed(auditors)),
        limits: weft_trainer::wire::Limits {
            max_bytes,
            ..Default::default()
        },
        peer_timeout: std::time::Duration::from_secs(args.peer_timeout),
        retry: RetryPolicy::default(),
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
        let progress = Box::new(move |p: &weft_trainer::peer::StepProgress| {
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Tokens/s of S `pipeline` processes on loopback ÷ tokens/s of the unsplit model here.
fn bench_cross_process(
    stages: usize,
    steps: u64,
    warmup: u64,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let total = steps + warmup;
    let (model, train, device) = args.load(total)?;
    model.validate_stages(stages)?;
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model_json = dir.join("model.json");
    let train_json = dir.join("train.json");
    std::fs::write(&model_json, serde_json::to_vec(&model)?)?;
    std::fs::write(&train_json, serde_json::to_vec(&train)?)?;
    let mut table = String::new();
    let mut seeds = Vec::new();
    for s in 0..stages {
        let seed = hex::encode([s as u8 + 1; 32]);
        let port = free_port()?;
        table.push_str(&format!(
            "[[stage]]\nstage = {s}\npeer_id = \"{}\"\naddrs = [\"/ip4/127.0.0.1/tcp/{port}\"]\n",
            peer_id_of(&seed)?
        ));
        seeds.push((seed, port));
    }
    let peers = dir.join("peers.toml");
    std::fs::write(&peers, table)?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let children = seeds
        .iter()
        .enumerate()
        .map(|(s, (seed, port))| {
            let mut c = std::process::Command::new(&exe);
            c.args([
                "pipeline",
                "--stage",
                &s.to_string(),
                "--stages",
                &stages.to_string(),
            ])
            .arg("--peers")
            .arg(&peers)
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
            .arg("--data-dir")
            .arg(dir.join(format!("stage-{s}")))
            .args(["--steps", &total.to_string(), "--key-seed", seed])
            .args(["--checkpoint-every", &total.to_string()])
            .arg("--config")
            .arg(&model_json)
            .arg("--train-config")
            .arg(&train_json)
            .args([
                "--device",
                &args.device,
                "--threads",
                &args.threads.to_string(),
            ])
            .stdout(std::process::Stdio::piped());
            if args.bf16 {
                c.arg("--bf16");
            }
            Ok(c.spawn()?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outputs = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!("a stage process failed: {}", out.status);
        }
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    let wall = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    // Step times of the last stage after the warm-up: the pipeline's steady state.
    let last = outputs.last().context("no stages")?;
    let times: Vec<f64> = last
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let step: u64 = w.get(3)?.parse().ok()?;
            let i = w.iter().position(|x| *x == "time")?;
            (step >= warmup).then(|| w.get(i + 1)?.parse::<f64>().ok())?
        })
        .collect();
    if times.len() as u64 != steps {
        anyhow::bail!(
            "expected {steps} timed steps from the last stage, got {}",
            times.len()
        );
    }
    let tokens = (train.tokens_per_step(model.seq_len) as u64 * steps) as f64;
    let tp = tokens / times.iter().sum::<f64>();
    for o in &outputs {
        if let Some(l) = o.lines().find(|l| l.contains("peak RSS")) {
            println!("  {l}");
        }
    }
    // The same steps in one process, one stage, committing too (the pipeline commits).
    let batcher = Batcher::new(
        Arc::new(Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?;
    let mut single = make_workers(&model, &train, 1, &batcher, device, args.bf16, true)?;
    let mut t1 = 0.0;
    for step in 0..total {
        let dt = time_step(&mut single, step, device)?;
        if step >= warmup {
            t1 += dt;
        }
    }
    let ts = tokens / t1;
    println!(
        "model d_model {} layers {} seq {}; batch {}×{}; device {device:?}; {stages} processes (wall {wall:.1} s with start-up)",
        model.d_model, model.n_layers, model.seq_len, train.micro_batches, train.micro_batch_size
    );
    println!("single process, one stage:   {ts:>10.0} tokens/s");
    println!("{stages} processes on loopback:   {tp:>10.0} tokens/s");
    println!("ratio cross-process/single:  {:.3}", tp / ts);
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Train(mut args) => {
            let sub = matches
                .subcommand_matches("train")
                .cloned()
                .unwrap_or_default();
            service::apply_train_file(&mut args, &sub).and_then(|()| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?
                    .block_on(service::train(args))
            })
        }
        Command::Audit(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(service::audit_main(args))),
        Command::Info { json } => info().and_then(|i| {
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!(
                    "CUDA available:  {} ({} devices, cuDNN {})",
                    i.cuda_available, i.cuda_devices, i.cudnn_available
                );
                println!("Default device:  {}", i.default_device);
                println!("CPU threads:     {}", i.threads);
                println!(
                    "64×64 matmul:    sum = {} (expected 262144)",
                    i.matmul_check
                );
            }
            Ok(())
        }),
        Command::LocalTrain {
            stages,
            steps,
            data,
            checkpoint_dir,
            commit,
            model,
        } => local_train(stages, steps, &data, checkpoint_dir, commit, &model),
        Command::Pipeline(args) => pipeline(args),
        Command::PeerId { key_seed } => peer_id_of(&key_seed).map(|id| println!("{id}")),
        Command::Manifest { data } => weft_trainer::data::manifest_hash(&data)
            .map(|h| println!("{h}"))
            .map_err(anyhow::Error::from),
        Command::Bench {
            cross_process: true,
            stages,
            steps,
            warmup,
            model,
        } => bench_cross_process(stages, steps, warmup, &model),
        Command::Bench {
            cross_process: false,
            stages,
            steps,
            warmup,
            model,
        } => bench(stages, steps, warmup, &model),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
