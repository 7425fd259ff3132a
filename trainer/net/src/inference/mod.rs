//! Inference across stage holders: the messages, the request body a payment commits to,
//! and the router that drives a generation through one holder per stage.
//!
//! # Request path
//!
//! A credential holder's request names a run, a prompt (token ids), how many tokens to
//! generate, the sampling settings and stop sequences: a [`RequestBody`]. The holder escrows
//! credentials on chain for it (`inference.open(run, request_hash, max_tokens)`, where
//! `request_hash` is [`RequestBody::hash`]) and hands the body to a node. The node's
//! [`router::Router`] then runs the generation as a client of the stage holders:
//!
//! ```text
//! prefill:  tokens[0..P] ─▶ stage 0 ─hidden─▶ node ─▶ stage 1 ─▶ … ─▶ stage S-1 ─token─▶ node
//! decode:   token[t]     ─▶ stage 0 ─hidden─▶ node ─▶ …                ─token─▶ node
//! ```
//!
//! Each stage keeps a KV cache per [`SessionId`], so a decode step sends one position
//! through each stage, never the prompt again. Only activations ([`InferInput::Hidden`])
//! travel between stages; token ids are seen by the first stage (which embeds them) and
//! the sampled token is produced by the last (which holds the head and samples with
//! [`Sampling`] at the position, a deterministic draw keyed by the seed). All stages serve
//! the weights of one named step, which the node picks from chain state.
//!
//! The first stage checks that the prefill's body hashes to the escrow's `request_hash`;
//! every stage checks the escrow is open for its run. When the generation ends the node
//! closes the session on every stage ([`InferClose`]); the last stage, on a close with
//! `delivered`, settles the escrow on chain for the tokens it processed.
//!
//! # Failure
//!
//! A holder that fails (unreachable, error, timeout) is routed around: the router picks
//! another route that avoids it and replays the token history (prompt and the tokens
//! generated so far) as a fresh prefill under the next `attempt` of the session. Because
//! sampling depends only on (logits, settings, position), the replayed route continues
//! with exactly the tokens the first would have produced.

pub mod router;

use crate::wire::{RunId, StageIndex, Step, WireTensor};
use parity_scale_codec::{Decode, Encode};
pub use weft_primitives::inference::{
    BodyError, RequestBody, RequestId, Sampling, MAX_STOP_SEQUENCES, MAX_STOP_TOKENS,
    MAX_TEMPERATURE_MILLI, TOP_P_ONE,
};

/// One attempt at serving a request: a new route after a failure is a new attempt, with
/// fresh KV caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct SessionId {
    /// The escrowed request.
    pub request: RequestId,
    /// 0 for the first route, then one more per re-route.
    pub attempt: u16,
}

/// What a stage is given for the new positions.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum InferInput {
    /// Token ids, for the first stage (index 0).
    #[codec(index = 0)]
    Tokens(Vec<u32>),
    /// The previous stage's hidden states `[1, n, d_model]` (index 1).
    #[codec(index = 1)]
    Hidden(WireTensor),
}

/// Run positions `start .. start + n` of a session through a stage.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct InferForward {
    /// The run.
    pub run: RunId,
    /// The step whose weights serve (the same on every stage).
    pub step: Step,
    /// The stage asked.
    pub stage: StageIndex,
    /// The session.
    pub session: SessionId,
    /// The first new position (= the positions the stage has cached for the session).
    pub start: u32,
    /// The new positions.
    pub input: InferInput,
    /// The request body, on the first stage's prefill (`start` 0), to check against the
    /// escrow's hash.
    pub body: Option<RequestBody>,
    /// How to draw the next token, on the last stage.
    pub sampling: Option<Sampling>,
}

/// The end of a session on a stage.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct InferClose {
    /// The run.
    pub run: RunId,
    /// The stage.
    pub stage: StageIndex,
    /// The session.
    pub session: SessionId,
    /// Whether the completion reached the holder (the last stage then settles the escrow).
    pub delivered: bool,
}
