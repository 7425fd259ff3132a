//! Replicas of every stage that average their updates (`weft_ml::aggregate`, in process):
//! they hold bitwise the same weights after every step, two of them train the model one
//! replica trains on the same tokens, and the audit of an averaged step recomputes the
//! aggregate bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Device;
use weft_ml::audit::{recompute, AuditJob, AuditRound, Revealed, Tolerance};
use weft_ml::commit::{canonical_bytes, root_of, StepItem};
use weft_ml::config::{ModelConfig, ReplicaSync, TrainConfig};
use weft_ml::data::{Batcher, Synthetic};
use weft_ml::model::StageSpec;
use weft_ml::schedule::{build_workers, run_replicas_in_process, run_step_in_process};
use weft_ml::worker::{StageWorker, WorkerOptions};
use weft_primitives::replicas::Included;
use weft_primitives::Hash;

const STAGES: usize = 2;

fn replicas(
    n: usize,
    cfg: &ModelConfig,
    train: &TrainConfig,
    data: &Batcher,
    sync: ReplicaSync,
) -> Vec<Vec<StageWorker>> {
    committing(n, cfg, train, data, sync, WorkerOptions::default())
}

fn committing(
    n: usize,
    cfg: &ModelConfig,
    train: &TrainConfig,
    data: &Batcher,
    sync: ReplicaSync,
    opts: WorkerOptions,
) -> Vec<Vec<StageWorker>> {
    let train = &TrainConfig {
        replica_sync: sync,
        ..train.clone()
    };
    (0..n)
        .map(|r| {
            let mut p = build_workers(cfg, train, STAGES, data, Device::Cpu, opts).unwrap();
            for w in &mut p {
                w.set_replica(r as u16);
            }
            p
        })
        .collect()
}

/// Each replica's weights root per stage.
fn roots(replicas: &[Vec<StageWorker>]) -> Vec<Vec<Hash>> {
    replicas
        .iter()
        .map(|p| {
            p.iter()
                .map(|w| root_of(w.stage().params().iter().map(|(_, t)| t)).unwrap())
                .collect()
        })
        .collect()
}

fn setup() -> (ModelConfig, TrainConfig, Batcher) {
    tch::set_num_threads(1);
    let cfg = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let data = Batcher::new(
        Arc::new(Synthetic::standard(cfg.seed)),
        train.micro_batch_size,
        cfg.seq_len,
        cfg.vocab_size,
    )
    .unwrap();
    (cfg, train, data)
}

#[test]
fn two_averaged_replicas_stay_identical_and_train_what_one_replica_trains_on_their_tokens() {
    let (cfg, train, data) = setup();
    let mut wide = train.clone();
    wide.micro_batches = 2 * train.micro_batches;
    let mut single = build_workers(
        &cfg,
        &wide,
        STAGES,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap();
    let mut averaged = replicas(2, &cfg, &train, &data, ReplicaSync::Average);
    let mut apart = replicas(2, &cfg, &train, &data, ReplicaSync::Apart);
    for step in 0..4 {
        let want = run_step_in_process(&mut single, step).unwrap();
        let reports = run_replicas_in_process(&mut averaged, step).unwrap();
        // Each replica's loss is over its own micro-batches; their mean is over the single
        // replica's.
        let losses: Vec<f64> = reports
            .iter()
            .map(|p| p.last().unwrap().loss.unwrap())
            .collect();
        assert_ne!(losses[0], losses[1], "the replicas read different data");
        let mean = (losses[0] + losses[1]) / 2.0;
        assert!((mean - want).abs() < 1e-5, "step {step}: {mean} vs {want}");
        let r = roots(&averaged);
        assert_eq!(r[0], r[1], "step {step}: the averaged replicas differ");
        run_replicas_in_process(&mut apart, step).unwrap();
        let r = roots(&apart);
        assert_ne!(r[0], r[1], "step {step}: replicas apart stay equal");
    }
    // And the weights: the single replica's, up to the order of floating-point sums.
    for (s, a) in single.iter().zip(&averaged[0]) {
        for ((n, x), (_, y)) in s.stage().params().iter().zip(a.stage().params()) {
            let scale = x.abs().max().double_value(&[]).max(1.0);
            let diff = (x - y).abs().max().double_value(&[]) / scale;
            assert!(diff < 1e-5, "{n}: {diff}");
        }
    }
}

#[test]
fn three_four_and_int8_compressed_averaged_replicas_stay_bitwise_identical() {
    let (cfg, train, data) = setup();
    for n in [3, 4] {
        let mut averaged = replicas(n, &cfg, &train, &data, ReplicaSync::Average);
        for step in 0..3 {
            run_replicas_in_process(&mut averaged, step).unwrap();
            let r = roots(&averaged);
            assert!(r.windows(2).all(|w| w[0] == w[1]), "R = {n}, step {step}");
        }
    }
    // Compressed to int8, the replicas aggregate the same decoded values: still identical.
    let mut int8 = replicas(2, &cfg, &train, &data, ReplicaSync::AverageInt8);
    for step in 0..3 {
        run_replicas_in_process(&mut int8, step).unwrap();
        let r = roots(&int8);
        assert_eq!(r[0], r[1], "int8, step {step}");
    }
}

#[test]
fn the_audit_of_an_averaged_step_recomputes_the_aggregate_bit_for_bit() {
    const STEP: u64 = 2;
    let (cfg, train, data) = setup();
    let train = TrainConfig {
        replica_sync: ReplicaSync::Average,
        ..train
    };
    let mut grid = committing(
        3,
        &cfg,
        &train,
        &data,
        ReplicaSync::Average,
        WorkerOptions { commit: true },
    );
    for step in 0..STEP {
        run_replicas_in_process(&mut grid, step).unwrap();
    }
    let before: Vec<Vec<(Vec<u8>, Vec<u8>)>> = grid
        .iter()
        .map(|p| {
            p.iter()
                .map(|w| (common::weights(w), common::moments(w)))
                .collect()
        })
        .collect();
    let reports = run_replicas_in_process(&mut grid, STEP).unwrap();
    let stage = 1;
    let spec = StageSpec::new(stage, STAGES).unwrap();
    // Every replica's update of the stage, as it sent it.
    let updates: Vec<Vec<u8>> = reports
        .iter()
        .map(|p| canonical_bytes(&p[stage].record.as_ref().unwrap().update).unwrap())
        .collect();
    let judge = |replica: usize, round: AuditRound, edit: &dyn Fn(&mut Revealed)| {
        let report = &reports[replica][stage];
        let rec = report.record.as_ref().unwrap();
        let w = &grid[replica][stage];
        let mut rev = Revealed::default();
        let (wb, ob) = before[replica][stage].clone();
        for (item, bytes) in [
            (StepItem::WeightsBefore, wb),
            (StepItem::OptimizerBefore, ob),
            (StepItem::Inputs, canonical_bytes(&rec.inputs).unwrap()),
            (StepItem::Outputs, canonical_bytes(&rec.outputs).unwrap()),
            (
                StepItem::OutputGrads,
                canonical_bytes(&rec.output_grads).unwrap(),
            ),
            (
                StepItem::InputGrads,
                canonical_bytes(&rec.input_grads).unwrap(),
            ),
            (StepItem::WeightsAfter, common::weights(w)),
            (StepItem::OptimizerAfter, common::moments(w)),
            (StepItem::Update, updates[replica].clone()),
        ] {
            rev.items.insert(item, bytes);
        }
        edit(&mut rev);
        let mut c = report.commitment.unwrap();
        // What a cheater would commit to: the roots of what it reveals.
        let root = |item| weft_ml::commit::root_of_bytes(&rev.items[&item]);
        c.roots.weights_after = root(StepItem::WeightsAfter);
        c.roots.optimizer_after = root(StepItem::OptimizerAfter);
        c.roots.update = root(StepItem::Update);
        recompute(
            &AuditJob {
                model: &cfg,
                train: &train,
                spec,
                data: spec.is_last().then(|| data.clone()),
                commitment: &c,
                replica: replica as u16,
                previous: None,
                tolerance: Tolerance::EXACT,
                device: Device::Cpu,
                round: Some(round),
            },
            &rev,
        )
        .unwrap()
    };
    let round_of = |replica: usize, set: &[u16]| AuditRound {
        included: Included::of(set.iter().copied()).unwrap(),
        others: set
            .iter()
            .filter(|&&r| r as usize != replica)
            .map(|&r| (r, updates[r as usize].clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    // Honest: every replica's step recomputes exactly, aggregate included.
    for r in 0..3 {
        let out = judge(r, round_of(r, &[0, 1, 2]), &|_| {});
        assert!(out.pass, "replica {r}: {:?}", out.failure);
    }
    // A round that claims fewer updates than the step aggregated: the trimmed mean of the
    // claimed set is another aggregate, and the committed weights are not its step.
    let out = judge(0, round_of(0, &[0, 1]), &|_| {});
    assert!(!out.pass);
    assert!(out.failure.unwrap().contains("WeightsAfter"));
    // An update of the round other than the one aggregated: replica 2's values negated (f32
    // little-endian, the sign bit). One changed value would not do: the trimmed mean of three
    // is their median, which a value that is not the median does not move, and which of the
    // three is the median at a coordinate depends on the machine's float rounding.
    let mut other = round_of(1, &[0, 1, 2]);
    let u = other.others.get_mut(&2).unwrap();
    for sign in u.iter_mut().skip(3).step_by(4) {
        *sign ^= 0x80;
    }
    let out = judge(1, other, &|_| {});
    assert!(!out.pass);
    // Weights other than the aggregate's step, by one ulp.
    let out = judge(2, round_of(2, &[0, 1, 2]), &|rev| {
        let w = rev.items.get_mut(&StepItem::WeightsAfter).unwrap();
        w[0] ^= 1;
    });
    assert!(!out.pass);
    // An own update other than the inputs give (the poisoned update).
    let out = judge(0, round_of(0, &[0, 1, 2]), &|rev| {
        let u = rev.items.get_mut(&StepItem::Update).unwrap();
        for b in u.chunks_exact_mut(4) {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * -1000.0;
            b.copy_from_slice(&v.to_le_bytes());
        }
    });
    assert!(!out.pass);
    assert!(out.failure.unwrap().contains("Update"));
}
