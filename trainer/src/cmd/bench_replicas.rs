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
//! * **apart**: the same `R` replicas without the exchange (each its own model).
//!
//! It prints the loss of each (averaged over replicas where there are several, the mean over
//! the same `R·M` micro-batches the single replica sees), the largest per-step difference
//! between single and averaged, whether the averaged replicas held bitwise the same weights
//! after every step, the step time of each relative to single, the exchange's overhead
//! (averaged vs apart) and the bytes each replica sends per round.

use super::local::make_workers;
use super::model_args::ModelArgs;
use std::sync::Arc;
use std::time::Instant;
use weft_trainer::ml::commit::root_of;
use weft_trainer::ml::data::{Batcher, Synthetic};
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
    let batcher = Batcher::new(
        Arc::new(Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )?;
    println!(
        "model d_model {} layers {} heads {} seq {}; {stages} stages; {m} micro-batches of {} per replica per step; {steps} steps; device {device:?}",
        model.d_model, model.n_layers, model.n_heads, model.seq_len, train.micro_batch_size
    );
    for &r in replicas {
        let mut wide = train.clone();
        wide.micro_batches = m * r;
        let mut single = make_workers(&model, &wide, stages, &batcher, device, args.bf16, false)?;
        let make = |s: usize| make_workers(&model, &train, s, &batcher, device, args.bf16, false);
        let mut averaged = replicas_of(r, stages, &make)?;
        let mut apart = replicas_of(r, stages, &make)?;
        let (mut t_single, mut t_avg, mut t_apart) = (0.0, 0.0, 0.0);
        let (mut max_diff, mut always_identical) = (0f64, true);
        let mut curve = Vec::new();
        for step in 0..steps {
            let t0 = Instant::now();
            let l_single = run_step_in_process(&mut single, step)?;
            let t1 = Instant::now();
            let l_avg = mean_loss(&run_replicas_in_process(&mut averaged, step, true)?)?;
            let t2 = Instant::now();
            let l_apart = mean_loss(&run_replicas_in_process(&mut apart, step, false)?)?;
            let t3 = Instant::now();
            t_single += (t1 - t0).as_secs_f64();
            t_avg += (t2 - t1).as_secs_f64();
            t_apart += (t3 - t2).as_secs_f64();
            max_diff = max_diff.max((l_single - l_avg).abs());
            always_identical &= identical(&averaged)?;
            curve.push((l_single, l_avg, l_apart));
        }
        let tail = |f: fn(&(f64, f64, f64)) -> f64| {
            let last: Vec<f64> = curve.iter().rev().take(5).map(f).collect();
            last.iter().sum::<f64>() / last.len().max(1) as f64
        };
        let largest = averaged[0]
            .iter()
            .map(|w| w.stage().num_params())
            .max()
            .unwrap_or(0)
            .max(0) as u64;
        println!("R = {r}:");
        println!(
            "  loss over the last 5 steps: single (R·M = {} micro-batches) {:.4}, averaged {:.4}, apart {:.4}",
            m * r,
            tail(|c| c.0),
            tail(|c| c.1),
            tail(|c| c.2)
        );
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            println!(
                "  loss at step 0 → {}: single {:.4} → {:.4}, averaged {:.4} → {:.4}, apart {:.4} → {:.4}",
                steps - 1,
                first.0,
                last.0,
                first.1,
                last.1,
                first.2,
                last.2
            );
        }
        println!("  largest per-step |single − averaged|: {max_diff:.2e}");
        println!("  averaged replicas bitwise identical after every step: {always_identical}");
        println!(
            "  step time relative to single: averaged {:.3}, apart {:.3}; exchange overhead (averaged / apart − 1): {:.1}%",
            t_avg / t_single,
            t_apart / t_single,
            100.0 * (t_avg / t_apart - 1.0)
        );
        println!(
            "  sent per replica per round: {} bytes on the largest stage ({largest} parameters × 4 bytes × {} peers)",
            largest * 4 * (r as u64 - 1),
            r - 1
        );
    }
    Ok(())
}
