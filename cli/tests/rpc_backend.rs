//! [`RpcBackend`] against a mock node: a jsonrpsee server with the `inference_*` methods and
//! the three chain methods signing needs. It checks the payment's nonces (distinct under
//! concurrency, a refused one reused), the error codes with their data, and the streamed
//! events; then the gateway over it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use jsonrpsee::core::{async_trait, RpcResult, SubscriptionResult};
use jsonrpsee::server::{PendingSubscriptionSink, Server, ServerHandle, SubscriptionMessage};
use jsonrpsee::types::ErrorObjectOwned;
use parity_scale_codec::Decode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use weft_cli::gateway::backend::quote;
use weft_cli::gateway::{Backend, BackendError, RpcBackend};
use weft_cli::{Client, SubmitOptions};
use weft_primitives::{AccountId, Hash, Header, Keypair};
use weft_rpc_api::inference::{
    CompletionJson, EstimateJson, GenerateEvent, InferenceApiServer, InferenceParams,
    InferenceStatusJson, INFERENCE_BUSY, INFERENCE_UNPAID,
};
use weft_rpc_api::AccountJson;
use weft_runtime::{inference, Extrinsic, RuntimeCall};

/// Accepts each nonce once; a prompt "refuse" is refused as a stale payment, "busy" as busy.
#[derive(Default)]
struct MockNode {
    used: Mutex<BTreeSet<u64>>,
}

fn msg(ev: &GenerateEvent) -> Result<SubscriptionMessage, serde_json::Error> {
    Ok(SubscriptionMessage::from(serde_json::value::to_raw_value(
        ev,
    )?))
}

fn err(code: i32, msg: &str, data: Option<serde_json::Value>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg.to_string(), data)
}

impl MockNode {
    fn check(&self, p: &InferenceParams) -> RpcResult<u64> {
        let prompt = p.prompt.clone().unwrap_or_default();
        if prompt == "busy" {
            return Err(err(
                INFERENCE_BUSY,
                "all slots taken",
                Some(serde_json::json!({"retryAfterMs": 2500})),
            ));
        }
        let bytes = p
            .payment
            .as_ref()
            .ok_or_else(|| err(INFERENCE_UNPAID, "no payment", None))?;
        let xt = Extrinsic::decode(&mut &bytes.0[..]).unwrap();
        let RuntimeCall::Inference(inference::Call::Open {
            request_hash,
            max_tokens,
            ..
        }) = xt.call
        else {
            panic!("not an open")
        };
        assert_eq!(request_hash, Hash(p.body().unwrap().hash()));
        assert_eq!(max_tokens, p.body().unwrap().total_tokens());
        if prompt == "refuse" {
            return Err(err(
                INFERENCE_UNPAID,
                "the payment was refused: low balance",
                None,
            ));
        }
        assert!(
            self.used.lock().unwrap().insert(xt.nonce),
            "nonce {} twice",
            xt.nonce
        );
        Ok(xt.nonce)
    }

    fn completion(p: &InferenceParams, nonce: u64) -> CompletionJson {
        CompletionJson {
            run: p.run,
            request_id: nonce,
            payment: Hash([1; 32]),
            step: 3,
            text: "ok".into(),
            tokens: vec![111, 107],
            finish_reason: "length".into(),
            prompt_tokens: 2,
            route: vec![],
            attempts: 1,
        }
    }
}

#[async_trait]
impl InferenceApiServer for MockNode {
    async fn estimate(&self, p: InferenceParams) -> RpcResult<EstimateJson> {
        let body = p.body().map_err(|e| err(4010, &e.to_string(), None))?;
        Ok(EstimateJson {
            run: p.run,
            prompt_tokens: body.prompt.len() as u32,
            total_tokens: body.total_tokens(),
            credentials: "10".into(),
            credentials_per_token: "1".into(),
            request_hash: Hash(body.hash()),
            step: Some(3),
            unavailable: None,
        })
    }

    async fn generate(&self, p: InferenceParams) -> RpcResult<CompletionJson> {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let nonce = self.check(&p)?;
        Ok(Self::completion(&p, nonce))
    }

    async fn subscribe_generate(
        &self,
        pending: PendingSubscriptionSink,
        p: InferenceParams,
    ) -> SubscriptionResult {
        let nonce = match self.check(&p) {
            Ok(n) => n,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        for (token, text) in [(111, "o"), (107, "k")] {
            let ev = GenerateEvent::Token {
                token,
                text: text.into(),
            };
            sink.send(msg(&ev)?).await?;
        }
        let done = GenerateEvent::Done(Self::completion(&p, nonce));
        sink.send(msg(&done)?).await?;
        Ok(())
    }

    async fn status(&self, _run: weft_primitives::step::RunId) -> RpcResult<InferenceStatusJson> {
        Err(err(-32601, "not mocked", None))
    }
}

async fn start() -> (String, ServerHandle) {
    start_at("127.0.0.1:0").await
}

async fn start_at(addr: &str) -> (String, ServerHandle) {
    let mut module = MockNode::default().into_rpc();
    module
        .register_method("chain_getBlockHash", |_, _, _| Some(Hash([9; 32])))
        .unwrap();
    module
        .register_method("chain_getHeader", |_, _, _| {
            let header: Header = serde_json::from_value(serde_json::json!({
                "parentHash": Hash([9; 32]), "number": 1, "stateRoot": Hash::ZERO,
                "extrinsicsRoot": Hash::ZERO, "timestamp": 0,
                "author": AccountId([0; 32]), "digest": {"logs": []}
            }))
            .unwrap();
            Some(header)
        })
        .unwrap();
    module
        .register_method("weft_account", |params, _, _| {
            let (account, _at): (AccountId, Option<Hash>) = params.parse().unwrap();
            Some(AccountJson {
                account,
                nonce: 4,
                free: "0".into(),
                reserved: "0".into(),
            })
        })
        .unwrap();
    let server = Server::builder().build(addr).await.unwrap();
    let url = format!("ws://{}", server.local_addr().unwrap());
    (url, server.start(module))
}

fn params(prompt: &str) -> InferenceParams {
    InferenceParams {
        run: 1,
        prompt: Some(prompt.into()),
        max_tokens: 4,
        ..InferenceParams::default()
    }
}

#[tokio::test]
async fn pays_generates_and_streams_with_tracked_nonces() {
    let (url, _server) = start().await;
    let client = Arc::new(Client::connect(&url).await.unwrap());
    let key = Keypair::from_suri("//Alice").unwrap();
    let backend = Arc::new(RpcBackend::new(client, key, SubmitOptions::default()));

    // Concurrent requests: every payment gets its own nonce, from the chain's 4 on.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let b = backend.clone();
            tokio::spawn(async move {
                let p = params("hi");
                let e = quote(&*b, &p).await.unwrap();
                let pay = b.pay(&e).await.unwrap();
                if i % 2 == 0 {
                    b.generate(p, pay).await.unwrap().request_id
                } else {
                    let mut s = b.stream(p, pay).await.unwrap();
                    let mut text = String::new();
                    loop {
                        match s.next().await.unwrap().unwrap() {
                            GenerateEvent::Token { text: t, .. } => text.push_str(&t),
                            GenerateEvent::Done(c) => {
                                assert_eq!(text, c.text);
                                break c.request_id;
                            }
                            GenerateEvent::Error { message, .. } => panic!("{message}"),
                        }
                    }
                }
            })
        })
        .collect();
    let mut nonces = Vec::new();
    for t in tasks {
        nonces.push(t.await.unwrap());
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (4..10).collect::<Vec<_>>());

    // A refused payment gives its nonce back: the next request uses it.
    let p = params("refuse");
    let pay = backend
        .pay(&quote(&*backend, &p).await.unwrap())
        .await
        .unwrap();
    assert_eq!(pay.nonce, 10);
    let e = backend.generate(p, pay).await.unwrap_err();
    assert!(matches!(e, BackendError::Unpaid(_)), "{e:?}");
    let p = params("hi");
    let pay = backend
        .pay(&quote(&*backend, &p).await.unwrap())
        .await
        .unwrap();
    assert_eq!(pay.nonce, 10);
    let mut s = backend.stream(p, pay).await.unwrap();
    assert!(matches!(
        s.next().await.unwrap().unwrap(),
        GenerateEvent::Token { .. }
    ));

    // Busy, with the node's retry hint; a subscription refused before it started.
    let p = params("busy");
    let pay = backend
        .pay(&quote(&*backend, &p).await.unwrap())
        .await
        .unwrap();
    let e = match backend.stream(p, pay).await {
        Err(e) => e,
        Ok(_) => panic!("a busy node streams nothing"),
    };
    assert_eq!(
        e,
        BackendError::Busy {
            retry_after_ms: 2500,
            message: "all slots taken".into()
        }
    );
    assert_eq!(e.to_string(), "busy; retry after 2500 ms (all slots taken)");

    // Parameters the node refuses.
    let bad = InferenceParams {
        top_p: Some(2.0),
        ..params("hi")
    };
    assert!(matches!(
        backend.estimate(&bad).await,
        Err(BackendError::BadParams(_))
    ));
}

/// `POST path` with `body` over HTTP/1.1: status, `Retry-After` and body.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: serde_json::Value,
) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "x")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_gateway_over_the_rpc_backend() {
    let (url, _server) = start().await;
    let client = Arc::new(Client::connect(&url).await.unwrap());
    let key = Keypair::from_suri("//Bob").unwrap();
    let backend = RpcBackend::new(client, key, SubmitOptions::default());
    let gw = weft_cli::gateway::Gateway::new(backend, 1, Some("fortunes".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(weft_cli::gateway::serve(listener, gw));

    let chat =
        serde_json::json!({"model": "fortunes", "messages": [{"role": "user", "content": "hi"}]});
    let (s, _, b) = post(addr, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["id"], "chatcmpl-4",
        "the request id is the first nonce here"
    );
    assert_eq!(v["model"], "fortunes");
    assert_eq!(v["choices"][0]["message"]["content"], "ok");

    let mut streamed = chat;
    streamed["stream"] = true.into();
    let (s, _, b) = post(addr, "/v1/chat/completions", streamed).await;
    assert_eq!(s, 200);
    assert!(b.contains(r#""delta":{"content":"o"}"#), "{b}");
    assert!(b.ends_with("data: [DONE]\n\n"));

    let (s, retry, _) = post(
        addr,
        "/v1/completions",
        serde_json::json!({"prompt": "busy"}),
    )
    .await;
    assert_eq!((s, retry.as_deref()), (429, Some("3")));
    let (s, _, b) = post(
        addr,
        "/v1/completions",
        serde_json::json!({"prompt": "refuse"}),
    )
    .await;
    assert_eq!(s, 402, "{b}");
    let (s, _, _) = post(
        addr,
        "/v1/completions",
        serde_json::json!({"prompt": "hi", "top_p": 5}),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn reconnects_after_the_node_restarts() {
    let (url, server) = start().await;
    let key = Keypair::from_suri("//Charlie").unwrap();
    let backend = RpcBackend::connect(&url, key, SubmitOptions::default())
        .await
        .unwrap();
    assert!(backend.estimate(&params("hi")).await.is_ok());
    server.stop().unwrap();
    server.stopped().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    // Down: calls (and the reconnection) fail, cleanly.
    loop {
        match backend.estimate(&params("hi")).await {
            Err(BackendError::Node(_)) => break,
            other => assert!(other.is_ok(), "{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(matches!(
        backend.estimate(&params("hi")).await,
        Err(BackendError::Node(_))
    ));
    let (_, _server) = start_at(url.trim_start_matches("ws://")).await;
    let e = backend.estimate(&params("hi")).await.unwrap();
    let pay = backend.pay(&e).await.unwrap();
    assert_eq!(
        backend.generate(params("hi"), pay).await.unwrap().text,
        "ok"
    );
}
