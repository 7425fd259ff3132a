//! Raw HTTP and WebSocket exchanges from chosen loopback source addresses, for tests and
//! benchmarks that must behave like clients no library would be (idle, batching, from
//! several IPs). Linux routes all of 127.0.0.0/8 to the loopback device.

use parity_scale_codec::Encode;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use weft_primitives::Bytes;
use weft_runtime::Extrinsic;

/// Longest wait for one raw HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `127.0.0.<last>`.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection from `src` to the node's `port` on 127.0.0.1.
pub async fn connect_from(src: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(SocketAddr::new(loopback(1), port)).await
}

/// A raw HTTP response: status and body (de-chunked).
pub struct HttpReply {
    /// The status code (0 if none came).
    pub status: u16,
    /// The body.
    pub body: String,
}

/// Parses a raw HTTP response.
pub fn parse_reply(raw: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    HttpReply { status, body }
}

/// Sends raw `request` bytes from `src` and reads the reply until the server closes.
pub async fn http_raw(src: IpAddr, port: u16, request: &[u8]) -> std::io::Result<HttpReply> {
    tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut s = connect_from(src, port).await?;
        s.write_all(request).await?;
        let mut raw = Vec::new();
        // The server may close before reading all of a refused request: keep what came.
        let _ = s.read_to_end(&mut raw).await;
        Ok(parse_reply(&raw))
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP exchange"))?
}

/// POSTs a JSON body from `src` with `Connection: close`.
pub async fn http_post(src: IpAddr, port: u16, body: &str) -> std::io::Result<HttpReply> {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_raw(src, port, request.as_bytes()).await
}

/// Completes a WebSocket handshake from `src`; `Ok(None)` when refused with `429`.
pub async fn ws_handshake(src: IpAddr, port: u16) -> std::io::Result<Option<TcpStream>> {
    let mut s = connect_from(src, port).await?;
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(HTTP_TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "WS handshake"))??;
    match parse_reply(&head).status {
        101 => Ok(Some(s)),
        429 => Ok(None),
        other => Err(std::io::Error::other(format!(
            "unexpected handshake answer {other}: {}",
            String::from_utf8_lossy(&head)
        ))),
    }
}

/// Waits until the server closes `s` (EOF or reset), discarding pings; the time it took.
pub async fn closed_within(mut s: TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    tokio::time::timeout(bound, async {
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

/// Submits `xts` over HTTP from `src` in batches of `batch`; the error code of each
/// (0 = admitted).
pub async fn submit_batches(
    src: IpAddr,
    port: u16,
    xts: &[Extrinsic],
    batch: usize,
) -> std::io::Result<Vec<i64>> {
    let mut codes = Vec::with_capacity(xts.len());
    for chunk in xts.chunks(batch) {
        let calls: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, xt)| {
                serde_json::json!({
                    "jsonrpc": "2.0", "id": i, "method": "author_submitExtrinsic",
                    "params": [Bytes(xt.encode())],
                })
            })
            .collect();
        let reply = http_post(src, port, &serde_json::Value::from(calls).to_string()).await?;
        let answers: Vec<serde_json::Value> = serde_json::from_str(&reply.body)
            .ok()
            .filter(|a: &Vec<serde_json::Value>| reply.status == 200 && a.len() == chunk.len())
            .ok_or_else(|| {
                std::io::Error::other(format!("batch answered {}: {}", reply.status, reply.body))
            })?;
        codes.extend(
            answers
                .iter()
                .map(|a| a["error"]["code"].as_i64().unwrap_or(0)),
        );
    }
    Ok(codes)
}
