//! The JSON-RPC listener: admission of TCP connections before jsonrpsee sees them.
//!
//! jsonrpsee's own limit counts WebSocket sessions and in-flight HTTP requests, and it never
//! closes a WebSocket that went quiet after its handshake: 256 idle handshakes from one
//! client locked every other client out (issue 10). This accept loop bounds connections
//! instead, per TCP connection:
//!
//! * **Global cap** ([`Limits::max_connections`], `--rpc-max-connections`, default
//!   [`DEFAULT_MAX_CONNECTIONS`] = 256): open connections of any kind, HTTP keep-alive and
//!   WebSocket alike.
//! * **Per-IP cap** ([`Limits::max_per_ip`], `--rpc-max-connections-per-ip`, default
//!   [`DEFAULT_MAX_CONNECTIONS_PER_IP`] = 64): one address can take at most a quarter of
//!   the global cap, so one client cannot lock out the rest.
//! * **Idle timeout** ([`Limits::idle_timeout`], `--rpc-idle-timeout`, default 60 s): a
//!   connection from which no byte arrives for that long is closed, during the handshake,
//!   between HTTP requests and on an upgraded WebSocket alike. The server pings WebSocket
//!   clients every half timeout; their pongs are bytes, so a live client that only listens
//!   to subscriptions stays connected, while a socket that never reads nor writes is closed.
//!   An HTTP call being answered (e.g. an inference request waiting for its payment) is not
//!   idleness: the timer waits while one is in flight on the connection.
//!
//! Each HTTP request is screened on its way in ([`super::screen`]), and on an upgraded
//! WebSocket the client's frame headers are followed ([`super::frames`]) so that a
//! fragmented message past the request limit closes the connection at once.
//!
//! A connection over a cap is answered `429 Too Many Requests` and closed at once, without
//! reading its request. The permits travel inside the socket wrapper ([`Guarded`]), which
//! hyper hands on to the WebSocket task on upgrade, so a permit lives exactly as long as the
//! TCP connection.

use super::frames::FrameMeter;
use super::screen::Screen;
use super::MAX_REQUEST_BYTES;
use jsonrpsee::server::{
    serve_with_graceful_shutdown, stop_channel, Methods, Server, ServerConfig, ServerHandle,
};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections at once by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Connections at once from one IP address by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 64;
/// Idle connections are closed after this by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing the 429 answer to a refused connection may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: u32,
    /// Open connections from one IP address.
    pub max_per_ip: u32,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Whether node-changing methods are served (`--rpc-methods`).
    pub unsafe_methods: bool,
    /// Whether plain GETs of the dashboard's paths are answered with it (`--no-dashboard`
    /// turns it off; see `super::dashboard`).
    pub dashboard: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            unsafe_methods: false,
            dashboard: true,
        }
    }
}

/// Open connections per IP address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, u32>>);

impl PerIp {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// One more connection from `ip`, unless it already has `max`.
    fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpPermit> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpPermit {
            table: self.clone(),
            ip,
        })
    }
}

/// A connection counted against its IP address until dropped.
struct IpPermit {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut counts = self.table.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its connection permits and fails reads after `idle` without a
/// byte from the peer (the read error makes hyper or the WebSocket task close it).
struct Guarded {
    inner: TcpStream,
    idle: Duration,
    /// HTTP requests in flight on this connection (a long call is not idleness).
    busy: Arc<AtomicUsize>,
    /// Raised once the connection is upgraded to a WebSocket; then `frames` follows it.
    websocket: Arc<AtomicBool>,
    frames: FrameMeter,
    deadline: Pin<Box<Sleep>>,
    _global: OwnedSemaphorePermit,
    _ip: IpPermit,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                    if this.websocket.load(Ordering::Relaxed) {
                        if let Err(e) = this.frames.feed(&buf.filled()[before..]) {
                            tracing::debug!(error = %e, "closing an RPC WebSocket");
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) if this.busy.load(Ordering::Relaxed) > 0 => {
                    // A call is being answered: wait another period (and register the timer).
                    let next = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                    let _ = this.deadline.as_mut().poll(cx);
                    Poll::Pending
                }
                Poll::Ready(()) => {
                    tracing::debug!(idle = ?this.idle, "closing an idle RPC connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "RPC connection idle",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Answers a connection over a cap with 429 and closes it, within a bound.
fn refuse(mut socket: TcpStream, remote: SocketAddr, why: &'static str) {
    tracing::debug!(%remote, why, "refusing an RPC connection");
    tokio::spawn(async move {
        let body = format!("Too many connections ({why})\n");
        let response = format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            socket.write_all(response.as_bytes()).await?;
            socket.shutdown().await
        })
        .await;
    });
}

/// Serves `methods` with jsonrpsee configured by `config` on `listener`, admitting
/// connections within `limits`.
pub fn serve(
    listener: TcpListener,
    config: ServerConfig,
    methods: impl Into<Methods>,
    limits: Limits,
) -> ServerHandle {
    let (stop_handle, server_handle) = stop_channel();
    let methods: Methods = methods.into();
    let svc_builder = Server::builder().set_config(config).to_service_builder();
    let global = Arc::new(Semaphore::new(limits.max_connections as usize));
    let per_ip = Arc::new(PerIp::default());
    tokio::spawn(async move {
        loop {
            let (socket, remote) = tokio::select! {
                res = listener.accept() => match res {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically out of descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting an RPC connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop_handle.clone().shutdown() => break,
            };
            let Ok(global_permit) = global.clone().try_acquire_owned() else {
                refuse(socket, remote, "server limit");
                continue;
            };
            let Some(ip_permit) = per_ip.try_acquire(remote.ip(), limits.max_per_ip) else {
                refuse(socket, remote, "per-IP limit");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let busy = Arc::new(AtomicUsize::new(0));
            let websocket = Arc::new(AtomicBool::new(false));
            let io = Guarded {
                inner: socket,
                idle: limits.idle_timeout,
                busy: busy.clone(),
                websocket: websocket.clone(),
                frames: FrameMeter::new(u64::from(MAX_REQUEST_BYTES)),
                deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                _global: global_permit,
                _ip: ip_permit,
            };
            let svc = Screen::new(
                svc_builder
                    .clone()
                    .build(methods.clone(), stop_handle.clone()),
                busy,
                websocket,
                limits.dashboard,
            );
            let stopped = stop_handle.clone().shutdown();
            tokio::spawn(async move {
                if let Err(e) = serve_with_graceful_shutdown(io, svc, stopped).await {
                    tracing::debug!(%remote, error = %e, "RPC connection ended");
                }
            });
        }
    });
    server_handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonrpsee::RpcModule;
    use tokio::io::AsyncReadExt;

    async fn start(limits: Limits) -> SocketAddr {
        let mut module = RpcModule::new(());
        module
            .register_async_method("slow", |_, _, _| async {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                "done"
            })
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = serve(listener, ServerConfig::builder().build(), module, limits);
        // Keep the server running for the test's lifetime.
        std::mem::forget(handle);
        addr
    }

    #[tokio::test]
    async fn silent_connections_close_but_long_calls_finish() {
        let idle = Duration::from_millis(500);
        let addr = start(Limits {
            max_connections: 8,
            max_per_ip: 2,
            idle_timeout: idle,
            unsafe_methods: false,
            dashboard: true,
        })
        .await;
        // A connection that sends nothing is closed after the idle timeout.
        let started = std::time::Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= idle);
        drop(silent);
        // A call that takes three idle periods is answered.
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"slow","params":[]}"#;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.contains("\"done\""), "{out}");
        // The per-IP cap: two held, the third refused with 429.
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 429 "), "{out}");
    }
}
