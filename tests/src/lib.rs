//! # weft-tests
//!
//! A harness for end-to-end tests that run the real binaries (`weft-node`, `weft`) on
//! loopback and talk to them as users do:
//!
//! * [`bin`] finds a built binary next to the test executable
//!   (`$CARGO_TARGET_DIR/<profile>/`);
//! * [`Node`] starts `weft-node --dev` on free ports in a base directory, waits until its RPC
//!   server answers `system_health`, and kills it (SIGKILL) on demand or when dropped;
//! * [`wait_until`] / [`wait_for`] poll a condition against a deadline (never a fixed sleep);
//! * [`run_cli`] runs `weft --url … <args>` and captures its exit status and output;
//! * [`Spawned`] runs a long-lived binary (`weft-trainer`, `weft-adversary`) with a log file.
//!
//! Build the binaries first: `cargo build --release --workspace --bins`.

use anyhow::{bail, Context, Result};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use weft_rpc_api::ChainApiClient;

pub mod browser;
pub mod raw;
pub mod runs;
pub mod testnet;

/// How long a node may take to answer its first RPC call.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The block time the test nodes run with.
pub const BLOCK_TIME: &str = "200ms";

pub use weft_runtime::genesis::DEV_ACCOUNTS;

/// The key pairs of [`DEV_ACCOUNTS`], the accounts the dev and local chain specs endow.
pub fn dev_keypairs() -> Result<Vec<weft_primitives::Keypair>> {
    DEV_ACCOUNTS
        .iter()
        .map(|s| weft_primitives::Keypair::from_suri(s).map_err(anyhow::Error::from))
        .collect()
}

/// The `p`-quantile (0 ≤ p ≤ 1) of `sorted` (ascending), nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `weft-node purge-chain --chain <chain> -y --base-path <base>`.
pub fn purge_chain(chain: &str, base: &Path) -> Result<()> {
    let out = Command::new(bin("weft-node"))
        .args(["purge-chain", "--chain", chain, "-y", "--base-path"])
        .arg(base)
        .output()
        .context("running weft-node purge-chain")?;
    if !out.status.success() {
        bail!(
            "purge-chain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The path of the built binary `name` (`weft-node`, `weft`): the test executable lives in
/// `<target>/<profile>/deps/`, the binaries in `<target>/<profile>/`.
///
/// Panics with instructions when it is not built.
pub fn bin(name: &str) -> PathBuf {
    let found = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        let profile = if deps.ends_with("deps") {
            deps.parent()?
        } else {
            deps
        };
        let path = profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        Some(path)
    });
    match found {
        Some(path) if path.is_file() => path,
        Some(path) => panic!(
            "binary {name:?} not found at {}: build the binaries first with \
             `cargo build --release --workspace --bins` (same profile and CARGO_TARGET_DIR \
             as the tests)",
            path.display()
        ),
        None => panic!("cannot locate the test executable to find the {name:?} binary"),
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released; another process could take it
/// in between, which is unlikely on loopback), never one this test process handed out
/// before: the kernel may offer a released port again, and two trainers told the same port
/// would share it (libp2p listens with address reuse), each losing the other's requests.
pub fn pick_free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let port = match TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("cannot bind a loopback port: {e}"),
        };
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if taken.insert(port) {
            return port;
        }
    }
}

/// Polls `condition` every [`POLL_INTERVAL`] until it holds; fails after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Some`; fails after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Serialises the tests that start nodes, so that `cargo test` without `--test-threads 1`
/// does not run several nodes at once on a small machine. Hold the guard for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A running `weft-node --dev`.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    /// The JSON-RPC port (HTTP and WebSocket).
    pub rpc_port: u16,
    /// The Prometheus metrics port.
    pub prometheus_port: u16,
    /// The node's base directory (database, keys, log).
    pub base_path: PathBuf,
    /// Where the node's stdout and stderr go.
    pub log_path: PathBuf,
    /// The arguments that select the chain: `--dev`, or `--chain local` with the node's
    /// peer-to-peer settings.
    chain_args: Vec<String>,
    /// The binary: `weft-node`, or the test-only `weft-equivocator`.
    binary: &'static str,
}

impl Node {
    /// Starts `weft-node --dev --base-path <base_path> --rpc-port <free> --prometheus-port
    /// <free> --block-time 200ms <extra_args>` and waits until it answers `system_health`.
    /// The node's output is appended to `<base_path>/node.log`.
    pub async fn start(base_path: &Path, extra_args: &[&str]) -> Result<Node> {
        let rpc_port = pick_free_port();
        let mut prometheus_port = pick_free_port();
        while prometheus_port == rpc_port {
            prometheus_port = pick_free_port();
        }
        let mut node = Node {
            child: None,
            rpc_port,
            prometheus_port,
            base_path: base_path.to_path_buf(),
            log_path: base_path.join("node.log"),
            chain_args: vec!["--dev".into()],
            binary: "weft-node",
        };
        node.spawn(extra_args).await?;
        Ok(node)
    }

    /// Starts a node of the local Tendermint testnet (`--chain local`) listening for peers
    /// on 127.0.0.1:`p2p_port`, without waiting for it (several must start before any
    /// finalizes); call [`Node::wait_ready`] next. `extra_args` carry `--validator --key …`,
    /// `--bootnodes …`.
    pub fn spawn_local(
        binary: &'static str,
        base_path: &Path,
        p2p_port: u16,
        extra_args: &[&str],
    ) -> Result<Node> {
        let rpc_port = pick_free_port();
        let prometheus_port = pick_free_port();
        let mut node = Node {
            child: None,
            rpc_port,
            prometheus_port,
            base_path: base_path.to_path_buf(),
            log_path: base_path.join("node.log"),
            chain_args: vec![
                "--chain".into(),
                "local".into(),
                "--listen-addr".into(),
                format!("/ip4/127.0.0.1/tcp/{p2p_port}"),
                "--node-key-file".into(),
                base_path.join("node-key").display().to_string(),
            ],
            binary,
        };
        node.spawn_process(extra_args)?;
        Ok(node)
    }

    /// Starts the node again (after [`Node::kill9`]) on the same base path and ports, so
    /// that clients of the old one can reconnect to the same URL.
    pub async fn restart(&mut self, extra_args: &[&str]) -> Result<()> {
        if self.child.is_some() {
            bail!("the node is still running");
        }
        self.spawn(extra_args).await
    }

    async fn spawn(&mut self, extra_args: &[&str]) -> Result<()> {
        self.spawn_process(extra_args)?;
        self.wait_ready().await
    }

    fn spawn_process(&mut self, extra_args: &[&str]) -> Result<()> {
        let base_path = self.base_path.clone();
        std::fs::create_dir_all(&base_path)
            .with_context(|| format!("creating {}", base_path.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log handle")?;
        let child = Command::new(bin(self.binary))
            .args(&self.chain_args)
            .arg("--base-path")
            .arg(&base_path)
            .args(["--rpc-port", &self.rpc_port.to_string()])
            .args(["--prometheus-port", &self.prometheus_port.to_string()])
            .args(if extra_args.contains(&"--block-time") {
                vec![]
            } else {
                vec!["--block-time", BLOCK_TIME]
            })
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .context("spawning weft-node")?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the node again without waiting (see [`Node::spawn_local`]).
    pub fn respawn(&mut self, extra_args: &[&str]) -> Result<()> {
        if self.child.is_some() {
            bail!("the node is still running");
        }
        self.spawn_process(extra_args)
    }

    /// Waits until the node answers `system_health`.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let url = self.ws_url();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "weft-node exited with {status} before answering RPC; log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if let Ok(client) = WsClientBuilder::default().build(&url).await {
                if client.system_health().await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "weft-node did not answer system_health on {url} within {NODE_START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the node process in KiB (Linux `/proc`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The last lines of the node's log (for failure messages).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 40)
    }

    /// The value of the Prometheus sample `name` (without labels), read from the node's
    /// metrics endpoint; `None` if the node does not report it.
    pub async fn metric(&self, name: &str) -> Result<Option<f64>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.prometheus_port)).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body))
            .await
            .context("reading the metrics")??;
        Ok(body.lines().find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().ok()).flatten()
        }))
    }

    /// `ws://127.0.0.1:<rpc_port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.rpc_port)
    }

    /// `http://127.0.0.1:<rpc_port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// A new WebSocket JSON-RPC client to the node.
    pub async fn client(&self) -> Result<WsClient> {
        WsClientBuilder::default()
            .build(self.ws_url())
            .await
            .with_context(|| format!("connecting to {}", self.ws_url()))
    }

    /// A new [`weft_cli::Client`] to the node.
    pub async fn cli_client(&self) -> Result<weft_cli::Client> {
        Ok(weft_cli::Client::connect(&self.ws_url()).await?)
    }

    /// Runs `weft --url <this node> <args>`.
    pub async fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        run_cli(&self.ws_url(), args).await
    }

    /// Kills the node with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the node was already killed");
        };
        child.kill().context("sending SIGKILL to weft-node")?;
        child.wait().context("reaping weft-node")
    }

    /// Whether the node process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A long-running binary (a trainer, an auditor) started for a test: its output goes to a
/// log file; it is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// What it is, for messages.
    pub name: String,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
}

impl Spawned {
    /// Starts the built binary `binary` with `args`, logging to `<log_dir>/<name>.log`.
    pub fn start(binary: &str, args: &[String], log_dir: &Path, name: &str) -> Result<Spawned> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log handle")?;
        let child = Command::new(bin(binary))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {binary}"))?;
        Ok(Spawned {
            child,
            name: name.to_string(),
            log_path,
        })
    }

    /// Its exit status if it has exited (without waiting).
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("polling {}", self.name))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        format!("--- {} ---\n{}", self.name, log_tail(&self.log_path, 30))
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends it SIGTERM (what `systemctl stop` sends), through procps' `kill`.
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.name);
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `weft` run printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `weft --url <url> <args>` and captures its output.
pub async fn run_cli(url: &str, args: &[&str]) -> Result<CliOutput> {
    let out = tokio::process::Command::new(bin("weft"))
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("WEFT_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running weft")?;
    Ok(CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let p = pick_free_port();
        assert!(p > 0);
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }

    #[tokio::test]
    async fn wait_until_polls_and_times_out() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "counter", || {
            n += 1;
            let done = n >= 3;
            async move { done }
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
        let err = wait_until(Duration::from_millis(120), "never", || async { false })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("never"));
        let v = wait_for(Duration::from_secs(1), "value", || async { Some(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
}
