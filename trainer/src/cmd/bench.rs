//! `weft-trainer bench`: throughput of the S-stage in-process pipeline relative to the
//! unsplit model and the memory each stage needs; with `--cross-process`, of S `pipeline`
//! processes on loopback relative to one.

use super::local::{make_workers, sync, synthetic_batcher};
use super::model_args::ModelArgs;
use super::pipeline::peer_id_of;
use anyhow::Context;
use std::time::Instant;
use tch::Device;
use weft_trainer::ml::schedule::run_step_in_process_detailed;
use weft_trainer::ml::worker::StageWorker;

/// Seconds one step of `workers` takes.
fn time_step(workers: &mut [StageWorker], step: u64, device: Device) -> anyhow::Result<f64> {
    sync(device);
    let t0 = Instant::now();
    run_step_in_process_detailed(workers, step)?;
    sync(device);
    Ok(t0.elapsed().as_secs_f64())
}

pub fn bench(stages: usize, steps: u64, warmup: u64, args: &ModelArgs) -> anyhow::Result<()> {
    let (model, train, device) = args.load(steps + warmup)?;
    model.validate_stages(stages)?;
    let batcher = synthetic_batcher(&model, &train)?;
    let tokens = (train.tokens_per_step(model.seq_len) as u64 * steps) as f64;
    println!(
        "model d_model {} layers {} heads {} seq {} vocab {}; batch {}×{} per step; device {device:?}; bf16 {}",
        model.d_model,
        model.n_layers,
        model.n_heads,
        model.seq_len,
        model.vocab_size,
        train.micro_batches,
        train.micro_batch_size,
        args.bf16
    );
    let mut single = make_workers(&model, &train, 1, &batcher, device, args.bf16, false)?;
    let mut pipe = make_workers(&model, &train, stages, &batcher, device, args.bf16, false)?;
    let total_params = single[0].stage().num_params();
    // Alternate the two so that load from elsewhere on the machine hits both alike.
    let (mut t1, mut ts) = (0.0, 0.0);
    for step in 0..warmup + steps {
        let a = time_step(&mut single, step, device)?;
        let b = time_step(&mut pipe, step, device)?;
        if step >= warmup {
            t1 += a;
            ts += b;
        }
    }
    println!(
        "single stage:        {:>10.0} tokens/s ({total_params} parameters)",
        tokens / t1
    );
    println!("{stages}-stage pipeline:    {:>10.0} tokens/s", tokens / ts);
    println!("ratio pipeline/single: {:.3}", t1 / ts);
    println!(
        "per-stage training memory (parameters × 16 bytes: weights, gradients, Adam m and v):"
    );
    for w in &pipe {
        let n = w.stage().num_params();
        println!(
            "  stage {}: {:>12} parameters  {:>10.2} MiB",
            w.stage().spec().stage,
            n,
            (n * 16) as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "  whole model: {total_params:>8} parameters  {:>10.2} MiB",
        (total_params * 16) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Tokens/s of S `pipeline` processes on loopback ÷ tokens/s of the unsplit model here.
pub fn bench_cross_process(
    stages: usize,
    steps: u64,
    warmup: u64,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let total = steps + warmup;
    let (model, train, device) = args.load(total)?;
    model.validate_stages(stages)?;
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model_json = dir.join("model.json");
    let train_json = dir.join("train.json");
    std::fs::write(&model_json, serde_json::to_vec(&model)?)?;
    std::fs::write(&train_json, serde_json::to_vec(&train)?)?;
    let mut table = String::new();
    let mut seeds = Vec::new();
    for s in 0..stages {
        let seed = hex::encode([s as u8 + 1; 32]);
        let port = free_port()?;
        table.push_str(&format!(
            "[[stage]]\nstage = {s}\npeer_id = \"{}\"\naddrs = [\"/ip4/127.0.0.1/tcp/{port}\"]\n",
            peer_id_of(&seed)?
        ));
        seeds.push((seed, port));
    }
    let peers = dir.join("peers.toml");
    std::fs::write(&peers, table)?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let children = seeds
        .iter()
        .enumerate()
        .map(|(s, (seed, port))| {
            let mut c = std::process::Command::new(&exe);
            c.args([
                "pipeline",
                "--stage",
                &s.to_string(),
                "--stages",
                &stages.to_string(),
            ])
            .arg("--peers")
            .arg(&peers)
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
            .arg("--data-dir")
            .arg(dir.join(format!("stage-{s}")))
            .args(["--steps", &total.to_string(), "--key-seed", seed])
            .args(["--checkpoint-every", &total.to_string()])
            .arg("--config")
            .arg(&model_json)
            .arg("--train-config")
            .arg(&train_json)
            .args([
                "--device",
                &args.device,
                "--threads",
                &args.threads.to_string(),
            ])
            .stdout(std::process::Stdio::piped());
            if args.bf16 {
                c.arg("--bf16");
            }
            Ok(c.spawn()?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outputs = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!("a stage process failed: {}", out.status);
        }
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    let wall = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    // Step times of the last stage after the warm-up: the pipeline's steady state.
    let last = outputs.last().context("no stages")?;
    let times: Vec<f64> = last
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let step: u64 = w.get(3)?.parse().ok()?;
            let i = w.iter().position(|x| *x == "time")?;
            (step >= warmup).then(|| w.get(i + 1)?.parse::<f64>().ok())?
        })
        .collect();
    if times.len() as u64 != steps {
        anyhow::bail!(
            "expected {steps} timed steps from the last stage, got {}",
            times.len()
        );
    }
    let tokens = (train.tokens_per_step(model.seq_len) as u64 * steps) as f64;
    let tp = tokens / times.iter().sum::<f64>();
    for o in &outputs {
        if let Some(l) = o.lines().find(|l| l.contains("peak RSS")) {
            println!("  {l}");
        }
    }
    // The same steps in one process, one stage, committing too (the pipeline commits).
    let batcher = synthetic_batcher(&model, &train)?;
    let mut single = make_workers(&model, &train, 1, &batcher, device, args.bf16, true)?;
    let mut t1 = 0.0;
    for step in 0..total {
        let dt = time_step(&mut single, step, device)?;
        if step >= warmup {
            t1 += dt;
        }
    }
    let ts = tokens / t1;
    println!(
        "model d_model {} layers {} seq {}; batch {}×{}; device {device:?}; {stages} processes (wall {wall:.1} s with start-up)",
        model.d_model, model.n_layers, model.seq_len, train.micro_batches, train.micro_batch_size
    );
    println!("single process, one stage:   {ts:>10.0} tokens/s");
    println!("{stages} processes on loopback:   {tp:>10.0} tokens/s");
    println!("ratio cross-process/single:  {:.3}", tp / ts);
    Ok(())
}
