//! # Runs
//!
//! A model designer registers a training run with a bond (reserved until the run finishes):
//! the model configuration (JSON bytes, stored with their blake3 hash), the number of
//! pipeline stages and replicas per stage, the dataset manifest hash, hyper-parameters
//! (opaque bytes the trainer interprets), an optional step limit, and the run's
//! [`RunParams`]: tolerance, audit probability, slash fractions, windows, steps per epoch,
//! credential issuance per epoch, the risk-adjustment schedule, governance thresholds and the
//! unextractability caps. The run's `seed` is the block randomness at registration; the
//! trainers derive their data order from it.
//!
//! ## Lifecycle
//!
//! ```text
//! Pending ──(all stages filled at an epoch boundary)──▶ Training ──(last step)──▶ Finished
//!    │                                                   ▲    │
//!    └───────────────(governance halt)──────▶ Halted ◀───┘    │ (governance halt)
//!                                                │ (governance resume)
//!                                                └──────▶ Training
//! ```
//!
//! Independently of the status, a run is `paused` while any stage has no trainer (set by the
//! stages pallet at epoch boundaries and when a trainer is removed). Work is accepted only
//! while the run is `Training` and not paused; a halted run also serves no inference.
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
    /// Longest model configuration, in bytes.
    pub max_config_len: u32,
    /// Longest hyper-parameter blob, in bytes.
    pub max_hyper_len: u32,
    /// Most runs not yet finished.
    pub max_active_runs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_designer_bond: 100 * UNIT,
            max_stages: 64,
            max_replicas: 8,
            max_config_len: 16 * 1024,
            max_hyper_len: 4 * 1024,
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
    /// Model configuration (JSON bytes).
    pub model_config: Vec<u8>,
    /// Pipeline stages.
    pub stages: StageIndex,
    /// Replicas per stage.
    pub replicas: u16,
    /// Dataset manifest hash.
    pub dataset_hash: Hash,
    /// Hyper-parameters (bytes).
    pub hyper_params: Vec<u8>,
    /// Steps until the run finishes (0: no limit).
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
    /// Model configuration bytes.
    pub model_config: Vec<u8>,
    /// blake3 of `model_config`.
    pub config_hash: Hash,
    /// Pipeline stages.
    pub stages: StageIndex,
    /// Replicas per stage.
    pub replicas: u16,
    /// Dataset manifest hash.
    pub dataset_hash: Hash,
    /// Hyper-parameters.
    pub hyper_params: Vec<u8>,
    /// Step limit (0: none).
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

    /// The highest step number the run may have reached so far (`None`: unlimited).
    pub fn step_limit(&self) -> Option<u64> {
        let mut limit = None;
        if self.params.steps_per_epoch > 0 {
            limit = Some(
                self.epochs_trained
                    .saturating_add(1)
                    .saturating_mul(self.params.steps_per_epoch as u64),
            );
        }
        if self.max_steps > 0 {
            limit = Some(limit.map_or(self.max_steps, |l: u64| l.min(self.max_steps)));
        }
        limit
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
    /// Configuration or hyper-parameters too long.
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
    if spec.model_config.len() > cfg.max_config_len as usize
        || spec.hyper_params.len() > cfg.max_hyper_len as usize
    {
        return Err(Error::TooLong.into());
    }
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
    let config_hash = blake3_256(&spec.model_config);
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use weft_pallet_support::Recorder;
    use weft_primitives::storage::{MemoryState, Overlay};

    fn acc(n: u8) -> AccountId {
        AccountId([n; 32])
    }

    fn spec(stages: StageIndex) -> RunSpec {
        RunSpec {
            model_config: br#"{"layers":4}"#.to_vec(),
            stages,
            replicas: 1,
            dataset_hash: Hash([1; 32]),
            hyper_params: vec![],
            max_steps: 0,
            bond: 100 * UNIT,
            params: RunParams::default(),
        }
    }

    fn state() -> MemoryState {
        let base = MemoryState::default();
        let mut o = Overlay::new(&base);
        balances::build_genesis(&mut o, 1, &[(acc(1), 1_000 * UNIT)]).unwrap();
        build_genesis(&mut o, &mut Recorder::default(), &Config::default(), &[]).unwrap();
        let mut s = MemoryState::default();
        s.apply(&o.into_changes());
        s
    }

    #[test]
    fn register_and_lifecycle() {
        let st = state();
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let id = register_run(&mut o, &mut ev, 1, &acc(1), spec(4)).unwrap();
        assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 100 * UNIT);
        let r = run(&o, id).unwrap().unwrap();
        assert_eq!(
            (r.status, r.paused, r.config_hash),
            (RunStatus::Pending, true, blake3_256(br#"{"layers":4}"#))
        );
        assert_eq!(
            set_status(&mut o, &mut ev, id, RunStatus::Finished),
            Err(Error::BadTransition.into())
        );
        set_status(&mut o, &mut ev, id, RunStatus::Training).unwrap();
        set_status(&mut o, &mut ev, id, RunStatus::Halted).unwrap();
        set_status(&mut o, &mut ev, id, RunStatus::Training).unwrap();
        set_status(&mut o, &mut ev, id, RunStatus::Finished).unwrap();
        assert_eq!(balances::account(&o, &acc(1)).unwrap().reserved, 0);
        assert!(active_runs(&o).unwrap().is_empty());
        assert_eq!(
            set_status(&mut o, &mut ev, id, RunStatus::Training),
            Err(Error::BadTransition.into())
        );
    }

    #[test]
    fn parameter_rules() {
        let st = state();
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let mut s = spec(4);
        s.params.halt_threshold = Perbill::from_percent(80);
        assert_eq!(
            register_run(&mut o, &mut ev, 1, &acc(1), s),
            Err(Error::BadParams.into())
        );
        let mut s = spec(4);
        s.params.max_stages_per_account = 4;
        assert_eq!(
            register_run(&mut o, &mut ev, 1, &acc(1), s),
            Err(Error::BadParams.into())
        );
        let mut s = spec(4);
        s.params.selection_delay = 0;
        assert_eq!(
            register_run(&mut o, &mut ev, 1, &acc(1), s),
            Err(Error::BadParams.into())
        );
        assert_eq!(
            register_run(&mut o, &mut ev, 1, &acc(1), spec(0)),
            Err(Error::BadShape.into())
        );
        let mut s = spec(2);
        s.bond = 1;
        assert_eq!(
            register_run(&mut o, &mut ev, 1, &acc(1), s),
            Err(Error::BondTooLow.into())
        );
        let id = register_run(&mut o, &mut ev, 1, &acc(1), spec(4)).unwrap();
        let p = RunParams {
            audit_probability: Perbill::from_percent(50),
            ..RunParams::default()
        };
        set_params(&mut o, &mut ev, id, p.clone()).unwrap();
        assert_eq!(run(&o, id).unwrap().unwrap().params, p);
    }

    #[test]
    fn step_limit() {
        let mut r = RunInfo {
            designer: acc(1),
            bond: 0,
            model_config: vec![],
            config_hash: Hash::ZERO,
            stages: 1,
            replicas: 1,
            dataset_hash: Hash::ZERO,
            hyper_params: vec![],
            max_steps: 0,
            seed: Hash::ZERO,
            registered_at: 0,
            status: RunStatus::Training,
            paused: false,
            epochs_trained: 2,
            params: RunParams::default(),
        };
        assert_eq!(r.step_limit(), None);
        r.params.steps_per_epoch = 5;
        assert_eq!(r.step_limit(), Some(15));
        r.max_steps = 10;
        assert_eq!(r.step_limit(), Some(10));
    }
}
