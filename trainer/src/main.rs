//! `weft-trainer`: trains one pipeline stage of a run's transformer with libtorch (tch), and
//! audits other trainers' steps.
//!
//! Subcommands:
//! * `info`: checks the libtorch installation and the devices it can use.
//! * `local-train`: trains a model with all its pipeline stages in this process (the same
//!   stage workers a networked trainer runs), printing loss and throughput per step.
//! * `bench`: throughput of the S-stage in-process pipeline relative to the unsplit model,
//!   and the memory each stage needs for training.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;
use weft_trainer::config::{DeviceSpec, ModelConfig, TrainConfig};
use weft_trainer::data::{Batcher, Synthetic, TokenFile, TokenSource};
use weft_trainer::pipeline::{
    build_workers, run_step_in_process_detailed, StageWorker, WorkerOptions,
};

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
    /// Throughput of the S-stage in-process pipeline relative to the unsplit model.
    Bench {
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

fn open_data(spec: &str, seed: u64) -> anyhow::Result<Arc<dyn TokenSource>> {
    if spec == "synthetic" {
        let s = Synthetic::standard(seed);
        Ok(Arc::new(s))
    } else {
        let f = TokenFile::open(std::path::Path::new(spec))
            .with_context(|| format!("opening training data {spec}"))?;
        Ok(Arc::new(f))
    }
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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
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
        Command::Bench {
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
