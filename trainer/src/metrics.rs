//! The trainer's Prometheus metrics, their HTTP responder, and the per-step progress
//! display (a progress bar on a terminal, one line per step otherwise).
//!
//! | metric | kind |
//! |---|---|
//! | `weft_trainer_step_seconds` | histogram of the wall time of one step, waiting included |
//! | `weft_trainer_tokens_per_second` | gauge, of the last step |
//! | `weft_trainer_step` | gauge, the last step completed |
//! | `weft_trainer_loss` | gauge, the last step's mean loss (last stage only) |
//! | `weft_trainer_bytes_sent_total` | counter of payload bytes delivered to partners |
//! | `weft_trainer_bytes_received_total` | counter of payload bytes received from partners |
//! | `weft_trainer_commit_latency_seconds` | histogram, from submitting `commit_step` to its inclusion |
//! | `weft_trainer_peers` | gauge, the other trainers of this pipeline |

use crate::stage::StepProgress;
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head read before answering.
const MAX_REQUEST_HEAD: usize = 4096;

/// The trainer's metrics.
pub struct TrainerMetrics {
    registry: Registry,
    /// Wall time of a step.
    pub step_seconds: Histogram,
    /// Tokens per second of the last step.
    pub tokens_per_second: Gauge<f64, AtomicU64>,
    /// The last step completed.
    pub step: Gauge,
    /// The last step's loss (last stage).
    pub loss: Gauge<f64, AtomicU64>,
    /// Payload bytes delivered.
    pub bytes_sent: Counter,
    /// Payload bytes received.
    pub bytes_received: Counter,
    /// Submission of `commit_step` to its inclusion in a block.
    pub commit_latency_seconds: Histogram,
    /// The other trainers of the pipeline.
    pub peers: Gauge,
    /// The cumulative byte figures last seen (they restart from 0 with the pipeline).
    last_sent: AtomicU64,
    last_received: AtomicU64,
}

impl std::fmt::Debug for TrainerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainerMetrics")
            .field("step", &self.step.get())
            .finish_non_exhaustive()
    }
}

/// How much a cumulative figure grew since `last`, which it replaces; a figure smaller
/// than the last one started over (a restarted pipeline) and counts in full.
fn delta(last: &AtomicU64, now: u64) -> u64 {
    let before = last.swap(now, Ordering::Relaxed);
    if now >= before {
        now - before
    } else {
        now
    }
}

impl TrainerMetrics {
    /// Registers all metrics.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("weft_trainer");
        let step_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "step_seconds",
            "Wall time of one training step, waiting for partners included",
            step_seconds.clone(),
        );
        let tokens_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tokens_per_second",
            "Tokens per second of the last step",
            tokens_per_second.clone(),
        );
        let step = Gauge::default();
        registry.register("step", "The last step completed", step.clone());
        let loss = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "loss",
            "Mean loss of the last step (last stage only)",
            loss.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "bytes_sent",
            "Payload bytes delivered to pipeline partners",
            bytes_sent.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "bytes_received",
            "Payload bytes received from pipeline partners",
            bytes_received.clone(),
        );
        let commit_latency_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "commit_latency_seconds",
            "Time from submitting a step commitment to its inclusion in a block",
            commit_latency_seconds.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "peers",
            "The other trainers of this pipeline",
            peers.clone(),
        );
        Arc::new(TrainerMetrics {
            registry,
            step_seconds,
            tokens_per_second,
            step,
            loss,
            bytes_sent,
            bytes_received,
            commit_latency_seconds,
            peers,
            last_sent: AtomicU64::new(0),
            last_received: AtomicU64::new(0),
        })
    }

    /// Records one step.
    pub fn observe_step(&self, p: &StepProgress) {
        self.step_seconds.observe(p.seconds);
        self.tokens_per_second.set(p.tokens_per_s);
        self.step.set(i64::try_from(p.step).unwrap_or(i64::MAX));
        if let Some(l) = p.loss {
            self.loss.set(l);
        }
        self.bytes_sent.inc_by(delta(&self.last_sent, p.bytes_sent));
        self.bytes_received
            .inc_by(delta(&self.last_received, p.bytes_received));
    }

    /// Records the latency of one commitment that landed.
    pub fn observe_commit(&self, latency: Duration) {
        self.commit_latency_seconds.observe(latency.as_secs_f64());
    }

    /// Sets the number of other trainers of the pipeline.
    pub fn set_peers(&self, peers: usize) {
        self.peers.set(i64::try_from(peers).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Answers one connection: reads the request head (at most [`MAX_REQUEST_HEAD`] bytes;
/// the method and path do not matter), answers 200 with the metrics, and closes.
async fn answer(mut socket: tokio::net::TcpStream, metrics: &TrainerMetrics) {
    let mut buf = [0u8; MAX_REQUEST_HEAD];
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
}

/// Serves the metrics over HTTP on `addr` until the returned task is aborted; returns the
/// bound address (useful with port 0).
pub async fn serve(
    metrics: Arc<TrainerMetrics>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // A client that never finishes its request head must not hold a task forever.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), answer(socket, &metrics)).await;
            });
        }
    });
    Ok((local, task))
}

/// Serves `metrics` on `127.0.0.1:port` when `port` is not 0, saying where on stdout.
pub async fn serve_local(
    metrics: &Arc<TrainerMetrics>,
    port: u16,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if port == 0 {
        return Ok(None);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (local, task) = serve(metrics.clone(), addr)
        .await
        .map_err(|e| anyhow::anyhow!("serving Prometheus metrics on {addr}: {e}"))?;
    println!("prometheus metrics on http://{local}/metrics");
    Ok(Some(task))
}

/// The per-step display: a progress bar (position = steps complete, message = loss,
/// tokens/s, peers) when stderr is a terminal, else one line per step on stdout.
#[derive(Clone, Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    peers: usize,
}

impl Progress {
    /// A display for a run of `steps` steps with `peers` other trainers; a bar only when
    /// `bar` (callers pass whether stderr is a terminal).
    pub fn new(steps: u64, peers: usize, bar: bool) -> Self {
        let bar = bar.then(|| {
            let pb = ProgressBar::new(steps);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} step {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            pb.set_style(style);
            pb.enable_steady_tick(Duration::from_millis(250));
            pb
        });
        Progress { bar, peers }
    }

    /// Whether a bar is drawn.
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// The bar's message for `p`.
    pub fn message(&self, p: &StepProgress) -> String {
        let loss = p.loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        format!(
            "loss {loss} tok/s {:.0} peers {}",
            p.tokens_per_s, self.peers
        )
    }

    /// Shows step `p`: moves the bar, or prints `line()` when there is no bar.
    pub fn step(&self, p: &StepProgress, line: impl FnOnce() -> String) {
        match &self.bar {
            Some(pb) => {
                pb.set_position(p.step.saturating_add(1));
                pb.set_message(self.message(p));
            }
            None => println!("{}", line()),
        }
    }

    /// Prints a line without tearing the bar.
    pub fn println(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(pb) => pb.println(msg.as_ref()),
            None => println!("{}", msg.as_ref()),
        }
    }

    /// Leaves the bar where it is.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: u64, sent: u64, received: u64) -> StepProgress {
        StepProgress {
            step,
            stage: 1,
            loss: Some(2.5),
            seconds: 0.25,
            tokens_per_s: 4096.0,
            bytes_sent: sent,
            bytes_received: received,
        }
    }

    #[test]
    fn render_has_every_metric_after_an_update() {
        let m = TrainerMetrics::new();
        m.observe_step(&progress(7, 1000, 2000));
        m.observe_step(&progress(8, 1500, 2600));
        m.observe_commit(Duration::from_millis(1200));
        m.set_peers(3);
        let text = m.render();
        for name in [
            "weft_trainer_step_seconds_bucket",
            "weft_trainer_step_seconds_count 2",
            "weft_trainer_tokens_per_second 4096",
            "weft_trainer_step 8",
            "weft_trainer_loss 2.5",
            "weft_trainer_bytes_sent_total 1500",
            "weft_trainer_bytes_received_total 2600",
            "weft_trainer_commit_latency_seconds_count 1",
            "weft_trainer_peers 3",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn byte_counters_survive_a_restarted_pipeline() {
        let m = TrainerMetrics::new();
        m.observe_step(&progress(0, 1000, 10));
        // The pipeline restarted: its cumulative figures start over.
        m.observe_step(&progress(1, 300, 5));
        assert_eq!(m.bytes_sent.get(), 1300);
        assert_eq!(m.bytes_received.get(), 15);
    }

    #[tokio::test]
    async fn responder_answers_a_get_over_loopback() {
        let m = TrainerMetrics::new();
        m.observe_step(&progress(3, 10, 20));
        let (addr, task) = serve(m.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        task.abort();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("application/openmetrics-text"));
        let (_, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(reply.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains("weft_trainer_step 3"), "{body}");
        assert!(body.contains("weft_trainer_bytes_received_total 20"));
    }
}
