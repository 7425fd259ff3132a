//! Pipeline-parallel training of one stage, and an in-process driver for all stages.
//!
//! # One step of one stage ([`StageWorker`])
//!
//! ```text
//! begin_step(s)                        zero gradients, note weights_before
//! forward(µ, input)   for µ = 0..M     stage 0 builds its own input from the data
//!                                      assignment; other stages take the activation
//!                                      tensor sent by the previous stage, detach it and
//!                                      mark it requires_grad (a fresh leaf), run, keep the
//!                                      graph; the output is what is sent on. The last
//!                                      stage rebuilds the targets and returns the loss.
//! backward(µ, grad)   for µ = M-1..0   the last stage back-propagates loss/M; the others
//!                                      back-propagate the gradient received for their
//!                                      output (as Σ(output ⊙ grad), whose gradient w.r.t.
//!                                      the output is exactly `grad`); gradients accumulate
//!                                      over micro-batches; the gradient of the input leaf
//!                                      is what is sent back.
//! finish_step(norm²)                   clip (by this stage's norm, or by the global norm
//!                                      when given the sum of all stages' squares), AdamW,
//!                                      commitment.
//! ```
//!
//! That is the GPipe schedule (all forwards, then all backwards), driven by
//! [`crate::schedule::run_step`]. Nothing in the worker assumes the stages share a process:
//! a [`crate::schedule::StepIo`] carries the forward output tensor of stage k to stage k+1
//! and the returned input gradient back.
//!
//! # Tied embeddings across stages
//!
//! When the head is tied to the token embedding and the model is cut, stage 0 and the last
//! stage each hold `wte.weight`. After the backward pass the schedule sums their two
//! gradients ([`StageWorker::shared_grad`], [`StageWorker::set_shared_grad`]); both apply
//! the same AdamW update, so the copies stay bitwise equal.
//!
//! # Commitments
//!
//! With [`WorkerOptions::commit`], the worker keeps every tensor it received and sent
//! during the step and, in `finish_step`, builds a [`StepCommitment`] over them
//! (see [`crate::commit`]), returning the tensors as a [`StepRecord`] for the reveal store.
//!
//! # Replicas and data
//!
//! A run with `R` replicas per stage runs `R` pipelines side by side; replica `r` reads
//! micro-batches `r·M .. r·M + M` of each step's global batch ([`data_index`]), so replicas
//! do different work and one replica cannot pass off another's outputs as its own (the
//! auditor rebuilds the data of the replica it audits).
//!
//! # Step hooks
//!
//! [`StepHook`] is a seam for test tools that simulate dishonest trainers (the adversary
//! binary of the end-to-end tests): it sees, and may rewrite, what the stage sends and
//! commits. The trainer installs none.
//!
//! # Dropout
//!
//! With dropout, each forward call reseeds libtorch's generator from
//! `(run seed, step, micro-batch, stage)` so a recomputation draws the same masks. The
//! generator is process-wide, so a reseeded forward pass holds a lock: stages on threads of
//! one process (the in-process pipeline) then draw exactly what separate processes would.

use crate::commit::{committed_loss, root_of, StepCommitment, StepRoots};
use crate::config::TrainConfig;
use crate::data::Batcher;
use crate::error::{Error, Result};
use crate::model::Stage;
use crate::optim::{clip_coefficient, grad_sq_sum, lr_at, AdamW};
use crate::schedule::Coupling;
use tch::{Kind, Tensor};
use weft_primitives::step::Replica;
use weft_primitives::Hash;

/// Held while a forward pass reseeds libtorch's process-wide generator and draws dropout
/// masks from it.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Options of a worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerOptions {
    /// Build a [`StepCommitment`] every step and keep the committed tensors.
    pub commit: bool,
}

/// What a stage's forward pass produced for one micro-batch.
#[derive(Debug)]
pub enum ForwardOutput {
    /// Activations to send to the next stage.
    Activations(Tensor),
    /// The micro-batch's mean cross-entropy (last stage).
    Loss(f64),
}

/// The tensors a stage received and sent during one step, in micro-batch order.
#[derive(Debug, Default)]
pub struct StepRecord {
    /// Inputs (token ids on stage 0, activations elsewhere).
    pub inputs: Vec<Tensor>,
    /// Outputs sent on (activations), or the per micro-batch loss (last stage).
    pub outputs: Vec<Tensor>,
    /// Gradients received for the outputs (empty on the last stage).
    pub output_grads: Vec<Tensor>,
    /// Gradients sent back for the inputs (empty on stage 0).
    pub input_grads: Vec<Tensor>,
    /// The update this replica sent the other replicas of its stage, parameter-name order
    /// (empty where the replicas train apart).
    pub update: Vec<Tensor>,
}

/// The result of one step of one stage.
#[derive(Debug)]
pub struct StepReport {
    /// The step.
    pub step: u64,
    /// The stage.
    pub stage: usize,
    /// Mean loss over the micro-batches (last stage only).
    pub loss: Option<f64>,
    /// The gradient norm used for clipping (this stage's or the global one).
    pub grad_norm: f64,
    /// The clipping multiplier applied.
    pub clip_coef: f64,
    /// The learning rate applied.
    pub lr: f64,
    /// The commitment, when committing.
    pub commitment: Option<StepCommitment>,
    /// The committed tensors, when committing.
    pub record: Option<StepRecord>,
}

struct Saved {
    input: Tensor,
    output: Tensor,
}

/// The counter of micro-batch `micro` of `replica` within a step's global batch (what
/// [`Batcher::batch`] is asked for): `replica · micro_batches + micro`.
pub fn data_index(replica: Replica, micro_batches: usize, micro: usize) -> u32 {
    (replica as usize * micro_batches + micro) as u32
}

/// Sees, and may rewrite, what a stage computes before it is sent and committed (see the
/// module docs). Every method defaults to doing nothing.
pub trait StepHook: Send {
    /// The forward output of `micro` (activations to send, or the last stage's loss).
    fn forward_output(
        &mut self,
        _step: u64,
        _micro: usize,
        _out: &mut ForwardOutput,
    ) -> Result<()> {
        Ok(())
    }
    /// The gradient of `micro`'s input about to be sent back.
    fn input_grad(&mut self, _step: u64, _micro: usize, _grad: &mut Tensor) -> Result<()> {
        Ok(())
    }
    /// Just before the optimiser update (gradients accumulated, clip coefficient chosen);
    /// `false` skips the update.
    fn before_update(&mut self, _step: u64, _params: &[(String, Tensor)]) -> Result<bool> {
        Ok(true)
    }
    /// Just after the update, before the commitment is built.
    fn after_update(&mut self, _step: u64, _params: &[(String, Tensor)]) -> Result<()> {
        Ok(())
    }
    /// Replicas that average: this replica's update (parameter-name order) about to be sent
    /// to the other replicas of its stage and committed.
    fn update(&mut self, _step: u64, _update: &mut Vec<Tensor>) -> Result<()> {
        Ok(())
    }
    /// The replica whose data this stage reads (its own, unless told otherwise).
    fn data_replica(&self, _step: u64, replica: Replica) -> Replica {
        replica
    }
}

/// Trains one stage: forward, backward and update, one step at a time.
pub struct StageWorker {
    stage: Stage,
    optim: AdamW,
    train: TrainConfig,
    data: Option<Batcher>,
    opts: WorkerOptions,
    step: Option<u64>,
    saved: Vec<Option<Saved>>,
    record: StepRecord,
    losses: Vec<f64>,
    weights_root: Option<Hash>,
    optim_root: Option<Hash>,
    replica: Replica,
    hook: Option<Box<dyn StepHook>>,
}

impl std::fmt::Debug for StageWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageWorker")
            .field("stage", &self.stage.spec())
            .field("step", &self.step)
            .field("t", &self.optim.t())
            .finish()
    }
}

impl StageWorker {
    /// A worker for `stage`. The first and the last stage need `data` (stage 0 for its
    /// inputs, the last stage for its targets); `data` must produce `micro_batch_size` rows.
    pub fn new(
        stage: Stage,
        train: TrainConfig,
        data: Option<Batcher>,
        opts: WorkerOptions,
    ) -> Result<Self> {
        train.validate()?;
        let spec = stage.spec();
        if (spec.is_first() || spec.is_last()) && data.is_none() {
            return Err(Error::Config(format!(
                "stage {} needs the data source",
                spec.stage
            )));
        }
        if let Some(d) = &data {
            let cfg = stage.config();
            if d.micro_batch_size() != train.micro_batch_size || d.seq_len() != cfg.seq_len {
                return Err(Error::Config(format!(
                    "the batcher cuts {}×{} micro-batches, the run needs {}×{}",
                    d.micro_batch_size(),
                    d.seq_len(),
                    train.micro_batch_size,
                    cfg.seq_len
                )));
            }
        }
        let optim = AdamW::new(stage.params(), &train)?;
        Ok(StageWorker {
            stage,
            optim,
            train,
            data,
            opts,
            step: None,
            saved: Vec::new(),
            record: StepRecord::default(),
            losses: Vec::new(),
            weights_root: None,
            optim_root: None,
            replica: 0,
            hook: None,
        })
    }

    /// Sets the replica this worker trains (its data shard; 0 by default).
    pub fn set_replica(&mut self, replica: Replica) {
        self.replica = replica;
    }

    /// The replica this worker trains.
    pub fn replica(&self) -> Replica {
        self.replica
    }

    /// Installs a [`StepHook`].
    pub fn set_hook(&mut self, hook: Box<dyn StepHook>) {
        self.hook = Some(hook);
    }

    /// The model stage.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// Runs forward passes under bf16 autocast (CUDA only; the CPU stays in f32).
    pub fn set_autocast_bf16(&mut self, on: bool) {
        self.stage.autocast_bf16 = on;
    }

    /// The worker's options.
    pub fn options(&self) -> WorkerOptions {
        self.opts
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &AdamW {
        &self.optim
    }

    /// The training configuration.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    /// Number of micro-batches per step.
    pub fn micro_batches(&self) -> usize {
        self.train.micro_batches
    }

    /// Number of completed updates, i.e. the next step to run.
    pub fn completed_steps(&self) -> u64 {
        self.optim.t()
    }

    /// Replaces weights and optimiser state (used by checkpoint loading).
    pub(crate) fn load_state(
        &mut self,
        weights: &[(String, Tensor)],
        t: u64,
        moments: Vec<crate::optim::Moments>,
    ) -> Result<()> {
        let params = self.stage.params();
        if weights.len() != params.len() {
            return Err(Error::Checkpoint(format!(
                "{} weights given, stage has {}",
                weights.len(),
                params.len()
            )));
        }
        for ((n, src), (name, p)) in weights.iter().zip(params) {
            if n != name || src.size() != p.size() {
                return Err(Error::Checkpoint(format!(
                    "weight {n} does not match parameter {name}"
                )));
            }
        }
        self.optim.load(t, moments)?;
        tch::no_grad(|| -> Result<()> {
            for ((_, src), (_, p)) in weights.iter().zip(params) {
                let mut p = p.shallow_clone();
                p.f_copy_(src)?;
            }
            Ok(())
        })?;
        self.weights_root = None;
        self.optim_root = None;
        self.step = None;
        Ok(())
    }

    fn moments_tensors(&self) -> Vec<&Tensor> {
        self.optim
            .moments()
            .iter()
            .flat_map(|s| [&s.m, &s.v])
            .collect()
    }

    fn current_weights_root(&mut self) -> Result<Hash> {
        if let Some(r) = self.weights_root {
            return Ok(r);
        }
        let r = root_of(self.stage.params().iter().map(|(_, t)| t))?;
        self.weights_root = Some(r);
        Ok(r)
    }

    fn current_optim_root(&mut self) -> Result<Hash> {
        if let Some(r) = self.optim_root {
            return Ok(r);
        }
        let r = root_of(self.moments_tensors())?;
        self.optim_root = Some(r);
        Ok(r)
    }

    /// Starts step `step`: zeroes gradients and forgets any unfinished step.
    pub fn begin_step(&mut self, step: u64) -> Result<()> {
        for (_, p) in self.stage.params() {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        self.step = Some(step);
        self.saved = (0..self.train.micro_batches).map(|_| None).collect();
        self.record = StepRecord::default();
        self.losses.clear();
        Ok(())
    }

    fn current_step(&self) -> Result<u64> {
        self.step
            .ok_or_else(|| Error::Pipeline("no step in progress: call begin_step".into()))
    }

    fn check_micro(&self, micro: usize) -> Result<()> {
        if micro >= self.saved.len() {
            return Err(Error::Pipeline(format!(
                "micro-batch {micro} out of range (0..{})",
                self.saved.len()
            )));
        }
        Ok(())
    }

    /// Runs micro-batch `micro` forward. Stage 0 takes no `input` (it reads the data); the
    /// others take the previous stage's output. Keeps the graph for [`Self::backward`].
    pub fn forward(&mut self, micro: usize, input: Option<&Tensor>) -> Result<ForwardOutput> {
        let step = self.current_step()?;
        self.check_micro(micro)?;
        if self.saved[micro].is_some() {
            return Err(Error::Pipeline(format!(
                "micro-batch {micro} already ran forward"
            )));
        }
        let spec = self.stage.spec();
        let cfg = self.stage.config();
        let device = self.stage.device();
        let replica = match &self.hook {
            Some(h) => h.data_replica(step, self.replica),
            None => self.replica,
        };
        let index = data_index(replica, self.train.micro_batches, micro);
        let batch = match &self.data {
            Some(d) if spec.is_first() || spec.is_last() => Some(d.batch(cfg.seed, step, index)?),
            _ => None,
        };
        let x = if spec.is_first() {
            if input.is_some() {
                return Err(Error::Pipeline("stage 0 reads its own input".into()));
            }
            match &batch {
                Some(b) => b.inputs.f_to_device(device)?,
                None => return Err(Error::Pipeline("stage 0 has no data".into())),
            }
        } else {
            let input = input
                .ok_or_else(|| Error::Pipeline(format!("stage {} needs an input", spec.stage)))?;
            input
                .f_detach()?
                .f_to_device(device)?
                .f_to_kind(Kind::Float)?
                .f_set_requires_grad(true)?
        };
        // libtorch's generator is one per process: the reseed and the forward pass that draws
        // from it must not interleave with another stage's (stages on threads of one process).
        let _generator = (cfg.dropout > 0.0 && self.stage.train)
            .then(|| GENERATOR.lock().unwrap_or_else(|e| e.into_inner()));
        if cfg.dropout > 0.0 && self.stage.train {
            let mut h = blake3::Hasher::new_derive_key("weft-trainer dropout v1");
            for v in [cfg.seed, step, micro as u64, spec.stage as u64] {
                h.update(&v.to_le_bytes());
            }
            let b = h.finalize();
            let mut s = [0u8; 8];
            s.copy_from_slice(&b.as_bytes()[..8]);
            tch::manual_seed(i64::from_le_bytes(s) & i64::MAX);
        }
        let targets = if spec.is_last() {
            batch.as_ref().map(|b| &b.targets)
        } else {
            None
        };
        let out = self.stage.forward(&x, targets)?;
        let mut result = if spec.is_last() {
            ForwardOutput::Loss(out.f_double_value(&[])?)
        } else {
            ForwardOutput::Activations(out.f_detach()?)
        };
        if let Some(h) = self.hook.as_mut() {
            h.forward_output(step, micro, &mut result)?;
        }
        match &result {
            ForwardOutput::Loss(loss) => {
                if self.opts.commit {
                    self.record
                        .outputs
                        .push(Tensor::f_from_slice(&[*loss as f32])?);
                }
                self.losses.push(*loss);
            }
            ForwardOutput::Activations(sent) => {
                if self.opts.commit {
                    self.record.outputs.push(sent.shallow_clone());
                }
            }
        }
        if self.opts.commit {
            self.record.inputs.push(x.f_detach()?);
        }
        self.saved[micro] = Some(Saved {
            input: x,
            output: out,
        });
        Ok(result)
    }

    /// Runs micro-batch `micro` backward. The last stage takes no gradient; the others take
    /// the gradient of their output. Returns the gradient of the input (`None` on stage 0).
    pub fn backward(
        &mut self,
        micro: usize,
        output_grad: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        self.check_micro(micro)?;
        let saved = self.saved[micro].take().ok_or_else(|| {
            Error::Pipeline(format!("micro-batch {micro} has no forward pass to undo"))
        })?;
        let spec = self.stage.spec();
        if spec.is_last() {
            if output_grad.is_some() {
                return Err(Error::Pipeline(
                    "the last stage computes its own gradient".into(),
                ));
            }
            saved
                .output
                .f_div_scalar(self.train.micro_batches as f64)?
                .f_backward()?;
        } else {
            let g = output_grad.ok_or_else(|| {
                Error::Pipeline(format!("stage {} needs an output gradient", spec.stage))
            })?;
            if g.size() != saved.output.size() {
                return Err(Error::Shape(format!(
                    "output gradient {:?} for output {:?}",
                    g.size(),
                    saved.output.size()
                )));
            }
            let g = g
                .f_detach()?
                .f_to_device(self.stage.device())?
                .f_to_kind(saved.output.kind())?;
            saved.output.f_mul(&g)?.f_sum(Kind::Float)?.f_backward()?;
            if self.opts.commit {
                self.record.output_grads.push(g);
            }
        }
        if spec.is_first() {
            return Ok(None);
        }
        let grad = saved.input.f_grad()?;
        if !grad.defined() {
            return Err(Error::Pipeline("the input received no gradient".into()));
        }
        let mut grad = grad.f_detach()?;
        let step = self.current_step()?;
        if let Some(h) = self.hook.as_mut() {
            h.input_grad(step, micro, &mut grad)?;
        }
        if self.opts.commit {
            self.record.input_grads.push(grad.shallow_clone());
        }
        Ok(Some(grad))
    }

    /// Σ‖g‖² of this stage's gradients, not counting a tied copy held by another stage too.
    pub fn grad_sq_sum(&self) -> Result<f64> {
        grad_sq_sum(
            self.stage
                .params()
                .iter()
                .filter(|(n, _)| !self.stage.is_shared_copy(n))
                .map(|(_, t)| t),
        )
    }

    /// What this stage's step depends on outside the stage.
    pub fn coupling(&self) -> Coupling {
        Coupling::of(self.stage.config(), &self.train, self.stage.spec())
    }

    /// The gradient of the embedding shared with another stage (tied embeddings, cut
    /// model: stage 0 and the last stage, see [`Coupling::shared_embedding`]).
    pub fn shared_grad(&self) -> Result<Tensor> {
        if !self.coupling().shared_embedding {
            return Err(Error::Pipeline("this stage shares no embedding".into()));
        }
        let (_, p) = self
            .stage
            .params()
            .iter()
            .find(|(n, _)| n == "wte.weight")
            .ok_or_else(|| Error::Pipeline("tied stage without wte.weight".into()))?;
        let g = p.f_grad()?;
        Ok(if g.defined() {
            g.f_detach_copy()?
        } else {
            p.f_zeros_like()?
        })
    }

    /// Sets the gradient of the shared embedding (the sum over both holders).
    pub fn set_shared_grad(&mut self, grad: &Tensor) -> Result<()> {
        let (_, p) = self
            .stage
            .params()
            .iter()
            .find(|(n, _)| n == "wte.weight")
            .ok_or_else(|| Error::Pipeline("this stage holds no shared embedding".into()))?;
        let mut g = p.f_grad()?;
        if !g.defined() || g.size() != grad.size() {
            return Err(Error::Pipeline(
                "shared embedding has no gradient to replace".into(),
            ));
        }
        tch::no_grad(|| g.f_copy_(grad))?;
        Ok(())
    }

    /// This stage's update of the step so far: the gradient of every parameter, in
    /// parameter-name order (what the replicas of a stage exchange, see [`crate::aggregate`]).
    pub fn update(&mut self) -> Result<Vec<Tensor>> {
        let mut update = self
            .stage
            .params()
            .iter()
            .map(|(name, p)| {
                let g = p.f_grad()?;
                if !g.defined() {
                    return Err(Error::Pipeline(format!("{name} has no gradient")));
                }
                Ok(g.f_detach_copy()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let step = self.current_step()?;
        if let Some(h) = self.hook.as_mut() {
            h.update(step, &mut update)?;
        }
        Ok(update)
    }

    /// Records `sent` as the update this replica sent the other replicas of its stage this
    /// step (committed as `StepRoots::update`).
    pub fn record_sent_update(&mut self, sent: &[Tensor]) {
        self.record.update = sent.iter().map(Tensor::shallow_clone).collect();
    }

    /// Replaces the gradient of every parameter (parameter-name order) by `update`: the
    /// replicas' aggregate, which the update of [`Self::finish_step`] then applies.
    pub fn set_update(&mut self, update: &[Tensor]) -> Result<()> {
        let params = self.stage.params();
        if update.len() != params.len() {
            return Err(Error::Pipeline(format!(
                "an update of {} tensors for {} parameters",
                update.len(),
                params.len()
            )));
        }
        for ((name, p), u) in params.iter().zip(update) {
            let mut g = p.f_grad()?;
            if !g.defined() || g.size() != u.size() {
                return Err(Error::Pipeline(format!(
                    "the update of {name} does not fit its gradient"
                )));
            }
            tch::no_grad(|| g.f_copy_(u))?;
        }
        Ok(())
    }

    /// Ends the step: clips (by `global_sq_sum` when given, else by this stage's norm),
    /// applies AdamW with the scheduled learning rate, and commits.
    pub fn finish_step(&mut self, global_sq_sum: Option<f64>) -> Result<StepReport> {
        let step = self.current_step()?;
        if let Some(m) = self.saved.iter().position(|s| s.is_some()) {
            return Err(Error::Pipeline(format!(
                "micro-batch {m} ran forward but not backward"
            )));
        }
        let (weights_before, optimizer_before) = if self.opts.commit {
            (self.current_weights_root()?, self.current_optim_root()?)
        } else {
            (Hash::ZERO, Hash::ZERO)
        };
        let sq = match global_sq_sum {
            Some(s) => s,
            None => self.grad_sq_sum()?,
        };
        let grad_norm = sq.sqrt();
        let clip_coef = clip_coefficient(grad_norm, self.train.grad_clip);
        let lr = lr_at(&self.train, step);
        let update = match self.hook.as_mut() {
            Some(h) => h.before_update(step, self.stage.params())?,
            None => true,
        };
        if update {
            self.optim.step(self.stage.params(), lr, clip_coef)?;
        }
        if let Some(h) = self.hook.as_mut() {
            h.after_update(step, self.stage.params())?;
        }
        self.weights_root = None;
        self.optim_root = None;
        let loss = if self.stage.spec().is_last() {
            Some(self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64)
        } else {
            None
        };
        let (commitment, record) = if self.opts.commit {
            let r = std::mem::take(&mut self.record);
            let c = StepCommitment {
                step,
                roots: StepRoots {
                    weights_before,
                    inputs: root_of(&r.inputs)?,
                    outputs: root_of(&r.outputs)?,
                    output_grads: root_of(&r.output_grads)?,
                    input_grads: root_of(&r.input_grads)?,
                    weights_after: self.current_weights_root()?,
                    optimizer_before,
                    optimizer_after: self.current_optim_root()?,
                    update: root_of(&r.update)?,
                },
                loss: loss.map(committed_loss).transpose()?,
            };
            (Some(c), Some(r))
        } else {
            (None, None)
        };
        self.step = None;
        tracing::debug!(
            stage = self.stage.spec().stage,
            step,
            ?loss,
            grad_norm,
            lr,
            "step done"
        );
        Ok(StepReport {
            step,
            stage: self.stage.spec().stage,
            loss,
            grad_norm,
            clip_coef,
            lr,
            commitment,
            record,
        })
    }
}
