//! `weft-trainer train` and `weft-trainer audit`: the trainer and the auditor driven by the
//! chain (see the `chain` and `submit` modules, and `weft_ml::audit`, for the protocol). The
//! binaries are thin: they parse [`TrainArgs`] / [`AuditArgs`] and call [`train`] /
//! [`audit_main`]. One file each: [`train`](mod@train) and [`audit`](mod@audit); what both
//! use (data sources, seeds, the head subscription, the p2p listener) is here; what a stage
//! holder serves after its last step is [`after_training`].

mod after_training;
pub mod audit;
mod handover;
mod leave;
pub mod train;
mod train_args;

pub use audit::{audit_main, AuditArgs};
pub use train::{train, train_with, Hooks, TrainArgs};
pub use train_args::apply_train_file;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use weft_ml::data::{Synthetic, TokenFile, TokenSource};
use weft_primitives::Header;
use weft_rpc_api::ChainApiClient;
use weft_rpc_client::Client;

/// A training data source from its command-line spelling: `synthetic` (the run seed's
/// synthetic stream), a text file or directory, or `.bin` u16 token files.
pub fn open_data(spec: &str, seed: u64) -> anyhow::Result<Arc<dyn TokenSource>> {
    if spec == "synthetic" {
        Ok(Arc::new(Synthetic::standard(seed)))
    } else {
        let f = TokenFile::open(std::path::Path::new(spec))
            .with_context(|| format!("opening training data {spec}"))?;
        Ok(Arc::new(f))
    }
}

/// A 32-byte seed from hex (`0x` optional).
pub fn parse_seed(hex_seed: &str) -> anyhow::Result<[u8; 32]> {
    let bytes =
        hex::decode(hex_seed.trim().trim_start_matches("0x")).context("the key seed is not hex")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("the key seed must be 32 bytes, got {}", b.len()))
}

/// A 32-byte p2p seed derived from a secret URI under `domain`.
pub fn derive_p2p_seed(domain: &str, suri: &str) -> [u8; 32] {
    blake3::derive_key(domain, suri.as_bytes())
}

/// Waits for the next head (subscription, with polling as a fallback); returns it.
pub(crate) struct Heads {
    client: Arc<Client>,
    sub: Option<jsonrpsee::core::client::Subscription<Header>>,
    last: u64,
}

impl Heads {
    pub(crate) async fn new(client: Arc<Client>) -> Self {
        let sub = client.rpc().subscribe_new_heads().await.ok();
        Heads {
            client,
            sub,
            last: 0,
        }
    }

    pub(crate) async fn next(&mut self) -> anyhow::Result<Header> {
        loop {
            if let Some(sub) = self.sub.as_mut() {
                match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                    Ok(Some(Ok(h))) if h.number > self.last || self.last == 0 => {
                        self.last = h.number;
                        return Ok(h);
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(_) => self.sub = None,
                    Err(_) => {}
                }
            }
            let h = self.client.best_header().await?;
            if h.number > self.last {
                self.last = h.number;
                return Ok(h);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Starts the p2p network, retrying for a while: a restarted pipeline (or the reveal server
/// that follows training) may find the port still held for a moment.
pub(crate) async fn listen_with_retry(
    key: &weft_p2p::Keypair,
    cfg: &weft_p2p::Config,
) -> anyhow::Result<(
    weft_p2p::Network,
    tokio::sync::mpsc::Receiver<weft_p2p::InboundRequest>,
)> {
    let mut tries = 0;
    loop {
        match weft_p2p::spawn(key.clone(), cfg.clone()).await {
            Ok(x) => return Ok(x),
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::warn!(error = %e, "cannot listen yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) use crate::stage::AbortOnDrop;
