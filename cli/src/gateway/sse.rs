//! Server-sent events of streamed completions: the framing (`data: {json}\n\n`, then
//! `data: [DONE]\n\n`) and the chunks OpenAI sends.
//!
//! * `/v1/completions`: one `text_completion` chunk per token with `choices[0].text` the new
//!   text and `finish_reason` null, then one with empty text and the finish reason.
//! * `/v1/chat/completions`: a `chat.completion.chunk` with `delta {role: "assistant",
//!   content: ""}`, one with `delta {content}` per token, then one with an empty delta and
//!   the finish reason.
//!
//! Tokens that complete no text (the first bytes of a multi-byte character) send nothing.
//! The request id is known only at the end, so a stream's `id` is the request hash's first
//! 16 hex digits (`cmpl-3fa2…`); the last chunk adds `weft: {request_id, payment, step}`. With
//! `stream_options.include_usage` a last chunk with empty `choices` carries the usage, as
//! OpenAI does. A failure after the stream began sends `data: {"error": …}` and ends it
//! without `[DONE]`.

use super::openai::{fingerprint, Kind, Usage};
use bytes::Bytes;
use serde_json::{json, Value};
use weft_rpc_api::inference::CompletionJson;

/// The end of a stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// One event of `value`.
pub fn frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The chunks of one streamed completion.
#[derive(Debug, Clone)]
pub struct Chunks {
    /// Which endpoint.
    pub kind: Kind,
    /// The `id` of every chunk.
    pub id: String,
    /// The model name.
    pub model: String,
    /// Unix seconds of the request.
    pub created: u64,
}

impl Chunks {
    /// Chunks with the id made of `request_hash` (0x-prefixed hex).
    pub fn new(kind: Kind, request_hash: &str, model: &str, created: u64) -> Self {
        let hex = request_hash.trim_start_matches("0x");
        let short = hex.get(..16).unwrap_or(hex);
        Chunks {
            kind,
            id: format!("{}-{short}", kind.id_prefix()),
            model: model.to_string(),
            created,
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": match self.kind {
                Kind::Text => "text_completion",
                Kind::Chat => "chat.completion.chunk",
            },
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn choice(&self, text: Option<&str>, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Text => json!({
                "text": text.unwrap_or(""), "index": 0, "logprobs": null, "finish_reason": finish,
            }),
            Kind::Chat => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    }

    /// What opens the stream: the role delta of chat, nothing for completions.
    pub fn start(&self) -> Option<Value> {
        (self.kind == Kind::Chat).then(|| {
            self.chunk(json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]))
        })
    }

    /// The chunk of new text.
    pub fn text(&self, text: &str) -> Value {
        self.chunk(json!([self.choice(Some(text), None)]))
    }

    /// The last chunk with a choice: the finish reason, and the completion's facts under
    /// `weft`.
    pub fn finish(&self, c: &CompletionJson) -> Value {
        let mut v = self.chunk(json!([self.choice(None, Some(&c.finish_reason))]));
        v["system_fingerprint"] = json!(fingerprint(c.step));
        v["weft"] = json!({"request_id": c.request_id, "payment": c.payment, "step": c.step});
        v
    }

    /// The usage chunk (`stream_options.include_usage`).
    pub fn usage(&self, c: &CompletionJson) -> Value {
        let mut v = self.chunk(json!([]));
        v["usage"] = json!(Usage::of(c));
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_primitives::Hash;

    fn done() -> CompletionJson {
        CompletionJson {
            run: 1,
            request_id: 9,
            payment: Hash([1; 32]),
            step: 4,
            text: "hi".into(),
            tokens: vec![104, 105],
            finish_reason: "length".into(),
            prompt_tokens: 3,
            route: vec![],
            attempts: 1,
        }
    }

    #[test]
    fn frames_are_sse_events() {
        assert_eq!(&frame(&json!({"a": 1}))[..], b"data: {\"a\":1}\n\n");
        assert_eq!(DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn completion_chunks() {
        let c = Chunks::new(Kind::Text, "0x0123456789abcdef0123", "m", 7);
        assert_eq!(c.id, "cmpl-0123456789abcdef");
        assert!(c.start().is_none());
        assert_eq!(
            c.text("h"),
            json!({"id": "cmpl-0123456789abcdef", "object": "text_completion", "created": 7,
                "model": "m", "choices": [{"text": "h", "index": 0, "logprobs": null,
                "finish_reason": null}]})
        );
        let f = c.finish(&done());
        assert_eq!(f["choices"][0]["finish_reason"], "length");
        assert_eq!(f["choices"][0]["text"], "");
        assert_eq!(f["weft"]["request_id"], 9);
        let u = c.usage(&done());
        assert_eq!(u["choices"], json!([]));
        assert_eq!(
            u["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        );
    }

    #[test]
    fn chat_chunks() {
        let c = Chunks::new(Kind::Chat, "0xab", "m", 7);
        assert_eq!(c.id, "chatcmpl-ab");
        let s = c.start().unwrap();
        assert_eq!(s["object"], "chat.completion.chunk");
        assert_eq!(
            s["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            c.text("x")["choices"][0],
            json!({"index": 0, "delta": {"content": "x"}, "logprobs": null, "finish_reason": null})
        );
        let f = c.finish(&done());
        assert_eq!(f["choices"][0]["delta"], json!({}));
        assert_eq!(f["choices"][0]["finish_reason"], "length");
        assert_eq!(f["system_fingerprint"], "weft-step-4");
    }
}
