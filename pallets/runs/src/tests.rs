//! Unit tests of the runs pallet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use weft_pallet_testkit::{acc, genesis, Recorder};
use weft_primitives::storage::{MemoryState, Overlay};

/// The trainer's `TrainConfig::tiny()`.
fn hyper() -> HyperParams {
    HyperParams {
        micro_batches: 2,
        warmup_steps: 10,
        weight_decay: Perbill::ZERO,
        ..HyperParams::with_defaults(4, 3_000_000_000, 1000)
    }
}

fn spec(stages: StageIndex) -> RunSpec {
    RunSpec {
        model_config: ModelSpec::tiny(),
        stages,
        replicas: 1,
        dataset_hash: Hash([1; 32]),
        hyper_params: hyper(),
        max_steps: 0,
        bond: 100 * UNIT,
        params: RunParams::default(),
    }
}

fn state() -> MemoryState {
    genesis(|o, ev| {
        balances::build_genesis(o, 1, &[(acc(1), 1_000 * UNIT)]).unwrap();
        build_genesis(o, ev, &Config::default(), &[]).unwrap();
    })
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
        (
            RunStatus::Pending,
            true,
            blake3_256(&ModelSpec::tiny().encode())
        )
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
        model_config: ModelSpec::tiny(),
        config_hash: Hash::ZERO,
        stages: 1,
        replicas: 1,
        dataset_hash: Hash::ZERO,
        hyper_params: hyper(),
        max_steps: 0,
        seed: Hash::ZERO,
        registered_at: 0,
        status: RunStatus::Training,
        paused: false,
        epochs_trained: 2,
        params: RunParams::default(),
    };
    // No step limit registered: the schedule's total_steps.
    assert_eq!((r.final_steps(), r.step_limit()), (1000, 1000));
    r.params.steps_per_epoch = 5;
    assert_eq!(r.step_limit(), 15);
    r.max_steps = 10;
    assert_eq!((r.final_steps(), r.step_limit()), (10, 10));
}

/// Registers `spec` on a fresh state; on refusal the designer's free balance and reserve
/// are unchanged and no run exists.
fn try_register(spec: RunSpec) -> Result<RunId, Failure> {
    let st = state();
    let mut o = Overlay::new(&st);
    let mut ev = Recorder::default();
    let free = balances::account(&o, &acc(1)).unwrap().free;
    let r = register_run(&mut o, &mut ev, 1, &acc(1), spec);
    if r.is_err() {
        let a = balances::account(&o, &acc(1)).unwrap();
        assert_eq!((a.free, a.reserved), (free, 0));
        assert!(active_runs(&o).unwrap().is_empty());
        assert_eq!(run(&o, 0).unwrap(), None);
    }
    r
}

/// A decoded fraction above one (`Perbill::from_parts` clamps; SCALE input does not).
fn over_one(parts: u32) -> Perbill {
    Perbill::decode(&mut &parts.encode()[..]).unwrap()
}

fn with_model(stages: StageIndex, f: impl FnOnce(&mut ModelSpec)) -> RunSpec {
    let mut s = spec(stages);
    f(&mut s.model_config);
    s
}

fn with_hyper(stages: StageIndex, f: impl FnOnce(&mut HyperParams)) -> RunSpec {
    let mut s = spec(stages);
    f(&mut s.hyper_params);
    s
}

#[test]
fn model_rules_each_have_their_error() {
    let cases: Vec<(RunSpec, Error)> = vec![
        // {"d_model": -5, "n_layers": 0, "n_heads": 3}, as far as it is representable.
        (
            with_model(1, |m| {
                m.n_layers = 0;
                m.n_heads = 3;
            }),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.d_model = 0),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.n_heads = 0),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.seq_len = 0),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.mlp_ratio = 0),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.vocab_size = 1),
            Error::ModelSizeNotPositive,
        ),
        (
            with_model(1, |m| m.d_model = spec::MAX_WIDTH * 2),
            Error::ModelTooLarge,
        ),
        (with_model(1, |m| m.n_layers = 4097), Error::ModelTooLarge),
        (with_model(1, |m| m.mlp_ratio = 65), Error::ModelTooLarge),
        // d_model 30 with 4 heads.
        (
            with_model(1, |m| {
                m.d_model = 30;
                m.n_heads = 4;
            }),
            Error::HeadsDoNotDivide,
        ),
        (
            with_model(1, |m| m.dropout = Perbill::ONE),
            Error::BadDropout,
        ),
        // 9 stages for a 2-layer model.
        (
            with_model(9, |m| m.n_layers = 2),
            Error::MoreStagesThanLayers,
        ),
        (spec(5), Error::MoreStagesThanLayers),
    ];
    for (s, e) in cases {
        assert_eq!(try_register(s.clone()), Err(e.into()), "{s:?}");
    }
}

#[test]
fn hyper_rules_each_have_their_error() {
    let cases: Vec<(RunSpec, Error)> = vec![
        (
            with_hyper(1, |h| h.micro_batch_size = 0),
            Error::BatchNotPositive,
        ),
        (
            with_hyper(1, |h| h.micro_batches = 0),
            Error::BatchNotPositive,
        ),
        // {"lr": -1} is not representable (the CLI refuses it); zero and absurd rates are
        // refused here.
        (with_hyper(1, |h| h.lr_pico = 0), Error::BadLearningRate),
        (
            with_hyper(1, |h| h.lr_pico = spec::MAX_LR_PICO + 1),
            Error::BadLearningRate,
        ),
        (
            with_hyper(1, |h| h.total_steps = 0),
            Error::TotalStepsNotPositive,
        ),
        (
            with_hyper(1, |h| h.warmup_steps = 1001),
            Error::WarmupBeyondTotal,
        ),
        (
            RunSpec {
                max_steps: 999,
                ..spec(1)
            },
            Error::ScheduleBeyondMaxSteps,
        ),
        (
            with_hyper(1, |h| h.min_lr_ratio = over_one(1_000_000_001)),
            Error::BadMinLrRatio,
        ),
        (
            with_hyper(1, |h| h.weight_decay = over_one(2_000_000_000)),
            Error::BadWeightDecay,
        ),
        (with_hyper(1, |h| h.beta1 = Perbill::ONE), Error::BadBetas),
        (with_hyper(1, |h| h.beta2 = Perbill::ONE), Error::BadBetas),
        (with_hyper(1, |h| h.eps_atto = 0), Error::BadEps),
        (
            with_hyper(1, |h| h.eps_atto = spec::MAX_EPS_ATTO + 1),
            Error::BadEps,
        ),
    ];
    for (s, e) in cases {
        assert_eq!(try_register(s.clone()), Err(e.into()), "{s:?}");
    }
    // The edges that train are accepted.
    for s in [
        with_hyper(1, |h| h.lr_pico = spec::MAX_LR_PICO),
        with_hyper(1, |h| h.lr_pico = 1),
        with_hyper(1, |h| h.warmup_steps = 1000),
        with_hyper(1, |h| h.min_lr_ratio = Perbill::ONE),
        with_hyper(1, |h| h.grad_clip_nano = 0),
        RunSpec {
            max_steps: 1000,
            ..spec(1)
        },
        RunSpec {
            max_steps: 5000,
            ..spec(1)
        },
    ] {
        try_register(s).unwrap();
    }
}

#[test]
fn unauditable_runs_are_refused() {
    let tied = |stages| with_model(stages, |m| m.tied_embeddings = true);
    assert_eq!(
        try_register(tied(2)),
        Err(Error::TiedEmbeddingsAcrossStages.into())
    );
    let global = |stages| with_hyper(stages, |h| h.clip_scope = ClipScope::Global);
    assert_eq!(
        try_register(global(4)),
        Err(Error::GlobalClipAcrossStages.into())
    );
    // One stage: nothing crosses a stage boundary.
    try_register(tied(1)).unwrap();
    try_register(global(1)).unwrap();
}

#[test]
fn replicas_that_average_are_limited_to_the_bitmap_width() {
    // A chain that allows many replicas: only averaging is bounded by the bitmap.
    let st = genesis(|o, ev| {
        balances::build_genesis(o, 1, &[(acc(1), 1_000 * UNIT)]).unwrap();
        let cfg = Config {
            max_replicas: 100,
            ..Config::default()
        };
        build_genesis(o, ev, &cfg, &[]).unwrap();
    });
    let register = |replicas: u16, sync: ReplicaSync| {
        let mut o = Overlay::new(&st);
        let mut ev = Recorder::default();
        let mut s = spec(2);
        s.replicas = replicas;
        s.hyper_params.replica_sync = sync;
        let r = register_run(&mut o, &mut ev, 1, &acc(1), s);
        (r, run(&o, 0).unwrap())
    };
    for sync in [ReplicaSync::Average, ReplicaSync::AverageInt8] {
        let (r, stored) = register(65, sync);
        assert_eq!(r, Err(Error::TooManyReplicasToAverage.into()));
        assert_eq!(stored, None);
        let (r, stored) = register(64, sync);
        assert_eq!(r, Ok(0));
        assert_eq!(stored.unwrap().hyper_params.replica_sync, sync);
    }
    // Apart: the pallet's max_replicas is the only bound.
    assert_eq!(register(65, ReplicaSync::Apart).0, Ok(0));
    assert_eq!(
        register(101, ReplicaSync::Apart).0,
        Err(Error::BadShape.into())
    );
    assert_eq!(
        check_replicas(
            &HyperParams {
                replica_sync: ReplicaSync::Average,
                ..hyper()
            },
            64
        ),
        Ok(())
    );
    // The default is apart, and the field's SCALE byte is the last of the encoding.
    assert_eq!(hyper().replica_sync, ReplicaSync::Apart);
    let averaged = HyperParams {
        replica_sync: ReplicaSync::AverageInt8,
        ..hyper()
    };
    assert_eq!(averaged.encode().last(), Some(&2));
    assert_eq!(
        HyperParams::decode(&mut &averaged.encode()[..]).unwrap(),
        averaged
    );
}

/// The trainer's presets (`weft_ml::config::ModelConfig::preset`).
fn presets() -> Vec<(&'static str, ModelSpec)> {
    let base = ModelSpec::tiny();
    vec![
        ("tiny", base),
        (
            "small",
            ModelSpec {
                d_model: 128,
                n_layers: 4,
                n_heads: 4,
                seq_len: 128,
                ..base
            },
        ),
        (
            "medium",
            ModelSpec {
                d_model: 512,
                n_layers: 8,
                n_heads: 8,
                seq_len: 256,
                ..base
            },
        ),
        (
            "gpt2",
            ModelSpec {
                d_model: 768,
                n_layers: 12,
                n_heads: 12,
                seq_len: 1024,
                tied_embeddings: true,
                ..base
            },
        ),
    ]
}

#[test]
fn every_shipped_preset_registers() {
    for (name, m) in presets() {
        // Untied presets at every stage count; tied ones on one stage (see the rules).
        let most = if m.tied_embeddings { 1 } else { m.n_layers };
        for stages in 1..=most {
            let s = RunSpec {
                model_config: m,
                ..spec(stages as StageIndex)
            };
            try_register(s).unwrap_or_else(|e| panic!("{name} × {stages}: {e:?}"));
        }
    }
    // scripts/demo.sh and the README (4 stages), the e2e tests (2 stages, max_steps 30).
    let demo = ModelSpec {
        d_model: 64,
        n_layers: 4,
        n_heads: 4,
        seq_len: 64,
        ..ModelSpec::tiny()
    };
    let demo_hyper = HyperParams {
        micro_batches: 4,
        warmup_steps: 5,
        ..HyperParams::with_defaults(8, 3_000_000_000, 60)
    };
    try_register(RunSpec {
        model_config: demo,
        hyper_params: demo_hyper,
        ..spec(4)
    })
    .unwrap();
    let e2e = ModelSpec {
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        seq_len: 8,
        ..ModelSpec::tiny()
    };
    let e2e_hyper = HyperParams {
        micro_batches: 2,
        warmup_steps: 2,
        ..HyperParams::with_defaults(2, 10_000_000_000, 30)
    };
    try_register(RunSpec {
        model_config: e2e,
        hyper_params: e2e_hyper,
        max_steps: 30,
        ..spec(2)
    })
    .unwrap();
}
