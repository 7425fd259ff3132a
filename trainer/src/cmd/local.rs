//! `weft-trainer local-train`: every pipeline stage of a model in this process (the same
//! stage workers a networked trainer runs), printing loss and throughput per step.

use super::model_args::ModelArgs;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;
use weft_trainer::ml::config::{ModelConfig, TrainConfig};
use weft_trainer::ml::data::Batcher;
use weft_trainer::ml::schedule::{build_workers, run_step_in_process_detailed};
use weft_trainer::ml::worker::{StageWorker, WorkerOptions};
use weft_trainer::service::open_data;

pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The synthetic token source of `model`, cut into `train`'s micro-batches (what the
/// benches train on).
pub fn synthetic_batcher(model: &ModelConfig, train: &TrainConfig) -> anyhow::Result<Batcher> {
    Ok(Batcher::new(
        std::sync::Arc::new(weft_trainer::ml::data::Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?)
}

pub fn make_workers(
    model: &ModelConfig,
    train: &TrainConfig,
    stages: usize,
    data: &Batcher,
    device: Device,
    bf16: bool,
    commit: bool,
) -> anyhow::Result<Vec<StageWorker>> {
    let mut workers = build_workers(model, train, stages, data, device, WorkerOptions { commit })?;
    if bf16 {
        for w in &mut workers {
            w.set_autocast_bf16(true);
        }
    }
    Ok(workers)
}

pub fn local_train(
    stages: usize,
    steps: u64,
    data_spec: &str,
    checkpoint_dir: Option<PathBuf>,
    commit: bool,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let (model, train, device) = args.load(steps)?;
    model.validate_stages(stages)?;
    let source = open_data(data_spec, model.seed)?;
    println!("data: {}", source.describe());
    let batcher = Batcher::new(
        source,
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?;
    let mut workers = make_workers(&model, &train, stages, &batcher, device, args.bf16, commit)?;
    let ckpt = |i: usize| {
        checkpoint_dir
            .as_ref()
            .map(|d| d.join(format!("stage-{i}-of-{stages}.safetensors")))
    };
    let mut start = 0;
    if let Some(dir) = &checkpoint_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, w) in workers.iter_mut().enumerate() {
            if let Some(p) = ckpt(i).filter(|p| p.exists()) {
                start = weft_trainer::ml::checkpoint::load(w, &p)?;
            }
        }
        if workers.iter().any(|w| w.completed_steps() != start) {
            anyhow::bail!(
                "the stage checkpoints in {} are from different steps",
                dir.display()
            );
        }
    }
    for (i, w) in workers.iter().enumerate() {
        println!("stage {i}: {} parameters", w.stage().num_params());
    }
    let tokens = train.tokens_per_step(model.seq_len) as f64;
    println!("device {device:?}, {stages} stages, {tokens} tokens/step, steps {start}..{steps}");
    for step in start..steps {
        let t0 = Instant::now();
        let reports = run_step_in_process_detailed(&mut workers, step)?;
        sync(device);
        let dt = t0.elapsed().as_secs_f64();
        let last = reports.last().context("no stages")?;
        let loss = last.loss.context("the last stage reported no loss")?;
        println!(
            "step {step:>6}  loss {loss:.4}  lr {:.2e}  grad-norm(last stage) {:.3}  {:.0} tok/s",
            last.lr,
            last.grad_norm,
            tokens / dt
        );
        if commit {
            for r in &reports {
                if let Some(c) = &r.commitment {
                    println!(
                        "    stage {} weights {} → {}  in {}  out {}",
                        r.stage,
                        c.roots.weights_before.to_hex(),
                        c.roots.weights_after.to_hex(),
                        c.roots.inputs.to_hex(),
                        c.roots.outputs.to_hex()
                    );
                }
            }
        }
    }
    for (i, w) in workers.iter().enumerate() {
        if let Some(p) = ckpt(i) {
            weft_trainer::ml::checkpoint::save(w, &p)?;
        }
    }
    Ok(())
}
