//! The one step schedule: how a stage runs a step, whatever carries its tensors.
//!
//! # The schedule (GPipe)
//!
//! ```text
//! begin_step(t)
//! for µ in 0..M:      k = 0 builds µ's tokens from the data assignment; k > 0 takes
//!                     recv_activation(t, µ); forward; k < S-1 does send_activation(t, µ)
//! for µ in M-1..=0:   k = S-1 back-propagates its loss; k < S-1 takes recv_output_grad(t, µ);
//!                     backward; k > 0 does send_input_grad(t, µ)
//! tied embeddings:    stages 0 and S-1 exchange_shared_grad(t) and both use g₀ + g_{S-1}
//! replicas average:   the replicas of the stage exchange their updates (replica_updates)
//!                     and each applies the same trimmed mean (crate::aggregate)
//! global clipping:    every stage global_sq_sum(t): Σ over all stages, in stage order
//! finish_step         clip + AdamW + commitment
//! ```
//!
//! [`run_step`] is that schedule, written once, over a [`StepIo`]. Its four implementations
//! are the four ways a step happens:
//!
//! * in process, every stage on its own thread, tensors passed as copies over channels
//!   ([`run_step_in_process_detailed`]; here);
//! * over the network, one stage per process (the trainer's `stage` module, over
//!   `weft-stage-net`'s link);
//! * replayed from the tensor store after a restart (the trainer's `stage` module);
//! * recomputed by an auditor from a reveal ([`crate::audit`]).
//!
//! Because every implementation runs the same calls in the same order on the same worker,
//! and the reductions that cross stages (the shared embedding gradient, the global sum of
//! squares) are done here in one fixed order, all four produce bitwise the same tensors from
//! the same inputs.
//!
//! # Cross-stage coupling
//!
//! [`Coupling`] says what a stage's update depends on beyond its own inputs and gradients:
//! the other holder's embedding gradient (tied embeddings, cut model) and every stage's
//! gradient norm (global clipping). It is the one place those conditions are written; the
//! worker, the network link's validation, the auditor and the chain's registration check all
//! ask it.

use crate::config::{ClipScope, ModelConfig, TrainConfig};
use crate::data::Batcher;
use crate::error::{Error, Result};
use crate::model::{Stage, StageSpec};
use crate::worker::{ForwardOutput, StageWorker, StepReport, WorkerOptions};
use std::sync::mpsc;
use tch::Tensor;
use weft_primitives::replicas::Included;
use weft_primitives::step::Step;

/// What a stage's step depends on outside the stage (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coupling {
    /// Tied embeddings in a cut model: stage 0 and the last stage each hold `wte.weight` and
    /// add each other's gradient (`true` on those two stages only).
    pub shared_embedding: bool,
    /// Clipping by the global norm: every stage needs every other stage's Σ‖g‖².
    pub global_clip: bool,
}

impl Coupling {
    /// The coupling of stage `spec` of a model.
    pub fn of(model: &ModelConfig, train: &TrainConfig, spec: StageSpec) -> Self {
        let cut = spec.n_stages > 1;
        Coupling {
            shared_embedding: model.tied_embeddings && cut && (spec.is_first() || spec.is_last()),
            global_clip: train.clip_scope == ClipScope::Global && cut,
        }
    }

    /// Whether any stage of a model cut into `n_stages` is coupled to another.
    pub fn any_stage(model: &ModelConfig, train: &TrainConfig, n_stages: usize) -> bool {
        let cut = n_stages > 1;
        cut && (model.tied_embeddings || train.clip_scope == ClipScope::Global)
    }

    /// Why a step of this stage cannot be audited from its own commitment, if it cannot:
    /// its update depends on values no commitment of the stage covers.
    pub fn unauditable_reason(&self) -> Option<&'static str> {
        if self.shared_embedding {
            Some("tied embeddings across stages: the update depends on the other holder's gradient")
        } else if self.global_clip {
            Some("global clipping: the update depends on every stage's gradient norm")
        } else {
            None
        }
    }
}

/// Where a stage's step gets its tensors from and sends them to. Each method is called by
/// [`run_step`] at its place in the schedule (see the module docs); an implementation that
/// cannot deliver (a partner left, the store lacks an item) returns an error and the step
/// stops there.
pub trait StepIo {
    /// The previous stage's activations of micro-batch `micro` (stages after the first).
    fn recv_activation(&mut self, step: Step, micro: usize) -> Result<Tensor>;
    /// This stage's activations of `micro`, for the next stage (stages before the last).
    fn send_activation(&mut self, step: Step, micro: usize, activation: &Tensor) -> Result<()>;
    /// The gradient of this stage's output of `micro` (stages before the last).
    fn recv_output_grad(&mut self, step: Step, micro: usize) -> Result<Tensor>;
    /// The gradient of this stage's input of `micro`, for the previous stage (stages after
    /// the first).
    fn send_input_grad(&mut self, step: Step, micro: usize, grad: &Tensor) -> Result<()>;
    /// Tied embeddings: gives this holder's embedding gradient, returns the other holder's.
    fn exchange_shared_grad(&mut self, step: Step, own: &Tensor) -> Result<Tensor>;
    /// Global clipping: gives this stage's Σ‖g‖², returns the sum over all stages (added
    /// up with [`sum_in_stage_order`], so every stage gets bitwise the same total).
    fn global_sq_sum(&mut self, step: Step, own: f64) -> Result<f64>;
    /// Replicas that average: gives this replica's update as it sends it (after the run's
    /// codec), returns the round: the updates to aggregate (any order: the aggregate does not
    /// depend on it) and which replicas they are from; `None` where no other replica takes
    /// part (the update is then applied as it is).
    fn replica_updates(&mut self, step: Step, sent: &[Tensor]) -> Result<Option<ReplicaRound>>;
}

/// One round of the replicas of a stage: what [`StepIo::replica_updates`] returns.
#[derive(Debug)]
pub struct ReplicaRound {
    /// The updates to aggregate, each in parameter-name order.
    pub updates: Vec<Vec<Tensor>>,
    /// The replicas they are from.
    pub included: Included,
}

/// The global Σ‖g‖² from every stage's, indexed by stage: added in stage order from 0.0.
pub fn sum_in_stage_order(sums: &[f64]) -> f64 {
    sums.iter().fold(0.0f64, |total, s| total + s)
}

/// Runs step `step` of `worker` over `io` (the schedule of the module docs) and returns the
/// worker's report.
pub fn run_step(worker: &mut StageWorker, step: Step, io: &mut dyn StepIo) -> Result<StepReport> {
    let spec = worker.stage().spec();
    let coupling = worker.coupling();
    let m = worker.micro_batches();
    worker.begin_step(step)?;
    for micro in 0..m {
        let input = if spec.is_first() {
            None
        } else {
            Some(io.recv_activation(step, micro)?)
        };
        if let ForwardOutput::Activations(a) = worker.forward(micro, input.as_ref())? {
            io.send_activation(step, micro, &a)?;
        }
    }
    for micro in (0..m).rev() {
        let grad = if spec.is_last() {
            None
        } else {
            Some(io.recv_output_grad(step, micro)?)
        };
        if let Some(input_grad) = worker.backward(micro, grad.as_ref())? {
            io.send_input_grad(step, micro, &input_grad)?;
        }
    }
    if coupling.shared_embedding {
        let own = worker.shared_grad()?;
        let theirs = io
            .exchange_shared_grad(step, &own)?
            .f_to_device(own.device())?;
        // g₀ + g_{S-1} on both holders, in that order, so both apply the same update.
        let sum = if spec.is_first() {
            own.f_add(&theirs)?
        } else {
            theirs.f_add(&own)?
        };
        worker.set_shared_grad(&sum)?;
    }
    if let Some(codec) = worker.train_config().update_codec() {
        // What the others receive is what this replica aggregates and commits, its own
        // update included (through the codec, so every replica adds the same values).
        let sent = codec.round_trip(&worker.update()?)?;
        if let Some(round) = io.replica_updates(step, &sent)? {
            worker.set_update(&crate::aggregate::aggregate(&round.updates)?)?;
        }
        worker.record_sent_update(&sent);
    }
    let global = if coupling.global_clip {
        Some(io.global_sq_sum(step, worker.grad_sq_sum()?)?)
    } else {
        None
    };
    worker.finish_step(global)
}

/// A copy of `t` that shares neither storage nor graph with it (what crosses a stage
/// boundary in process, as over a network).
fn transfer(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_detach_copy()?)
}

/// The channels of one stage of an in-process pipeline.
#[derive(Default)]
struct ChannelIo {
    stage: usize,
    act_in: Option<mpsc::Receiver<Tensor>>,
    act_out: Option<mpsc::Sender<Tensor>>,
    grad_in: Option<mpsc::Receiver<Tensor>>,
    grad_out: Option<mpsc::Sender<Tensor>>,
    shared_in: Option<mpsc::Receiver<Tensor>>,
    shared_out: Option<mpsc::Sender<Tensor>>,
    sq_in: Option<mpsc::Receiver<(usize, f64)>>,
    sq_out: Vec<mpsc::Sender<(usize, f64)>>,
    replica: u16,
    replica_in: Option<mpsc::Receiver<(u16, Vec<Tensor>)>>,
    replica_out: Vec<mpsc::Sender<(u16, Vec<Tensor>)>>,
}

fn gone(what: &str) -> Error {
    Error::StepIo(format!("the stage that sends {what} stopped"))
}

fn recv<T>(rx: &Option<mpsc::Receiver<T>>, what: &str) -> Result<T> {
    rx.as_ref()
        .ok_or_else(|| Error::Pipeline(format!("this stage receives no {what}")))?
        .recv()
        .map_err(|_| gone(what))
}

fn send(tx: &Option<mpsc::Sender<Tensor>>, t: &Tensor, what: &str) -> Result<()> {
    tx.as_ref()
        .ok_or_else(|| Error::Pipeline(format!("this stage sends no {what}")))?
        .send(transfer(t)?)
        .map_err(|_| Error::StepIo(format!("the stage that takes {what} stopped")))
}

impl StepIo for ChannelIo {
    fn recv_activation(&mut self, _step: Step, _micro: usize) -> Result<Tensor> {
        recv(&self.act_in, "activations")
    }
    fn send_activation(&mut self, _step: Step, _micro: usize, activation: &Tensor) -> Result<()> {
        send(&self.act_out, activation, "activations")
    }
    fn recv_output_grad(&mut self, _step: Step, _micro: usize) -> Result<Tensor> {
        recv(&self.grad_in, "output gradients")
    }
    fn send_input_grad(&mut self, _step: Step, _micro: usize, grad: &Tensor) -> Result<()> {
        send(&self.grad_out, grad, "input gradients")
    }
    fn exchange_shared_grad(&mut self, _step: Step, own: &Tensor) -> Result<Tensor> {
        send(&self.shared_out, own, "the shared gradient")?;
        recv(&self.shared_in, "the shared gradient")
    }
    fn global_sq_sum(&mut self, _step: Step, own: f64) -> Result<f64> {
        for tx in &self.sq_out {
            tx.send((self.stage, own))
                .map_err(|_| Error::StepIo("a stage stopped before the global norm".into()))?;
        }
        let n = self.sq_out.len() + 1;
        let mut sums = vec![0.0; n];
        sums[self.stage] = own;
        for _ in 1..n {
            let (from, s) = recv(&self.sq_in, "sums of squares")?;
            let slot = sums
                .get_mut(from)
                .ok_or_else(|| Error::StepIo(format!("a sum of squares from stage {from}")))?;
            *slot = s;
        }
        Ok(sum_in_stage_order(&sums))
    }
    fn replica_updates(&mut self, _step: Step, sent: &[Tensor]) -> Result<Option<ReplicaRound>> {
        let Some(rx) = &self.replica_in else {
            return Ok(None);
        };
        for tx in &self.replica_out {
            let copy = sent.iter().map(transfer).collect::<Result<Vec<_>>>()?;
            tx.send((self.replica, copy))
                .map_err(|_| Error::StepIo("a replica stopped before the average".into()))?;
        }
        let mut updates = vec![sent.iter().map(Tensor::shallow_clone).collect::<Vec<_>>()];
        let mut from = vec![self.replica];
        for _ in 0..self.replica_out.len() {
            let (r, u) = rx.recv().map_err(|_| gone("replica updates"))?;
            from.push(r);
            updates.push(u);
        }
        let included = Included::of(from)
            .ok_or_else(|| Error::Pipeline("a replica number out of range".into()))?;
        Ok(Some(ReplicaRound { updates, included }))
    }
}

/// The channels of an `n`-stage in-process pipeline, one [`ChannelIo`] per stage.
fn wire_in_process(n: usize, coupling: &[Coupling]) -> Vec<ChannelIo> {
    let mut ios: Vec<ChannelIo> = (0..n)
        .map(|stage| ChannelIo {
            stage,
            ..ChannelIo::default()
        })
        .collect();
    for k in 1..n {
        let (tx, rx) = mpsc::channel();
        ios[k - 1].act_out = Some(tx);
        ios[k].act_in = Some(rx);
        let (tx, rx) = mpsc::channel();
        ios[k].grad_out = Some(tx);
        ios[k - 1].grad_in = Some(rx);
    }
    if n > 1 && coupling.first().is_some_and(|c| c.shared_embedding) {
        let (tx, rx) = mpsc::channel();
        ios[0].shared_out = Some(tx);
        ios[n - 1].shared_in = Some(rx);
        let (tx, rx) = mpsc::channel();
        ios[n - 1].shared_out = Some(tx);
        ios[0].shared_in = Some(rx);
    }
    if coupling.first().is_some_and(|c| c.global_clip) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
        for (k, rx) in rxs.into_iter().enumerate() {
            ios[k].sq_in = Some(rx);
            ios[k].sq_out = txs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, tx)| tx.clone())
                .collect();
        }
    }
    ios
}

/// Checks that `stages` are the whole pipeline in order, with one number of micro-batches.
fn check_pipeline(stages: &[&StageWorker]) -> Result<()> {
    let n = stages.len();
    let Some(first) = stages.first() else {
        return Err(Error::Pipeline("no stages".into()));
    };
    let m = first.micro_batches();
    for (i, w) in stages.iter().enumerate() {
        let spec = w.stage().spec();
        if spec.stage != i || spec.n_stages != n {
            return Err(Error::Pipeline(format!(
                "worker {i} holds stage {} of {}, expected {i} of {n}",
                spec.stage, spec.n_stages
            )));
        }
        if w.micro_batches() != m {
            return Err(Error::Pipeline(
                "stages disagree on micro-batches per step".into(),
            ));
        }
    }
    Ok(())
}

/// Runs step `step` over `stages` (in pipeline order) in this process, each stage on its
/// own thread running [`run_step`], and returns the per-stage reports. Tensors cross stage
/// boundaries as copies.
pub fn run_step_in_process_detailed(
    stages: &mut [StageWorker],
    step: Step,
) -> Result<Vec<StepReport>> {
    let mut grid = [stages.iter_mut().collect::<Vec<_>>()];
    Ok(run_grid(&mut grid, step)?.remove(0))
}

/// Runs step `step` of `R` replica pipelines in this process: `replicas[r]` holds the stages
/// of replica `r` in pipeline order, every stage runs [`run_step`] on its own thread. Where
/// the workers' run averages (`TrainConfig::replica_sync`), the replicas of each stage
/// exchange their updates and all apply their trimmed mean ([`crate::aggregate`]), so they
/// hold bitwise the same weights after the step; otherwise each pipeline trains apart.
/// Returns the reports, `[replica][stage]`.
pub fn run_replicas_in_process(
    replicas: &mut [Vec<StageWorker>],
    step: Step,
) -> Result<Vec<Vec<StepReport>>> {
    let mut grid: Vec<Vec<&mut StageWorker>> = replicas
        .iter_mut()
        .map(|p| p.iter_mut().collect())
        .collect();
    run_grid(&mut grid, step)
}

fn run_grid(grid: &mut [Vec<&mut StageWorker>], step: Step) -> Result<Vec<Vec<StepReport>>> {
    let Some(first) = grid.first() else {
        return Err(Error::Pipeline("no replicas".into()));
    };
    let n = first.len();
    let mut ios: Vec<Vec<ChannelIo>> = Vec::with_capacity(grid.len());
    for pipeline in grid.iter() {
        if pipeline.len() != n {
            return Err(Error::Pipeline("replicas of different lengths".into()));
        }
        let coupling: Vec<Coupling> = pipeline.iter().map(|w| w.coupling()).collect();
        ios.push(wire_in_process(n, &coupling));
        let stages: Vec<&StageWorker> = pipeline.iter().map(|w| &**w).collect();
        check_pipeline(&stages)?;
    }
    let average = first
        .iter()
        .any(|w| w.train_config().update_codec().is_some());
    if average && grid.len() > 1 {
        // Per stage, one channel into each replica: what the other replicas send it.
        type Wire = (
            mpsc::Sender<(u16, Vec<Tensor>)>,
            Option<mpsc::Receiver<(u16, Vec<Tensor>)>>,
        );
        let mut wires: Vec<Vec<Wire>> = (0..n)
            .map(|_| {
                (0..grid.len())
                    .map(|_| {
                        let (tx, rx) = mpsc::channel();
                        (tx, Some(rx))
                    })
                    .collect()
            })
            .collect();
        for (r, row) in ios.iter_mut().enumerate() {
            for (io, stage) in row.iter_mut().zip(wires.iter_mut()) {
                io.replica = u16::try_from(r)
                    .map_err(|_| Error::Pipeline(format!("replica {r} out of range")))?;
                io.replica_in = stage[r].1.take();
                io.replica_out = stage
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != r)
                    .map(|(_, (tx, _))| tx.clone())
                    .collect();
            }
        }
    }
    let results: Vec<Vec<Result<StepReport>>> = std::thread::scope(|scope| {
        let handles: Vec<Vec<_>> = grid
            .iter_mut()
            .zip(ios)
            .map(|(pipeline, ios)| {
                pipeline
                    .iter_mut()
                    .zip(ios)
                    .map(|(w, mut io)| scope.spawn(move || run_step(w, step, &mut io)))
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Pipeline("a stage thread panicked".into()))
                        })
                    })
                    .collect()
            })
            .collect()
    });
    // The first failure is the cause; the others stopped because a partner left.
    let mut reports = Vec::with_capacity(results.len());
    let mut io_failure = None;
    for pipeline in results {
        let mut row = Vec::with_capacity(n);
        for r in pipeline {
            match r {
                Ok(report) => row.push(report),
                Err(e @ Error::StepIo(_)) => {
                    io_failure.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        reports.push(row);
    }
    match io_failure {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// Runs step `step` over `stages` in this process and returns the mean loss.
pub fn run_step_in_process(stages: &mut [StageWorker], step: Step) -> Result<f64> {
    let reports = run_step_in_process_detailed(stages, step)?;
    reports
        .last()
        .and_then(|r| r.loss)
        .ok_or_else(|| Error::Pipeline("the last stage reported no loss".into()))
}

/// Builds the workers of all `n_stages` stages of a model in this process.
pub fn build_workers(
    cfg: &ModelConfig,
    train: &TrainConfig,
    n_stages: usize,
    data: &Batcher,
    device: tch::Device,
    opts: WorkerOptions,
) -> Result<Vec<StageWorker>> {
    cfg.validate_stages(n_stages)?;
    (0..n_stages)
        .map(|s| {
            let spec = StageSpec::new(s, n_stages)?;
            let stage = Stage::new(cfg, spec, device)?;
            let d = (spec.is_first() || spec.is_last()).then(|| data.clone());
            StageWorker::new(stage, train.clone(), d, opts)
        })
        .collect()
}
