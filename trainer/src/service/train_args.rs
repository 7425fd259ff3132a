//! The command line of `weft-trainer train` ([`TrainArgs`]) and its `--config` TOML file,
//! which fills in every flag not given on the command line.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Replicas that average: seconds to wait for the other replicas' updates of a step
    /// before leaving the missing ones out of that round.
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    pub replica_deadline: Duration,
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

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} seconds: must be above 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}
