//! Inference: cached incremental forward of a stage, deterministic sampling, local
//! generation.
//!
//! # Serving through the pipeline
//!
//! A request is routed through one holder per stage. Each holder keeps, per session, a
//! [`KvCache`] for its stage: for every block of the stage the keys and values (`[B,
//! n_heads, t, head_dim]`) of the `t` positions processed so far. Decoding never
//! recomputes the prompt:
//!
//! 1. *Prefill*: the prompt (token ids `[B, n]`) goes through stage 0, whose hidden
//!    states `[B, n, d_model]` go to stage 1, and so on; each stage appends the keys and
//!    values of the `n` positions to its cache. The last stage returns logits `[B, n,
//!    vocab]`; the row of the last position gives the next token ([`sample_next`]).
//! 2. *Decode*: only the new token goes through: `[B, 1]` ids, then `[B, 1, d_model]`
//!    activations. Its position is `cache.len()`, which the position embedding of stage 0
//!    uses; in every block its query attends over the cached keys plus its own.
//!
//! [`Stage::forward_cached`] runs `n ≥ 1` new positions `L .. L + n` (`L` =
//! [`KvCache::len`]): the new queries attend over all `L + n` keys with the causal mask
//! inside the new block (new position `i` sees keys `0 ..= L + i`). With an empty cache this
//! is exactly the training attention (`is_causal`), so a fresh cache over a whole sequence is
//! the training forward in evaluation mode. It never applies dropout and records no
//! gradient. The cache is bounded by `seq_len` (the learned position embedding has
//! `seq_len` rows): a forward that would go past it fails with [`Error::ContextFull`] and
//! leaves the cache as it was; so does any other failed forward.
//!
//! # Sampling
//!
//! [`sample_next`] is a pure function of `(logits, params, position)`, the same on every
//! host and replica: greedy is the arg-max with the lowest index on ties; otherwise the
//! logits are copied to the CPU as f32, the softmax of `logits / temperature` is computed
//! in f64 over the candidates sorted by (logit descending, index ascending), top-k keeps
//! the first `k`, top-p the shortest prefix whose mass reaches `top_p`, and one uniform
//! `u ∈ [0, 1)` ([`sample_uniform`]: blake3 keyed by `derive_key("weft-infer sample v1")`
//! over `seed (u64 LE) ‖ position (u64 LE)`, the first 8 bytes as a little-endian u64, its
//! top 53 bits) picks the first candidate whose cumulative weight exceeds `u · total`.
//! The only platform-dependent step is `f64::exp` (within an ulp on any libm), which could
//! change a token only if `u` fell within ~1e-16 of a boundary.
//!
//! # Local generation
//!
//! [`generate_local`] drives a whole model held in this process (one stage, or all stages
//! of a cut) the way the serving pipeline does, with or without the cache; without it every
//! step recomputes the whole sequence, which is the reference the cached path is tested
//! against.

use crate::error::{Error, Result};
use crate::model::{Stage, StageSpec};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The keys and values of the positions one stage has processed for one session.
#[derive(Debug)]
pub struct KvCache {
    spec: StageSpec,
    batch: i64,
    len: usize,
    limit: usize,
    /// Per block of the stage: keys and values `[batch, n_heads, len, head_dim]`, `None`
    /// while empty.
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for `stage` and a batch of `batch ≥ 1` sequences.
    pub fn new(stage: &Stage, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Cache("batch must be at least 1".into()));
        }
        Ok(KvCache {
            spec: stage.spec(),
            batch: batch as i64,
            len: 0,
            limit: stage.config().seq_len as usize,
            layers: (0..stage.n_blocks()).map(|_| None).collect(),
        })
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions the cache can hold (`seq_len`).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Positions that can still be added.
    pub fn remaining(&self) -> usize {
        self.limit - self.len
    }

    /// The batch size the cache was made for.
    pub fn batch(&self) -> usize {
        self.batch as usize
    }

    /// The stage the cache belongs to.
    pub fn spec(&self) -> StageSpec {
        self.spec
    }

    /// Number of blocks (one key/value pair each).
    pub fn n_blocks(&self) -> usize {
        self.layers.len()
    }

    /// Keys and values of block `i` of the stage (`[batch, n_heads, len, head_dim]`), or
    /// `None` while the cache is empty or `i` is out of range.
    pub fn block(&self, i: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(i)?.as_ref().map(|(k, v)| (k, v))
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Keeps only the first `len` positions (no-op if `len ≥ self.len()`), e.g. to roll
    /// back a step that a later stage failed.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        if len == 0 {
            self.clear();
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.f_narrow(2, 0, len as i64)?;
            *v = v.f_narrow(2, 0, len as i64)?;
        }
        self.len = len;
        Ok(())
    }
}

impl Stage {
    /// An empty [`KvCache`] for this stage and `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        KvCache::new(self, batch)
    }

    /// Inference forward of `n ≥ 1` new positions `cache.len() .. cache.len() + n`, in
    /// evaluation mode (no dropout) without gradients, appending their keys and values to
    /// `cache`.
    ///
    /// `input` is token ids (int64 `[B, n]`) on stage 0 and hidden states (float `[B, n,
    /// d_model]`) otherwise, `B` the cache's batch. Returns the hidden states `[B, n,
    /// d_model]`, or on the last stage the logits `[B, n, vocab]` (after `ln_f` and the
    /// head), on this stage's device. Errors, leaving the cache unchanged: [`Error::Shape`]
    /// (rank, kind, `d_model`, `n = 0`), [`Error::TokenOutOfRange`], [`Error::Cache`] (the
    /// cache is of another stage or batch), [`Error::ContextFull`] (past `seq_len`).
    /// Honours [`Stage::autocast_bf16`] on CUDA like [`Stage::forward`].
    pub fn forward_cached(&self, input: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let spec = self.spec();
        let cfg = self.config();
        if cache.spec != spec
            || cache.layers.len() != self.n_blocks()
            || cache.limit != cfg.seq_len as usize
        {
            return Err(Error::Cache(format!(
                "cache of stage {} of {} ({} blocks) used with stage {} of {} ({} blocks)",
                cache.spec.stage,
                cache.spec.n_stages,
                cache.layers.len(),
                spec.stage,
                spec.n_stages,
                self.n_blocks()
            )));
        }
        let size = input.size();
        let kind = input.f_kind()?;
        let ok = if spec.is_first() {
            size.len() == 2 && kind == Kind::Int64
        } else {
            size.len() == 3 && size[2] == cfg.d_model && kind == Kind::Float
        };
        if !ok {
            return Err(Error::Shape(format!(
                "stage {} expects {}, got {kind:?} {size:?}",
                spec.stage,
                if spec.is_first() {
                    "int64 [B, n]".to_string()
                } else {
                    format!("float [B, n, {}]", cfg.d_model)
                }
            )));
        }
        let (b, n) = (size[0], size[1]);
        if n < 1 {
            return Err(Error::Shape("no new position".into()));
        }
        if b != cache.batch {
            return Err(Error::Cache(format!(
                "input batch {b}, the cache's is {}",
                cache.batch
            )));
        }
        let len = cache.len + n as usize;
        if len > cache.limit {
            return Err(Error::ContextFull {
                len,
                limit: cache.limit,
            });
        }
        if spec.is_first() {
            let min = input.f_min()?.f_int64_value(&[])?;
            let max = input.f_max()?.f_int64_value(&[])?;
            for token in [min, max] {
                if !(0..cfg.vocab_size).contains(&token) {
                    return Err(Error::TokenOutOfRange {
                        token,
                        vocab: cfg.vocab_size,
                    });
                }
            }
        }
        let input = input.f_to_device(self.device())?;
        let use_autocast = self.autocast_bf16 && self.device().is_cuda();
        let (out, kvs) = tch::no_grad(|| {
            tch::autocast(use_autocast, || {
                self.forward_kv(&input, cache.len as i64, &cache.layers)
            })
        })?;
        cache.layers = kvs.into_iter().map(Some).collect();
        cache.len = len;
        Ok(out)
    }
}

/// How the next token is chosen. The default is greedy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; 0 = greedy (arg-max). Finite, ≥ 0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`;
    /// in (0, 1], 1 = off.
    pub top_p: f32,
    /// Seed of the draws; with the position it determines the token.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Whether this is greedy decoding (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the parameters ([`Error::Sampling`]): temperature finite and ≥ 0, `top_p`
    /// in (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::Sampling(format!(
                "temperature must be finite and at least 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Sampling(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// The uniform draw in `[0, 1)` (53 bits) of `(seed, position)`: the first 8 bytes (LE) of
/// blake3 with `derive_key("weft-infer sample v1")` over `seed (LE) ‖ position (LE)`.
pub fn sample_uniform(seed: u64, position: u64) -> f64 {
    let mut h = blake3::Hasher::new_derive_key("weft-infer sample v1");
    h.update(&seed.to_le_bytes());
    h.update(&position.to_le_bytes());
    let hash = h.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(word) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Chooses the token at sequence position `position` (0-based index of the token being
/// sampled) from `logits_row` (`[vocab]`, any floating kind, any device; copied to the CPU
/// as f32). See the module documentation for the algorithm. Errors ([`Error::Sampling`]):
/// invalid `params`, a row that is not 1-D floating, NaN or +∞ logits, all logits −∞.
pub fn sample_next(logits_row: &Tensor, params: &SamplingParams, position: u64) -> Result<u32> {
    params.validate()?;
    let size = logits_row.size();
    if size.len() != 1 || !logits_row.is_floating_point() {
        return Err(Error::Sampling(format!(
            "logits must be a floating [vocab] row, got {:?} {size:?}",
            logits_row.f_kind()?
        )));
    }
    let row = logits_row
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let logits = Vec::<f32>::try_from(&row)?;
    sample_from_logits(&logits, params, position)
}

/// [`sample_next`] on logits already copied out.
pub fn sample_from_logits(logits: &[f32], params: &SamplingParams, position: u64) -> Result<u32> {
    params.validate()?;
    if logits.is_empty() || logits.len() > u32::MAX as usize {
        return Err(Error::Sampling(format!(
            "vocabulary of {} logits",
            logits.len()
        )));
    }
    if let Some(i) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(Error::Sampling(format!("logit {i} is {}", logits[i])));
    }
    // Candidates: every token with a finite logit, most likely first, ties by index.
    let mut order: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    if order.is_empty() {
        return Err(Error::Sampling("every logit is -inf".into()));
    }
    // No NaN here, so partial_cmp is total; unlike total_cmp it treats -0 and +0 as a tie.
    order.sort_by(|&a, &b| {
        logits[b]
            .partial_cmp(&logits[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    if params.is_greedy() {
        return Ok(order[0] as u32);
    }
    if params.top_k > 0 {
        order.truncate(params.top_k as usize);
    }
    let t = f64::from(params.temperature);
    let max = f64::from(logits[order[0]]);
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / t).exp())
        .collect();
    let mut total: f64 = weights.iter().sum();
    if params.top_p < 1.0 {
        let target = f64::from(params.top_p) * total;
        let mut cum = 0.0;
        let mut keep = weights.len();
        for (j, w) in weights.iter().enumerate() {
            cum += w;
            if cum >= target {
                keep = j + 1;
                break;
            }
        }
        order.truncate(keep);
        weights.truncate(keep);
        total = weights.iter().sum();
    }
    let r = sample_uniform(params.seed, position) * total;
    let mut cum = 0.0;
    for (j, w) in weights.iter().enumerate() {
        cum += w;
        if r < cum {
            return Ok(order[j] as u32);
        }
    }
    Ok(order[order.len() - 1] as u32)
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// The generated tokens ended with a stop sequence (which is left out).
    Stop,
    /// Prompt plus generated tokens filled the context (`seq_len`).
    ContextFull,
}

/// The outcome of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The new tokens only (without the prompt and without a matched stop sequence).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Checks that `stages` are stages `0 .. n` of one `n`-stage cut of one model.
fn check_stages(stages: &[&Stage]) -> Result<()> {
    let Some(first) = stages.first() else {
        return Err(Error::Pipeline("no stage given".into()));
    };
    for (i, s) in stages.iter().enumerate() {
        if s.spec()
            != (StageSpec {
                stage: i,
                n_stages: stages.len(),
            })
            || s.config() != first.config()
        {
            return Err(Error::Pipeline(format!(
                "stage {} of {} given at place {i} of {} stages (or of another model)",
                s.spec().stage,
                s.spec().n_stages,
                stages.len()
            )));
        }
    }
    Ok(())
}

/// Runs `tokens` (one sequence) through every stage, with the caches, and returns the
/// logits row of the last position.
fn run_pipeline(stages: &[&Stage], caches: &mut [KvCache], tokens: &[u32]) -> Result<Tensor> {
    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    let mut x = Tensor::f_from_slice(&ids)?.f_view([1, ids.len() as i64])?;
    for (stage, cache) in stages.iter().zip(caches.iter_mut()) {
        x = stage.forward_cached(&x, cache)?;
    }
    Ok(x.f_select(0, 0)?.f_select(0, ids.len() as i64 - 1)?)
}

/// Generates up to `max_new_tokens` tokens after `prompt` with the model made of `stages`
/// (stage `i` of `stages.len()` at place `i`; one whole stage works too).
///
/// The prompt goes through every stage (prefill), then each new token is sampled by
/// [`sample_next`] at its position (`prompt.len() + i` for the `i`-th new token) and fed
/// back: with `use_cache` only the new token goes through; without, the whole sequence is
/// recomputed each time (the reference). Ends with [`FinishReason::Stop`] when the
/// generated tokens end with one of `stop` (the longest such one is removed from the
/// output), [`FinishReason::Length`] after `max_new_tokens`, and
/// [`FinishReason::ContextFull`] when prompt plus new tokens reach `seq_len` (checked in
/// that order; a prompt of exactly `seq_len` tokens gives no token and `ContextFull`).
///
/// Errors: [`Error::EmptyPrompt`], [`Error::PromptTooLong`], [`Error::TokenOutOfRange`]
/// (prompt), [`Error::Sampling`] (bad params, an empty stop sequence),
/// [`Error::Pipeline`] (stages not a whole cut of one model).
pub fn generate_local(
    stages: &[&Stage],
    prompt: &[u32],
    max_new_tokens: usize,
    params: &SamplingParams,
    stop: &[Vec<u32>],
    use_cache: bool,
) -> Result<Generation> {
    check_stages(stages)?;
    params.validate()?;
    let cfg = stages[0].config();
    let limit = cfg.seq_len as usize;
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if prompt.len() > limit {
        return Err(Error::PromptTooLong {
            len: prompt.len(),
            limit,
        });
    }
    if let Some(&token) = prompt.iter().find(|&&t| i64::from(t) >= cfg.vocab_size) {
        return Err(Error::TokenOutOfRange {
            token: i64::from(token),
            vocab: cfg.vocab_size,
        });
    }
    if stop.iter().any(|s| s.is_empty()) {
        return Err(Error::Sampling("empty stop sequence".into()));
    }
    let done = |tokens: Vec<u32>, finish| Ok(Generation { tokens, finish });
    if max_new_tokens == 0 {
        return done(Vec::new(), FinishReason::Length);
    }
    if prompt.len() == limit {
        return done(Vec::new(), FinishReason::ContextFull);
    }
    let fresh = || -> Result<Vec<KvCache>> { stages.iter().map(|s| s.new_cache(1)).collect() };
    let mut caches = fresh()?;
    let mut seq = prompt.to_vec();
    let mut out: Vec<u32> = Vec::new();
    let mut logits = run_pipeline(stages, &mut caches, &seq)?;
    loop {
        let token = sample_next(&logits, params, seq.len() as u64)?;
        seq.push(token);
        out.push(token);
        if let Some(s) = stop
            .iter()
            .filter(|s| out.ends_with(s))
            .max_by_key(|s| s.len())
        {
            out.truncate(out.len() - s.len());
            return done(out, FinishReason::Stop);
        }
        if out.len() == max_new_tokens {
            return done(out, FinishReason::Length);
        }
        if seq.len() >= limit {
            return done(out, FinishReason::ContextFull);
        }
        logits = if use_cache {
            run_pipeline(stages, &mut caches, &[token])?
        } else {
            run_pipeline(stages, &mut fresh()?, &seq)?
        };
    }
}
