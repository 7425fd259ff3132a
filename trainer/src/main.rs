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
//! * `bench-replicas`: R replicas per stage averaging their updates in this process, against
//!   one replica reading the same tokens and R replicas training apart.
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

mod cmd;

use clap::{Parser, Subcommand};
use cmd::bench::{bench, bench_cross_process};
use cmd::bench_infer::bench_infer;
use cmd::bench_replicas::bench_replicas;
use cmd::local::local_train;
use cmd::model_args::ModelArgs;
use cmd::pipeline::{peer_id_of, pipeline, PipelineArgs};
use std::path::PathBuf;
use tch::Device;
use weft_trainer::service;

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
    /// Loss, step time and bytes of R replicas per stage averaging their updates (trimmed
    /// mean) in this process, against one replica reading the same tokens and against R
    /// replicas training apart.
    BenchReplicas {
        /// Number of pipeline stages.
        #[arg(long, default_value_t = 2)]
        stages: usize,
        /// Replica counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "2,4")]
        replicas: Vec<usize>,
        /// Steps per configuration.
        #[arg(long, default_value_t = 40)]
        steps: u64,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Tokens/s and time to first token of generation through S stage holders on loopback,
    /// relative to single-process generation with the same weights and KV caching.
    BenchInfer {
        /// Number of pipeline stages.
        #[arg(long, default_value_t = 4)]
        stages: usize,
        /// Concurrent sessions to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        sessions: Vec<usize>,
        /// Prompt tokens.
        #[arg(long, default_value_t = 16)]
        prompt: usize,
        /// Generated tokens per session.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Alternating rounds per configuration.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
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
        Command::Manifest { data } => weft_trainer::ml::data::manifest_hash(&data)
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
        Command::BenchReplicas {
            stages,
            replicas,
            steps,
            model,
        } => bench_replicas(stages, &replicas, steps, &model),
        Command::BenchInfer {
            stages,
            sessions,
            prompt,
            new_tokens,
            rounds,
            model,
        } => bench_infer(stages, &sessions, prompt, new_tokens, rounds, &model),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
