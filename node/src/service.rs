//! Runs a node: opens the chain, starts RPC, metrics and (for validators) block production,
//! and shuts down cleanly on Ctrl-C or SIGTERM. A `kill -9` is safe too: every block is one
//! atomic write.

use crate::bft::{self, BftConfig, BftService, NetworkStatus, TendermintVerifier};
use crate::chain::Chain;
use crate::chain_spec::{self, ChainSpec, Consensus};
use crate::cli::{RpcMethods, RunArgs};
use crate::consensus::{ConsensusEngine, DevEngine};
use crate::inference::InferenceRpc;
use crate::metrics::{self, Metrics};
use crate::pool::{Pool, PoolConfig};
use crate::rpc::{self, RpcImpl};
use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_primitives::Keypair;

/// The default base path: `$HOME/.local/share/weft-node`.
pub fn default_base_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/weft-node")
}

/// The directory of `spec`'s chain under `base`: its database, network key and signing
/// state.
pub fn chain_dir(base: &Path, spec: &ChainSpec) -> PathBuf {
    base.join("chains").join(&spec.id)
}

/// The database directory of `spec` under `base`.
pub fn database_path(base: &Path, spec: &ChainSpec) -> PathBuf {
    chain_dir(base, spec).join("db")
}

/// The block-import engine of `spec`'s chain; `key` authors (dev) or is the validator.
pub fn verifier(spec: &ChainSpec, key: Option<Keypair>) -> Arc<dyn ConsensusEngine> {
    match spec.consensus {
        Consensus::Dev => Arc::new(DevEngine::new(key)),
        Consensus::Tendermint => Arc::new(TendermintVerifier::new(key.map(|k| k.account_id()))),
    }
}

/// The libp2p settings of a Tendermint node.
fn network_config(
    args: &RunArgs,
    spec: &ChainSpec,
    base: &Path,
    genesis: &weft_primitives::Hash,
) -> anyhow::Result<weft_node_net::NetworkConfig> {
    let key_file = args
        .node_key_file
        .clone()
        .unwrap_or_else(|| chain_dir(base, spec).join("network").join("secret_ed25519"));
    if let Some(dir) = key_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = weft_node_net::key::load_or_generate(&key_file)
        .with_context(|| format!("node key {}", key_file.display()))?;
    let protocol_id = format!("weft/{}", &hex::encode(genesis.as_bytes())[..8]);
    let mut config = weft_node_net::NetworkConfig::new(key, protocol_id);
    let parse = |s: &String, what: &str| -> anyhow::Result<weft_node_net::Multiaddr> {
        s.parse()
            .with_context(|| format!("{what} {s:?} is not a multiaddress"))
    };
    config.listen = if args.listen_addr.is_empty() {
        vec![parse(&format!("/ip4/0.0.0.0/tcp/{}", args.port), "--port")?]
    } else {
        args.listen_addr
            .iter()
            .map(|a| parse(a, "--listen-addr"))
            .collect::<Result<_, _>>()?
    };
    config.public = args
        .public_addr
        .iter()
        .map(|a| parse(a, "--public-addr"))
        .collect::<Result<_, _>>()?;
    config.bootnodes = args
        .bootnodes
        .iter()
        .chain(spec.boot_nodes.iter())
        .filter(|a| !a.is_empty())
        .map(|a| parse(a, "bootnode"))
        .collect::<Result<_, _>>()?;
    config.max_peers = args.max_peers;
    config.max_peers_per_ip = args.max_peers_per_ip;
    config.ban_duration = args.peer_ban_time;
    Ok(config)
}

/// Runs the node until it is told to stop.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let chain_name = args.chain.clone().unwrap_or_else(|| "dev".to_string());
    let spec = chain_spec::load(&chain_name)?;
    let validator = args.validator || args.dev;
    let key_suri = match (&args.key, args.dev) {
        (Some(k), _) => Some(k.clone()),
        (None, true) => Some("//Alice".to_string()),
        (None, false) => None,
    };
    if validator && key_suri.is_none() {
        bail!("--validator needs --key <SURI> (or WEFT_NODE_KEY)");
    }
    let key = key_suri
        .as_deref()
        .map(Keypair::from_suri)
        .transpose()
        .context("--key")?;

    // --dev without --base-path, or --tmp: a temporary directory removed on exit.
    let tmp = if args.tmp || (args.dev && args.base_path.is_none()) {
        Some(tempfile::Builder::new().prefix("weft-node").tempdir()?)
    } else {
        None
    };
    let base = match (&tmp, &args.base_path) {
        (Some(t), _) => t.path().to_path_buf(),
        (None, Some(p)) => p.clone(),
        (None, None) => default_base_path(),
    };
    let db_path = database_path(&base, &spec);

    let author = if validator {
        key.as_ref().map(|k| k.account_id())
    } else {
        None
    };
    let engine = verifier(&spec, if validator { key.clone() } else { None });
    let chain = Arc::new(
        Chain::open_with(&db_path, &spec.name, &spec.genesis, engine, args.db_recover)
            .with_context(|| format!("opening the chain database at {}", db_path.display()))?,
    );
    if let Some(a) = author {
        if spec.consensus == Consensus::Dev
            && !spec.genesis.validators.iter().any(|v| v.account == a)
        {
            bail!("--key {a} is not a validator of chain {:?}", spec.id);
        }
    }
    let heads = chain.heads();
    tracing::info!("✌️  weft-node {}", env!("CARGO_PKG_VERSION"));
    tracing::info!(
        "📋 chain: {} ({}), genesis {}",
        spec.name,
        spec.id,
        chain.genesis_hash()
    );
    tracing::info!("💾 database: {}", db_path.display());
    tracing::info!("📦 best block #{} {}", heads.best.number, heads.best_hash);

    #[cfg(unix)]
    catch_file_size_signal();
    let metrics = Metrics::new();
    chain.db().report_to(
        metrics.storage_writable.clone(),
        metrics.storage_write_failures.clone(),
    );
    metrics.set_height("best", heads.best.number);
    metrics.set_height("finalized", heads.finalized.number);
    let pool = Arc::new(Pool::with_config(PoolConfig {
        capacity: args.pool_limit,
        max_per_sender: args.pool_max_per_sender,
        future_ttl: args.pool_future_ttl,
    }));

    let host = if args.rpc_external {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    if !args.no_prometheus {
        let addr = metrics::serve(metrics.clone(), SocketAddr::new(host, args.prometheus_port))
            .await
            .with_context(|| format!("binding the Prometheus port {}", args.prometheus_port))?;
        tracing::info!("📈 Prometheus metrics on http://{addr}/metrics");
    }
    let network_status = Arc::new(NetworkStatus::default());
    let handlers = RpcImpl::new(
        chain.clone(),
        pool.clone(),
        metrics.clone(),
        spec.properties.clone(),
        args.dev,
        network_status.clone(),
    );
    // The node routes inference over its own libp2p client; it serves nothing over libp2p.
    let (inference_net, mut inference_inbound) = weft_p2p::spawn(
        weft_p2p::Keypair::generate_ed25519(),
        weft_p2p::Config::default(),
    )
    .await
    .context("starting the inference network client")?;
    tokio::spawn(async move { while inference_inbound.recv().await.is_some() {} });
    let inference = InferenceRpc::new(chain.clone(), pool.clone(), metrics.clone(), inference_net);
    let (rpc_addr, rpc_handle) = rpc::start(
        SocketAddr::new(host, args.rpc_port),
        handlers,
        inference,
        rpc::Limits {
            max_connections: args.rpc_max_connections,
            max_per_ip: args.rpc_max_connections_per_ip,
            idle_timeout: args.rpc_idle_timeout,
            unsafe_methods: match args.rpc_methods {
                RpcMethods::Unsafe => true,
                RpcMethods::Safe => false,
                RpcMethods::Auto => !args.rpc_external,
            },
            dashboard: !args.no_dashboard,
        },
    )
    .await
    .with_context(|| format!("binding the RPC port {}", args.rpc_port))?;
    tracing::info!("🔌 JSON-RPC on ws://{rpc_addr} and http://{rpc_addr}");

    let authoring = match spec.consensus {
        Consensus::Dev => author.map(|a| {
            tracing::info!("🧑‍🏭 authoring as {a}, a block every {:?}", args.block_time);
            tokio::spawn(crate::authorship::run(
                chain.clone(),
                pool.clone(),
                metrics.clone(),
                a,
                args.block_time,
            ))
        }),
        Consensus::Tendermint => {
            let config = network_config(&args, &spec, &base, &chain.genesis_hash())?;
            let (net, events) = weft_node_net::spawn(config)
                .await
                .context("starting the peer-to-peer network")?;
            let addrs = net.listen_addrs().await.unwrap_or_default();
            for a in &addrs {
                tracing::info!("🏷  peer-to-peer on {a}/p2p/{}", net.local_peer_id());
            }
            let keys = match (author, key_suri.as_deref(), key.clone()) {
                (Some(account), Some(suri), Some(signer)) => {
                    let path = args.signing_state_file.clone().unwrap_or_else(|| {
                        chain_dir(&base, &spec).join(bft::signing_state::FILE_NAME)
                    });
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let state = bft::signing_state::SigningStateFile::load(&path)?;
                    tracing::info!(
                        "🔏 signing state {}: signed up to height {}",
                        path.display(),
                        state.record().height
                    );
                    Some(bft::service::ValidatorKeys {
                        signer,
                        account,
                        bls: weft_runtime::bls::secret_from_suri(suri, args.bls_seed.as_deref())
                            .context("--bls-seed")?,
                        signing_state: Some(state),
                    })
                }
                _ => None,
            };
            if let Some(k) = &keys {
                tracing::info!(
                    "🧑‍🏭 validating as {} (BLS {})",
                    k.account,
                    k.bls.public_key().to_bytes()
                );
            }
            let service = BftService::new(
                chain.clone(),
                pool.clone(),
                metrics.clone(),
                net,
                network_status.clone(),
                keys,
                BftConfig {
                    block_time: args.block_time,
                    timeouts: weft_consensus::Timeouts::default(),
                },
            );
            Some(tokio::spawn(service.run(events)))
        }
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(t) = authoring {
        t.abort();
        let _ = t.await;
    }
    let _ = rpc_handle.stop();
    chain.flush()?;
    drop(tmp);
    Ok(())
}

/// A write past the process's file-size limit (`RLIMIT_FSIZE`) raises `SIGXFSZ`, whose
/// default action kills the process. For the node it is an I/O error like a full disk, which
/// it reports and recovers from (see [`crate::db`]), so the signal is caught; the first one is
/// logged (logging more would write, and signal, again).
#[cfg(unix)]
fn catch_file_size_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut s) => {
            tokio::spawn(async move {
                let mut first = true;
                while s.recv().await.is_some() {
                    if std::mem::take(&mut first) {
                        tracing::warn!("a write passed the file size limit (SIGXFSZ); it fails like a full disk");
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGXFSZ"),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
