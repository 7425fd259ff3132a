//! HTTP serving of the gateway: hyper 1 (HTTP/1.1) over tokio, routing, request bodies,
//! OpenAI-shaped errors, the per-request flow (estimate → pay → generate or stream) and its
//! log line.
//!
//! | Path | Method | |
//! |---|---|---|
//! | `/v1/models` | GET | the one model |
//! | `/v1/models/{id}` | GET | it, or 404 |
//! | `/v1/completions` | POST | text completion |
//! | `/v1/chat/completions` | POST | chat completion |
//!
//! A request from a web page whose origin is not allowed is refused with 403 before anything
//! else ([`super::origins`]); `OPTIONS` preflights of allowed origins are answered there.
//!
//! Errors are `{"error": {"message", "type", "param", "code"}}` with the status: 400 for
//! invalid JSON, missing fields and parameters the node cannot serve; 402 for an unpaid or
//! refused payment (e.g. too few credentials); 404 for unknown paths, models and runs; 405
//! (with `Allow`) for a wrong method; 413 for a body over [`MAX_BODY`]; 429 with
//! `Retry-After` (seconds, rounded up) when the node is busy; 502 when the node cannot be
//! reached or fails; 503 when the run cannot serve now.

use super::backend::{quote, Backend, BackendError};
use super::openai::{
    error_body, model_list, model_object, response, ChatRequest, CompletionRequest, Invalid, Kind,
};
use super::origins::{expose, preflight, Admission};
use super::sse::{frame, Chunks, DONE};
use super::Gateway;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use weft_rpc_api::inference::GenerateEvent;

/// The largest request body, bytes.
pub const MAX_BODY: usize = 1 << 20;

/// A response body: a whole JSON document or an event stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error.type`.
    pub kind: &'static str,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.param`.
    pub param: Option<&'static str>,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            param: None,
            retry_after: None,
        }
    }

    fn bad(code: &'static str, message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        error_body(&self.message, self.kind, self.code, self.param)
    }

    /// The response.
    pub fn response(&self) -> Response<Body> {
        let mut r = json_response(self.status, &self.body());
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError {
            param: e.param,
            ..ApiError::bad("invalid_params", e.message)
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        match e {
            BackendError::BadParams(_) => ApiError::bad("invalid_params", message),
            BackendError::Unpaid(_) | BackendError::PaymentLost(_) => Self::new(
                S::PAYMENT_REQUIRED,
                "insufficient_credentials",
                "unpaid",
                message,
            ),
            BackendError::Unavailable(_) => Self::new(
                S::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "unavailable",
                message,
            ),
            BackendError::Busy { retry_after_ms, .. } => ApiError {
                retry_after: Some(retry_after_ms.div_ceil(1000)),
                ..Self::new(S::TOO_MANY_REQUESTS, "rate_limit_error", "busy", message)
            },
            BackendError::UnknownRun(_) => Self::new(
                S::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                message,
            ),
            BackendError::Node(_) => Self::new(S::BAD_GATEWAY, "api_error", "node_error", message),
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Serves `gateway` on `listener` until the task is dropped; each connection runs in its
/// own task.
pub async fn serve<B: Backend>(listener: TcpListener, gateway: Arc<Gateway<B>>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gw = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(gw.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn handle<B: Backend>(
    gw: Arc<Gateway<B>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let refused = |e: ApiError| {
        tracing::info!(%method, %path, status = e.status.as_u16(), "refused: {}", e.message);
        e.response()
    };
    let r = match gw.origins.admit(req.headers()) {
        Err(origin) => refused(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "origin_not_allowed",
            format!("pages of {origin} may not use this gateway; start it with --allow-origin {origin} to let them"),
        )),
        Ok(Admission::Allowed(origin)) if method == hyper::Method::OPTIONS => {
            let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
            *r.status_mut() = preflight(r.headers_mut(), origin);
            r
        }
        Ok(admission) => {
            let mut r = route(&gw, req).await.unwrap_or_else(refused);
            if let Admission::Allowed(origin) = admission {
                expose(r.headers_mut(), origin);
            }
            r
        }
    };
    tracing::info!(
        %method,
        %path,
        status = r.status().as_u16(),
        ms = start.elapsed().as_millis() as u64,
        "request"
    );
    Ok(r)
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("use {allow}"),
    )
}

async fn route<B: Backend>(
    gw: &Gateway<B>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let (allow, kind) = match path.as_str() {
        "/v1/models" => ("GET", None),
        "/v1/completions" => ("POST", Some(Kind::Text)),
        "/v1/chat/completions" => ("POST", Some(Kind::Chat)),
        p if p.starts_with("/v1/models/") => ("GET", None),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                format!("no such path: {path}"),
            ))
        }
    };
    if req.method().as_str() != allow {
        let mut r = method_not_allowed(allow).response();
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return Ok(r);
    }
    match kind {
        Some(kind) => completion(gw, req, kind).await,
        None => match path.strip_prefix("/v1/models/") {
            None => Ok(json_response(StatusCode::OK, &model_list(&gw.model))),
            Some(id) if id == gw.model => Ok(json_response(StatusCode::OK, &model_object(id))),
            Some(id) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {id:?} does not exist; this gateway serves {:?}",
                    gw.model
                ),
            )),
        },
    }
}

/// The JSON document of the request's body (at most [`MAX_BODY`] bytes).
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is over {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::bad(
                "invalid_body",
                format!("reading the body: {e}"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad("invalid_params", e.to_string()),
        _ => ApiError::bad("invalid_json", format!("invalid JSON: {e}")),
    })
}

async fn completion<B: Backend>(
    gw: &Gateway<B>,
    req: Request<Incoming>,
    kind: Kind,
) -> Result<Response<Body>, ApiError> {
    let (params, sampling) = match kind {
        Kind::Text => {
            let r: CompletionRequest = read_json(req).await?;
            (r.params(gw.run)?, r.sampling)
        }
        Kind::Chat => {
            let r: ChatRequest = read_json(req).await?;
            (r.params(gw.run)?, r.sampling)
        }
    };
    let estimate = quote(&gw.backend, &params).await?;
    tracing::info!(
        run = gw.run,
        tokens = estimate.total_tokens,
        credentials = %estimate.credentials,
        step = ?estimate.step,
        stream = sampling.streamed(),
        "paying"
    );
    let payment = gw.backend.pay(&estimate).await?;
    let created = now_secs();
    if !sampling.streamed() {
        let c = gw.backend.generate(params, payment).await?;
        tracing::info!(
            request = c.request_id,
            payment = %c.payment,
            step = c.step,
            tokens = c.tokens.len(),
            finish = %c.finish_reason,
            "completed"
        );
        return Ok(json_response(
            StatusCode::OK,
            &response(kind, &gw.model, created, &c),
        ));
    }
    let events = gw.backend.stream(params, payment).await?;
    let chunks = Chunks::new(kind, &estimate.request_hash.to_hex(), &gw.model, created);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(pump(events, chunks, sampling.include_usage(), tx));
    let body = StreamBody::new(rx.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// Turns the node's events into SSE frames until the end, a failure or the client leaving
/// (dropping `events` then ends the subscription).
async fn pump(
    mut events: super::backend::EventStream,
    chunks: Chunks,
    usage: bool,
    mut tx: mpsc::Sender<Bytes>,
) {
    let mut out = Vec::new();
    let mut streamed = String::new();
    if let Some(s) = chunks.start() {
        out.push(frame(&s));
    }
    loop {
        for b in out.drain(..) {
            if tx.send(b).await.is_err() {
                tracing::info!(id = %chunks.id, "the client left the stream");
                return;
            }
        }
        let failed = match events.next().await {
            Some(Ok(GenerateEvent::Token { text, .. })) => {
                if !text.is_empty() {
                    out.push(frame(&chunks.text(&text)));
                    streamed.push_str(&text);
                }
                continue;
            }
            Some(Ok(GenerateEvent::Done(c))) => {
                let tail = weft_rpc_api::inference::stream_tail(&streamed, &c);
                if !tail.is_empty() {
                    out.push(frame(&chunks.text(tail)));
                }
                tracing::info!(
                    id = %chunks.id,
                    request = c.request_id,
                    payment = %c.payment,
                    step = c.step,
                    tokens = c.tokens.len(),
                    finish = %c.finish_reason,
                    "streamed"
                );
                out.push(frame(&chunks.finish(&c)));
                if usage {
                    out.push(frame(&chunks.usage(&c)));
                }
                out.push(Bytes::from_static(DONE.as_bytes()));
                for b in out.drain(..) {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Some(Ok(GenerateEvent::Error { code, message })) => {
                BackendError::from_code(code, &message, None)
            }
            Some(Err(e)) => e,
            None => BackendError::Node("the node ended the stream without a result".into()),
        };
        tracing::warn!(id = %chunks.id, "stream failed: {failed}");
        let _ = tx.send(frame(&ApiError::from(failed).body())).await;
        return;
    }
}
