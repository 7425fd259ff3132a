//! A credential holder buys completions from a model trained on a real dev chain.
//!
//! Four trainers train a 4-stage byte-level model on a small text for [`STEPS`] steps (no
//! audits, so every step is credited once its window passes) and keep serving
//! (`weft-trainer train --serve`). A trainer hands credentials to //Holder, who then:
//!
//! * asks `weft infer` for a completion (not streamed, then streamed): text comes back, the
//!   same prompt and seed give the same tokens, the response names the serving step, and
//!   the holder's credentials drop by exactly the estimate once the last stage settles;
//! * is refused, with nothing charged, for a forged payment (another request's hash), a
//!   payment covering too few tokens, a replayed payment, an unknown run, a run that never
//!   trained, a halted run, and parameters the model cannot take;
//! * asks through `weft gateway` with the real `openai` Python client (completions plain and
//!   streamed, chat): the same text as `weft infer` for the same prompt, settings and seed;
//! * asks in the dashboard's playground in a headless Chromium, paid by the same gateway
//!   (started with `--allow-origin` the node's address): the page shows the node's estimate
//!   before sending and streams the same text;
//! * asks through a stage whose only holder was killed: the request fails, and the escrow
//!   comes back at its expiry.
//!
//! Needs the binaries of `scripts/test.sh` (`weft-node`, `weft`, `weft-trainer`).

use super::processes::trainer_args;
use super::*;
use jsonrpsee::core::ClientError as RpcError;
use weft_rpc_api::inference::{InferenceApiClient, InferenceParams};
use weft_tests::browser::Browser;
use weft_tests::{bin, pick_free_port, wait_until, Spawned};

const BLOCK_TIME: &str = "200ms";
const STEPS: u64 = 6;
const TRAINERS: [&str; 4] = ["//Inf0", "//Inf1", "//Inf2", "//Inf3"];
const MODEL: &str = r#"{"vocab_size":256,"d_model":16,"n_layers":4,"n_heads":2,"seq_len":32}"#;
/// Longest wait for training and serving (4 trainer processes on 2 cores).
const TRAIN_WAIT: Duration = Duration::from_secs(300);

/// `(credentials, escrowed)` of `who` in run 0.
async fn holdings(c: &Client, who: &str) -> (u128, u128) {
    let all = c.credentials(account(who), Some(0), None).await.unwrap();
    all.runs.iter().find(|r| r.run_id == 0).map_or((0, 0), |r| {
        (r.credentials.parse().unwrap(), r.escrowed.parse().unwrap())
    })
}

async fn holder_credentials(c: &Client, who: &str) -> u128 {
    holdings(c, who).await.0
}

/// Credentials of run 0 that `who` has in escrow.
async fn escrowed(c: &Client, who: &str) -> u128 {
    holdings(c, who).await.1
}

fn rpc_code(e: &RpcError) -> Option<i32> {
    match e {
        RpcError::Call(o) => Some(o.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_holder_buys_completions_from_the_trained_model() {
    let _serial = serial().await;
    let _ = bin("weft-trainer");
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"), &["--block-time", BLOCK_TIME])
        .await
        .unwrap();
    let url = node.ws_url();
    let c = node.cli_client().await.unwrap();

    // A small corpus and its manifest hash.
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog.\n".repeat(64),
    )
    .unwrap();
    let manifest = std::process::Command::new(bin("weft-trainer"))
        .args(["manifest", "--data", &corpus.to_string_lossy()])
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let dataset_hash = String::from_utf8(manifest.stdout)
        .unwrap()
        .trim()
        .to_string();

    // //Alice validates (elected at the next epoch boundary) so that she can halt a run.
    let mut alice = vec![
        cmd(&["stake", "bond", "--from", "//Alice", "--amount", "10000"]),
        cmd(&["stake", "validate", "--from", "//Alice"]),
    ];
    for who in TRAINERS.iter().chain(["//Holder"].iter()) {
        alice.push(cmd(&[
            "transfer", "--from", "//Alice", "--to", who, "--amount", "1000",
        ]));
    }
    alice.push(cmd(&[
        "run",
        "register",
        "--from",
        "//Alice",
        "--config",
        MODEL,
        "--hyper-params",
        &format!(
            r#"{{"micro_batch_size":2,"micro_batches":2,"lr":0.01,"warmup_steps":1,"total_steps":{STEPS}}}"#
        ),
        "--stages",
        "4",
        "--dataset-hash",
        &dataset_hash,
        "--audit-probability",
        "0%",
    ]));
    // Run 1: registered, never trained; halted by the validator set below.
    alice.push(cmd(&[
        "run",
        "register",
        "--from",
        "//Alice",
        "--config",
        MODEL,
        "--hyper-params",
        r#"{"micro_batch_size":2,"lr":0.01,"total_steps":10}"#,
        "--stages",
        "4",
        "--dataset-hash",
        &dataset_hash,
    ]));
    in_parallel(&url, vec![alice]).await;

    let mut procs = Vec::new();
    for who in TRAINERS {
        let name = who.trim_start_matches("//");
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, who, 0, dir.path()));
        args.extend([
            "--serve".into(),
            "--data".into(),
            corpus.to_string_lossy().into(),
        ]);
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), name).unwrap());
    }
    let dump = |procs: &[Spawned]| {
        let mut s: Vec<String> = procs.iter().map(Spawned::log_tail).collect();
        s.push(format!("--- node ---\n{}", node.log_tail()));
        s.join("\n")
    };

    // Trained, finished, and every step credited: the last step serves.
    let rpc = node.client().await.unwrap();
    let params = |prompt: &str, max_tokens: u32, seed: u64| InferenceParams {
        run: 0,
        prompt: Some(prompt.to_string()),
        max_tokens,
        temperature: Some(0.8),
        seed: Some(seed),
        ..Default::default()
    };
    let served = wait_for(
        TRAIN_WAIT,
        "the run to finish and its last step to serve",
        || async {
            let r = c.run(0, None).await.ok()?;
            if r.status != runs::RunStatus::Finished {
                return None;
            }
            let e = rpc.estimate(params("the ", 8, 1)).await.ok()?;
            (e.step == Some(STEPS - 1)).then_some(e)
        },
    )
    .await;
    let estimate = match served {
        Ok(e) => e,
        Err(e) => panic!("{e}\n{}", dump(&procs)),
    };
    assert_eq!(estimate.prompt_tokens, 4);
    assert_eq!(estimate.total_tokens, 12);
    let cost: u128 = estimate.credentials.parse().unwrap();
    let per_token: u128 = estimate.credentials_per_token.parse().unwrap();
    assert_eq!(cost, 12 * per_token);

    // A trainer (an owner) gives //Holder credentials: enough for every request below.
    let gift = 12 * cost;
    let minted = wait_for(TRAIN_WAIT, "credentials minted to a trainer", || async {
        let n = holder_credentials(&c, TRAINERS[0]).await;
        (n >= gift).then_some(n)
    })
    .await
    .unwrap();
    assert!(minted > 0);
    cli_json(
        &url,
        &[
            "credentials",
            "transfer",
            "--from",
            TRAINERS[0],
            "--run",
            "0",
            "--to",
            "//Holder",
            "--amount",
            &gift.to_string(),
        ],
    )
    .await;
    assert_eq!(holder_credentials(&c, "//Holder").await, gift);

    // --- a completion, not streamed, twice: the same prompt and seed, the same tokens -----
    let infer = |stream: bool| {
        let mut a = vec![
            "infer",
            "--run",
            "0",
            "--from",
            "//Holder",
            "--prompt",
            "the ",
            "--max-tokens",
            "8",
            "--temperature",
            "0.8",
            "--seed",
            "1",
        ];
        if !stream {
            a.push("--no-stream");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = infer(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = cli_json(&url, &args).await;
    let tokens = first["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 8, "{first}");
    assert_eq!(first["finishReason"], "length");
    assert_eq!(first["step"], STEPS - 1);
    assert_eq!(first["route"].as_array().unwrap().len(), 4);
    let second = cli_json(&url, &args).await;
    assert_eq!(second["tokens"], first["tokens"]);
    assert_ne!(second["requestId"], first["requestId"]);

    // Streamed: the text on stdout is the completion's text.
    let args = infer(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let streamed = cli_text(&url, &args).await;
    assert_eq!(
        streamed.trim_end_matches('\n'),
        first["text"].as_str().unwrap()
    );

    // Each request is charged exactly its estimate once the last stage settles.
    wait_until(WAIT, "three settlements", || async {
        holder_credentials(&c, "//Holder").await == gift - 3 * cost
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs)));

    // The status shows the four holders, each measured by this node.
    let status = rpc.status(0).await.unwrap();
    assert_eq!(status.step, Some(STEPS - 1));
    assert_eq!(status.stages.len(), 4);
    for holders in &status.stages {
        assert!(holders[0].serving && holders[0].served > 0, "{status:?}");
        assert!(holders[0].latency_ms.is_some());
    }

    // --- refusals: nothing served, nothing charged ----------------------------------------
    let before = holder_credentials(&c, "//Holder").await;
    let holder = Keypair::from_suri("//Holder").unwrap();
    let body = params("the ", 8, 2).body().unwrap();
    let pay = |hash: [u8; 32], tokens: u32| {
        let (c, holder) = (&c, &holder);
        async move {
            weft_cli::inference::signed_open(
                c,
                holder,
                0,
                weft_primitives::Hash(hash),
                tokens,
                None,
                &weft_cli::SubmitOptions::default(),
            )
            .await
            .unwrap()
        }
    };
    // `params("the ", 8, 2)` paid with `payment`.
    let generate = |payment: Vec<u8>| {
        let rpc = &rpc;
        async move {
            rpc.generate(InferenceParams {
                payment: Some(weft_primitives::Bytes(payment)),
                ..params("the ", 8, 2)
            })
            .await
        }
    };
    let unpaid = Some(weft_rpc_api::inference::INFERENCE_UNPAID);
    // A payment for another request.
    let other = params("a dog ", 8, 2).body().unwrap();
    let forged = pay(other.hash(), other.total_tokens()).await;
    let e = generate(forged).await.unwrap_err();
    assert_eq!(rpc_code(&e), unpaid, "{e}");
    // A payment that covers too few tokens.
    let short = pay(body.hash(), body.total_tokens() - 1).await;
    let e = generate(short).await.unwrap_err();
    assert_eq!(rpc_code(&e), unpaid, "{e}");
    // A good payment serves once; replayed, it is refused.
    let good = pay(body.hash(), body.total_tokens()).await;
    let done = generate(good.clone()).await.unwrap();
    assert_eq!(done.tokens.len(), 8);
    let e = generate(good).await.unwrap_err();
    assert_eq!(rpc_code(&e), unpaid, "{e}");
    // An unknown run, and a prompt the context cannot hold.
    let e = rpc
        .estimate(InferenceParams {
            run: 7,
            ..params("the ", 8, 2)
        })
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), Some(weft_rpc_api::UNKNOWN_RUN), "{e}");
    let pending = rpc
        .estimate(InferenceParams {
            run: 1,
            ..params("the ", 8, 2)
        })
        .await
        .unwrap();
    assert!(pending.unavailable.unwrap().contains("not started"));
    cli_json(&url, &["gov", "emergency-halt", "1", "--from", "//Alice"]).await;
    let halted = rpc
        .estimate(InferenceParams {
            run: 1,
            ..params("the ", 8, 2)
        })
        .await
        .unwrap();
    assert!(halted.unavailable.unwrap().contains("halted"));
    let mut args = infer(false);
    args[2] = "1".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_fails(&url, &args, "halted").await;
    let e = rpc
        .estimate(params(&"x".repeat(30), 8, 2))
        .await
        .unwrap_err();
    assert_eq!(
        rpc_code(&e),
        Some(weft_rpc_api::inference::INFERENCE_BAD_PARAMS),
        "{e}"
    );
    wait_until(WAIT, "the one good request to be settled", || async {
        holder_credentials(&c, "//Holder").await == before - cost
    })
    .await
    .unwrap();

    // --- the OpenAI gateway on the holder's machine, driven by the `openai` package --------
    let gw_port = pick_free_port();
    let gw_args: Vec<String> = [
        "--url",
        &url,
        "gateway",
        "--key",
        "//Holder",
        "--run",
        "0",
        "--listen",
        &format!("127.0.0.1:{gw_port}"),
        "--allow-origin",
        &node.http_url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let gateway = Spawned::start("weft", &gw_args, dir.path(), "gateway").unwrap();
    wait_until(WAIT, "the gateway to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", gw_port))
            .await
            .is_ok()
    })
    .await
    .unwrap();
    let script = format!(
        r#"
import json
from openai import OpenAI
c = OpenAI(base_url="http://127.0.0.1:{gw_port}/v1", api_key="unused", max_retries=0)
models = [m.id for m in c.models.list().data]
r = c.completions.create(model="weft-run-0", prompt="the ", max_tokens=8, temperature=0.8, seed=1)
streamed = "".join(ch.choices[0].text for ch in c.completions.create(
    model="weft-run-0", prompt="the ", max_tokens=8, temperature=0.8, seed=1, stream=True))
chat = c.chat.completions.create(model="weft-run-0", max_tokens=6,
    messages=[{{"role": "user", "content": "fox"}}])
print(json.dumps({{"models": models, "text": r.choices[0].text,
    "finish": r.choices[0].finish_reason, "completion_tokens": r.usage.completion_tokens,
    "streamed": streamed, "chat_role": chat.choices[0].message.role}}))
"#
    );
    let python = std::env::var("WEFT_VENV")
        .map(|v| std::path::PathBuf::from(v).join("bin/python"))
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
        });
    let out = tokio::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the openai client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log_tail()
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["models"], serde_json::json!(["weft-run-0"]));
    assert_eq!(
        got["text"], first["text"],
        "the same prompt, settings and seed"
    );
    assert_eq!(got["streamed"], first["text"]);
    assert_eq!(got["finish"], "length");
    assert_eq!(got["completion_tokens"], 8);
    assert_eq!(got["chat_role"], "assistant");

    // --- the dashboard's playground, paid by the same gateway -------------------------------
    // The page shows the node's estimate before sending, then streams the gateway's answer:
    // the same text for the same prompt, settings and seed.
    let mut b = Browser::open(&format!("{}/#/playground", node.http_url()), (1280, 900))
        .await
        .unwrap();
    b.until(
        "document.getElementById('send') !== null",
        "the playground",
        WAIT,
        |v| v.as_bool().filter(|x| *x),
    )
    .await
    .unwrap();
    b.eval(&format!(
        "(() => {{ for (const [id, v] of Object.entries({})) {{ const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); }} }})()",
        serde_json::json!({
            "gateway": format!("http://127.0.0.1:{gw_port}"),
            "pg-run": "0", "prompt": "the ", "max-tokens": "8", "temperature": "0.8", "seed": "1",
        })
    ))
    .await
    .unwrap();
    b.until(
        "document.getElementById('credentials-cost')?.textContent ?? null",
        "the cost before sending",
        WAIT,
        |v| {
            v.as_str()
                .filter(|t| *t == estimate.credentials)
                .map(|_| ())
        },
    )
    .await
    .unwrap();
    b.eval("document.getElementById('send').click()")
        .await
        .unwrap();
    b.until(
        "document.getElementById('completion-status')?.dataset.done ?? document.getElementById('completion-status')?.className",
        "the streamed completion",
        TRAIN_WAIT,
        |v| v.as_str().filter(|t| *t == "true").map(|_| ()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_tail()));
    let text = b
        .eval("document.getElementById('completion-text').textContent")
        .await
        .unwrap();
    assert_eq!(text, first["text"], "the same prompt, settings and seed");
    b.screenshot(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard/playground.png"),
    )
    .await
    .unwrap();
    drop(b);
    drop(gateway);
    wait_until(WAIT, "the gateway's requests to be settled", || async {
        escrowed(&c, "//Holder").await == 0
    })
    .await
    .unwrap();

    // --- a stage without a holder: the request fails and the escrow comes back ------------
    let before = holder_credentials(&c, "//Holder").await;
    let assignments = c.stage_assignments(0, None).await.unwrap();
    let killed_stage = holders(&assignments)
        .iter()
        .position(|h| *h == Some(account(TRAINERS[3])))
        .unwrap();
    drop(procs.remove(3));
    let args = infer(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_fails(&url, &args, &format!("stage {killed_stage}")).await;
    assert_eq!(holder_credentials(&c, "//Holder").await, before - cost);
    assert_eq!(
        escrowed(&c, "//Holder").await,
        cost,
        "in escrow until it expires"
    );
    wait_until(
        Duration::from_secs(60),
        "the escrow to be refunded",
        || async { holder_credentials(&c, "//Holder").await == before },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs)));
}
