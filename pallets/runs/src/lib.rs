//! # Runs
//!
//! A model designer registers a training run with a bond (reserved until the run finishes):
//! the typed model specification ([`ModelSpec`], stored with `config_hash =
//! blake3(SCALE(model))`), the number of pipeline stages and replicas per stage, the dataset
//! manifest hash, the typed hyper-parameters ([`HyperParams`]; integers and fixed point, units
//! in [`spec`]), an optional step limit, and the run's
//! [`RunParams`]: tolerance, audit probability, slash fractions, windows, steps per epoch,
//! credential issuance per epoch, the risk-adjustment schedule, governance thresholds and the
//! unextractability caps. The run's `seed` is the block randomness at registration; the
//! trainers derive their data order from it.
//!
//! ## Lifecycle
//!
//! ```text
//! Pending ──(all stages filled at an epoch boundary)──▶ Training ──(last step settled)──▶ Finished
//!    │                                                   ▲    │
//!    └───────────────(governance halt)──────▶ Halted ◀───┘    │ (governance halt)
//!                                                │ (governance resume)
//!                                                └──────▶ Training
//! ```
//!
//! A run trains [`RunInfo::final_steps`] steps: `max_steps` when set, else the schedule's
//! `total_steps`. It becomes `Finished` (the bond is returned) once every `(stage, replica)`
//! slot has committed step `final_steps − 1` and each of those commitments is settled:
//! credited, voided or inconclusive, and its audit (if it had one) closed at its attestation
//! deadline (the work pallet checks this whenever such a commitment settles).
//!
//! Independently of the status, a run is `paused` while any stage has no trainer (set by the
//! stages pallet at epoch boundaries and when a trainer is removed). Work is accepted only
//! while the run is `Training` and not paused; a halted run also serves no inference.
//!
//! ## Training rules
//!
//! [`spec::check_run`] refuses, at registration, a model or hyper-parameters that cannot
//! train and a run whose steps cannot be audited stage by stage (tied embeddings or global
//! clipping with more than one stage), and [`spec::check_replicas`] a run whose replicas
//! average with more replicas than a commitment's bitmap can name; each rule has its own
//! error (see [`spec`]).
//!
//! ## Parameter rules
//!
//! Checked at registration and on every governance change: fractions are at most one;
//! `0 < halt_threshold ≤ resume_threshold` (stopping is never harder than starting);
//! `settle_threshold ≥ 1/2` (two conflicting verdicts cannot both settle);
//! `selection_delay ≥ 1` (randomness from a block after the commitment);
//! `reveal_window ≤ attest_window`; with more than one stage, `max_stages_per_account` and
//! `max_stages_per_auditor` are below the stage count (no one holds the whole model).

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_balances as balances;
use weft_pallet_support::{emit, index, randomness, Deposit, Failure, Perbill, RunId, StageIndex};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::units::UNIT;
use weft_primitives::{blake3_256, AccountId, Balance, BlockNumber, Hash};

pub mod spec;
pub use spec::{check_replicas, check_run, ClipScope, HyperParams, ModelSpec, ReplicaSync};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Runs";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::RUNS;

/// Pallet parameters, set at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Smallest designer bond.
    #[serde(with = "balance_string")]
    pub min_designer_bond: Balance,
    /// Most stages per run.
    pub max_stages: StageIndex,
    /// Most replicas per stage.
    pub max_replicas: u16,
    /// Most runs not yet finished.
    pub max_active_runs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_designer_bond: 100 * UNIT,
            max_stages: 64,
            max_replicas: 8,
            max_active_runs: 64,
        }
    }
}

/// Balances as JSON strings.
pub use weft_primitives::units::balance_string;

/// How far an auditor's recomputation may differ from the committed tensors (interpreted by
/// the auditor off chain, per tensor; `r` the recomputation, `g` the revealed tensor, `n`
/// its elements, `f = abs_floor_nano · 10⁻⁹`):
///
/// ```text
/// ‖g − r‖₂ ≤ rel_l2 · ‖r‖₂ + f · √n
/// max |g − r| ≤ max_abs_rel · max |r| + f
/// ‖g_after − r_after‖₂ ≤ update_rel_l2 · ‖r_after − before‖₂ + f · √n   (weights)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tolerance {
    /// Largest relative L2 error per tensor, `‖g − r‖₂ / ‖r‖₂`.
    pub rel_l2: Perbill,
    /// Largest element error as a fraction of the tensor's largest reference magnitude.
    pub max_abs_rel: Perbill,
    /// Largest error of a weight update relative to the update's own norm.
    pub update_rel_l2: Perbill,
    /// Absolute slack per element for (nearly) zero tensors, in units of 10⁻⁹.
    pub abs_floor_nano: u64,
}

impl Default for Tolerance {
    /// The measured defaults (docs/audit-divergence.md): honest CPU recomputations differ
    /// by at most 4.7·10⁻⁶ relative L2, ×21 below `rel_l2`.
    fn default() -> Self {
        Tolerance {
            rel_l2: Perbill::from_parts(100_000),
            max_abs_rel: Perbill::from_parts(1_000_000),
            update_rel_l2: Perbill::from_parts(10_000_000),
            abs_floor_nano: 100,
        }
    }
}

/// How credited steps turn into contribution units (see the ownership pallet for the formula).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskSchedule {
    /// Units of a plain credited step.
    pub base_units: u64,
    /// Extra fraction for the earliest step, falling linearly to zero at `early_horizon`.
    pub early_bonus: Perbill,
    /// Steps over which the early bonus decays.
    pub early_horizon: u64,
    /// Largest extra fraction for a loss-reducing step.
    pub loss_bonus: Perbill,
    /// Multiplier of the relative loss improvement before it is capped at one.
    pub loss_gain: u32,
}

/// The parameters governance may change.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunParams {
    /// Recomputation tolerance.
    pub tolerance: Tolerance,
    /// Probability that a commitment is audited.
    pub audit_probability: Perbill,
    /// Fraction of a trainer's stake slashed for a failed or unrevealed step.
    pub trainer_slash: Perbill,
    /// Fraction of an auditor's stake slashed when its verdict is contradicted.
    pub auditor_slash: Perbill,
    /// Fraction of an auditor's stake slashed when it does not attest.
    pub missed_attestation_slash: Perbill,
    /// Share of the auditors' stake that settles an audit (must be exceeded).
    pub settle_threshold: Perbill,
    /// Blocks after a commitment whose randomness selects it (at least 1).
    pub selection_delay: u32,
    /// Blocks after selection by which the trainer must reveal (off chain).
    pub reveal_window: u32,
    /// Blocks after selection by which auditors must attest.
    pub attest_window: u32,
    /// Steps each stage may advance per epoch of training (0: no limit).
    pub steps_per_epoch: u32,
    /// Credentials minted to the owners per epoch.
    #[serde(with = "balance_string")]
    pub credentials_per_epoch: u128,
    /// Risk adjustment of contribution units.
    pub risk: RiskSchedule,
    /// Share of all active stake that halts the run.
    pub halt_threshold: Perbill,
    /// Share of all active stake that resumes the run or changes its parameters.
    pub resume_threshold: Perbill,
    /// Most stage slots of this run one account may hold.
    pub max_stages_per_account: StageIndex,
    /// Auditors assigned per stage.
    pub auditors_per_stage: u16,
    /// Most stages of this run one validator audits.
    pub max_stages_per_auditor: StageIndex,
}

impl Default for RunParams {
    /// Development values.
    fn default() -> Self {
        RunParams {
            tolerance: Tolerance::default(),
            // 3 % with one auditor per stage: 3.8 % verification overhead at the measured
            // auditor/trainer compute ratio of 1.25, and a trainer cheating on 5 % of its
            // steps is caught within an epoch of ≥ 3,024 steps with probability ≥ 99 %
            // (docs/commitments-and-audits.md).
            audit_probability: Perbill::from_percent(3),
            trainer_slash: Perbill::from_percent(20),
            auditor_slash: Perbill::from_percent(10),
            missed_attestation_slash: Perbill::from_percent(1),
            settle_threshold: Perbill::from_rational(2, 3),
            selection_delay: 2,
            reveal_window: 10,
            attest_window: 20,
            steps_per_epoch: 0,
            credentials_per_epoch: 1_000_000,
            risk: RiskSchedule {
                base_units: 1_000_000,
                early_bonus: Perbill::from_percent(100),
                early_horizon: 10_000,
                loss_bonus: Perbill::from_percent(50),
                loss_gain: 10,
            },
            halt_threshold: Perbill::from_rational(1, 3),
            resume_threshold: Perbill::from_rational(2, 3),
            max_stages_per_account: 1,
            auditors_per_stage: 1,
            max_stages_per_auditor: 1,
        }
    }
}

/// What the designer submits.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// Model specification.
    pub model_config: ModelSpec,
    /// Pipeline stages.
    pub stages: StageIndex,
    /// Replicas per stage.
    pub replicas: u16,
    /// Dataset manifest hash.
    pub dataset_hash: Hash,
    /// Hyper-parameters.
    pub hyper_params: HyperParams,
    /// Steps until the run finishes (0: the schedule's `total_steps`).
    pub max_steps: u64,
    /// The designer's bond.
    #[serde(with = "balance_string")]
    pub bond: Balance,
    /// Changeable parameters.
    pub params: RunParams,
}

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunStatus {
    /// Registered, waiting for every stage to be filled.
    #[codec(index = 0)]
    Pending,
    /// Accepting work.
    #[codec(index = 1)]
    Training,
    /// Stopped by governance: no work, no inference.
    #[codec(index = 2)]
    Halted,
    /// Done.
    #[codec(index = 3)]
    Finished,
}

/// A run.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    /// Who registered it.
    pub designer: AccountId,
    /// Reserved designer bond.
    #[serde(with = "balance_string")]
    pub bond: Balance,
    /// Model specification.
    pub model_config: ModelSpec,
    /// blake3 of the SCALE encoding of `model_config`.
    pub config_hash: Hash,
    /// Pipeline stages.
    pub stages: StageIndex,
    /// Replicas per stage.
    pub replicas: u16,
    /// Dataset manifest hash.
    pub dataset_hash: Hash,
    /// Hyper-parameters.
    pub hyper_params: HyperParams,
    /// Step limit as registered (0: the schedule's `total_steps`; see [`RunInfo::final_steps`]).
    pub max_steps: u64,
    /// Data-order seed (block randomness at registration).
    pub seed: Hash,
    /// Block of registration.
    pub registered_at: BlockNumber,
    /// Lifecycle status.
    pub status: RunStatus,
    /// Some stage has no trainer.
    pub paused: bool,
    /// Epoch boundaries passed while training (for the steps-per-epoch limit).
    pub epochs_trained: u64,
    /// Changeable parameters.
    pub params: RunParams,
}

impl RunInfo {
    /// Whether work is accepted now.
    pub fn is_training(&self) -> bool {
        self.status == RunStatus::Training && !self.paused
    }

    /// How many steps the run trains: `max_steps` when set, else the schedule's
    /// `total_steps`. The run finishes when step `final_steps() − 1` is settled everywhere.
    pub fn final_steps(&self) -> u64 {
        if self.max_steps > 0 {
            self.max_steps
        } else {
            self.hyper_params.total_steps
        }
    }

    /// The number of steps the run may have reached so far: [`RunInfo::final_steps`],
    /// lowered to `steps_per_epoch × (epochs trained + 1)` when that is set.
    pub fn step_limit(&self) -> u64 {
        let all = self.final_steps();
        if self.params.steps_per_epoch > 0 {
            all.min(
                self.epochs_trained
                    .saturating_add(1)
                    .saturating_mul(self.params.steps_per_epoch as u64),
            )
        } else {
            all
        }
    }

    /// `blake3(SCALE(model))`, the run's `config_hash`.
    pub fn model_hash(model: &ModelSpec) -> Hash {
        blake3_256(&model.encode())
    }
}

/// Pallet parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// Runs by id.
pub const RUNS: StorageMap<RunId, RunInfo> = StorageMap::new(PALLET, "Runs");
/// The next run id.
pub const NEXT_RUN_ID: StorageValue<RunId> = StorageValue::new(PALLET, "NextRunId");
/// Runs not finished, ascending.
pub const ACTIVE_RUNS: StorageValue<Vec<RunId>> = StorageValue::new(PALLET, "ActiveRuns");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Registers a run, reserving the designer bond.
    #[codec(index = 0)]
    RegisterRun {
        /// The run.
        spec: RunSpec,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A run was registered.
    #[codec(index = 0)]
    RunRegistered {
        /// Id.
        run: RunId,
        /// Designer.
        designer: AccountId,
        /// Stages.
        stages: StageIndex,
        /// Replicas per stage.
        replicas: u16,
        /// Model configuration hash.
        config_hash: Hash,
    },
    /// The status changed.
    #[codec(index = 1)]
    StatusChanged {
        /// Run.
        run: RunId,
        /// New status.
        status: RunStatus,
    },
    /// The run paused (a stage has no trainer) or unpaused.
    #[codec(index = 2)]
    PausedChanged {
        /// Run.
        run: RunId,
        /// Paused now.
        paused: bool,
    },
    /// Governance changed the parameters.
    #[codec(index = 3)]
    ParamsChanged {
        /// Run.
        run: RunId,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// No such run.
    #[codec(index = 0)]
    #[error("UnknownRun: no such run")]
    UnknownRun,
    /// Stage or replica count out of range.
    #[codec(index = 1)]
    #[error("BadShape: stage or replica count out of range")]
    BadShape,
    /// Configuration or hyper-parameters too long (no longer returned: both are typed).
    #[codec(index = 2)]
    #[error("TooLong: model configuration or hyper-parameters too long")]
    TooLong,
    /// Parameters violate the rules (see the module docs).
    #[codec(index = 3)]
    #[error("BadParams: run parameters violate the rules")]
    BadParams,
    /// Bond below the minimum.
    #[codec(index = 4)]
    #[error("BondTooLow: designer bond below the minimum")]
    BondTooLow,
    /// Too many active runs.
    #[codec(index = 5)]
    #[error("TooManyRuns: too many active runs")]
    TooManyRuns,
    /// The status change is not allowed.
    #[codec(index = 6)]
    #[error("BadTransition: the run cannot move to that status")]
    BadTransition,
    /// Overflow.
    #[codec(index = 7)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
    /// A model size is zero (or `vocab_size < 2`).
    #[codec(index = 8)]
    #[error("ModelSizeNotPositive: vocab_size must be at least 2 and d_model, n_layers, n_heads, seq_len, mlp_ratio at least 1")]
    ModelSizeNotPositive,
    /// A model size beyond the limits of the spec module.
    #[codec(index = 9)]
    #[error("ModelTooLarge: d_model, seq_len, vocab_size ≤ 2^20, n_layers ≤ 4096, mlp_ratio ≤ 64")]
    ModelTooLarge,
    /// `d_model` is not a multiple of `n_heads`.
    #[codec(index = 10)]
    #[error("HeadsDoNotDivide: d_model must be a multiple of n_heads")]
    HeadsDoNotDivide,
    /// Dropout of one or more.
    #[codec(index = 11)]
    #[error("BadDropout: dropout must be below 1")]
    BadDropout,
    /// More pipeline stages than layers.
    #[codec(index = 12)]
    #[error("MoreStagesThanLayers: each stage needs at least one layer")]
    MoreStagesThanLayers,
    /// Zero micro-batch size or micro-batches.
    #[codec(index = 13)]
    #[error("BatchNotPositive: micro_batch_size and micro_batches must be at least 1")]
    BatchNotPositive,
    /// Learning rate zero or above one.
    #[codec(index = 14)]
    #[error("BadLearningRate: lr must be in (0, 1]")]
    BadLearningRate,
    /// A schedule of zero steps.
    #[codec(index = 15)]
    #[error("TotalStepsNotPositive: total_steps must be at least 1")]
    TotalStepsNotPositive,
    /// Warm-up longer than the schedule.
    #[codec(index = 16)]
    #[error("WarmupBeyondTotal: warmup_steps must not exceed total_steps")]
    WarmupBeyondTotal,
    /// The schedule is longer than the run's step limit.
    #[codec(index = 17)]
    #[error("ScheduleBeyondMaxSteps: total_steps must not exceed max_steps")]
    ScheduleBeyondMaxSteps,
    /// Minimum learning-rate ratio above one.
    #[codec(index = 18)]
    #[error("BadMinLrRatio: min_lr_ratio must be in [0, 1]")]
    BadMinLrRatio,
    /// Weight decay above one.
    #[codec(index = 19)]
    #[error("BadWeightDecay: weight_decay must be in [0, 1]")]
    BadWeightDecay,
    /// A beta of one or more.
    #[codec(index = 20)]
    #[error("BadBetas: betas must be in [0, 1)")]
    BadBetas,
    /// ε zero or above one.
    #[codec(index = 21)]
    #[error("BadEps: eps must be in (0, 1]")]
    BadEps,
    /// Tied embeddings in a model cut into more than one stage: not auditable.
    #[codec(index = 22)]
    #[error("TiedEmbeddingsAcrossStages: tied embeddings need a single stage (stage 0 and the last stage would add each other's embedding gradient, which no auditor can check)")]
    TiedEmbeddingsAcrossStages,
    /// Global-norm clipping with more than one stage: not auditable.
    #[codec(index = 23)]
    #[error("GlobalClipAcrossStages: clip_scope global needs a single stage (each update would depend on every stage's gradient norm, which no auditor can check)")]
    GlobalClipAcrossStages,
    /// Replicas that average, more of them than `Included::MAX_REPLICAS` (64).
    #[codec(index = 24)]
    #[error("TooManyReplicasToAverage: replicas that average may be at most 64 per stage (the bitmap of aggregated replicas in each commitment)")]
    TooManyReplicasToAverage,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: balances::EventSink + Deposit<Event> {}
impl<T: balances::EventSink + Deposit<Event> + ?Sized> Sink for T {}

/// Pallet parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// The run `id`.
pub fn run(s: &(impl StateReader + ?Sized), id: RunId) -> Result<Option<RunInfo>, StorageError> {
    RUNS.get(s, &id)
}

/// The run `id`, or `UnknownRun`.
pub fn get(s: &(impl StateReader + ?Sized), id: RunId) -> Result<RunInfo, Failure> {
    Ok(RUNS.get(s, &id)?.ok_or(Error::UnknownRun)?)
}

/// Runs not finished.
pub fn active_runs(s: &(impl StateReader + ?Sized)) -> Result<Vec<RunId>, StorageError> {
    Ok(ACTIVE_RUNS.get(s)?.unwrap_or_default())
}

/// Checks parameters against the rules for a run with `stages` stages.
pub fn check_params(p: &RunParams, stages: StageIndex) -> Result<(), Error> {
    let fractions = [
        p.tolerance.rel_l2,
        p.tolerance.max_abs_rel,
        p.tolerance.update_rel_l2,
        p.audit_probability,
        p.trainer_slash,
        p.auditor_slash,
        p.missed_attestation_slash,
        p.settle_threshold,
        p.risk.early_bonus,
        p.risk.loss_bonus,
        p.halt_threshold,
        p.resume_threshold,
    ];
    let ok = fractions.iter().all(|f| f.is_valid())
        && p.halt_threshold > Perbill::ZERO
        && p.halt_threshold <= p.resume_threshold
        && p.settle_threshold >= Perbill::from_percent(50)
        && p.selection_delay >= 1
        && p.reveal_window >= 1
        && p.reveal_window <= p.attest_window
        && p.max_stages_per_account >= 1
        && p.max_stages_per_auditor >= 1
        && p.auditors_per_stage >= 1
        && (stages <= 1
            || (p.max_stages_per_account < stages && p.max_stages_per_auditor < stages));
    if ok {
        Ok(())
    } else {
        Err(Error::BadParams)
    }
}

/// `register_run`.
pub fn register_run(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    designer: &AccountId,
    spec: RunSpec,
) -> Result<RunId, Failure> {
    let cfg = config(s)?;
    if spec.stages == 0
        || spec.stages > cfg.max_stages
        || spec.replicas == 0
        || spec.replicas > cfg.max_replicas
    {
        return Err(Error::BadShape.into());
    }
    check_run(
        &spec.model_config,
        &spec.hyper_params,
        spec.stages,
        spec.max_steps,
    )?;
    check_replicas(&spec.hyper_params, spec.replicas)?;
    check_params(&spec.params, spec.stages)?;
    if spec.bond < cfg.min_designer_bond {
        return Err(Error::BondTooLow.into());
    }
    let mut active = active_runs(s)?;
    if active.len() >= cfg.max_active_runs as usize {
        return Err(Error::TooManyRuns.into());
    }
    balances::reserve(s, ev, designer, spec.bond)?;
    let id = NEXT_RUN_ID.get(s)?.unwrap_or(0);
    NEXT_RUN_ID.put(s, &id.checked_add(1).ok_or(Error::Overflow)?);
    let config_hash = RunInfo::model_hash(&spec.model_config);
    let mut seed_input = randomness::at(s, now)?.0.to_vec();
    seed_input.extend_from_slice(&id.to_le_bytes());
    let info = RunInfo {
        designer: *designer,
        bond: spec.bond,
        model_config: spec.model_config,
        config_hash,
        stages: spec.stages,
        replicas: spec.replicas,
        dataset_hash: spec.dataset_hash,
        hyper_params: spec.hyper_params,
        max_steps: spec.max_steps,
        seed: blake3_256(&seed_input),
        registered_at: now,
        status: RunStatus::Pending,
        paused: true,
        epochs_trained: 0,
        params: spec.params,
    };
    RUNS.insert(s, &id, &info);
    active.push(id);
    ACTIVE_RUNS.put(s, &active);
    emit(
        ev,
        Event::RunRegistered {
            run: id,
            designer: *designer,
            stages: info.stages,
            replicas: info.replicas,
            config_hash,
        },
    );
    Ok(id)
}

/// Moves run `id` to `status` if the lifecycle allows it (see the module docs). Finishing
/// returns the designer's bond.
pub fn set_status(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: RunId,
    status: RunStatus,
) -> Result<(), Failure> {
    let mut r = get(s, id)?;
    use RunStatus::*;
    let allowed = matches!(
        (r.status, status),
        (Pending, Training)
            | (Pending, Halted)
            | (Training, Halted)
            | (Halted, Training)
            | (Training, Finished)
    );
    if !allowed {
        return Err(Error::BadTransition.into());
    }
    r.status = status;
    if status == Finished {
        balances::unreserve(s, ev, &r.designer, r.bond)?;
        let mut active = active_runs(s)?;
        active.retain(|x| *x != id);
        ACTIVE_RUNS.put(s, &active);
    }
    RUNS.insert(s, &id, &r);
    emit(ev, Event::StatusChanged { run: id, status });
    Ok(())
}

/// Sets the `paused` flag (stages pallet).
pub fn set_paused(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: RunId,
    paused: bool,
) -> Result<(), Failure> {
    let mut r = get(s, id)?;
    if r.paused != paused {
        r.paused = paused;
        RUNS.insert(s, &id, &r);
        emit(ev, Event::PausedChanged { run: id, paused });
    }
    Ok(())
}

/// Replaces the parameters (governance), checking the rules.
pub fn set_params(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: RunId,
    params: RunParams,
) -> Result<(), Failure> {
    let mut r = get(s, id)?;
    if r.status == RunStatus::Finished {
        return Err(Error::BadTransition.into());
    }
    check_params(&params, r.stages)?;
    r.params = params;
    RUNS.insert(s, &id, &r);
    emit(ev, Event::ParamsChanged { run: id });
    Ok(())
}

/// Epoch boundary for one run: counts the epoch if the run was training.
pub fn on_epoch(s: &mut (impl Storage + ?Sized), id: RunId) -> Result<(), Failure> {
    let mut r = get(s, id)?;
    if r.is_training() {
        r.epochs_trained = r.epochs_trained.saturating_add(1);
        RUNS.insert(s, &id, &r);
    }
    Ok(())
}

/// A run registered at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenesisRun {
    /// Designer (must be endowed with the bond).
    pub designer: AccountId,
    /// The run.
    pub spec: RunSpec,
}

/// Genesis: parameters and runs.
pub fn build_genesis(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    cfg: &Config,
    runs: &[GenesisRun],
) -> Result<(), Failure> {
    CONFIG.put(s, cfg);
    for r in runs {
        register_run(s, ev, 0, &r.designer, r.spec.clone())?;
    }
    Ok(())
}

/// Dispatches a call signed by `origin`.
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::RegisterRun { spec } => register_run(s, ev, now, origin, spec.clone()).map(|_| ()),
    }
}

#[cfg(test)]
mod tests;
