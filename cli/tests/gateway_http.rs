//! The gateway over real HTTP: the hyper server on 127.0.0.1:0 with a test backend, driven
//! by hyper's HTTP/1.1 client (and a raw socket for the oversized body).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures::stream;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_cli::gateway::backend::NonceTracker;
use weft_cli::gateway::{
    serve, AllowedOrigins, Backend, BackendError, EventStream, Gateway, Payment,
};
use weft_primitives::{Bytes as WeftBytes, Hash};
use weft_rpc_api::inference::{CompletionJson, EstimateJson, GenerateEvent, InferenceParams};

/// Answers every prompt with "héllo" (6 bytes, one of them split: an empty text event);
/// prompts naming an error make it.
#[derive(Default)]
struct TestBackend {
    seen: Mutex<Vec<InferenceParams>>,
    nonces: tokio::sync::Mutex<NonceTracker>,
    requests: AtomicU64,
}

const ANSWER: &str = "héllo";
/// The request hash of a prompt whose payment is refused.
const POOR: Hash = Hash([0xee; 32]);

fn prompt_of(p: &InferenceParams) -> String {
    p.prompt.clone().unwrap_or_default()
}

fn completion(p: &InferenceParams, id: u64) -> CompletionJson {
    CompletionJson {
        run: p.run,
        request_id: id,
        payment: Hash([7; 32]),
        step: 11,
        text: ANSWER.into(),
        tokens: ANSWER.bytes().map(u32::from).collect(),
        finish_reason: "length".into(),
        prompt_tokens: prompt_of(p).len() as u32,
        route: vec![],
        attempts: 1,
    }
}

impl Backend for TestBackend {
    async fn estimate(&self, p: &InferenceParams) -> Result<EstimateJson, BackendError> {
        self.seen.lock().unwrap().push(p.clone());
        let prompt = prompt_of(p);
        if prompt.contains("busy") {
            return Err(BackendError::Busy {
                retry_after_ms: 1500,
                message: "full".into(),
            });
        }
        if prompt.contains("bad") {
            return Err(BackendError::BadParams("the prompt is too long".into()));
        }
        let total = prompt.len() as u32 + p.max_tokens;
        Ok(EstimateJson {
            run: p.run,
            prompt_tokens: prompt.len() as u32,
            total_tokens: total,
            credentials: total.to_string(),
            credentials_per_token: "1".into(),
            request_hash: if prompt.contains("poor") {
                POOR
            } else {
                Hash([0xab; 32])
            },
            step: Some(11),
            unavailable: prompt
                .contains("halted")
                .then(|| "run 1 is halted".to_string()),
        })
    }

    async fn pay(&self, e: &EstimateJson) -> Result<Payment, BackendError> {
        if e.request_hash == POOR {
            return Err(BackendError::Unpaid("too few credentials".into()));
        }
        let nonce = self.nonces.lock().await.take(0);
        Ok(Payment {
            extrinsic: WeftBytes(vec![1, 2, 3]),
            nonce,
        })
    }

    async fn generate(
        &self,
        p: InferenceParams,
        _payment: Payment,
    ) -> Result<CompletionJson, BackendError> {
        let id = self.requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(completion(&p, id))
    }

    async fn stream(
        &self,
        p: InferenceParams,
        _payment: Payment,
    ) -> Result<EventStream, BackendError> {
        let id = self.requests.fetch_add(1, Ordering::SeqCst);
        let bytes = ANSWER.as_bytes();
        let mut events: Vec<Result<GenerateEvent, BackendError>> = vec![
            Ok(GenerateEvent::Token {
                token: u32::from(bytes[0]),
                text: "h".into(),
            }),
            Ok(GenerateEvent::Token {
                token: u32::from(bytes[1]),
                text: String::new(),
            }),
            Ok(GenerateEvent::Token {
                token: u32::from(bytes[2]),
                text: "é".into(),
            }),
            Ok(GenerateEvent::Token {
                token: u32::from(bytes[3]),
                text: "llo".into(),
            }),
        ];
        if prompt_of(&p).contains("crash") {
            events.push(Ok(GenerateEvent::Error {
                code: 4012,
                message: "a stage holder left".into(),
            }));
        } else {
            events.push(Ok(GenerateEvent::Done(completion(&p, id))));
        }
        Ok(Box::pin(stream::iter(events)))
    }
}

async fn start() -> (SocketAddr, Arc<Gateway<TestBackend>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(TestBackend::default(), 1, None);
    tokio::spawn(serve(listener, gw.clone()));
    (addr, gw)
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    call_with(addr, method, path, body, &[]).await
}

async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    let req = headers
        .iter()
        .fold(req, |r, (k, v)| r.header(*k, *v))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn call_json(addr: SocketAddr, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, h, b) = call(addr, method, path, &body.to_string()).await;
    assert_eq!(h["content-type"], "application/json");
    (s, serde_json::from_slice(&b).unwrap())
}

/// The JSON events of an SSE body, and whether it ended with `[DONE]`.
fn events(body: &[u8]) -> (Vec<Value>, bool) {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    let mut out = Vec::new();
    let mut done = false;
    for ev in text.split_terminator("\n\n") {
        let data = ev.strip_prefix("data: ").expect("a data line");
        if data == "[DONE]" {
            done = true;
        } else {
            assert!(!done, "nothing after [DONE]");
            out.push(serde_json::from_str(data).unwrap());
        }
    }
    (out, done)
}

#[tokio::test]
async fn models_and_completions() {
    let (addr, gw) = start().await;
    let (s, v) = call_json(addr, "GET", "/v1/models", json!(null)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"id": "weft-run-1", "object": "model", "created": 0,
            "owned_by": "weft"}]})
    );
    let (s, _) = call_json(addr, "GET", "/v1/models/weft-run-1", json!(null)).await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/completions",
        json!({"model": "weft-run-1", "prompt": "Once", "max_tokens": 6, "stop": "\n",
            "frequency_penalty": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "weft-run-1");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        v["choices"],
        json!([{"text": ANSWER, "index": 0, "logprobs": null, "finish_reason": "length"}])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10})
    );

    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": ANSWER})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let seen = gw.backend.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.prompt.as_deref(), Some("user: Hi\nassistant:"));
    assert_eq!(seen.stop, vec!["\n".to_string()]);
    assert_eq!(seen.max_tokens, 6);
}

#[tokio::test]
async fn streamed_completions_and_chat() {
    let (addr, _) = start().await;
    let body = json!({"prompt": "Once", "stream": true, "stream_options": {"include_usage": true}});
    let (s, h, b) = call(addr, "POST", "/v1/completions", &body.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/event-stream");
    let (evs, done) = events(&b);
    assert!(done);
    let texts: Vec<&str> = evs[..3]
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["h", "é", "llo"], "no chunk for the empty text");
    for e in &evs[..3] {
        assert_eq!(e["object"], "text_completion");
        assert_eq!(e["id"], evs[0]["id"]);
        assert_eq!(e["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(evs[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(evs[3]["choices"][0]["text"], "");
    assert_eq!(evs[4]["usage"]["total_tokens"], 10);
    assert_eq!(evs.len(), 5);

    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "stream": true});
    let (s, _, b) = call(addr, "POST", "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let (evs, done) = events(&b);
    assert!(done);
    assert_eq!(evs.len(), 5, "role, 3 texts, finish");
    assert!(evs.iter().all(|e| e["object"] == "chat.completion.chunk"));
    assert_eq!(
        evs[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = evs[1..4]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, ANSWER);
    assert_eq!(evs[4]["choices"][0]["delta"], json!({}));
    assert_eq!(evs[4]["choices"][0]["finish_reason"], "length");

    // A failure after the stream began: an error event, no [DONE].
    let body = json!({"prompt": "crash", "stream": true});
    let (_, _, b) = call(addr, "POST", "/v1/completions", &body.to_string()).await;
    let (evs, done) = events(&b);
    assert!(!done);
    assert_eq!(evs.last().unwrap()["error"]["code"], "unavailable");
}

#[tokio::test]
async fn error_statuses() {
    let (addr, _) = start().await;
    let post = |path: &'static str, body: &'static str| call(addr, "POST", path, body);
    let err = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap()["error"].clone();

    let (s, _, b) = post("/v1/completions", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&b)["code"], "invalid_json");
    let (s, _, b) = post("/v1/completions", r#"{"max_tokens": 3}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(err(&b)["message"].as_str().unwrap().contains("prompt"));
    let (s, _, b) = post("/v1/completions", r#"{"prompt": "a", "n": 2}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&b)["param"], "n");
    let (s, _, b) = post("/v1/completions", r#"{"prompt": "a", "logprobs": 2}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&b)["param"], "logprobs");
    let (s, _, _) = post("/v1/chat/completions", r#"{"messages": []}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, b) = post("/v1/completions", r#"{"prompt": "bad"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&b)["type"], "invalid_request_error");

    let (s, _, b) = post("/v1/completions", r#"{"prompt": "poor"}"#).await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(err(&b)["code"], "unpaid");
    let (s, _, b) = post("/v1/completions", r#"{"prompt": "halted"}"#).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(err(&b)["message"].as_str().unwrap().contains("halted"));
    let (s, h, b) = post("/v1/completions", r#"{"prompt": "busy", "stream": true}"#).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "2");
    assert_eq!(err(&b)["code"], "busy");

    let (s, _, b) = call(addr, "GET", "/v1/engines", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(err(&b)["code"], "not_found");
    let (s, _, _) = call(addr, "GET", "/v1/models/other", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, _) = call(addr, "GET", "/v1/completions", "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "POST");
    let (s, h, _) = call(addr, "POST", "/v1/models", "{}").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "GET");

    // Over 1 MiB, by Content-Length (the body is never sent) …
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        weft_cli::gateway::MAX_BODY + 1
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("request_too_large"));
    // … and by the bytes of a chunked body.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let n = weft_cli::gateway::MAX_BODY + 1;
    let mut req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n{n:x}\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b' ', n));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    tcp.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    // The server may close before reading every byte; what it answered is read anyway.
    let _ = tcp.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn only_the_pages_of_allowed_origins_may_call_the_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origins = AllowedOrigins::parse(&["http://127.0.0.1:9944".into()]).unwrap();
    let gw = Gateway::with_origins(TestBackend::default(), 1, None, origins);
    tokio::spawn(serve(listener, gw.clone()));
    let body = json!({"model": "weft-run-1", "prompt": "hi", "max_tokens": 4}).to_string();

    // Another page: refused before anything is estimated or paid.
    let (status, headers, answer) = call_with(
        addr,
        "POST",
        "/v1/completions",
        &body,
        &[("origin", "https://elsewhere.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["error"]["code"], "origin_not_allowed");
    assert!(headers.get("access-control-allow-origin").is_none());
    assert!(gw.backend.seen.lock().unwrap().is_empty());
    assert_eq!(gw.backend.requests.load(Ordering::SeqCst), 0);

    // The allowed page: its preflight, then its request, readable by it.
    let dashboard = [("origin", "http://127.0.0.1:9944")];
    let (status, headers, _) = call_with(addr, "OPTIONS", "/v1/completions", "", &dashboard).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://127.0.0.1:9944"
    );
    assert_eq!(headers["access-control-allow-methods"], "GET, POST");
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    let (status, headers, answer) =
        call_with(addr, "POST", "/v1/completions", &body, &dashboard).await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://127.0.0.1:9944"
    );
    assert_eq!(headers["vary"], "Origin");
    assert_eq!(gw.backend.seen.lock().unwrap().len(), 1);

    // No origin (curl, SDKs): served as always, with no CORS headers.
    let (status, headers, _) = call(addr, "POST", "/v1/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("access-control-allow-origin").is_none());
    // A gateway started without --allow-origin refuses every page.
    let (closed, _) = start().await;
    let (status, _, _) = call_with(closed, "GET", "/v1/models", "", &dashboard).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn concurrent_requests_get_distinct_nonces() {
    let (addr, gw) = start().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let body = json!({"prompt": format!("p{i}"), "stream": i % 2 == 0});
                call(addr, "POST", "/v1/completions", &body.to_string()).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(gw.backend.requests.load(Ordering::SeqCst), 8);
    assert_eq!(
        gw.backend.nonces.lock().await.take(0),
        8,
        "nonces 0..8 handed out once each"
    );
}

/// Serves the test backend on `$WEFT_GATEWAY_TEST_ADDR` (default 127.0.0.1:8089) for
/// `$WEFT_GATEWAY_TEST_SECS` seconds (default 60), to try a real OpenAI client against it:
/// `cargo test -p weft-cli --test gateway_http -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "serves until a timeout, for trying clients by hand"]
async fn serve_for_manual_clients() {
    let addr = std::env::var("WEFT_GATEWAY_TEST_ADDR").unwrap_or_else(|_| "127.0.0.1:8089".into());
    let secs = std::env::var("WEFT_GATEWAY_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let listener = TcpListener::bind(&addr).await.unwrap();
    println!("serving on http://{addr}/v1 for {secs} s");
    let gw = Gateway::new(TestBackend::default(), 1, None);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(secs), serve(listener, gw)).await;
}
