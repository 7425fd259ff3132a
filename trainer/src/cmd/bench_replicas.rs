//! `weft-trainer bench-replicas`: what averaging `R` replicas of every stage costs and buys,
//! in this process (`weft_ml::schedule::run_replicas_in_process`).
//!
//! Three trainings of the same S-stage model over the same steps, alternated step by step so
//! that load from elsewhere on the machine hits all alike:
//!
//! * **single**: one replica reading `R·M` micro-batches per step (the baseline: the same
//!   tokens per step as the replicas together, since replica `r` reads micro-batches
//!   `r·M … r·M + M − 1` of the step's global batch);
//! * **averaged**: `R` replicas of `M` micro-batches that exchange their updates and apply
//!   their trimmed mean (`weft_ml::aggregate`) every step;
//! * **averaged int8**: the same, with the updates compressed to int8 with one scale per
//!   tensor (`weft_ml::aggregate::UpdateCodec::Int8`);
//! * **apart**: the same `R` replicas without the exchange (each its own model).
//!
//! It prints the loss of each (averaged over replicas where there are several, the mean over
//! the same `R·M` micro-batches the single replica sees), the largest per-step difference
//! between single and averaged, whether the averaged replicas held bitwise the same weights
//! after every step, the step time of each relative to single, the exchange's overhead
//! (averaged vs apart) and the bytes each replica sends per round.
//!
//! Then the round over libp2p on loopback (`super::bench_round`): `R` peers exchanging
//! updates shaped like the largest stage's, fp32 and int8, each round's time as a fraction
//! of the step time of one replica of `M` micro-batches (measured in the same alternation:
//! the step a trainer's round follows) and the bytes that crossed per replica per round.

use super::bench_round::rounds_on_loopback;
use super::local::{make_workers, synthetic_batcher};
use super::model_args::ModelArgs;
use std::time::Instant;
use weft_trainer::ml::aggregate::UpdateCodec;
use weft_trainer::ml::commit::root_of;
use weft_trainer::ml::config::{ReplicaSync, TrainConfig};
use weft_trainer::ml::schedule::{run_replicas_in_process, run_step_in_process};
use weft_trainer::ml::worker::StageWorker;

fn replicas_of(
    r: usize,
    stages: usize,
    make: &dyn Fn(usize) -> anyhow::Result<Vec<StageWorker>>,
) -> anyhow::Result<Vec<Vec<StageWorker>>> {
    (0..r)
        .map(|i| {
            let mut p = make(stages)?;
            for w in &mut p {
                w.set_replica(u16::try_from(i)?);
            }
            Ok(p)
        })
        .collect()
}

/// The mean loss of the replicas' last stages in `reports` (`[replica][stage]`).
fn mean_loss(reports: &[Vec<weft_trainer::ml::worker::StepReport>]) -> anyhow::Result<f64> {
    let losses: Vec<f64> = reports
        .iter()
        .map(|p| p.last().and_then(|r| r.loss))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("a replica reported no loss"))?;
    Ok(losses.iter().sum::<f64>() / losses.len() as f64)
}

/// Whether every stage's weights are bitwise equal across `replicas`.
fn identical(replicas: &[Vec<StageWorker>]) -> anyhow::Result<bool> {
    let roots = replicas
        .iter()
        .map(|p| {
            p.iter()
                .map(|w| root_of(w.stage().params().iter().map(|(_, t)| t)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(roots.windows(2).all(|w| w[0] == w[1]))
}

pub fn bench_replicas(
    stages: usize,
    replicas: &[usize],
    steps: u64,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let (model, train, device) = args.load(steps)?;
    model.validate_stages(stages)?;
    let m = train.micro_batches;
    let batcher = synthetic_batcher(&model, &train)?;
    println!(
        "model d_model {} layers {} heads {} seq {}; {stages} stages; {m} micro-batches of {} per replica per step; {steps} steps; device {device:?}",
        model.d_model, model.n_layers, model.n_heads, model.seq_len, train.micro_batch_size
    );
    for &r in replicas {
        let mut wide = train.clone();
        wide.micro_batches = m * r;
        let mut single = make_workers(&model, &wide, stages, &batcher, device, args.bf16, false)?;
        // One replica of M micro-batches: the step that a trainer's round follows.
        let mut one = make_workers(&model, &train, stages, &batcher, device, args.bf16, false)?;
        let mut one_seconds = 0.0f64;
        // The replicated trainings: how their updates cross (apart: they do not).
        let syncs = [
            ReplicaSync::Average,
            ReplicaSync::AverageInt8,
            ReplicaSync::Apart,
        ];
        let names = ["averaged", "averaged int8", "apart"];
        let mut grids = syncs
            .iter()
            .map(|&replica_sync| {
                let train = TrainConfig {
                    replica_sync,
                    ..train.clone()
                };
                let make =
                    |s: usize| make_workers(&model, &train, s, &batcher, device, args.bf16, false);
                replicas_of(r, stages, &make)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut seconds = [0.0f64; 4];
        let mut curves: [Vec<f64>; 4] = Default::default();
        let (mut max_diff, mut always_identical) = (0f64, true);
        for step in 0..steps {
            let t0 = Instant::now();
            curves[0].push(run_step_in_process(&mut single, step)?);
            seconds[0] += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            run_step_in_process(&mut one, step)?;
            one_seconds += t0.elapsed().as_secs_f64();
            for (i, (grid, sync)) in grids.iter_mut().zip(syncs).enumerate() {
                let t0 = Instant::now();
                let loss = mean_loss(&run_replicas_in_process(grid, step)?)?;
                seconds[i + 1] += t0.elapsed().as_secs_f64();
                curves[i + 1].push(loss);
                if sync.averages() {
                    always_identical &= identical(grid)?;
                }
            }
            max_diff = max_diff.max((curves[0][step as usize] - curves[1][step as usize]).abs());
        }
        let tail = |c: &[f64]| {
            let last: Vec<f64> = c.iter().rev().take(5).copied().collect();
            last.iter().sum::<f64>() / last.len().max(1) as f64
        };
        let largest_stage = grids[0][0]
            .iter()
            .max_by_key(|w| w.stage().num_params())
            .ok_or_else(|| anyhow::anyhow!("no stages"))?;
        let largest = (
            largest_stage.stage().num_params().max(0) as usize,
            largest_stage.stage().params().len(),
        );
        let shapes: Vec<Vec<i64>> = largest_stage
            .stage()
            .params()
            .iter()
            .map(|(_, t)| t.size())
            .collect();
        println!("R = {r}:");
        println!(
            "  loss, mean of the last 5 steps: single (R·M = {} micro-batches) {:.4}",
            m * r,
            tail(&curves[0])
        );
        for (i, name) in names.iter().enumerate() {
            println!(
                "    {name:<14} {:.4}   step time ÷ single {:.3}",
                tail(&curves[i + 1]),
                seconds[i + 1] / seconds[0]
            );
        }
        println!("  largest per-step |single − averaged|: {max_diff:.2e}");
        println!("  averaged replicas bitwise identical after every step: {always_identical}");
        println!(
            "  exchange overhead (averaged ÷ apart − 1): {:.1}%",
            100.0 * (seconds[1] / seconds[3] - 1.0)
        );
        for codec in [UpdateCodec::Fp32, UpdateCodec::Int8] {
            println!(
                "  sent per replica per round, {codec:?}: {} bytes on the largest stage ({} parameters, {} peers)",
                codec.bytes(largest.1, largest.0) * (r - 1),
                largest.0,
                r - 1
            );
        }
        let step_seconds = one_seconds / steps.max(1) as f64;
        println!(
            "  over libp2p on loopback, the largest stage's update; one replica's step (M = {m}) {:.1} ms:",
            1e3 * step_seconds
        );
        for codec in [UpdateCodec::Fp32, UpdateCodec::Int8] {
            let cost = rounds_on_loopback(r, &shapes, codec, steps.clamp(1, 20))?;
            println!(
                "    {codec:?}: round {:.2} ms = {:.1}% of the step, {:.0} bytes per replica per round, every round complete: {}",
                1e3 * cost.seconds,
                100.0 * cost.seconds / step_seconds,
                cost.bytes,
                cost.complete
            );
        }
    }
    Ok(())
}
