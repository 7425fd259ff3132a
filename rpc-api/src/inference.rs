//! The inference methods (`inference_*`): a credential holder's completions, paid by an
//! escrow on chain and served across the run's stage holders.
//!
//! * `inference_estimate(params)` → [`EstimateJson`]: tokens, the credential cost, the
//!   `request_hash` to sign into the payment, and whether the run can serve now.
//! * `inference_generate(params)` → [`CompletionJson`]: `params.payment` is the holder's
//!   signed `inference.open(run, request_hash, max_tokens)` extrinsic; the node checks that
//!   it pays for exactly this request, submits it, waits for its block, then serves.
//! * `inference_subscribeGenerate(params)` streams [`GenerateEvent`]s: tokens as they are
//!   final, then the completion.
//! * `inference_status(run)` → [`InferenceStatusJson`]: the serving step and, per stage, the
//!   holders with what this node measured of them.
//!
//! Text is byte-level: a prompt's tokens are its UTF-8 bytes (the model's vocabulary must
//! cover 256 ids), and the completion's text is its tokens as bytes, decoded lossily.
//!
//! Errors: [`INFERENCE_BAD_PARAMS`] (4010) for parameters that cannot be served (with the
//! reason); [`INFERENCE_UNPAID`] (4011) for a missing, forged, mismatched or refused
//! payment (with `data: {"submitted": true}` when it had reached the pool, so that its nonce
//! may be used); [`INFERENCE_UNAVAILABLE`] (4012) when the run cannot serve (halted, no
//! committed and audited step, a stage without a reachable holder) — nothing is paid then;
//! [`INFERENCE_BUSY`] (4013) with `data: {"retryAfterMs": n}` when the holders or this node
//! are at their limit; [`crate::UNKNOWN_RUN`] for a run never registered.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};
use weft_primitives::inference::{
    RequestBody, RequestId, Sampling, MAX_TEMPERATURE_MILLI, TOP_P_ONE,
};
use weft_primitives::step::{RunId, Step};
use weft_primitives::{Bytes, Hash};

/// Parameters that cannot be served.
pub const INFERENCE_BAD_PARAMS: i32 = 4010;
/// The payment is missing, forged, does not match or was refused.
pub const INFERENCE_UNPAID: i32 = 4011;
/// The run cannot serve now; nothing was paid.
pub const INFERENCE_UNAVAILABLE: i32 = 4012;
/// Every serving slot is taken; retry after `data.retryAfterMs`.
pub const INFERENCE_BUSY: i32 = 4013;

/// A completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceParams {
    /// The run whose model answers.
    pub run: RunId,
    /// The prompt as text (byte-level tokens) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// … or as token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<u32>>,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// 0 (greedy, the default) to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus threshold in (0, 1] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (default 0 = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Stop sequences as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Seed of the draws (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The signed `inference.open` extrinsic (SCALE, hex); ignored by `inference_estimate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Bytes>,
}

/// Why parameters do not make a request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Neither or both prompt forms.
    #[error("give exactly one of prompt and promptTokens")]
    Prompt,
    /// A setting out of range.
    #[error("{0}")]
    Range(String),
}

impl InferenceParams {
    /// The request body these parameters describe (checked against the model by
    /// [`RequestBody::validate`]).
    pub fn body(&self) -> Result<RequestBody, ParamsError> {
        let prompt = match (&self.prompt, &self.prompt_tokens) {
            (Some(text), None) => text_tokens(text),
            (None, Some(tokens)) => tokens.clone(),
            _ => return Err(ParamsError::Prompt),
        };
        let temperature = self.temperature.unwrap_or(0.0);
        let max_t = f64::from(MAX_TEMPERATURE_MILLI) / 1000.0;
        if !(0.0..=max_t).contains(&temperature) {
            return Err(ParamsError::Range(format!(
                "temperature must be in [0, {max_t}]"
            )));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ParamsError::Range("topP must be in (0, 1]".into()));
        }
        Ok(RequestBody {
            run: self.run,
            prompt,
            max_new_tokens: self.max_tokens,
            sampling: Sampling {
                temperature_milli: (temperature * 1000.0).round() as u32,
                top_k: self.top_k.unwrap_or(0),
                top_p_micro: ((top_p * f64::from(TOP_P_ONE)).round() as u32).max(1),
                seed: self.seed.unwrap_or(0),
            },
            stop: self.stop.iter().map(|s| text_tokens(s)).collect(),
        })
    }
}

/// Byte-level tokens of `text`.
pub fn text_tokens(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// The text of byte-level tokens (ids above 255 are dropped; invalid UTF-8 is replaced).
pub fn tokens_text(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens
        .iter()
        .filter_map(|&t| u8::try_from(t).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What the `Token` events of a stream did not carry of `done`'s text: the completion's text
/// after `streamed` (the concatenated texts of the `Token` events). A final incomplete UTF-8
/// sequence is only decided when the generation ends, and then shows in `done.text` (as
/// U+FFFD); a client printing a stream prints this last.
pub fn stream_tail<'a>(streamed: &str, done: &'a CompletionJson) -> &'a str {
    done.text.strip_prefix(streamed).unwrap_or("")
}

/// What a request would cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimateJson {
    /// The run.
    pub run: RunId,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt plus `maxTokens`: what the escrow covers (`max_tokens` of `inference.open`).
    pub total_tokens: u32,
    /// Credentials escrowed (decimal string); settlement charges only what is used.
    pub credentials: String,
    /// Credentials per token (decimal string).
    pub credentials_per_token: String,
    /// What `inference.open` must commit to.
    pub request_hash: Hash,
    /// The step that would serve, if the run can serve now.
    pub step: Option<Step>,
    /// Why it cannot, if it cannot.
    pub unavailable: Option<String>,
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionJson {
    /// The run.
    pub run: RunId,
    /// The escrowed request.
    pub request_id: RequestId,
    /// The hash of the payment extrinsic.
    pub payment: Hash,
    /// The step whose weights served it.
    pub step: Step,
    /// The completion as text (byte-level).
    pub text: String,
    /// The completion's tokens.
    pub tokens: Vec<u32>,
    /// `length` or `stop`.
    pub finish_reason: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// The stage holders of the route that finished it, stage 0 first (peer ids).
    pub route: Vec<String>,
    /// Routes tried (1 without a failure).
    pub attempts: u16,
}

/// One message of `inference_subscribeGenerate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GenerateEvent {
    /// A token that is final, with the text it completes (may be empty mid-character).
    Token {
        /// The token.
        token: u32,
        /// New text.
        text: String,
    },
    /// The end.
    Done(CompletionJson),
    /// The request failed after it was paid for (nothing is charged for it).
    Error {
        /// The JSON-RPC error code it would have.
        code: i32,
        /// Why.
        message: String,
    },
}

/// One holder of a stage, as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderJson {
    /// The replica.
    pub replica: u16,
    /// Its account (SS58).
    pub account: String,
    /// Its peer id.
    pub peer_id: String,
    /// Whether it committed the serving step.
    pub serving: bool,
    /// Mean hop round-trip measured by this node, ms.
    pub latency_ms: Option<f64>,
    /// Hops in flight now.
    pub in_flight: u32,
    /// Hops answered.
    pub served: u64,
    /// Hops failed.
    pub failed: u64,
}

/// The serving state of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceStatusJson {
    /// The run.
    pub run: RunId,
    /// The step that serves now.
    pub step: Option<Step>,
    /// Why it cannot serve, if it cannot.
    pub unavailable: Option<String>,
    /// Holders per stage, stage 0 first.
    pub stages: Vec<Vec<HolderJson>>,
}

/// The inference interface.
#[rpc(server, client)]
pub trait InferenceApi {
    /// The cost of a request and whether the run can serve it.
    #[method(name = "inference_estimate")]
    async fn estimate(&self, params: InferenceParams) -> RpcResult<EstimateJson>;

    /// Pays (with `params.payment`) and serves a completion.
    #[method(name = "inference_generate")]
    async fn generate(&self, params: InferenceParams) -> RpcResult<CompletionJson>;

    /// Pays and streams a completion.
    #[subscription(name = "inference_subscribeGenerate" => "inference_generated", unsubscribe = "inference_unsubscribeGenerate", item = GenerateEvent)]
    async fn subscribe_generate(
        &self,
        params: InferenceParams,
    ) -> jsonrpsee::core::SubscriptionResult;

    /// Who serves `run`, and how fast.
    #[method(name = "inference_status")]
    async fn status(&self, run: RunId) -> RpcResult<InferenceStatusJson>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_tail_is_what_the_tokens_left_undecided() {
        let done = CompletionJson {
            run: 0,
            request_id: 1,
            payment: Hash::ZERO,
            step: 3,
            text: "ab\u{fffd}".into(),
            tokens: vec![97, 98, 0xc3],
            finish_reason: "length".into(),
            prompt_tokens: 1,
            route: vec![],
            attempts: 1,
        };
        assert_eq!(stream_tail("ab", &done), "\u{fffd}");
        assert_eq!(stream_tail("ab\u{fffd}", &done), "");
        assert_eq!(stream_tail("xy", &done), "");
    }

    #[test]
    fn params_make_a_canonical_body() {
        let p: InferenceParams = serde_json::from_value(serde_json::json!({
            "run": 2, "prompt": "hi", "maxTokens": 8, "temperature": 0.7, "topP": 0.9,
            "stop": ["\n"], "seed": 5
        }))
        .unwrap();
        let b = p.body().unwrap();
        assert_eq!(b.prompt, vec![104, 105]);
        assert_eq!(b.sampling.temperature_milli, 700);
        assert_eq!(b.sampling.top_p_micro, 900_000);
        assert_eq!(b.stop, vec![vec![10]]);
        assert_eq!(b.hash(), p.clone().body().unwrap().hash());
        let both = InferenceParams {
            prompt_tokens: Some(vec![1]),
            ..p.clone()
        };
        assert_eq!(both.body(), Err(ParamsError::Prompt));
        let hot = InferenceParams {
            temperature: Some(11.0),
            ..p
        };
        assert!(matches!(hot.body(), Err(ParamsError::Range(_))));
        assert!(serde_json::from_value::<InferenceParams>(
            serde_json::json!({"run": 1, "maxTokens": 1, "bogus": 1})
        )
        .is_err());
        assert_eq!(tokens_text(&[104, 105, 300]), "hi");
    }
}
