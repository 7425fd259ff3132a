//! Inference requests as the chain sees them: the [`RequestBody`] a credential holder pays
//! for, whose [`RequestBody::hash`] the escrow (`inference.open`) commits to, and its
//! [`Sampling`] settings in fixed point so that the hash is canonical. The stage network
//! carries the body to the first stage, which checks it against the escrow; the node and
//! the CLI build it from the same JSON parameters.

use crate::step::RunId;
use parity_scale_codec::{Decode, Encode};

/// The on-chain id of an escrowed inference request.
pub type RequestId = u64;

/// Largest temperature, in thousandths.
pub const MAX_TEMPERATURE_MILLI: u32 = 10_000;
/// `top_p` = 1.0, in millionths.
pub const TOP_P_ONE: u32 = 1_000_000;

/// How the next token is drawn, in fixed point so that its hash is canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Sampling {
    /// Temperature in thousandths (0 = greedy, at most [`MAX_TEMPERATURE_MILLI`]).
    pub temperature_milli: u32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: u32,
    /// Nucleus sampling threshold in millionths (1..=[`TOP_P_ONE`]).
    pub top_p_micro: u32,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature_milli: 0,
            top_k: 0,
            top_p_micro: TOP_P_ONE,
            seed: 0,
        }
    }
}

/// Why a request body cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No prompt tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Nothing to generate.
    #[error("max_tokens must be at least 1")]
    NothingToGenerate,
    /// Prompt plus completion exceed the model's context.
    #[error("prompt ({prompt} tokens) plus max_tokens ({max_new}) exceed the model's context of {context}")]
    ContextTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Requested new tokens.
        max_new: u32,
        /// The model's `seq_len`.
        context: u32,
    },
    /// A token id outside the vocabulary.
    #[error("token {token} is outside the vocabulary of {vocab}")]
    BadToken {
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab: u32,
    },
    /// Sampling settings out of range.
    #[error("sampling: {0}")]
    Sampling(String),
    /// Too many or too long stop sequences.
    #[error("stop sequences: {0}")]
    Stop(String),
}

/// At most this many stop sequences …
pub const MAX_STOP_SEQUENCES: usize = 4;
/// … of at most this many tokens each.
pub const MAX_STOP_TOKENS: usize = 32;

/// What a credential holder pays for: the escrow's `request_hash` is [`RequestBody::hash`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RequestBody {
    /// The run whose model answers.
    pub run: RunId,
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_new_tokens: u32,
    /// How tokens are drawn.
    pub sampling: Sampling,
    /// Generation ends when the generated tokens end with one of these (not included).
    pub stop: Vec<Vec<u32>>,
}

impl RequestBody {
    /// The hash an escrow commits to: blake3 over a domain tag and the SCALE encoding.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"weft-inference-request v1");
        h.update(&self.encode());
        *h.finalize().as_bytes()
    }

    /// Prompt plus completion tokens: what the escrow must cover.
    pub fn total_tokens(&self) -> u32 {
        u32::try_from(self.prompt.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.max_new_tokens)
    }

    /// Checks the body against a model of `vocab` tokens and a context of `context`.
    pub fn validate(&self, vocab: u32, context: u32) -> Result<(), BodyError> {
        if self.prompt.is_empty() {
            return Err(BodyError::EmptyPrompt);
        }
        if self.max_new_tokens == 0 {
            return Err(BodyError::NothingToGenerate);
        }
        if self.total_tokens() > context {
            return Err(BodyError::ContextTooLong {
                prompt: self.prompt.len(),
                max_new: self.max_new_tokens,
                context,
            });
        }
        let all = self.prompt.iter().chain(self.stop.iter().flatten());
        if let Some(&token) = all.into_iter().find(|&&t| t >= vocab) {
            return Err(BodyError::BadToken { token, vocab });
        }
        let s = &self.sampling;
        if s.temperature_milli > MAX_TEMPERATURE_MILLI {
            return Err(BodyError::Sampling(format!(
                "temperature {} is above {}",
                f64::from(s.temperature_milli) / 1000.0,
                MAX_TEMPERATURE_MILLI / 1000
            )));
        }
        if s.top_p_micro == 0 || s.top_p_micro > TOP_P_ONE {
            return Err(BodyError::Sampling("top_p must be in (0, 1]".into()));
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return Err(BodyError::Stop(format!(
                "at most {MAX_STOP_SEQUENCES} sequences"
            )));
        }
        if self
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_TOKENS)
        {
            return Err(BodyError::Stop(format!(
                "each must have 1 to {MAX_STOP_TOKENS} tokens"
            )));
        }
        Ok(())
    }

    /// Where generation stops given the tokens generated so far: the length of the output
    /// without a matched stop sequence, or `None` to go on.
    pub fn stop_at(&self, generated: &[u32]) -> Option<usize> {
        self.stop
            .iter()
            .find(|s| generated.ends_with(s))
            .map(|s| generated.len() - s.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body() -> RequestBody {
        RequestBody {
            run: 3,
            prompt: vec![1, 2, 3],
            max_new_tokens: 5,
            sampling: Sampling::default(),
            stop: vec![vec![9, 9]],
        }
    }

    #[test]
    fn hash_binds_every_field() {
        let b = body();
        let h = b.hash();
        let mut c = b.clone();
        c.sampling.seed = 1;
        assert_ne!(c.hash(), h);
        let mut c = b.clone();
        c.max_new_tokens = 6;
        assert_ne!(c.hash(), h);
        let mut c = b.clone();
        c.run = 4;
        assert_ne!(c.hash(), h);
        assert_eq!(b.clone().hash(), h);
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(body().validate(16, 8), Ok(()));
        assert!(matches!(
            body().validate(16, 7),
            Err(BodyError::ContextTooLong { .. })
        ));
        assert!(matches!(
            body().validate(9, 8),
            Err(BodyError::BadToken { token: 9, vocab: 9 })
        ));
        let mut b = body();
        b.prompt.clear();
        assert_eq!(b.validate(16, 8), Err(BodyError::EmptyPrompt));
        let mut b = body();
        b.max_new_tokens = 0;
        assert_eq!(b.validate(16, 8), Err(BodyError::NothingToGenerate));
        let mut b = body();
        b.sampling.top_p_micro = 0;
        assert!(matches!(b.validate(16, 8), Err(BodyError::Sampling(_))));
        let mut b = body();
        b.stop = vec![vec![]];
        assert!(matches!(b.validate(16, 8), Err(BodyError::Stop(_))));
    }

    #[test]
    fn stop_sequences_cut_the_output() {
        let b = body();
        assert_eq!(b.stop_at(&[4, 9]), None);
        assert_eq!(b.stop_at(&[4, 9, 9]), Some(1));
        assert_eq!(b.stop_at(&[9, 9]), Some(0));
    }
}
