//! Audits at the library level: an honest step recomputes within tolerance on every kind of
//! stage, and tampered reveals (one weight, scaled or zeroed gradients, random outputs, a
//! wrong loss, stale weights, a reveal that is not the commitment, other data, a replayed
//! step, another replica's data) fail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::step_with_reveals;
use std::sync::Arc;
use tch::Device;
use weft_ml::audit::{compare, recompute, AuditJob, Continuity, Revealed, Tolerance};
use weft_ml::commit::StepItem;
use weft_ml::commit::{root_of_bytes, StepCommitment, StepRoots};
use weft_ml::config::{ModelConfig, TrainConfig};
use weft_ml::data::{Batcher, Synthetic};
use weft_ml::model::StageSpec;
use weft_ml::schedule::{build_workers, run_step_in_process_detailed};
use weft_ml::worker::WorkerOptions;

const STAGES: usize = 3;
const STEP: u64 = 3;

fn setup() -> (ModelConfig, TrainConfig, Batcher) {
    let model = ModelConfig {
        seed: 7,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        warmup_steps: 2,
        weight_decay: 0.1,
        ..TrainConfig::tiny()
    };
    let data = Batcher::new(
        Arc::new(Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )
    .unwrap();
    (model, train, data)
}

/// Trains steps 0..=STEP in process and returns, per stage, the commitment and the reveal
/// of step STEP.
fn honest() -> Vec<(StepCommitment, Revealed)> {
    let (model, train, data) = setup();
    let mut workers = build_workers(
        &model,
        &train,
        STAGES,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
    .unwrap();
    for s in 0..STEP {
        run_step_in_process_detailed(&mut workers, s).unwrap();
    }
    step_with_reveals(&mut workers, STEP)
}

/// What a cheater commits to: the roots of what it reveals.
fn recommit(c: &StepCommitment, rev: &Revealed) -> StepCommitment {
    let root = |i: StepItem| root_of_bytes(&rev.items[&i]);
    StepCommitment {
        roots: StepRoots {
            inputs: if c.roots.inputs == root_of_bytes(&rev.items[&StepItem::Inputs]) {
                c.roots.inputs
            } else {
                root(StepItem::Inputs)
            },
            outputs: root(StepItem::Outputs),
            output_grads: root(StepItem::OutputGrads),
            input_grads: root(StepItem::InputGrads),
            weights_after: root(StepItem::WeightsAfter),
            optimizer_after: root(StepItem::OptimizerAfter),
            ..c.roots
        },
        ..*c
    }
}

fn judge(stage: usize, c: &StepCommitment, rev: &Revealed) -> weft_ml::audit::AuditOutcome {
    judge_with(stage, c, rev, 0, None)
}

fn judge_with(
    stage: usize,
    c: &StepCommitment,
    rev: &Revealed,
    replica: u16,
    previous: Option<Continuity>,
) -> weft_ml::audit::AuditOutcome {
    let (model, train, data) = setup();
    let spec = StageSpec::new(stage, STAGES).unwrap();
    let job = AuditJob {
        model: &model,
        train: &train,
        spec,
        data: (spec.is_first() || spec.is_last()).then_some(data),
        commitment: c,
        replica,
        previous,
        tolerance: Tolerance::default(),
        device: Device::Cpu,
        round: None,
    };
    recompute(&job, rev).unwrap()
}

fn continuity(c: &StepCommitment) -> Continuity {
    Continuity {
        weights_after: c.roots.weights_after,
        optimizer_after: c.roots.optimizer_after,
    }
}

fn workers(replica: u16) -> Vec<weft_ml::worker::StageWorker> {
    let (model, train, data) = setup();
    let mut w = build_workers(
        &model,
        &train,
        STAGES,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
    .unwrap();
    for x in &mut w {
        x.set_replica(replica);
    }
    w
}

/// Steps chain: each must continue the previous one, step 0 must start from the public
/// initialisation, and a replica must train on its own data shard.
#[test]
fn continuity_initialisation_and_replica_data() {
    let mut w = workers(0);
    let step0 = step_with_reveals(&mut w, 0);
    let step1 = step_with_reveals(&mut w, 1);
    let step2 = step_with_reveals(&mut w, 2);
    for stage in 0..STAGES {
        let (c0, r0) = &step0[stage];
        let (c1, r1) = &step1[stage];
        let (c2, r2) = &step2[stage];
        assert!(judge(stage, c0, r0).pass, "stage {stage}: honest step 0");
        let out = judge_with(stage, c2, r2, 0, Some(continuity(c1)));
        assert!(out.pass, "stage {stage}: honest step 2: {:?}", out.failure);
        // Replaying step 1 as step 2: its numbers are genuine, its start is not.
        let replay = StepCommitment { step: 2, ..*c1 };
        let out = judge_with(stage, &replay, r1, 0, Some(continuity(c1)));
        assert!(!out.pass, "stage {stage}: replay passed");
        assert!(out.failure.unwrap().contains("does not start from"));
        // Claiming step 0 from trained weights.
        let late = StepCommitment { step: 0, ..*c1 };
        let out = judge(stage, &late, r1);
        assert!(
            !out.pass,
            "stage {stage}: step 0 from trained weights passed"
        );
    }
    // Replica 1 reads its own shard: its honest step passes as replica 1 and fails as
    // replica 0 (stage 0's inputs and the last stage's targets are not replica 0's data).
    let mut w1 = workers(1);
    let r1 = step_with_reveals(&mut w1, 0);
    for (stage, (c, rev)) in r1.iter().enumerate() {
        assert!(judge_with(stage, c, rev, 1, None).pass, "stage {stage}");
        let as_other = judge_with(stage, c, rev, 0, None);
        if stage == 0 || stage == STAGES - 1 {
            assert!(
                !as_other.pass,
                "stage {stage}: another replica's data passed"
            );
        }
    }
    assert_ne!(r1[0].0.roots.inputs, step0[0].0.roots.inputs);
}

fn edit_f32(bytes: &mut [u8], index: usize, f: impl Fn(f32) -> f32) {
    let v = f32::from_le_bytes(bytes[index * 4..index * 4 + 4].try_into().unwrap());
    bytes[index * 4..index * 4 + 4].copy_from_slice(&f(v).to_le_bytes());
}

fn map_f32(bytes: &mut [u8], f: impl Fn(usize, f32) -> f32) {
    for i in 0..bytes.len() / 4 {
        edit_f32(bytes, i, |v| f(i, v));
    }
}

fn tampered(
    steps: &[(StepCommitment, Revealed)],
    stage: usize,
    item: StepItem,
    f: impl Fn(&mut Vec<u8>),
) -> weft_ml::audit::AuditOutcome {
    let (c, rev) = &steps[stage];
    let mut rev = rev.clone();
    f(rev.items.get_mut(&item).unwrap());
    let c2 = recommit(c, &rev);
    judge(stage, &c2, &rev)
}

#[test]
fn honest_steps_pass_and_tampering_fails() {
    let steps = honest();
    for (stage, (c, rev)) in steps.iter().enumerate() {
        let out = judge(stage, c, rev);
        assert!(out.pass, "stage {stage}: {:?}", out.failure);
        assert!(
            out.worst_rel_l2() <= 1e-6,
            "stage {stage}: {}",
            out.worst_rel_l2()
        );
    }
    let fails = |o: weft_ml::audit::AuditOutcome, what: &str| {
        assert!(!o.pass, "{what} passed");
        println!("{what}: {}", o.failure.unwrap());
    };
    // One weight element of a stage's weights_after moved by 1e-2.
    for stage in 0..STAGES {
        fails(
            tampered(&steps, stage, StepItem::WeightsAfter, |b| {
                let n = b.len() / 4;
                edit_f32(b, n / 2, |v| v + 1e-2)
            }),
            &format!("stage {stage}: one tampered weight"),
        );
    }
    // Scaled and zeroed gradients sent back.
    fails(
        tampered(&steps, 1, StepItem::InputGrads, |b| {
            map_f32(b, |_, v| v * 2.0)
        }),
        "scaled input gradients",
    );
    fails(
        tampered(&steps, 2, StepItem::InputGrads, |b| map_f32(b, |_, _| 0.0)),
        "zeroed input gradients",
    );
    // Random outputs.
    fails(
        tampered(&steps, 0, StepItem::Outputs, |b| {
            map_f32(b, |i, _| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0)
        }),
        "random outputs",
    );
    // A lower loss than computed (the loss is an output of the last stage).
    fails(
        tampered(&steps, 2, StepItem::Outputs, |b| map_f32(b, |_, v| v * 0.9)),
        "understated loss",
    );
    // Stale weights: no update at all, moments updated.
    {
        let (c, rev) = &steps[1];
        let mut rev = rev.clone();
        let wb = rev.items[&StepItem::WeightsBefore].clone();
        rev.items.insert(StepItem::WeightsAfter, wb);
        let c2 = recommit(c, &rev);
        fails(judge(1, &c2, &rev), "stale weights");
    }
    // A reveal that is not what was committed.
    {
        let (c, rev) = &steps[1];
        let mut rev = rev.clone();
        edit_f32(rev.items.get_mut(&StepItem::OutputGrads).unwrap(), 0, |v| {
            v + 1.0
        });
        fails(judge(1, c, &rev), "reveal differs from the commitment");
    }
    // Stage 0 committing to inputs that are not the assigned data.
    {
        let (c, rev) = &steps[0];
        let mut c2 = *c;
        c2.roots.inputs = root_of_bytes(b"other data");
        fails(judge(0, &c2, rev), "other data");
    }
    // A committed loss that differs from the outputs.
    {
        let (c, rev) = &steps[2];
        let mut c2 = *c;
        c2.loss = c.loss.map(|l| l - 200_000);
        fails(judge(2, &c2, rev), "committed loss");
    }
}

#[test]
fn tolerance_metric() {
    let tol = Tolerance::default();
    let r: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    assert!(compare(StepItem::Outputs, "x", &r, &r, &tol).pass);
    // Honest-looking noise at 1e-6 relative passes.
    let g: Vec<f32> = r.iter().map(|v| v * (1.0 + 1e-6)).collect();
    assert!(compare(StepItem::Outputs, "x", &g, &r, &tol).pass);
    // One element off by 1e-2 (L2 error 1e-2 / ‖r‖≈22 = 4.5e-4 > 1e-4; also max-abs).
    let mut g = r.clone();
    g[10] += 1e-2;
    let c = compare(StepItem::Outputs, "x", &g, &r, &tol);
    assert!(!c.pass && c.max_abs > 9e-3);
    // One element off by 3e-3: below the L2 bound's reach in a large tensor is still caught
    // by the element bound (1e-3 × max|r| = 1e-3).
    let big: Vec<f32> = (0..100_000).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut g = big.clone();
    g[5] += 3e-3;
    let c = compare(StepItem::Outputs, "x", &g, &big, &tol);
    assert!(c.rel_l2 < 1e-4 && !c.pass, "{c:?}");
    // Non-finite and zero references.
    let mut g = r.clone();
    g[0] = f32::NAN;
    assert!(!compare(StepItem::Outputs, "x", &g, &r, &tol).pass);
    let z = vec![0f32; 10];
    assert!(compare(StepItem::Outputs, "x", &z, &z, &tol).pass);
    assert!(!compare(StepItem::Outputs, "x", &[1.0; 10], &z, &tol).pass);
}
