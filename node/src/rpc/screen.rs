//! Screening of HTTP JSON-RPC requests before jsonrpsee sees them (issue 10, item 6).
//!
//! Two cases jsonrpsee 0.26 answers badly:
//!
//! * **A chunked body past the limit.** jsonrpsee checks `Content-Length` against the 2 MiB
//!   limit and answers 413, but a chunked body (no length) overflows inside its reader and
//!   comes back as 500 / -32603. Here every body is read through a [`Limited`] reader first:
//!   past [`super::MAX_REQUEST_BYTES`] the answer is jsonrpsee's own 413, whatever the
//!   framing.
//! * **An id that is neither a string, an unsigned integer nor null** (an object, an array,
//!   `1e400`, `-1`, `1.5`). jsonrpsee cannot parse such a call and then reads it as a
//!   *notification* (which has no id), so the client gets the body `null`. Here each call
//!   with such an id is answered `-32600 Invalid request` with id `null`, as JSON-RPC 2.0
//!   asks; in a batch, the other calls go on to jsonrpsee and the answers are merged.
//!
//! WebSocket upgrades pass through untouched (their messages are bounded by jsonrpsee's
//! WebSocket reader). Plain GETs of the dashboard's paths are answered by
//! [`super::dashboard`] unless it is turned off.

use super::MAX_REQUEST_BYTES;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::HttpBody;
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// The JSON-RPC error of a call with an unusable id.
const INVALID_ID_REPLY: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request"}}"#;

/// Whether a raw JSON id is one jsonrpsee can carry (null, a string, a `u64`).
fn usable_id(raw: &RawValue) -> bool {
    let text = raw.get().trim();
    text == "null" || text.starts_with('"') || text.parse::<u64>().is_ok()
}

#[derive(serde::Deserialize)]
struct IdProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Whether one call (a JSON object) has an id that jsonrpsee cannot carry.
fn bad_id(call: &RawValue) -> bool {
    serde_json::from_str::<IdProbe<'_>>(call.get())
        .ok()
        .and_then(|p| p.id)
        .is_some_and(|id| !usable_id(id))
}

/// What to do with a request body.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Hand it to jsonrpsee as it is.
    Forward,
    /// Answer this at once.
    Answer(String),
    /// A batch: forward this (smaller) batch and append these answers to its reply.
    Split {
        forward: Option<String>,
        answers: Vec<String>,
    },
}

fn plan(body: &[u8]) -> Plan {
    let Ok(raw) = serde_json::from_slice::<&RawValue>(body) else {
        return Plan::Forward;
    };
    if raw.get().starts_with('[') {
        let Ok(calls) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
            return Plan::Forward;
        };
        if !calls.iter().any(|c| bad_id(c)) {
            return Plan::Forward;
        }
        let (bad, good): (Vec<&RawValue>, Vec<&RawValue>) =
            calls.into_iter().partition(|c| bad_id(c));
        let forward = (!good.is_empty()).then(|| {
            let parts: Vec<&str> = good.iter().map(|c| c.get()).collect();
            format!("[{}]", parts.join(","))
        });
        Plan::Split {
            forward,
            answers: bad.iter().map(|_| INVALID_ID_REPLY.to_string()).collect(),
        }
    } else if bad_id(raw) {
        Plan::Answer(INVALID_ID_REPLY.to_string())
    } else {
        Plan::Forward
    }
}

fn json(body: String) -> Response<HttpBody> {
    let mut r = Response::new(HttpBody::from(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Wraps jsonrpsee's per-connection service.
#[derive(Clone)]
pub struct Screen<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
    websocket: Arc<AtomicBool>,
    dashboard: bool,
}

impl<S> Screen<S> {
    /// Screens requests to `inner`, counting those in flight in `busy` (the connection's
    /// idle timer does not fire while one is) and raising `websocket` on an upgrade request
    /// (from then on the connection's bytes are WebSocket frames, see [`super::frames`]);
    /// with `dashboard`, plain GETs of its paths are answered by [`super::dashboard`].
    pub fn new(
        inner: S,
        busy: Arc<AtomicUsize>,
        websocket: Arc<AtomicBool>,
        dashboard: bool,
    ) -> Self {
        Screen {
            inner,
            busy,
            websocket,
            dashboard,
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        InFlight(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S> Service<Request<Incoming>> for Screen<S>
where
    S: Service<Request<HttpBody>, Response = Response<HttpBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let in_flight = InFlight::new(&self.busy);
        let websocket = self.websocket.clone();
        let dashboard = self.dashboard;
        Box::pin(async move {
            let _in_flight = in_flight;
            let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
            if upgrade {
                // A client sends frames only after the 101 answer to this request.
                websocket.store(true, Ordering::Relaxed);
            }
            if dashboard && !upgrade {
                if let Some(page) = super::dashboard::answer(req.method(), req.uri().path()) {
                    return Ok(page);
                }
            }
            if upgrade || req.method() != hyper::Method::POST {
                return inner.oneshot(req.map(HttpBody::new)).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, MAX_REQUEST_BYTES as usize)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    tracing::debug!("RPC request body over the limit");
                    return Ok(jsonrpsee::server::http::response::too_large(
                        MAX_REQUEST_BYTES,
                    ));
                }
                Err(e) => return Err(e),
            };
            match plan(&bytes) {
                Plan::Forward => {
                    inner
                        .oneshot(Request::from_parts(parts, HttpBody::from(bytes.to_vec())))
                        .await
                }
                Plan::Answer(reply) => Ok(json(reply)),
                Plan::Split { forward, answers } => {
                    let mut all: Vec<String> = Vec::new();
                    if let Some(batch) = forward {
                        let reply = inner
                            .oneshot(Request::from_parts(parts, HttpBody::from(batch)))
                            .await?;
                        let body = reply.into_body().collect().await?.to_bytes();
                        match serde_json::from_slice::<Vec<Box<RawValue>>>(&body) {
                            Ok(items) => all.extend(items.into_iter().map(|i| i.get().to_string())),
                            // Not an array (e.g. a batch-level error): pass it on alone.
                            Err(_) => return Ok(json(String::from_utf8_lossy(&body).into_owned())),
                        }
                    }
                    all.extend(answers);
                    Ok(json(format!("[{}]", all.join(","))))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_ids_are_answered_here_and_the_rest_forwarded() {
        for body in [
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","id":1e400,"method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"system_health"}"#,
        ] {
            assert_eq!(
                plan(body.as_bytes()),
                Plan::Answer(INVALID_ID_REPLY.into()),
                "{body}"
            );
        }
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","method":"system_health"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"system_health"}"#,
            "not json",
        ] {
            assert_eq!(plan(body.as_bytes()), Plan::Forward, "{body}");
        }
        let batch =
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":{},"method":"b"}]"#;
        assert_eq!(
            plan(batch.as_bytes()),
            Plan::Split {
                forward: Some(r#"[{"jsonrpc":"2.0","id":1,"method":"a"}]"#.into()),
                answers: vec![INVALID_ID_REPLY.into()],
            }
        );
    }
}
