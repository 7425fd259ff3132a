//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over the
//! Chrome DevTools Protocol (a JSON message per WebSocket frame) the way Puppeteer drives
//! it, with no other dependency.
//!
//! [`Browser::open`] starts `chromium --headless` on a page with its own profile directory
//! and `--remote-debugging-port=0`, reads the port Chromium chose from the profile's
//! `DevToolsActivePort`, finds the page's target in `GET /json/list` and connects to its
//! WebSocket. [`Browser::eval`] evaluates an expression in the page
//! (`Runtime.evaluate`, awaiting promises, the result by value), [`Browser::until`] waits
//! for one to take an accepted value; [`Browser::screenshot`] saves a PNG
//! (`Page.captureScreenshot`).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Socket = Compat<tokio::net::TcpStream>;

/// The Chromium binary: `$WEFT_CHROMIUM`, else `chromium` on the `PATH`.
pub fn chromium() -> PathBuf {
    std::env::var_os("WEFT_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

/// A headless Chromium showing one page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    sender: soketto::Sender<Socket>,
    receiver: soketto::Receiver<Socket>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`, the body of the answer (read to its `Content-Length`:
/// the DevTools server keeps the connection open).
async fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .map_err(|_| anyhow!("no complete answer from the browser's {path}"))??;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            match length {
                Some(len) if body.len() >= len => return Ok(body[..len].to_string()),
                None if n == 0 => return Ok(body.to_string()),
                _ => {}
            }
        }
        if n == 0 {
            bail!("the browser closed before answering {path}");
        }
    }
}

impl Browser {
    /// Opens `url` in a new headless Chromium of `width` × `height` pixels.
    pub async fn open(url: &str, (width, height): (u32, u32)) -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromium().display()))?;
        let port = Self::devtools_port(profile.path()).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = loop {
            let list: Value = serde_json::from_str(&http_get(port, "/json/list").await?)?;
            let page = list.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            match page {
                Some(ws) => break ws,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                None => bail!("Chromium shows no page"),
            }
        };
        let path = target
            .split_once(&format!("127.0.0.1:{port}"))
            .map(|(_, p)| p.to_string())
            .ok_or_else(|| anyhow!("unexpected DevTools address {target}"))?;
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await?
            .compat();
        let host = format!("127.0.0.1:{port}");
        let mut client = soketto::handshake::Client::new(socket, &host, &path);
        match client.handshake().await? {
            soketto::handshake::ServerResponse::Accepted { .. } => {}
            soketto::handshake::ServerResponse::Redirect { status_code, .. }
            | soketto::handshake::ServerResponse::Rejected { status_code } => {
                bail!("DevTools refused the WebSocket: {status_code}")
            }
        }
        let (sender, receiver) = client.into_builder().finish();
        let mut browser = Browser {
            child,
            _profile: profile,
            sender,
            receiver,
            next_id: 1,
        };
        browser.command("Runtime.enable", json!({})).await?;
        Ok(browser)
    }

    /// The DevTools port Chromium writes into its profile once it listens.
    async fn devtools_port(profile: &Path) -> Result<u16> {
        let file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    return Ok(port);
                }
            }
            if Instant::now() > deadline {
                bail!("Chromium did not open its DevTools port within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends one DevTools command and returns its result (events in between are skipped).
    pub async fn command(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.sender.send_text(msg).await?;
        self.sender.flush().await?;
        loop {
            let mut data = Vec::new();
            self.receiver.receive_data(&mut data).await?;
            let v: Value = serde_json::from_slice(&data)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// The value of `expression` in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until `accept` takes its value, for at most
    /// `timeout`; the error names `what` and the last value seen. An evaluation that throws
    /// (the page is navigating, an element is not there yet) counts as not accepted, and the
    /// last such error is reported.
    pub async fn until<T>(
        &mut self,
        expression: &str,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&Value) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(expression).await {
                Ok(v) => match accept(&v) {
                    Some(t) => return Ok(t),
                    None => format!("{v} on screen"),
                },
                Err(e) => format!("an error: {e}"),
            };
            if Instant::now() > deadline {
                bail!("{what}: still {last} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Loads `url` afresh (through `about:blank`, so nothing of the previous document is
    /// read as the new one's).
    pub async fn navigate(&mut self, url: &str) -> Result<()> {
        self.command("Page.navigate", json!({ "url": "about:blank" }))
            .await?;
        self.until(
            "location.href",
            "about:blank",
            Duration::from_secs(10),
            |v| (v == "about:blank").then_some(()),
        )
        .await?;
        self.command("Page.navigate", json!({ "url": url })).await?;
        Ok(())
    }

    /// How long the dashboard page took from navigation until its route drew with its data
    /// (`#page[data-since-navigation-ms]`, set by the page), ms.
    pub async fn load_ms(&mut self, url: &str, timeout: Duration) -> Result<f64> {
        self.navigate(url).await?;
        self.until(
            "Number(document.getElementById('page')?.dataset.sinceNavigationMs ?? NaN)",
            url,
            timeout,
            |v| v.as_f64(),
        )
        .await
    }

    /// Shows `hash` (`#/run/0`) in the page, as a click on a link would.
    pub async fn go(&mut self, hash: &str) -> Result<()> {
        self.eval(&format!("location.hash = {}", json!(hash)))
            .await?;
        Ok(())
    }

    /// Saves the whole page (not only what the window shows) as a PNG at `path`.
    pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
        use base64::Engine as _;
        let metrics = self.command("Page.getLayoutMetrics", json!({})).await?;
        let size = &metrics["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size["width"].as_f64().unwrap_or(1280.0),
            "height": size["height"].as_f64().unwrap_or(900.0),
        });
        let r = self
            .command(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
            )
            .await?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

/// Plancks as the dashboard shows them: WEFT with four decimals.
pub fn shown_weft(plancks: u128) -> String {
    let unit = weft_primitives::units::UNIT;
    format!(
        "{}.{:04} WEFT",
        plancks / unit,
        (plancks % unit) * 10_000 / unit
    )
}
