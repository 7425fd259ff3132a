//! The typed model specification and hyper-parameters of a run, and the rules that refuse
//! what cannot train.
//!
//! Everything is an integer or fixed point; floats live only in the trainer, which converts
//! these values with one correctly rounded division each (`parts as f64 / 10ⁿ`), so every
//! replica and every auditor builds the same `f64`s.
//!
//! ## Units
//!
//! | field | type | unit |
//! |---|---|---|
//! | `dropout`, `min_lr_ratio`, `weight_decay`, `beta1`, `beta2` | [`Perbill`] | parts per 10⁹ |
//! | `lr_pico` | `u64` | learning rate × 10¹² (3·10⁻³ = `3_000_000_000`) |
//! | `eps_atto` | `u64` | Adam's ε × 10¹⁸ (10⁻⁸ = `10_000_000_000`) |
//! | `grad_clip_nano` | `u64` | clipping norm × 10⁹ (1.0 = `1_000_000_000`; 0: no clipping) |
//!
//! The trainer's defaults (β = (0.9, 0.95), ε = 10⁻⁸, clip 1.0, min-lr ratio 0.1, weight
//! decay 0.1) and every learning rate with at most 12 decimals are represented exactly.
//!
//! ## Rules ([`check_model`], [`check_hyper`], [`check_run`])
//!
//! * `vocab_size ≥ 2`; `d_model`, `n_layers`, `n_heads`, `seq_len`, `mlp_ratio ≥ 1`
//!   ([`Error::ModelSizeNotPositive`]); `d_model`, `seq_len`, `vocab_size ≤ 2²⁰`, `n_layers ≤ 4096`,
//!   `mlp_ratio ≤ 64` ([`Error::ModelTooLarge`]);
//! * `d_model mod n_heads = 0` ([`Error::HeadsDoNotDivide`]); `dropout < 1`
//!   ([`Error::BadDropout`]); `1 ≤ stages ≤ n_layers` ([`Error::MoreStagesThanLayers`]);
//! * `micro_batch_size`, `micro_batches ≥ 1` ([`Error::BatchNotPositive`]);
//!   `0 < lr ≤ 1` ([`Error::BadLearningRate`]); `total_steps ≥ 1`
//!   ([`Error::TotalStepsNotPositive`]); `warmup_steps ≤ total_steps` ([`Error::WarmupBeyondTotal`]);
//!   with a step limit, `total_steps ≤ max_steps` ([`Error::ScheduleBeyondMaxSteps`]);
//! * `min_lr_ratio ≤ 1` ([`Error::BadMinLrRatio`]); `weight_decay ≤ 1`
//!   ([`Error::BadWeightDecay`]); `beta1, beta2 < 1` ([`Error::BadBetas`]);
//!   `0 < ε ≤ 1` ([`Error::BadEps`]);
//! * **auditability**: a model cut into more than one stage may not tie its embeddings
//!   ([`Error::TiedEmbeddingsAcrossStages`]: stage 0 and the last stage would add each
//!   other's embedding gradient) nor clip by the global norm
//!   ([`Error::GlobalClipAcrossStages`]: every stage's update would depend on every other
//!   stage's gradient norm). No commitment of one stage covers those values, so no auditor
//!   could recompute the step, and every seated auditor would be slashed for attestations it
//!   can never make;
//! * **replicas that average** ([`ReplicaSync::Average`], [`ReplicaSync::AverageInt8`]): at
//!   most [`Included::MAX_REPLICAS`] replicas per stage ([`Error::TooManyReplicasToAverage`];
//!   [`check_replicas`]), since each commitment names the replicas it aggregated in a 64-bit
//!   [`Included`] bitmap. Replicas that train apart are limited by the pallet's
//!   `max_replicas` only.
//!
//! [`Included`]: weft_primitives::replicas::Included
//! [`Included::MAX_REPLICAS`]: weft_primitives::replicas::Included::MAX_REPLICAS

use crate::Error;
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_support::{Perbill, StageIndex};
use weft_primitives::replicas::Included;
pub use weft_primitives::replicas::ReplicaSync;

/// Largest `d_model`, `seq_len` and `vocab_size`.
pub const MAX_WIDTH: u32 = 1 << 20;
/// Largest `n_layers`.
pub const MAX_LAYERS: u32 = 4096;
/// Largest `mlp_ratio`.
pub const MAX_MLP_RATIO: u32 = 64;
/// Learning rate 1.0 in `lr_pico` units: the largest accepted.
pub const MAX_LR_PICO: u64 = 1_000_000_000_000;
/// ε = 1.0 in `eps_atto` units: the largest accepted.
pub const MAX_EPS_ATTO: u64 = 1_000_000_000_000_000_000;

/// The architecture of a decoder-only GPT-style transformer. Field order is the SCALE
/// encoding and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Vocabulary size (256: bytes).
    pub vocab_size: u32,
    /// Width of the residual stream.
    pub d_model: u32,
    /// Transformer blocks.
    pub n_layers: u32,
    /// Attention heads per block; divides `d_model`.
    pub n_heads: u32,
    /// Context length.
    pub seq_len: u32,
    /// MLP hidden width as a multiple of `d_model`.
    pub mlp_ratio: u32,
    /// Dropout probability (below one).
    pub dropout: Perbill,
    /// Whether the LM head reuses the token embedding.
    pub tied_embeddings: bool,
}

impl ModelSpec {
    /// The trainer's `tiny` preset (d 32, 4 layers, 2 heads, context 16).
    pub const fn tiny() -> Self {
        ModelSpec {
            vocab_size: 256,
            d_model: 32,
            n_layers: 4,
            n_heads: 2,
            seq_len: 16,
            mlp_ratio: 4,
            dropout: Perbill::ZERO,
            tied_embeddings: false,
        }
    }
}

/// Over which parameters the clipping norm is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClipScope {
    /// Each stage clips by its own gradient norm (auditable per stage).
    #[codec(index = 0)]
    Stage,
    /// By the norm over the whole model (single-stage runs only, see the module docs).
    #[codec(index = 1)]
    Global,
}

/// The optimiser's hyper-parameters and the batch shape (units in the module docs). Field
/// order is the SCALE encoding and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperParams {
    /// Sequences per micro-batch.
    pub micro_batch_size: u32,
    /// Micro-batches per step (gradient accumulation).
    pub micro_batches: u32,
    /// Peak learning rate × 10¹².
    pub lr_pico: u64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Length of the cosine schedule.
    pub total_steps: u64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: Perbill,
    /// Decoupled weight decay.
    pub weight_decay: Perbill,
    /// Adam's β1.
    pub beta1: Perbill,
    /// Adam's β2.
    pub beta2: Perbill,
    /// Adam's ε × 10¹⁸.
    pub eps_atto: u64,
    /// Largest gradient norm × 10⁹ (0: no clipping).
    pub grad_clip_nano: u64,
    /// Over which parameters the clipping norm is taken.
    pub clip_scope: ClipScope,
    /// Whether the replicas of each stage train apart or average their updates every step
    /// (see `weft_primitives::replicas`). Absent in JSON: `apart`.
    #[serde(default)]
    pub replica_sync: ReplicaSync,
}

impl HyperParams {
    /// The trainer's defaults for everything but the required `micro_batch_size`, `lr` and
    /// `total_steps`.
    pub const fn with_defaults(micro_batch_size: u32, lr_pico: u64, total_steps: u64) -> Self {
        HyperParams {
            micro_batch_size,
            micro_batches: 1,
            lr_pico,
            warmup_steps: 0,
            total_steps,
            min_lr_ratio: Perbill::from_parts(100_000_000),
            weight_decay: Perbill::from_parts(100_000_000),
            beta1: Perbill::from_parts(900_000_000),
            beta2: Perbill::from_parts(950_000_000),
            eps_atto: 10_000_000_000,
            grad_clip_nano: 1_000_000_000,
            clip_scope: ClipScope::Stage,
            replica_sync: ReplicaSync::Apart,
        }
    }
}

/// Checks a model specification for a run of `stages` stages (see the module docs).
pub fn check_model(m: &ModelSpec, stages: StageIndex) -> Result<(), Error> {
    if m.vocab_size < 2
        || m.d_model == 0
        || m.n_layers == 0
        || m.n_heads == 0
        || m.seq_len == 0
        || m.mlp_ratio == 0
    {
        return Err(Error::ModelSizeNotPositive);
    }
    if m.d_model > MAX_WIDTH
        || m.seq_len > MAX_WIDTH
        || m.vocab_size > MAX_WIDTH
        || m.n_layers > MAX_LAYERS
        || m.mlp_ratio > MAX_MLP_RATIO
    {
        return Err(Error::ModelTooLarge);
    }
    if !m.d_model.is_multiple_of(m.n_heads) {
        return Err(Error::HeadsDoNotDivide);
    }
    if m.dropout >= Perbill::ONE {
        return Err(Error::BadDropout);
    }
    if u32::from(stages) > m.n_layers {
        return Err(Error::MoreStagesThanLayers);
    }
    Ok(())
}

/// Checks hyper-parameters against a step limit `max_steps` (0: none; see the module docs).
pub fn check_hyper(h: &HyperParams, max_steps: u64) -> Result<(), Error> {
    if h.micro_batch_size == 0 || h.micro_batches == 0 {
        return Err(Error::BatchNotPositive);
    }
    if h.lr_pico == 0 || h.lr_pico > MAX_LR_PICO {
        return Err(Error::BadLearningRate);
    }
    if h.total_steps == 0 {
        return Err(Error::TotalStepsNotPositive);
    }
    if h.warmup_steps > h.total_steps {
        return Err(Error::WarmupBeyondTotal);
    }
    if max_steps > 0 && h.total_steps > max_steps {
        return Err(Error::ScheduleBeyondMaxSteps);
    }
    if !h.min_lr_ratio.is_valid() {
        return Err(Error::BadMinLrRatio);
    }
    if !h.weight_decay.is_valid() {
        return Err(Error::BadWeightDecay);
    }
    if h.beta1 >= Perbill::ONE || h.beta2 >= Perbill::ONE {
        return Err(Error::BadBetas);
    }
    if h.eps_atto == 0 || h.eps_atto > MAX_EPS_ATTO {
        return Err(Error::BadEps);
    }
    Ok(())
}

/// Whether every step of a run can be audited stage by stage: refuses tied embeddings and
/// global clipping in a model cut into more than one stage. The trainer's ML core asks the
/// same question with `weft_ml::schedule::Coupling::any_stage(model, train, n_stages)`.
pub fn check_auditable(m: &ModelSpec, h: &HyperParams, stages: StageIndex) -> Result<(), Error> {
    if stages <= 1 {
        return Ok(());
    }
    if m.tied_embeddings {
        return Err(Error::TiedEmbeddingsAcrossStages);
    }
    if h.clip_scope == ClipScope::Global {
        return Err(Error::GlobalClipAcrossStages);
    }
    Ok(())
}

/// Whether `replicas` replicas per stage can run under `h.replica_sync`: replicas that
/// average may be at most [`Included::MAX_REPLICAS`] (the width of a commitment's bitmap of
/// aggregated replicas).
pub fn check_replicas(h: &HyperParams, replicas: u16) -> Result<(), Error> {
    if h.replica_sync.averages() && replicas > Included::MAX_REPLICAS {
        return Err(Error::TooManyReplicasToAverage);
    }
    Ok(())
}

/// All the training rules for a run that do not depend on its replica count:
/// [`check_model`], [`check_hyper`], [`check_auditable`] (registration adds
/// [`check_replicas`]).
pub fn check_run(
    m: &ModelSpec,
    h: &HyperParams,
    stages: StageIndex,
    max_steps: u64,
) -> Result<(), Error> {
    check_model(m, stages)?;
    check_hyper(h, max_steps)?;
    check_auditable(m, h, stages)
}
