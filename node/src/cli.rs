//! Command-line interface of `weft-node`, in the conventions of Substrate nodes.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Parses `250ms`, `1s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 500ms or 2s)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s or m)")),
    };
    let d = Duration::from_secs_f64(secs);
    if d < Duration::from_millis(10) {
        return Err("block time must be at least 10ms".into());
    }
    Ok(d)
}

/// `weft-node`: a Weft validator or full node.
#[derive(Debug, Parser)]
#[command(
    name = "weft-node",
    version,
    about = "Weft node: the chain where training a model is the work"
)]
pub struct Cli {
    /// A subcommand; without one the node runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of a running node.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Development chain: `--chain dev --validator --key //Alice`, and `--tmp` unless
    /// `--base-path` is given.
    #[arg(long)]
    pub dev: bool,
    /// Chain spec: `dev`, `local`, or a path to a JSON file.
    #[arg(long, value_name = "CHAIN")]
    pub chain: Option<String>,
    /// Where the node keeps its data.
    #[arg(long, short = 'd', value_name = "PATH")]
    pub base_path: Option<PathBuf>,
    /// Keep data in a temporary directory, deleted on exit.
    #[arg(long)]
    pub tmp: bool,
    /// Open a database that was damaged or lost acknowledged writes anyway: replay its
    /// write-ahead log up to the damage and accept its finalized block as it is (a Tendermint
    /// node re-syncs the rest from peers; a dev chain authors it anew).
    #[arg(long)]
    pub db_recover: bool,
    /// Author blocks (requires --key of a validator in the chain's set).
    #[arg(long)]
    pub validator: bool,
    /// The validator's secret URI (e.g. //Alice or a mnemonic).
    #[arg(
        long,
        env = "WEFT_NODE_KEY",
        value_name = "SURI",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Node name shown in logs.
    #[arg(long, default_value = "weft")]
    pub name: String,
    /// JSON-RPC port (HTTP and WebSocket).
    #[arg(long, default_value_t = 9944)]
    pub rpc_port: u16,
    /// Listen for RPC on all interfaces instead of 127.0.0.1.
    #[arg(long)]
    pub rpc_external: bool,
    /// Prometheus port.
    #[arg(long, default_value_t = 9615)]
    pub prometheus_port: u16,
    /// Do not serve Prometheus metrics.
    #[arg(long)]
    pub no_prometheus: bool,
    /// Time between blocks (dev engine), e.g. 1s or 200ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub block_time: Duration,
    /// Most transactions kept in the pool; when full, a newcomer that pays more per byte
    /// evicts the cheapest.
    #[arg(long, default_value_t = 65_536)]
    pub pool_limit: usize,
    /// Most transactions one sender may have queued in the pool.
    #[arg(long, default_value_t = crate::pool::DEFAULT_MAX_PER_SENDER)]
    pub pool_max_per_sender: usize,
    /// Blocks after which a transaction still waiting for an earlier nonce is dropped.
    #[arg(long, default_value_t = crate::pool::DEFAULT_FUTURE_TTL, value_name = "BLOCKS")]
    pub pool_future_ttl: u64,
    /// Most simultaneous JSON-RPC connections (HTTP and WebSocket).
    #[arg(long, default_value_t = crate::rpc::DEFAULT_MAX_CONNECTIONS)]
    pub rpc_max_connections: u32,
    /// Most simultaneous JSON-RPC connections from one IP address (keeps room for others).
    #[arg(long, default_value_t = crate::rpc::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub rpc_max_connections_per_ip: u32,
    /// Close a JSON-RPC connection (handshake included) that sends nothing for this long;
    /// WebSocket clients are pinged at half this interval, and a pong counts as activity.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub rpc_idle_timeout: Duration,
    /// Do not serve the web dashboard on the RPC port (plain GETs of `/`; JSON-RPC is
    /// unaffected).
    #[arg(long)]
    pub no_dashboard: bool,
    /// Log filter, e.g. `info` or `weft_node=debug`.
    #[arg(long, short = 'l', default_value = "info")]
    pub log: String,
    /// The validator's BLS seed (`0x…` hex or text); default: derived from `--key` the way
    /// `weft stake validate` derives it.
    #[arg(
        long,
        env = "WEFT_BLS_SEED",
        value_name = "SEED",
        hide_env_values = true
    )]
    pub bls_seed: Option<String>,
    /// The validator's record of what it has signed (JSON), kept outside the database so
    /// that a wiped database never lets it sign twice at a height. Default:
    /// `<base-path>/chains/<id>/signing-state.json`; keep it with the keys.
    #[arg(long, value_name = "PATH")]
    pub signing_state_file: Option<PathBuf>,
    /// Peer-to-peer TCP port (Tendermint chains), on all interfaces unless --listen-addr.
    #[arg(long, default_value_t = 30333)]
    pub port: u16,
    /// Peer-to-peer listen multiaddress (repeatable), e.g. /ip4/127.0.0.1/tcp/30333.
    #[arg(long = "listen-addr", value_name = "MULTIADDR")]
    pub listen_addr: Vec<String>,
    /// Multiaddress other nodes should dial to reach this one (repeatable).
    #[arg(long = "public-addr", value_name = "MULTIADDR")]
    pub public_addr: Vec<String>,
    /// Nodes to connect to first: multiaddresses ending in /p2p/<peer id> (repeatable, or
    /// comma-separated). The chain spec's bootNodes are added.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub bootnodes: Vec<String>,
    /// The node's libp2p key file (hex ed25519 secret); created if missing. Default:
    /// `<base-path>/chains/<id>/network/secret_ed25519`.
    #[arg(long, value_name = "PATH")]
    pub node_key_file: Option<PathBuf>,
    /// Most peer connections.
    #[arg(long, default_value_t = 50)]
    pub max_peers: u32,
    /// Most peer connections from one IP address.
    #[arg(long, default_value_t = 8)]
    pub max_peers_per_ip: u32,
    /// How long a misbehaving peer stays banned.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub peer_ban_time: Duration,
    /// Which RPC methods to serve: `safe` (reads and submissions) or `unsafe` (also methods
    /// that change the node itself). `auto`: unsafe on loopback, safe with --rpc-external.
    #[arg(long, value_enum, default_value_t = RpcMethods::Auto)]
    pub rpc_methods: RpcMethods,
}

/// `--rpc-methods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RpcMethods {
    /// Unsafe on loopback, safe when listening externally.
    Auto,
    /// Reads, subscriptions and transaction submission only.
    Safe,
    /// Also node-changing methods (`system_addReservedPeer`).
    Unsafe,
}

/// Chain selection and data location, shared by subcommands.
#[derive(Debug, Args, Clone)]
pub struct ChainArgs {
    /// Chain spec: `dev`, `local`, or a path.
    #[arg(long, default_value = "dev")]
    pub chain: String,
    /// Where the node keeps its data.
    #[arg(long, short = 'd', value_name = "PATH")]
    pub base_path: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Key utilities.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a chain spec as JSON.
    BuildSpec {
        /// `dev`, `local` or a path.
        #[arg(long, default_value = "dev")]
        chain: String,
    },
    /// Delete the chain's database.
    PurgeChain {
        /// Chain and base path.
        #[command(flatten)]
        chain: ChainArgs,
        /// Do not ask for confirmation.
        #[arg(short = 'y')]
        yes: bool,
    },
    /// Write blocks to a file (length-prefixed SCALE records of block and justification).
    ExportBlocks {
        /// Chain and base path.
        #[command(flatten)]
        chain: ChainArgs,
        /// First block.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last block (default: best).
        #[arg(long)]
        to: Option<u64>,
        /// Output file.
        output: PathBuf,
    },
    /// Import blocks from a file written by export-blocks, verifying each.
    ImportBlocks {
        /// Chain and base path.
        #[command(flatten)]
        chain: ChainArgs,
        /// Input file.
        input: PathBuf,
    },
    /// Measure block execution.
    #[command(subcommand)]
    Benchmark(BenchmarkCommand),
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new sr25519 key with a 12-word mnemonic.
    Generate {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate a libp2p node key and write it to a file; print the peer id.
    GenerateNodeKey {
        /// The file to write (refused if it exists).
        #[arg(long)]
        file: PathBuf,
    },
    /// Show the public key and address of a secret URI.
    Inspect {
        /// e.g. //Alice, or a mnemonic with optional derivation path.
        suri: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `benchmark` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchmarkCommand {
    /// Signed transfers applied per second (signature checks, state root and write included).
    Block {
        /// Transfers per block.
        #[arg(long, default_value_t = 5_000)]
        transfers: usize,
        /// Blocks to build and import.
        #[arg(long, default_value_t = 5)]
        blocks: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Training commitments (`work.commit_step`) per block: every bonded, assigned trainer
    /// commits one step per block; build + write and verify-import times.
    Commitments {
        /// Trainers, each bonded at genesis and assigned one stage slot.
        #[arg(long, default_value_t = 1_000)]
        trainers: usize,
        /// Commitment blocks to build and import (one commitment per trainer each).
        #[arg(long, default_value_t = 3)]
        blocks: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1ms").is_err());
    }
}
