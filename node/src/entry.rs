//! The command line's entry point, shared by `weft-node` and the test-only
//! `weft-equivocator`.

use crate::cli::{Cli, Command};
use crate::{commands, service};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Parses the command line and runs it; exits non-zero on error.
pub fn main() {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},jmt=warn", cli.run.log)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(service::run(cli.run))),
        Some(Command::Key(k)) => commands::key(k),
        Some(Command::BuildSpec { chain }) => commands::build_spec(&chain),
        Some(Command::PurgeChain { chain, yes }) => commands::purge_chain(&chain, yes),
        Some(Command::ExportBlocks {
            chain,
            from,
            to,
            output,
        }) => commands::export_blocks(&chain, from, to, &output),
        Some(Command::ImportBlocks { chain, input }) => commands::import_blocks(&chain, &input),
        Some(Command::Benchmark(b)) => commands::benchmark(b),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
