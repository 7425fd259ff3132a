//! End-to-end tests of the trainer library on tiny CPU models: pipeline equivalence,
//! learning, commitments, checkpoints and data assignment.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use tch::{Device, Tensor};
use weft_ml::checkpoint;
use weft_ml::commit::{prove_chunk, root_of, verify_chunk, TensorTree};
use weft_ml::config::{ClipScope, ModelConfig, TrainConfig};
use weft_ml::data::{Batcher, Synthetic, TokenFile, TokenSource};
use weft_ml::model::{Stage, StageSpec};
use weft_ml::schedule::{build_workers, run_step_in_process, run_step_in_process_detailed};
use weft_ml::worker::{StageWorker, WorkerOptions};

const TEXT: &str = "It was the best of times, it was the worst of times, it was the age of \
wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of \
incredulity, it was the season of Light, it was the season of Darkness, it was the spring of \
hope, it was the winter of despair, we had everything before us, we had nothing before us, we \
were all going direct to Heaven, we were all going direct the other way - in short, the period \
was so far like the present period, that some of its noisiest authorities insisted on its \
being received, for good or for evil, in the superlative degree of comparison only. ";

fn text_batcher(train: &TrainConfig, cfg: &ModelConfig) -> Batcher {
    let src: Arc<dyn TokenSource> = Arc::new(TokenFile::from_bytes(TEXT.repeat(4).as_bytes()));
    Batcher::new(src, train.micro_batch_size, cfg.seq_len, cfg.vocab_size).unwrap()
}

fn weights(workers: &[StageWorker]) -> Vec<(String, Tensor)> {
    let mut all: Vec<(String, Tensor)> = Vec::new();
    for w in workers {
        for (n, t) in w.stage().params() {
            if !w.stage().is_shared_copy(n) {
                all.push((n.clone(), t.detach().copy()));
            }
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1.0);
    (a - b).abs().max().double_value(&[]) / scale
}

fn pipeline_vs_single(cfg: ModelConfig, train: TrainConfig, steps: u64) -> (f64, f64) {
    tch::set_num_threads(1);
    let data = text_batcher(&train, &cfg);
    let opts = WorkerOptions::default();
    let mut four = build_workers(&cfg, &train, 4, &data, Device::Cpu, opts).unwrap();
    let mut one = build_workers(&cfg, &train, 1, &data, Device::Cpu, opts).unwrap();
    // Initial weights: exactly equal, parameter by parameter, and nothing missing.
    let (w4, w1) = (weights(&four), weights(&one));
    assert_eq!(w4.len(), w1.len());
    for ((n4, t4), (n1, t1)) in w4.iter().zip(&w1) {
        assert_eq!(n4, n1);
        assert!(t4.equal(t1), "initial {n4} differs");
    }
    let mut worst_loss = 0.0f64;
    for step in 0..steps {
        let l4 = run_step_in_process(&mut four, step).unwrap();
        let l1 = run_step_in_process(&mut one, step).unwrap();
        let rel = ((l4 - l1) / l1).abs();
        worst_loss = worst_loss.max(rel);
        assert!(
            rel < 1e-5,
            "step {step}: loss {l4} (4 stages) vs {l1} (1 stage)"
        );
    }
    let mut worst_weight = 0.0f64;
    for ((n, t4), (_, t1)) in weights(&four).iter().zip(&weights(&one)) {
        let d = max_rel_diff(t4, t1);
        worst_weight = worst_weight.max(d);
        assert!(d < 1e-5, "final {n} differs by {d}");
    }
    if cfg.tied_embeddings {
        // Both copies of the tied embedding stayed identical.
        let e0 = &four[0]
            .stage()
            .params()
            .iter()
            .find(|(n, _)| n == "wte.weight")
            .unwrap()
            .1;
        let e3 = &four[3]
            .stage()
            .params()
            .iter()
            .find(|(n, _)| n == "wte.weight")
            .unwrap()
            .1;
        assert!(e0.equal(e3));
    }
    println!("pipeline vs single: worst loss rel diff {worst_loss:.3e}, worst weight rel diff {worst_weight:.3e}");
    (worst_loss, worst_weight)
}

#[test]
fn four_stages_match_one_stage() {
    let train = TrainConfig {
        clip_scope: ClipScope::Global,
        grad_clip: 0.5,
        weight_decay: 0.1,
        ..TrainConfig::tiny()
    };
    pipeline_vs_single(ModelConfig::tiny(), train, 5);
}

#[test]
fn four_stages_match_one_stage_with_tied_embeddings() {
    let cfg = ModelConfig {
        tied_embeddings: true,
        seed: 9,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        clip_scope: ClipScope::Global,
        ..TrainConfig::tiny()
    };
    pipeline_vs_single(cfg, train, 4);
}

#[test]
fn four_stages_match_one_stage_with_stage_scope_and_no_clipping() {
    let train = TrainConfig {
        clip_scope: ClipScope::Stage,
        grad_clip: 0.0,
        ..TrainConfig::tiny()
    };
    pipeline_vs_single(
        ModelConfig {
            seed: 4,
            ..ModelConfig::tiny()
        },
        train,
        3,
    );
}

#[test]
fn dropout_is_reproducible() {
    tch::set_num_threads(1);
    let cfg = ModelConfig {
        dropout: 0.2,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig::tiny();
    let data = text_batcher(&train, &cfg);
    let run = || {
        let mut w = build_workers(
            &cfg,
            &train,
            2,
            &data,
            Device::Cpu,
            WorkerOptions::default(),
        )
        .unwrap();
        (0..3)
            .map(|s| run_step_in_process(&mut w, s).unwrap())
            .collect::<Vec<f64>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let no_dropout = {
        let cfg0 = ModelConfig {
            dropout: 0.0,
            ..cfg.clone()
        };
        let mut w = build_workers(
            &cfg0,
            &train,
            2,
            &data,
            Device::Cpu,
            WorkerOptions::default(),
        )
        .unwrap();
        run_step_in_process(&mut w, 0).unwrap()
    };
    assert_ne!(a[0], no_dropout);
}

#[test]
fn mismatched_batcher_is_refused() {
    let cfg = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let other = TrainConfig {
        micro_batch_size: 3,
        ..train.clone()
    };
    let data = text_batcher(&other, &cfg);
    assert!(build_workers(
        &cfg,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default()
    )
    .is_err());
}

#[test]
fn learns_synthetic_chain_to_its_entropy_rate() {
    tch::set_num_threads(1);
    let cfg = ModelConfig {
        n_layers: 2,
        seed: 5,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        micro_batch_size: 16,
        micro_batches: 1,
        lr: 1e-2,
        warmup_steps: 20,
        total_steps: 300,
        weight_decay: 0.0,
        ..TrainConfig::tiny()
    };
    let chain = Synthetic::standard(11);
    let entropy = chain.entropy_rate();
    let unigram = chain.unigram_entropy();
    let data = Batcher::new(
        Arc::new(chain),
        train.micro_batch_size,
        cfg.seq_len,
        cfg.vocab_size,
    )
    .unwrap();
    let mut workers = build_workers(
        &cfg,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap();
    let mut losses = Vec::new();
    for step in 0..train.total_steps {
        losses.push(run_step_in_process(&mut workers, step).unwrap());
    }
    let tail = &losses[losses.len() - 30..];
    let final_loss = tail.iter().sum::<f64>() / tail.len() as f64;
    println!(
        "synthetic: first loss {:.4}, final loss {final_loss:.4}, entropy rate {entropy:.4}, unigram {unigram:.4}",
        losses[0]
    );
    assert!(
        final_loss - entropy < 0.15,
        "final {final_loss} vs entropy rate {entropy}"
    );
    assert!(
        final_loss > entropy - 0.1,
        "loss {final_loss} below the entropy rate {entropy}?"
    );
}

#[test]
fn learns_text_below_unigram_baseline() {
    tch::set_num_threads(1);
    let cfg = ModelConfig {
        n_layers: 2,
        seed: 2,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        micro_batch_size: 16,
        micro_batches: 1,
        lr: 1e-2,
        warmup_steps: 10,
        total_steps: 150,
        ..TrainConfig::tiny()
    };
    let unigram = TokenFile::from_bytes(TEXT.as_bytes()).unigram_entropy();
    let data = text_batcher(&train, &cfg);
    let mut workers = build_workers(
        &cfg,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap();
    let mut losses = Vec::new();
    for step in 0..train.total_steps {
        losses.push(run_step_in_process(&mut workers, step).unwrap());
    }
    let final_loss = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    println!(
        "text: first loss {:.4}, final loss {final_loss:.4}, unigram entropy {unigram:.4}",
        losses[0]
    );
    assert!(
        final_loss < unigram - 0.3,
        "final {final_loss} vs unigram {unigram}"
    );
}

#[test]
fn commitments_are_deterministic_consistent_and_provable() {
    tch::set_num_threads(1);
    let cfg = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let data = text_batcher(&train, &cfg);
    let opts = WorkerOptions { commit: true };
    let run = || {
        let mut w = build_workers(&cfg, &train, 3, &data, Device::Cpu, opts).unwrap();
        let mut all = Vec::new();
        for step in 0..2 {
            all.push(run_step_in_process_detailed(&mut w, step).unwrap());
        }
        (w, all)
    };
    let (workers, a) = run();
    let (_, b) = run();
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            assert_eq!(
                x.commitment, y.commitment,
                "stage {} step {}",
                x.stage, x.step
            );
        }
    }
    for reports in &a {
        let c: Vec<_> = reports.iter().map(|r| r.commitment.unwrap()).collect();
        // What stage k sent is what stage k+1 received, in both directions.
        for k in 0..2 {
            assert_eq!(c[k].roots.outputs, c[k + 1].roots.inputs);
            assert_eq!(c[k].roots.output_grads, c[k + 1].roots.input_grads);
        }
        assert_eq!(c[0].roots.input_grads, weft_primitives::Hash::ZERO);
        assert_eq!(c[2].roots.output_grads, weft_primitives::Hash::ZERO);
        assert!(c[2].loss.is_some() && c[0].loss.is_none());
        for ci in &c {
            assert_ne!(ci.roots.weights_before, ci.roots.weights_after);
            assert_ne!(ci.roots.optimizer_before, ci.roots.optimizer_after);
        }
    }
    // Chaining: step 1 starts from what step 0 ended with.
    for s in 0..3 {
        let (c0, c1) = (
            a[0][s].commitment.as_ref().unwrap(),
            a[1][s].commitment.as_ref().unwrap(),
        );
        assert_eq!(c0.roots.weights_after, c1.roots.weights_before);
        assert_eq!(c0.roots.optimizer_after, c1.roots.optimizer_before);
        // The committed root is the root of the current weights.
        let params = workers[s].stage().params();
        if s == 0 {
            assert_eq!(
                a[1][s].commitment.as_ref().unwrap().roots.weights_after,
                root_of(params.iter().map(|(_, t)| t)).unwrap()
            );
        }
    }
    // The record's tensors are what the roots commit to.
    let r = a[1][1].record.as_ref().unwrap();
    assert_eq!(
        a[1][1].commitment.as_ref().unwrap().roots.inputs,
        root_of(&r.inputs).unwrap()
    );

    // One element of one weight changes the root; chunks prove and verify.
    let stage = Stage::new(&cfg, StageSpec::whole(), Device::Cpu).unwrap();
    let tensors: Vec<Tensor> = stage
        .params()
        .iter()
        .map(|(_, t)| t.detach().copy())
        .collect();
    let tree = TensorTree::build(&tensors).unwrap();
    assert!(tree.chunk_count() >= 3, "{} chunks", tree.chunk_count());
    for i in 0..tree.chunk_count() {
        let (chunk, proof) = prove_chunk(&tensors, i).unwrap().unwrap();
        assert!(verify_chunk(&tree.root, &chunk, &proof));
        let mut forged = chunk.clone();
        forged[0] ^= 0x80;
        assert!(!verify_chunk(&tree.root, &forged, &proof));
    }
    let tampered: Vec<Tensor> = tensors.iter().map(|t| t.copy()).collect();
    let last = tampered.len() - 1;
    let _ = tampered[last]
        .view([-1])
        .narrow(0, 17, 1)
        .f_add_scalar_(1e-3)
        .unwrap();
    assert_ne!(root_of(&tampered).unwrap(), tree.root);
    assert_eq!(root_of(&tensors).unwrap(), tree.root);
}

#[test]
fn checkpoint_resume_is_exact() {
    tch::set_num_threads(1);
    let cfg = ModelConfig {
        tied_embeddings: true,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig::tiny();
    let data = text_batcher(&train, &cfg);
    let dir = tempfile::tempdir().unwrap();
    let opts = WorkerOptions::default();
    let mut straight = build_workers(&cfg, &train, 2, &data, Device::Cpu, opts).unwrap();
    for step in 0..6 {
        run_step_in_process(&mut straight, step).unwrap();
    }
    let mut first = build_workers(&cfg, &train, 2, &data, Device::Cpu, opts).unwrap();
    for step in 0..3 {
        run_step_in_process(&mut first, step).unwrap();
    }
    for (i, w) in first.iter().enumerate() {
        checkpoint::save(w, &dir.path().join(format!("stage{i}.safetensors"))).unwrap();
    }
    drop(first);
    let mut resumed = build_workers(&cfg, &train, 2, &data, Device::Cpu, opts).unwrap();
    for (i, w) in resumed.iter_mut().enumerate() {
        let next = checkpoint::load(w, &dir.path().join(format!("stage{i}.safetensors"))).unwrap();
        assert_eq!(next, 3);
    }
    // Loading into the wrong stage or another model is refused.
    let mut wrong = build_workers(&cfg, &train, 2, &data, Device::Cpu, opts).unwrap();
    assert!(checkpoint::load(&mut wrong[1], &dir.path().join("stage0.safetensors")).is_err());
    let other = ModelConfig {
        seed: 1,
        ..cfg.clone()
    };
    let mut other_w = build_workers(&other, &train, 2, &data, Device::Cpu, opts).unwrap();
    assert!(checkpoint::load(&mut other_w[0], &dir.path().join("stage0.safetensors")).is_err());

    for step in 3..6 {
        run_step_in_process(&mut resumed, step).unwrap();
    }
    for ((n, a), (_, b)) in weights(&straight).iter().zip(&weights(&resumed)) {
        assert!(a.equal(b), "{n} differs after resume");
    }
    for (ws, wr) in straight.iter().zip(&resumed) {
        for (ms, mr) in ws
            .optimizer()
            .moments()
            .iter()
            .zip(wr.optimizer().moments())
        {
            assert!(ms.m.equal(&mr.m) && ms.v.equal(&mr.v), "{}", ms.name);
        }
        assert_eq!(ws.completed_steps(), wr.completed_steps());
    }
    assert!(!dir.path().join("stage0.safetensors.tmp").exists());
}

#[test]
fn data_assignment_is_reproducible() {
    let cfg = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let data = text_batcher(&train, &cfg);
    let a = data.batch(42, 10, 1).unwrap();
    let b = data.batch(42, 10, 1).unwrap();
    assert!(a.inputs.equal(&b.inputs) && a.targets.equal(&b.targets));
    assert!(!a.inputs.equal(&data.batch(42, 11, 1).unwrap().inputs));
    assert!(!a.inputs.equal(&data.batch(42, 10, 0).unwrap().inputs));
    // A worker built elsewhere (an auditor) sees the same stage-0 input.
    let mut w = build_workers(
        &cfg,
        &train,
        1,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
    .unwrap();
    let r = run_step_in_process_detailed(&mut w, 10).unwrap();
    let rec = r[0].record.as_ref().unwrap();
    assert!(rec.inputs[1].equal(&data.batch(cfg.seed, 10, 1).unwrap().inputs));
}

/// Honest divergence between CPU and CUDA (skipped without a GPU): the figure the audit
/// tolerance must be calibrated against.
#[test]
fn cuda_matches_cpu_within_tolerance() {
    if !tch::Cuda::is_available() {
        println!("no CUDA device: skipped");
        return;
    }
    let cfg = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let data = text_batcher(&train, &cfg);
    let opts = WorkerOptions::default();
    let mut cpu = build_workers(&cfg, &train, 2, &data, Device::Cpu, opts).unwrap();
    let mut gpu = build_workers(&cfg, &train, 2, &data, Device::Cuda(0), opts).unwrap();
    let mut bf16 = build_workers(&cfg, &train, 2, &data, Device::Cuda(0), opts).unwrap();
    for w in &mut bf16 {
        w.set_autocast_bf16(true);
    }
    let (mut worst_loss, mut worst_bf16) = (0.0f64, 0.0f64);
    for step in 0..5 {
        let lc = run_step_in_process(&mut cpu, step).unwrap();
        let lg = run_step_in_process(&mut gpu, step).unwrap();
        let lb = run_step_in_process(&mut bf16, step).unwrap();
        worst_loss = worst_loss.max(((lg - lc) / lc).abs());
        worst_bf16 = worst_bf16.max(((lb - lc) / lc).abs());
    }
    let mut worst_weight = 0.0f64;
    for ((n, c), (_, g)) in weights(&cpu).iter().zip(&weights(&gpu)) {
        let d = max_rel_diff(&g.to_device(Device::Cpu), c);
        worst_weight = worst_weight.max(d);
        assert!(d < 1e-3, "{n}: {d}");
    }
    println!(
        "cuda vs cpu: loss rel {worst_loss:.3e}, weights max rel {worst_weight:.3e}; bf16 autocast loss rel {worst_bf16:.3e}"
    );
    assert!(worst_loss < 1e-4);
    assert!(worst_bf16 < 2e-2);
}
