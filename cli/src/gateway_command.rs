//! `weft gateway`: serves a run's model over an OpenAI-compatible HTTP API
//! ([`weft_cli::gateway`]), paying every request with `--key`'s credentials.
//!
//! ```text
//! weft gateway --key //Alice --run 1 [--listen 127.0.0.1:8080] [--model-name NAME]
//!              [--allow-origin http://127.0.0.1:9944]…
//! ```
//!
//! Logs go to stderr (`RUST_LOG`, default `info`): one line per request with its status
//! and time, and the request id, payment and step of each completion.

use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use weft_cli::args::{parse_signer_suri, Signer};
use weft_cli::gateway::{listen, AllowedOrigins, Gateway, RpcBackend};
use weft_cli::SubmitOptions;
use weft_runtime::support::RunId;

/// `weft gateway …`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The credential holder who pays for every request: a secret URI or a mnemonic.
    #[arg(long, value_name = "SURI", value_parser = parse_signer_suri)]
    pub key: Signer,
    /// The run whose model is served.
    #[arg(long)]
    pub run: RunId,
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The model's name in the API (default `weft-run-N`).
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// A web page origin allowed to call the gateway (repeatable), e.g. the node's dashboard
    /// `http://127.0.0.1:9944` for its playground. Pages of other origins are refused.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
}

/// Runs `weft gateway` until interrupted.
pub async fn gateway(url: &str, args: GatewayArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (there is none in this process) would only be refused.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let backend = RpcBackend::connect(url, args.key.pair.clone(), SubmitOptions::default()).await?;
    tracing::info!(account = %args.key.pair.account_id(), node = url, "paying with");
    let origins = AllowedOrigins::parse(&args.allow_origin)?;
    let gw = Gateway::with_origins(backend, args.run, args.model_name, origins);
    tokio::select! {
        r = listen(args.listen, gw) => r.with_context(|| format!("listening on {}", args.listen)),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}
