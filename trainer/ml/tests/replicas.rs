//! Replicas of every stage that average their updates (`weft_ml::aggregate`, in process):
//! they hold bitwise the same weights after every step, and two of them train the model one
//! replica trains on the same tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use tch::Device;
use weft_ml::commit::root_of;
use weft_ml::config::{ModelConfig, ReplicaSync, TrainConfig};
use weft_ml::data::{Batcher, Synthetic};
use weft_ml::schedule::{build_workers, run_replicas_in_process, run_step_in_process};
use weft_ml::worker::{StageWorker, WorkerOptions};
use weft_primitives::Hash;

const STAGES: usize = 2;

fn replicas(
    n: usize,
    cfg: &ModelConfig,
    train: &TrainConfig,
    data: &Batcher,
    sync: ReplicaSync,
) -> Vec<Vec<StageWorker>> {
    let train = &TrainConfig {
        replica_sync: sync,
        ..train.clone()
    };
    (0..n)
        .map(|r| {
            let mut p = build_workers(
                cfg,
                train,
                STAGES,
                data,
                Device::Cpu,
                WorkerOptions::default(),
            )
            .unwrap();
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
