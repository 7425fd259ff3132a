//! Inference across stage holders over real libp2p on loopback: a 4-stage model served by
//! four inference desks (each with only its stage's weights, loaded from its tensor store)
//! and driven by the router gives exactly the tokens of single-process generation with the
//! same weights, greedy and sampled; a replica killed mid-stream is routed around with the
//! same output; the last stage settles once; unpaid and busy requests are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;
use weft_ml::config::ModelConfig;
use weft_ml::infer::generate_local;
use weft_ml::model::{Stage, StageSpec};
use weft_stage_net::desk::RequestDesk;
use weft_stage_net::inference::router::{Finish, RouteError};
use weft_stage_net::inference::{
    InferForward, InferInput, RequestBody, RequestId, Sampling, SessionId,
};
use weft_stage_net::wire::{ErrorCode, Request, Response};
use weft_trainer::serve::loopback::{store_weights, LoopbackPipeline, SERVED_STEP};
use weft_trainer::serve::{sampling_params, InferenceDesk, ServeLimits};

const STEP: u64 = SERVED_STEP;
const STAGES: usize = 4;

fn cfg() -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        d_model: 32,
        n_layers: 4,
        n_heads: 4,
        seq_len: 32,
        mlp_ratio: 4,
        dropout: 0.1,
        tied_embeddings: false,
        seed: 11,
    }
}

async fn world(replicas: [u16; STAGES], limits: ServeLimits) -> LoopbackPipeline {
    let mut w = LoopbackPipeline::start(&cfg(), &replicas, limits)
        .await
        .unwrap();
    w.router.hop_timeout = Duration::from_secs(10);
    w
}

/// What one process generates with the same weights and the KV cache.
fn local(w: &LoopbackPipeline, body: &RequestBody) -> Vec<u32> {
    let refs: Vec<&Stage> = w.stages.iter().collect();
    generate_local(
        &refs,
        &body.prompt,
        body.max_new_tokens as usize,
        &sampling_params(&body.sampling),
        &body.stop,
        true,
    )
    .unwrap()
    .tokens
}

fn body(prompt: &[u32], max_new: u32, sampling: Sampling) -> RequestBody {
    RequestBody {
        run: 0,
        prompt: prompt.to_vec(),
        max_new_tokens: max_new,
        sampling,
        stop: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_generates_what_one_process_generates() {
    let w = world([1; STAGES], ServeLimits::default()).await;
    // Greedy.
    let greedy = body(&[3, 14, 15, 9, 2], 12, Sampling::default());
    let mut streamed = Vec::new();
    let c = w
        .router
        .generate(&w.plan(1, greedy.clone()), |t| {
            streamed.push(t);
            true
        })
        .await
        .unwrap();
    assert_eq!(c.tokens, local(&w, &greedy));
    assert_eq!(streamed, c.tokens, "every token is streamed once, in order");
    assert_eq!(c.finish, Finish::Length);
    assert_eq!(c.attempts, 1);
    // Sampled, with a seed: the same draws as in one process.
    let sampled = body(
        &[7, 7, 1],
        10,
        Sampling {
            temperature_milli: 900,
            top_k: 20,
            top_p_micro: 950_000,
            seed: 42,
        },
    );
    let c2 = w
        .router
        .generate(&w.plan(2, sampled.clone()), |_| true)
        .await
        .unwrap();
    assert_eq!(c2.tokens, local(&w, &sampled));
    // A stop sequence taken from the greedy output cuts it there.
    let mut stopping = greedy.clone();
    stopping.stop = vec![c.tokens[4..6].to_vec()];
    let c3 = w
        .router
        .generate(&w.plan(3, stopping.clone()), |_| true)
        .await
        .unwrap();
    assert_eq!(c3.finish, Finish::Stop);
    assert_eq!(c3.tokens, local(&w, &stopping));
    assert!(c3.tokens.len() <= 4);
    // The last stage settled each request once, for prompt plus completion tokens.
    let settled = w.escrows.settled();
    let ids: Vec<RequestId> = settled.iter().map(|s| s.0).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(settled[0].1, 5 + 12);
    // Closed sessions free their caches on every stage.
    for h in w.holders.iter().flatten() {
        assert_eq!(h.desk.as_ref().unwrap().open_sessions(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_killed_mid_stream_is_routed_around() {
    let w = world([1, 2, 1, 1], ServeLimits::default()).await;
    let greedy = body(&[5, 6, 7], 14, Sampling::default());
    let expected = local(&w, &greedy);
    // Both stage-1 holders are unmeasured; the router starts with replica 0.
    let victim = &w.holders[1][0];
    let mut seen = 0;
    let c = w
        .router
        .generate(&w.plan(9, greedy), |_| {
            seen += 1;
            if seen == 4 {
                victim.task.abort();
            }
            true
        })
        .await
        .unwrap();
    assert_eq!(
        c.tokens, expected,
        "the replay continues with the same tokens"
    );
    assert_eq!(c.attempts, 2);
    assert_eq!(c.route[1], w.holders[1][1].holder.peer);
    assert_eq!(w.escrows.settled().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_and_busy_requests_are_refused() {
    let limits = ServeLimits {
        max_sessions: 1,
        idle: Duration::from_secs(600),
        retry_after: Duration::from_millis(1500),
    };
    let w = world([1; STAGES], limits).await;
    // Not open: refused at the first stage, nothing served or settled.
    w.escrows.close(4);
    let e = w
        .router
        .generate(&w.plan(4, body(&[1, 2], 3, Sampling::default())), |_| true)
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::Unpaid { stage: 0, .. }), "{e}");
    // A body other than the one paid for.
    let plan = w.plan(5, body(&[1, 2], 3, Sampling::default()));
    w.escrows.open(5, [9; 32]);
    let e = w.router.generate(&plan, |_| true).await.unwrap_err();
    assert!(matches!(e, RouteError::Unpaid { .. }), "{e}");
    // One session slot: a second open session is answered busy with the retry-after.
    let dir = tempfile::tempdir().unwrap();
    let desk = InferenceDesk::new(
        0,
        StageSpec::new(0, STAGES).unwrap(),
        cfg(),
        store_weights(&w.stages[0], dir.path()).unwrap(),
        w.escrows.clone(),
        limits,
    );
    let forward = |request: RequestId| {
        let b = body(&[1, 2], 3, Sampling::default());
        w.escrows.open(request, b.hash());
        Request::InferForward(InferForward {
            run: 0,
            step: STEP,
            stage: 0,
            session: SessionId {
                request,
                attempt: 0,
            },
            start: 0,
            input: InferInput::Tokens(b.prompt.clone()),
            body: Some(b),
            sampling: None,
        })
    };
    let peer = weft_p2p::Keypair::generate_ed25519().public().to_peer_id();
    let r = desk.answer(&peer, &forward(6)).unwrap();
    assert!(matches!(r, Response::InferHidden(_)), "{r:?}");
    let r = desk.answer(&peer, &forward(7)).unwrap();
    assert_eq!(
        r,
        Response::Busy {
            retry_after_ms: 1500
        }
    );
    assert_eq!(desk.open_sessions(), 1);
    // Closing frees the slot; weights of a step the store does not have are unavailable.
    let close = Request::InferClose(weft_stage_net::inference::InferClose {
        run: 0,
        stage: 0,
        session: SessionId {
            request: 6,
            attempt: 0,
        },
        delivered: false,
    });
    assert_eq!(desk.answer(&peer, &close).unwrap(), Response::Ack);
    assert_eq!(desk.open_sessions(), 0);
    let mut missing = forward(8);
    if let Request::InferForward(f) = &mut missing {
        f.step = STEP + 1;
    }
    match desk.answer(&peer, &missing).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("{other:?}"),
    }
    // Tokens outside the vocabulary never reach the model.
    let mut bad = forward(10);
    if let Request::InferForward(f) = &mut bad {
        f.input = InferInput::Tokens(vec![1, 64]);
    }
    match desk.answer(&peer, &bad).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
}
