//! Prometheus metrics in the text exposition format, served on `--prometheus-port`.
//!
//! | metric | kind |
//! |---|---|
//! | `weft_block_height{status="best"|"finalized"}` | gauge |
//! | `weft_block_import_seconds` | histogram of building + writing one block |
//! | `weft_block_extrinsics` | histogram of extrinsics per block |
//! | `weft_txpool_size` | gauge |
//! | `weft_rpc_requests_total{method}` | counter |
//! | `weft_consensus_signatures_refused_total` | counter of signatures the double-sign guard refused |
//! | `weft_storage_writable` | gauge: 1 while database writes succeed, 0 after one failed or a read found damage |
//! | `weft_storage_write_failures_total` | counter of failed database writes |
//!
//! The server is a minimal HTTP/1 responder, bounded against abuse (issue 10): see
//! [`serve`] for its connection limit, timeout and error answers.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
    /// Signatures the double-sign guard refused (`bft::signing_state`).
    pub signatures_refused: Counter,
    /// 1 while database writes succeed ([`crate::db::Db::report_to`]).
    pub storage_writable: Gauge,
    /// Failed database writes.
    pub storage_write_failures: Counter,
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
        let signatures_refused = Counter::default();
        registry.register(
            "consensus_signatures_refused",
            "Votes and proposals the double-sign guard refused to sign",
            signatures_refused.clone(),
        );
        let storage_writable = Gauge::default();
        storage_writable.set(1);
        registry.register(
            "storage_writable",
            "1 while database writes succeed, 0 after a write failed",
            storage_writable.clone(),
        );
        let storage_write_failures = Counter::default();
        registry.register(
            "storage_write_failures",
            "Database writes that failed",
            storage_write_failures.clone(),
        );
        Arc::new(Metrics {
            registry,
            signatures_refused,
            storage_writable,
            storage_write_failures,
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

/// Connections the metrics server serves at once; more are closed at once.
pub const MAX_METRICS_CONNECTIONS: usize = 32;
/// A metrics connection must send its request head within this, and the answer must be
/// written within it too; otherwise it is closed.
pub const METRICS_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 4096;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (or `GET /`).
    Metrics,
    /// Something else; the status and its reason.
    Error(u16, &'static str),
}

/// Parses an HTTP/1 request line: only `GET /metrics` and `GET /` are served.
fn route(head: &[u8]) -> Route {
    let Some(line) = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Route::Error(400, "Bad Request");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Error(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::Error(400, "Bad Request");
    }
    if method != "GET" {
        return Route::Error(405, "Method Not Allowed");
    }
    match target.split('?').next() {
        Some("/metrics") | Some("/") => Route::Metrics,
        _ => Route::Error(404, "Not Found"),
    }
}

/// Reads the request head (bounded in size); `None` when the peer closed or sent none.
async fn read_head(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut read = 0;
    while read < buf.len() {
        match socket.read(&mut buf[read..]).await {
            Ok(0) | Err(_) => return (read > 0).then(|| buf[..read].to_vec()),
            Ok(n) => read += n,
        }
        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    buf.truncate(read);
    Some(buf)
}

async fn answer(metrics: &Metrics, mut socket: TcpStream) {
    let Ok(Some(head)) = tokio::time::timeout(METRICS_IO_TIMEOUT, read_head(&mut socket)).await
    else {
        return;
    };
    let response = match route(&head) {
        Route::Metrics => {
            let body = metrics.render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            )
        }
        Route::Error(status, reason) => {
            tracing::debug!(status, "metrics: refusing a request");
            let body = format!("{reason}\n");
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = tokio::time::timeout(METRICS_IO_TIMEOUT, async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await
    })
    .await;
}

/// Serves `GET /metrics` until the task is dropped: one request per connection, at most
/// [`MAX_METRICS_CONNECTIONS`] at once (more are closed on accept), each closed after
/// [`METRICS_IO_TIMEOUT`] without a complete request head. Anything but `GET /metrics` or
/// `GET /` gets 400 (not HTTP), 405 (another method) or 404 (another path). When accepting
/// fails (typically out of descriptors) the loop backs off for 50 ms instead of spinning.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!("metrics: too many connections, closing one");
                drop(socket);
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                answer(&metrics, socket).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET / HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(
            route(b"\x16\x03\x01\x02\x00garbage"),
            Route::Error(400, "Bad Request")
        );
        assert_eq!(route(b"hello\r\n\r\n"), Route::Error(400, "Bad Request"));
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Error(405, "Method Not Allowed")
        );
        assert_eq!(
            route(b"GET /x HTTP/1.1\r\n\r\n"),
            Route::Error(404, "Not Found")
        );
    }

    #[tokio::test]
    async fn garbage_gets_400_and_silent_connections_are_closed() {
        let addr = serve(Metrics::new(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"not http at all\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        // A silent connection is closed after the I/O timeout, within a bound.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(METRICS_IO_TIMEOUT * 3, silent.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= METRICS_IO_TIMEOUT / 2);
        // More than the limit at once: the extra ones are closed at once, served ones work.
        let mut held = Vec::new();
        for _ in 0..MAX_METRICS_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let n = tokio::time::timeout(METRICS_IO_TIMEOUT, extra.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection over the limit is closed");
        drop(held);
        let ok = tokio::time::timeout(METRICS_IO_TIMEOUT, async {
            loop {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.starts_with("HTTP/1.1 200 ") {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(ok.contains("weft_txpool_size"), "{ok}");
    }
}
