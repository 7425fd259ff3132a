//! The stage protocol under a seeded, lossy network, in one process: a 4-stage pipeline with
//! dropped, duplicated and reordered messages and a restarted stage commits, step for step,
//! exactly what the in-process pipeline computes; the same seed replays the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;
use tch::Device;
use weft_trainer::adversary::{Cheat, Cheater, Recommitter};
use weft_trainer::ml::audit::{needed_items, recompute, AuditJob, Continuity, Revealed, Tolerance};
use weft_trainer::ml::commit::StepCommitment;
use weft_trainer::ml::config::{ClipScope, ModelConfig, TrainConfig};
use weft_trainer::ml::data::{Batcher, Synthetic};
use weft_trainer::ml::model::StageSpec;
use weft_trainer::ml::schedule::{build_workers, run_step_in_process_detailed};
use weft_trainer::ml::worker::{StageWorker, WorkerOptions};
use weft_trainer::net::access::RevealAccess;
use weft_trainer::net::link::RetryPolicy;
use weft_trainer::net::store::TensorStore;
use weft_trainer::net::topology::{PeerTable, StagePeer};
use weft_trainer::net::wire::Limits;
use weft_trainer::stage::sim::{self, SimPlan, SimReport};
use weft_trainer::stage::{CommitHook, NodeConfig, StageHooks};

const STAGES: usize = 4;
const STEPS: u64 = 4;

/// The model and hyper-parameters; `coupled` ties the embeddings and clips by the global
/// norm, so stages also exchange embedding gradients and sums of squares.
fn setup_with(coupled: bool) -> (ModelConfig, TrainConfig, Batcher) {
    let model = ModelConfig {
        seed: 11,
        tied_embeddings: coupled,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        clip_scope: if coupled {
            ClipScope::Global
        } else {
            ClipScope::Stage
        },
        grad_clip: if coupled { 0.5 } else { 1.0 },
        ..TrainConfig::tiny()
    };
    let data = Batcher::new(
        Arc::new(Synthetic::standard(11)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )
    .unwrap();
    (model, train, data)
}

/// Every stage's worker, committing every step.
fn committing_workers(coupled: bool) -> weft_trainer::ml::Result<Vec<StageWorker>> {
    let (model, train, data) = setup_with(coupled);
    build_workers(
        &model,
        &train,
        STAGES,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
}

/// What the in-process pipeline commits, per step and stage.
fn reference(coupled: bool) -> Vec<Vec<StepCommitment>> {
    let mut workers = committing_workers(coupled).unwrap();
    (0..STEPS)
        .map(|s| {
            run_step_in_process_detailed(&mut workers, s)
                .unwrap()
                .into_iter()
                .map(|r| r.commitment.unwrap())
                .collect()
        })
        .collect()
}

/// Runs the simulated pipeline under `plan`; returns what each stage stored, per step and
/// stage, and the report.
fn simulate(plan: &SimPlan, coupled: bool) -> (Vec<Vec<StepCommitment>>, SimReport) {
    let (stored, report, _dir) = simulate_with(plan, coupled, None);
    (stored, report)
}

/// [`simulate`] with one dishonest stage (`cheater`: the stage, the cheat, its first step);
/// also returns the directory of the stages' data (`stage-k`).
fn simulate_with(
    plan: &SimPlan,
    coupled: bool,
    cheater: Option<(usize, Cheat, u64)>,
) -> (Vec<Vec<StepCommitment>>, SimReport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<_> = (0..STAGES)
        .map(|k| {
            weft_p2p::keypair_from_seed([k as u8 + 1; 32])
                .unwrap()
                .public()
                .to_peer_id()
        })
        .collect();
    let table = PeerTable {
        run: Some(5),
        stages: peers
            .iter()
            .map(|p| StagePeer {
                peer_id: *p,
                addrs: vec![],
            })
            .collect(),
        auditors: vec![],
        replicas: vec![],
    };
    let configs: Vec<NodeConfig> = (0..STAGES)
        .map(|k| NodeConfig {
            run: 5,
            replica: 0,
            steps: STEPS,
            data_dir: dir.path().join(format!("stage-{k}")),
            checkpoint_every: 2,
            retention: 8,
            peers: table.clone(),
            auditors: Arc::new(RevealAccess::default()),
            limits: Limits::default(),
            peer_timeout: Duration::from_secs(600),
            retry: RetryPolicy {
                attempts: 1_000,
                initial: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            desks: Vec::new(),
            identity: weft_p2p::keypair_from_seed([k as u8 + 1; 32]).unwrap(),
            tamper: None,
            replica_deadline: std::time::Duration::from_secs(20),
            replica_desk: None,
        })
        .collect();
    let make = Arc::new(move |k: usize| -> weft_trainer::Result<_> {
        let mut w = committing_workers(coupled)?.remove(k);
        if let Some((_, cheat, from)) = cheater.filter(|c| c.0 == k) {
            w.set_hook(Box::new(Cheater::new(cheat, from)));
        }
        Ok(w)
    });
    let hooks = Arc::new(move |k: usize| StageHooks {
        after_step: None,
        commit: cheater
            .filter(|c| c.0 == k)
            .map(|(_, cheat, from)| Box::new(Recommitter::new(cheat, from)) as Box<dyn CommitHook>),
        stop: None,
    });
    let (summaries, report) = sim::run(configs.clone(), peers, make, hooks, plan).unwrap();
    assert_eq!(summaries.len(), STAGES);
    let stored = (0..STEPS)
        .map(|s| {
            configs
                .iter()
                .map(|c| {
                    TensorStore::open(&c.data_dir, c.retention)
                        .unwrap()
                        .commitment(s)
                        .unwrap()
                })
                .collect()
        })
        .collect();
    (stored, report, dir)
}

#[test]
fn a_lossy_reordering_network_and_a_restart_change_nothing() {
    let expected = reference(false);
    let plan = SimPlan {
        seed: 7,
        drop: 0.2,
        duplicate: 0.2,
        restart: Some((2, 2)),
        max_events: 200_000,
    };
    let (stored, report) = simulate(&plan, false);
    // The faults happened…
    assert!(report.dropped > 0, "{report:?}");
    assert!(report.duplicated > 0, "{report:?}");
    assert!(report.retries > 0, "{report:?}");
    assert_eq!(report.restarts, 1, "{report:?}");
    // …and every stage committed, step for step, bitwise what the in-process pipeline
    // computes (the roots cover weights, optimiser state, activations and gradients).
    assert_eq!(stored, expected);
    // The same seed replays the same run.
    let (again, report2) = simulate(&plan, false);
    assert_eq!(again, expected);
    assert_eq!(report2.trace, report.trace);
    assert_eq!(
        (report2.dropped, report2.duplicated),
        (report.dropped, report.duplicated)
    );
}

#[test]
fn coupled_stages_survive_faults_and_restarts_at_either_end() {
    // Tied embeddings (stages 0 and 3 exchange gradients) and global clipping (every stage
    // sends every other its sum of squares), under other seeds, restarting an end stage.
    let expected = reference(true);
    // Stage 0 restarted after step 2 (checkpointed after step 1) replays step 2 from its
    // store, output gradients included.
    for (seed, restart) in [(1, (0, 2)), (2, (3, 2)), (3, (1, 0))] {
        let plan = SimPlan {
            seed,
            drop: 0.15,
            duplicate: 0.1,
            restart: Some(restart),
            max_events: 200_000,
        };
        let (stored, report) = simulate(&plan, true);
        assert_eq!(report.restarts, 1, "seed {seed}: {report:?}");
        assert!(report.dropped > 0, "seed {seed}: {report:?}");
        assert_eq!(stored, expected, "seed {seed}");
    }
}

/// The audit of `stage`'s step `step` from its own store in `dir`, under `tolerance`.
fn audit_stored(
    dir: &tempfile::TempDir,
    stored: &[Vec<StepCommitment>],
    stage: usize,
    step: u64,
    tolerance: Tolerance,
) -> weft_trainer::ml::audit::AuditOutcome {
    let (model, train, data) = setup_with(false);
    let spec = StageSpec::new(stage, STAGES).unwrap();
    let store = TensorStore::open(&dir.path().join(format!("stage-{stage}")), 8).unwrap();
    let revealed = Revealed {
        items: needed_items(spec)
            .into_iter()
            .map(|i| (i, store.item(step, i).unwrap()))
            .collect(),
    };
    let previous = step.checked_sub(1).map(|p| {
        let prev = &stored[p as usize][stage];
        Continuity {
            weights_after: prev.roots.weights_after,
            optimizer_after: prev.roots.optimizer_after,
        }
    });
    let job = AuditJob {
        model: &model,
        train: &train,
        spec,
        data: (spec.is_first() || spec.is_last()).then(|| data.clone()),
        commitment: &stored[step as usize][stage],
        replica: 0,
        previous,
        tolerance,
        device: Device::Cpu,
        round: None,
    };
    recompute(&job, &revealed).unwrap()
}

#[test]
fn a_cheating_stage_in_the_simulation_is_caught_by_recomputation() {
    // Stage 1 scales its gradients from step 1 on; the pipeline runs over a lossy network
    // all the same, and an audit of step 2 from each stage's own store catches exactly it.
    let plan = SimPlan {
        seed: 21,
        drop: 0.1,
        duplicate: 0.1,
        restart: None,
        max_events: 200_000,
    };
    let (stored, _, dir) = simulate_with(&plan, false, Some((1, Cheat::ScaledGradients, 1)));
    let honest = reference(false);
    assert_eq!(stored[0], honest[0], "step 0 is honest everywhere");
    for stage in 0..STAGES {
        let outcome = audit_stored(&dir, &stored, stage, 2, Tolerance::default());
        assert_eq!(
            outcome.pass,
            stage != 1,
            "stage {stage}: {:?}",
            outcome.failure
        );
    }
}

#[test]
fn a_nudge_inside_the_tolerance_passes_it_and_fails_the_exact_audit() {
    // Stage 1 steers its weights along a fixed direction by half of what the default
    // tolerance admits, every step from step 1 on. Audited in the same process (the same
    // compute class): under the tolerance every stage passes, the nudger too; under the
    // exact rule every honest stage still passes (honest recomputation is bit-exact, also
    // downstream of the nudger, whose activations the next stage recomputes from) and the
    // nudger fails every nudged step.
    let plan = SimPlan {
        seed: 5,
        drop: 0.1,
        duplicate: 0.0,
        restart: None,
        max_events: 200_000,
    };
    let (stored, _, dir) = simulate_with(&plan, false, Some((1, Cheat::Nudge, 1)));
    let honest = reference(false);
    assert_eq!(stored[0], honest[0], "step 0 is honest everywhere");
    assert_ne!(stored[1][1], honest[1][1], "step 1 of stage 1 is nudged");
    for step in 0..STEPS {
        for stage in 0..STAGES {
            let loose = audit_stored(&dir, &stored, stage, step, Tolerance::default());
            assert!(loose.pass, "stage {stage} step {step}: {:?}", loose.failure);
            let exact = audit_stored(&dir, &stored, stage, step, Tolerance::EXACT);
            let nudged = stage == 1 && step >= 1;
            assert_eq!(
                exact.pass, !nudged,
                "stage {stage} step {step}: {:?}",
                exact.failure
            );
            if !nudged {
                assert_eq!(exact.worst_rel_l2(), 0.0, "stage {stage} step {step}");
            }
        }
    }
}
