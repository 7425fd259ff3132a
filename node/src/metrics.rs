//! Prometheus metrics in the text exposition format, served on `--prometheus-port`.
//!
//! | metric | kind |
//! |---|---|
//! | `weft_block_height{status="best"|"finalized"}` | gauge |
//! | `weft_block_import_seconds` | histogram of building + writing one block |
//! | `weft_block_extrinsics` | histogram of extrinsics per block |
//! | `weft_txpool_size` | gauge |
//! | `weft_rpc_requests_total{method}` | counter |

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Label of the height gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// best or finalized.
    pub status: String,
}

/// Label of the RPC counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The JSON-RPC method.
    pub method: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Heights.
    pub height: Family<StatusLabel, Gauge>,
    /// Block build/import time.
    pub block_import_seconds: Histogram,
    /// Extrinsics per block.
    pub block_extrinsics: Histogram,
    /// Pool size.
    pub txpool_size: Gauge,
    /// RPC calls.
    pub rpc_requests: Family<MethodLabel, Counter>,
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("weft");
        let height = Family::<StatusLabel, Gauge>::default();
        registry.register("block_height", "Block height by status", height.clone());
        let block_import_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "block_import_seconds",
            "Time to build or import and write a block",
            block_import_seconds.clone(),
        );
        let block_extrinsics = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "block_extrinsics",
            "Extrinsics per block",
            block_extrinsics.clone(),
        );
        let txpool_size = Gauge::default();
        registry.register(
            "txpool_size",
            "Transactions in the pool",
            txpool_size.clone(),
        );
        let rpc_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "rpc_requests",
            "JSON-RPC requests by method",
            rpc_requests.clone(),
        );
        Arc::new(Metrics {
            registry,
            height,
            block_import_seconds,
            block_extrinsics,
            txpool_size,
            rpc_requests,
        })
    }

    /// Counts one RPC call.
    pub fn rpc(&self, method: &str) {
        self.rpc_requests
            .get_or_create(&MethodLabel {
                method: method.to_string(),
            })
            .inc();
    }

    /// Sets a height gauge.
    pub fn set_height(&self, status: &str, height: u64) {
        self.height
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .set(height as i64);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) until the task is dropped.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (bounded); the path does not matter.
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < buf.len() {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let body = metrics.render();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(local)
}
