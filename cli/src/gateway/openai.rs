//! The OpenAI JSON of the gateway: requests of `/v1/completions` and `/v1/chat/completions`
//! read into [`InferenceParams`], and [`CompletionJson`]s written as OpenAI's response
//! objects.
//!
//! Fields OpenAI has and Weft does not serve are refused (`n` other than 1, `logprobs`);
//! fields unknown to the gateway are ignored, as OpenAI ignores them. `max_tokens` defaults
//! to 16 (OpenAI's default for completions). `top_k` is accepted as an extension.
//!
//! # Chat template
//!
//! Weft's models are byte-level language models without a chat format, so the messages are
//! rendered into one prompt, each as `"{role}: {content}\n"`, followed by `"assistant:"`;
//! `"\n"` is added to the stop sequences, so the answer ends at the end of its line.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use weft_rpc_api::inference::{CompletionJson, InferenceParams};
use weft_runtime::support::RunId;

/// `max_tokens` when a request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// The stop sequence of chat completions (one message per line).
pub const CHAT_STOP: &str = "\n";

/// A prompt: a string, a list of one string, token ids or a list of one token-id list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Several texts (only one is served).
    Texts(Vec<String>),
    /// Several token-id lists (only one is served).
    TokenLists(Vec<Vec<u32>>),
}

/// Stop sequences: one string or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The sampling fields common to both endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Sampling {
    /// The model asked for (answers name the gateway's model whatever this is).
    #[serde(default)]
    pub model: Option<String>,
    /// Tokens to generate at most.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens` (chat).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// 0 (greedy) to 10.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus threshold in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (an extension; 0 = all).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Seed of the draws.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Completions per prompt: must be 1.
    #[serde(default)]
    pub n: Option<u32>,
    /// Log probabilities: not served.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Chat's log probabilities count: not served.
    #[serde(default)]
    pub top_logprobs: Option<Value>,
    /// Candidates per token (completions): must be 1 if given.
    #[serde(default)]
    pub best_of: Option<u32>,
    /// Echo the prompt (completions): not served.
    #[serde(default)]
    pub echo: Option<bool>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Everything else.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// One part of a message's content given as a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContentPart {
    /// Must be `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Text.
    Text(String),
    /// Text parts, concatenated.
    Parts(Vec<ContentPart>),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// What it says (null for none).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Everything else.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A request the gateway cannot serve (HTTP 400), with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Why.
    pub message: String,
    /// The field, if one.
    pub param: Option<&'static str>,
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        message: message.into(),
        param: Some(param),
    }
}

impl Sampling {
    /// Whether the answer is streamed.
    pub fn streamed(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn check(&self) -> Result<(), Invalid> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n", "only n = 1 is supported"));
        }
        if self.best_of.is_some_and(|n| n != 1) {
            return Err(invalid("best_of", "only best_of = 1 is supported"));
        }
        let set = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| !(v.is_null() || *v == Value::Bool(false)))
        };
        if set(&self.logprobs) || set(&self.top_logprobs) {
            return Err(invalid("logprobs", "logprobs are not supported"));
        }
        if self.echo == Some(true) {
            return Err(invalid("echo", "echo is not supported"));
        }
        Ok(())
    }

    /// The parameters of a request with this sampling (no prompt yet).
    fn params(&self, run: RunId, extra_stop: Option<&str>) -> Result<InferenceParams, Invalid> {
        self.check()?;
        let mut stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.iter().any(String::is_empty) {
            return Err(invalid("stop", "stop sequences must not be empty"));
        }
        if let Some(s) = extra_stop {
            if !stop.iter().any(|x| x == s) {
                stop.push(s.to_string());
            }
        }
        Ok(InferenceParams {
            run,
            max_tokens: self
                .max_tokens
                .or(self.max_completion_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            stop,
            seed: self.seed,
            ..InferenceParams::default()
        })
    }
}

impl CompletionRequest {
    /// The Weft parameters of this request for `run`.
    pub fn params(&self, run: RunId) -> Result<InferenceParams, Invalid> {
        let mut p = self.sampling.params(run, None)?;
        let one = || invalid("prompt", "exactly one prompt is supported");
        match &self.prompt {
            Prompt::Text(t) => p.prompt = Some(t.clone()),
            Prompt::Tokens(t) => p.prompt_tokens = Some(t.clone()),
            Prompt::Texts(v) => match v.as_slice() {
                [t] => p.prompt = Some(t.clone()),
                _ => return Err(one()),
            },
            Prompt::TokenLists(v) => match v.as_slice() {
                [t] => p.prompt_tokens = Some(t.clone()),
                _ => return Err(one()),
            },
        }
        Ok(p)
    }
}

/// The prompt of `messages` (see the module's chat template).
pub fn render_chat(messages: &[Message]) -> Result<String, Invalid> {
    if messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    let mut out = String::new();
    for m in messages {
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => s.push_str(t),
                        _ => {
                            return Err(invalid(
                                "messages",
                                format!("content parts of type {:?} are not supported", p.kind),
                            ))
                        }
                    }
                }
                s
            }
        };
        out.push_str(&format!("{}: {}\n", m.role, content));
    }
    out.push_str("assistant:");
    Ok(out)
}

impl ChatRequest {
    /// The Weft parameters of this request for `run`: the rendered prompt, `"\n"` added to
    /// the stop sequences.
    pub fn params(&self, run: RunId) -> Result<InferenceParams, Invalid> {
        let mut p = self.sampling.params(run, Some(CHAT_STOP))?;
        p.prompt = Some(render_chat(&self.messages)?);
        Ok(p)
    }
}

/// Token counts of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// The usage of `c`.
    pub fn of(c: &CompletionJson) -> Self {
        let completion_tokens = c.tokens.len() as u32;
        Usage {
            prompt_tokens: c.prompt_tokens,
            completion_tokens,
            total_tokens: c.prompt_tokens + completion_tokens,
        }
    }
}

/// The two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/completions`.
    Text,
    /// `/v1/chat/completions`.
    Chat,
}

impl Kind {
    /// The id prefix of its objects.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Text => "cmpl",
            Kind::Chat => "chatcmpl",
        }
    }
}

/// `system_fingerprint`: the step whose weights answered.
pub fn fingerprint(step: impl std::fmt::Display) -> String {
    format!("weft-step-{step}")
}

/// The response object of a finished, non-streamed completion.
pub fn response(kind: Kind, model: &str, created: u64, c: &CompletionJson) -> Value {
    let id = format!("{}-{}", kind.id_prefix(), c.request_id);
    let choice = match kind {
        Kind::Text => json!({
            "text": c.text, "index": 0, "logprobs": null, "finish_reason": c.finish_reason,
        }),
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": null,
            "finish_reason": c.finish_reason,
        }),
    };
    json!({
        "id": id,
        "object": match kind { Kind::Text => "text_completion", Kind::Chat => "chat.completion" },
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(c.step),
        "choices": [choice],
        "usage": Usage::of(c),
    })
}

/// `GET /v1/models`.
pub fn model_list(model: &str) -> Value {
    json!({"object": "list", "data": [model_object(model)]})
}

/// One model object.
pub fn model_object(model: &str) -> Value {
    json!({"id": model, "object": "model", "created": 0, "owned_by": "weft"})
}

/// An error object: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
