//! Tests of the OpenAI ↔ Weft mapping.

#![allow(clippy::unwrap_used)]

use super::*;
use weft_primitives::Hash;

fn completion(v: Value) -> Result<InferenceParams, Invalid> {
    serde_json::from_value::<CompletionRequest>(v)
        .unwrap()
        .params(3)
}

fn chat(v: Value) -> Result<InferenceParams, Invalid> {
    serde_json::from_value::<ChatRequest>(v).unwrap().params(3)
}

#[test]
fn prompts_map_to_params() {
    let p = completion(json!({
        "model": "x", "prompt": "Hello", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,
        "stop": "\n", "seed": 7, "user": "ignored", "presence_penalty": 0, "n": 1,
        "logprobs": null
    }))
    .unwrap();
    assert_eq!(
        p,
        InferenceParams {
            run: 3,
            prompt: Some("Hello".into()),
            max_tokens: 5,
            temperature: Some(0.5),
            top_p: Some(0.9),
            stop: vec!["\n".into()],
            seed: Some(7),
            ..InferenceParams::default()
        }
    );
    let p = completion(json!({"prompt": ["one"], "stop": ["a", "b"]})).unwrap();
    assert_eq!(p.prompt.as_deref(), Some("one"));
    assert_eq!(p.max_tokens, DEFAULT_MAX_TOKENS);
    assert_eq!(p.stop, vec!["a".to_string(), "b".to_string()]);
    let p = completion(json!({"prompt": [1, 2, 3], "top_k": 4})).unwrap();
    assert_eq!(p.prompt_tokens, Some(vec![1, 2, 3]));
    assert_eq!(p.prompt, None);
    assert_eq!(p.top_k, Some(4));
    let p = completion(json!({"prompt": [[9]]})).unwrap();
    assert_eq!(p.prompt_tokens, Some(vec![9]));
}

#[test]
fn unsupported_fields_are_refused() {
    for (v, param) in [
        (json!({"prompt": "a", "n": 2}), "n"),
        (json!({"prompt": "a", "logprobs": 1}), "logprobs"),
        (json!({"prompt": "a", "logprobs": 0}), "logprobs"),
        (json!({"prompt": "a", "best_of": 3}), "best_of"),
        (json!({"prompt": "a", "echo": true}), "echo"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": "a", "stop": [""]}), "stop"),
    ] {
        assert_eq!(completion(v.clone()).unwrap_err().param, Some(param), "{v}");
    }
    assert_eq!(
        chat(json!({"messages": [{"role": "user", "content": "a"}], "logprobs": true}))
            .unwrap_err()
            .param,
        Some("logprobs")
    );
    assert!(
        chat(json!({"messages": [{"role": "user", "content": "a"}], "logprobs": false})).is_ok()
    );
    assert!(serde_json::from_value::<CompletionRequest>(json!({"max_tokens": 3})).is_err());
    assert!(serde_json::from_value::<ChatRequest>(json!({"messages": "hi"})).is_err());
}

#[test]
fn messages_render_with_the_template() {
    let p = chat(json!({
        "model": "weft-run-3",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]},
            {"role": "assistant", "content": null},
        ],
        "max_completion_tokens": 9,
        "stop": "END",
    }))
    .unwrap();
    assert_eq!(
        p.prompt.as_deref(),
        Some("system: Be brief.\nuser: Hi!\nassistant: \nassistant:")
    );
    assert_eq!(p.stop, vec!["END".to_string(), "\n".to_string()]);
    assert_eq!(p.max_tokens, 9);
    let p = chat(json!({"messages": [{"role": "user", "content": "x"}], "stop": ["\n"]})).unwrap();
    assert_eq!(p.stop, vec!["\n".to_string()], "not added twice");
    assert_eq!(
        chat(json!({"messages": []})).unwrap_err().param,
        Some("messages")
    );
    assert!(
        chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})).is_err()
    );
}

fn done() -> CompletionJson {
    CompletionJson {
        run: 3,
        request_id: 42,
        payment: Hash([2; 32]),
        step: 17,
        text: " hello".into(),
        tokens: vec![32, 104, 101, 108, 108, 111],
        finish_reason: "stop".into(),
        prompt_tokens: 4,
        route: vec!["p".into()],
        attempts: 1,
    }
}

#[test]
fn responses_have_openai_shapes() {
    let usage = json!({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10});
    assert_eq!(
        response(Kind::Text, "m", 99, &done()),
        json!({
            "id": "cmpl-42", "object": "text_completion", "created": 99, "model": "m",
            "system_fingerprint": "weft-step-17",
            "choices": [{"text": " hello", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        })
    );
    assert_eq!(
        response(Kind::Chat, "m", 99, &done()),
        json!({
            "id": "chatcmpl-42", "object": "chat.completion", "created": 99, "model": "m",
            "system_fingerprint": "weft-step-17",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " hello"},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        })
    );
    assert_eq!(
        model_list("weft-run-3"),
        json!({"object": "list", "data": [
            {"id": "weft-run-3", "object": "model", "created": 0, "owned_by": "weft"}]})
    );
    assert_eq!(
        error_body("no", "invalid_request_error", "invalid_params", Some("n")),
        json!({"error": {"message": "no", "type": "invalid_request_error", "param": "n",
            "code": "invalid_params"}})
    );
}

#[test]
fn stream_options() {
    let r: CompletionRequest = serde_json::from_value(
        json!({"prompt": "a", "stream": true, "stream_options": {"include_usage": true}}),
    )
    .unwrap();
    assert!(r.sampling.streamed());
    assert!(r.sampling.include_usage());
    let r: CompletionRequest = serde_json::from_value(json!({"prompt": "a"})).unwrap();
    assert!(!r.sampling.streamed());
    assert!(!r.sampling.include_usage());
}
