//! Audits: recompute a revealed step with the same model code and compare within a tolerance.
//!
//! # Protocol (auditor side)
//!
//! 1. The work pallet opens an audit for commitment `c` of slot `(run, stage, replica)`; the
//!    auditor is one of its seats.
//! 2. The auditor proves to the trainer (the slot's libp2p peer from its staking record)
//!    that it speaks for its validator account ([``AuditorHello` (weft-stage-net)`]),
//!    then fetches every committed item it needs chunk by chunk
//!    (reveal requests (weft-stage-net)), checking each chunk's Merkle proof against the
//!    root on chain before keeping it (`weft_stage_net::reveal_fetch`). A chunk that does not verify is a
//!    `Fail(Mismatch)`; nothing complete by the reveal deadline is `Fail(NoReveal)`.
//! 3. [`recompute`] checks that the step continues the trainer's previous step
//!    (`weights_before`/`optimizer_before` equal the previous commitment's
//!    `weights_after`/`optimizer_after`; step 0 starts from the public initialisation with
//!    zero moments), so a replayed, skipped or restarted-from-elsewhere step fails even
//!    where the numbers alone would not tell. It then loads `weights_before` and
//!    `optimizer_before` into a fresh stage, runs
//!    every micro-batch forward from the revealed inputs (stage 0 rebuilds its tokens from
//!    the data assignment of the audited replica, and they must hash to the committed `inputs` root, so a trainer
//!    cannot train on other data; the last stage rebuilds its targets), backward from the
//!    revealed output gradients (the last stage from its own loss), clips and applies AdamW
//!    with the scheduled learning rate, and compares what it computed with what was
//!    revealed: outputs (activations, or the per micro-batch losses), input gradients,
//!    weights after, AdamW moments after, and on the last stage the committed mean loss.
//!
//! # Tolerance
//!
//! Per tensor (each micro-batch's activation or gradient, each parameter, each moment),
//! with `r` the recomputed reference and `g` the revealed value, `n` elements:
//!
//! ```text
//! ‖g − r‖₂ ≤ rel_l2 · ‖r‖₂ + abs_floor · √n            (relative L2)
//! max |g − r| ≤ max_abs_rel · max |r| + abs_floor      (largest element error)
//! ```
//!
//! and for weights additionally the update itself must match:
//! `‖g_after − r_after‖₂ ≤ update_rel_l2 · ‖r_after − before‖₂ + abs_floor · √n`, so stale
//! weights (no update) or a wrong learning rate fail even when the update is tiny next to
//! the weights. Non-finite values fail. The relative L2 bound catches scaled, zeroed or
//! random tensors; the element bound catches one tampered element of a large tensor, which
//! moves the L2 norm too little. Defaults ([`Tolerance::default`]): `rel_l2 = 1e-4`,
//! `max_abs_rel = 1e-3`, `update_rel_l2 = 1e-2`, `abs_floor = 1e-7` — conservative for
//! fp32 on CPU, where an honest recomputation with the same code is bit-exact or within
//! a few ulps (different thread counts change reduction order: relative errors ~1e-6).
//! A run trained with bf16 autocast on CUDA needs a wider tolerance; measure before
//! changing the defaults.
//!
//! # Replicas that average
//!
//! Where the run's replicas average (`TrainConfig::replica_sync`), the step applied the
//! trimmed mean of the included replicas' updates ([`crate::aggregate`]). The auditor gets
//! the committed round ([`AuditRound`]: the bitmap, and the other included replicas' updates,
//! each fetched from its holder and verified against the `update` root that replica
//! committed), takes the audited replica's own update from its reveal, and recomputes: the
//! update its inputs give must match the revealed one within tolerance, and the aggregate
//! (bit-exact anywhere) and the AdamW step from it must give the committed weights and
//! moments. So a replica that commits an aggregate other than the rule's over the committed
//! updates fails, and under the trainer's own compute class (tolerance zero) bit for bit.
//!
//! # What cannot be audited from one stage alone
//!
//! A cut model with tied embeddings (the first and the last stage add each other's
//! embedding gradient) and global clipping (the clip norm is the sum over stages) make a
//! stage's update depend on values outside its own commitment; [`recompute`] refuses such
//! steps with [`Error::Audit`] rather than guessing.

use crate::commit::{loss_value, root_of, root_of_bytes, StepCommitment};
use crate::config::{ModelConfig, TrainConfig};
use crate::data::Batcher;
use crate::error::{Error, Result};
use crate::model::{param_shapes, Stage, StageSpec};
use crate::schedule::{run_step, Coupling, StepIo};
use crate::tensor::f32_tensors;
use crate::worker::{StageWorker, WorkerOptions};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};
use weft_primitives::step::{Replica, Step, StepItem};
use weft_primitives::Hash;

/// Comparison thresholds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tolerance {
    /// Largest `‖g − r‖ / ‖r‖` per tensor.
    pub rel_l2: f64,
    /// Largest element error as a fraction of the tensor's largest reference magnitude.
    pub max_abs_rel: f64,
    /// Largest error of the weight update relative to the update's norm.
    pub update_rel_l2: f64,
    /// Absolute slack per element, for tensors that are (nearly) zero.
    pub abs_floor: f64,
}

impl Tolerance {
    /// No slack at all: every recomputed value must equal the committed one. What an auditor
    /// applies when it recomputes under the trainer's own compute class
    /// (`weft_primitives::compute`), where honest recomputation is bit-exact.
    pub const EXACT: Tolerance = Tolerance {
        rel_l2: 0.0,
        max_abs_rel: 0.0,
        update_rel_l2: 0.0,
        abs_floor: 0.0,
    };
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rel_l2: 1e-4,
            max_abs_rel: 1e-3,
            update_rel_l2: 1e-2,
            abs_floor: 1e-7,
        }
    }
}

/// How one revealed tensor compares with its recomputation.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorCheck {
    /// The item.
    pub item: StepItem,
    /// The tensor within the item (`micro 3`, `h.0.attn.weight`, `m:wte.weight`…).
    pub name: String,
    /// `‖g − r‖ / ‖r‖`.
    pub rel_l2: f64,
    /// `max |g − r|`.
    pub max_abs: f64,
    /// `max |r|`.
    pub ref_max: f64,
    /// Whether it is within tolerance.
    pub pass: bool,
}

/// Compares `got` with the reference `reference` under `tol` (plain L2 and element bounds).
pub fn compare(
    item: StepItem,
    name: &str,
    got: &[f32],
    reference: &[f32],
    tol: &Tolerance,
) -> TensorCheck {
    let fail = |why: &str| TensorCheck {
        item,
        name: format!("{name} ({why})"),
        rel_l2: f64::INFINITY,
        max_abs: f64::INFINITY,
        ref_max: 0.0,
        pass: false,
    };
    if got.len() != reference.len() {
        return fail("length differs");
    }
    if got.iter().any(|x| !x.is_finite()) {
        return fail("non-finite value");
    }
    let (mut d2, mut r2, mut max_abs, mut ref_max) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &r) in got.iter().zip(reference) {
        let (g, r) = (f64::from(g), f64::from(r));
        let d = (g - r).abs();
        d2 += d * d;
        r2 += r * r;
        max_abs = max_abs.max(d);
        ref_max = ref_max.max(r.abs());
    }
    let (dn, rn) = (d2.sqrt(), r2.sqrt());
    let floor = tol.abs_floor * (got.len() as f64).sqrt();
    let pass =
        dn <= tol.rel_l2 * rn + floor && max_abs <= tol.max_abs_rel * ref_max + tol.abs_floor;
    TensorCheck {
        item,
        name: name.to_string(),
        rel_l2: if rn > 0.0 {
            dn / rn
        } else if dn > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        max_abs,
        ref_max,
        pass,
    }
}

/// The revealed canonical bytes of a step, per item.
#[derive(Debug, Clone, Default)]
pub struct Revealed {
    /// Item → its canonical bytes (exactly what the commitment root covers).
    pub items: BTreeMap<StepItem, Vec<u8>>,
}

impl Revealed {
    /// The canonical bytes of `item`; an error if it was not revealed.
    pub fn get(&self, item: StepItem) -> Result<&[u8]> {
        self.items
            .get(&item)
            .map(|v| v.as_slice())
            .ok_or_else(|| Error::Audit(format!("{item:?} was not revealed")))
    }
}

/// The items an auditor of `spec` needs revealed (stage 0's inputs are rebuilt from the
/// data; an empty item's root is zero and needs no fetching either).
pub fn needed_items(spec: StageSpec) -> Vec<StepItem> {
    StepItem::ALL
        .iter()
        .copied()
        .filter(|i| match i {
            StepItem::Inputs | StepItem::InputGrads => !spec.is_first(),
            StepItem::OutputGrads => !spec.is_last(),
            // Zero (nothing to fetch) where the replicas train apart.
            StepItem::Update => true,
            _ => true,
        })
        .collect()
}

/// The verdict of a recomputation.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    /// Whether everything matched within tolerance.
    pub pass: bool,
    /// The first reason it did not, in words.
    pub failure: Option<String>,
    /// Every tensor compared.
    pub checks: Vec<TensorCheck>,
}

impl AuditOutcome {
    fn fail(why: String) -> Self {
        AuditOutcome {
            pass: false,
            failure: Some(why),
            checks: Vec::new(),
        }
    }

    /// The largest relative L2 error seen over all tensors.
    pub fn worst_rel_l2(&self) -> f64 {
        self.checks.iter().map(|c| c.rel_l2).fold(0.0, f64::max)
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn tensor_f32s(t: &Tensor) -> Result<Vec<f32>> {
    let flat = t
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    Ok(Vec::try_from(&flat)?)
}

/// Everything [`recompute`] needs besides the reveal.
#[derive(Debug, Clone)]
pub struct AuditJob<'a> {
    /// The run's model (seed set from the chain).
    pub model: &'a ModelConfig,
    /// The run's hyper-parameters.
    pub train: &'a TrainConfig,
    /// The audited stage.
    pub spec: StageSpec,
    /// The data (needed for the first and the last stage).
    pub data: Option<Batcher>,
    /// The committed roots.
    pub commitment: &'a StepCommitment,
    /// The audited replica (its data shard).
    pub replica: Replica,
    /// The same slot's previous commitment by the same trainer, when there is one.
    pub previous: Option<Continuity>,
    /// The thresholds.
    pub tolerance: Tolerance,
    /// Where to recompute.
    pub device: tch::Device,
    /// Where the run's replicas average: the round the step committed, with the other
    /// included replicas' updates (checked against their own commitments by the caller).
    pub round: Option<AuditRound>,
}

/// The replica round of an audited step (see the module docs, "Replicas that average").
#[derive(Debug, Clone, Default)]
pub struct AuditRound {
    /// The replicas whose updates the step aggregated, as committed.
    pub included: weft_primitives::replicas::Included,
    /// The canonical bytes of every included replica's update but the audited one's, each
    /// verified against the `update` root that replica committed for the step.
    pub others: BTreeMap<Replica, Vec<u8>>,
}

/// What a step must continue from: the previous step's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuity {
    /// The previous commitment's `weights_after` root.
    pub weights_after: Hash,
    /// The previous commitment's `optimizer_after` root.
    pub optimizer_after: Hash,
}

/// Recomputes the committed step from `reveal` and compares (see the module docs).
/// `Ok(outcome)` is a verdict; `Err` means the step cannot be judged here (unsupported
/// configuration, libtorch failure), which is not the trainer's fault.
pub fn recompute(job: &AuditJob<'_>, reveal: &Revealed) -> Result<AuditOutcome> {
    let (model, train, spec, c) = (job.model, job.train, job.spec, job.commitment);
    if let Some(why) = Coupling::of(model, train, spec).unauditable_reason() {
        return Err(Error::Audit(why.into()));
    }
    // The reveal must be what was committed.
    for item in needed_items(spec) {
        if c.roots.get(item) == Hash::ZERO && !reveal.items.contains_key(&item) {
            // An empty item (an update where the replicas train apart) needs no reveal.
            continue;
        }
        let bytes = reveal.get(item)?;
        let root = root_of_bytes(bytes);
        if root != c.roots.get(item) {
            return Ok(AuditOutcome::fail(format!(
                "the revealed {item:?} does not match its committed root"
            )));
        }
    }
    // The step must start where the trainer's previous step ended (a replayed or skipped
    // step breaks the chain), and step 0 from the public initialisation with zero moments.
    if let Some(p) = job.previous {
        if p.weights_after != c.roots.weights_before
            || p.optimizer_after != c.roots.optimizer_before
        {
            return Ok(AuditOutcome::fail(format!(
                "step {} does not start from the state step {} committed",
                c.step,
                c.step.saturating_sub(1)
            )));
        }
    }
    let device = job.device;
    let stage = Stage::new(model, spec, device)?;
    if c.step == 0 {
        let init = crate::commit::canonical_bytes(stage.params().iter().map(|(_, t)| t))?;
        if init != reveal.get(StepItem::WeightsBefore)? {
            return Ok(AuditOutcome::fail(
                "step 0 does not start from the run's initial weights".into(),
            ));
        }
        if reveal
            .get(StepItem::OptimizerBefore)?
            .iter()
            .any(|&b| b != 0)
        {
            return Ok(AuditOutcome::fail(
                "step 0 does not start from zero optimiser moments".into(),
            ));
        }
    }
    let names: Vec<(String, Vec<i64>)> = param_shapes(model, spec);
    let (weights, moments) = match crate::checkpoint::state_from_canonical(
        &names,
        reveal.get(StepItem::WeightsBefore)?,
        reveal.get(StepItem::OptimizerBefore)?,
        device,
    )? {
        Ok(state) => state,
        Err(crate::checkpoint::StateBytesError::WeightsSize) => {
            return Ok(AuditOutcome::fail(
                "weights_before has the wrong size".into(),
            ))
        }
        Err(crate::checkpoint::StateBytesError::OptimizerSize) => {
            return Ok(AuditOutcome::fail(
                "optimizer_before has the wrong size".into(),
            ))
        }
    };
    let mut worker = StageWorker::new(
        stage,
        train.clone(),
        job.data.clone(),
        WorkerOptions { commit: true },
    )?;
    worker.set_replica(job.replica);
    worker.load_state(&weights, c.step, moments)?;

    let m = train.micro_batches;
    let b = train.micro_batch_size;
    let act_shape = vec![b, model.seq_len, model.d_model];
    let per_micro: Vec<Vec<i64>> = (0..m).map(|_| act_shape.clone()).collect();
    let inputs = if spec.is_first() {
        let data = job
            .data
            .as_ref()
            .ok_or_else(|| Error::Audit("stage 0 needs the data to rebuild its inputs".into()))?;
        let tokens = (0..m)
            .map(|mu| {
                let index = crate::worker::data_index(job.replica, m, mu);
                Ok(data.batch(model.seed, c.step, index)?.inputs)
            })
            .collect::<Result<Vec<_>>>()?;
        if root_of(&tokens)? != c.roots.inputs {
            return Ok(AuditOutcome::fail(
                "the committed inputs are not the data assigned to this step".into(),
            ));
        }
        None
    } else {
        match f32_tensors(reveal.get(StepItem::Inputs)?, &per_micro, device)? {
            Some(t) => Some(t),
            None => return Ok(AuditOutcome::fail("inputs have the wrong size".into())),
        }
    };
    let out_grads = if spec.is_last() {
        None
    } else {
        match f32_tensors(reveal.get(StepItem::OutputGrads)?, &per_micro, device)? {
            Some(t) => Some(t),
            None => {
                return Ok(AuditOutcome::fail(
                    "output gradients have the wrong size".into(),
                ))
            }
        }
    };

    let shapes: Vec<Vec<i64>> = names.iter().map(|(_, s)| s.clone()).collect();
    let round = match (&job.round, train.update_codec()) {
        (None, None) => None,
        (Some(round), Some(_)) => {
            let tensors = |bytes: &[u8]| f32_tensors(bytes, &shapes, device);
            let Some(own) = tensors(reveal.get(StepItem::Update)?)? else {
                return Ok(AuditOutcome::fail("the update has the wrong size".into()));
            };
            let mut updates = Vec::new();
            for r in round.included.iter() {
                if r == job.replica {
                    updates.push(own.iter().map(Tensor::shallow_clone).collect());
                    continue;
                }
                let bytes = round.others.get(&r).ok_or_else(|| {
                    Error::Audit(format!("replica {r}'s update of the round is missing"))
                })?;
                match tensors(bytes)? {
                    Some(u) => updates.push(u),
                    None => {
                        return Ok(AuditOutcome::fail(format!(
                            "replica {r}'s included update has the wrong size"
                        )))
                    }
                }
            }
            if updates.is_empty() {
                return Ok(AuditOutcome::fail("the round includes no replica".into()));
            }
            Some(crate::schedule::ReplicaRound {
                updates,
                included: round.included,
            })
        }
        (None, Some(_)) => {
            return Err(Error::Audit(
                "an averaged step needs its replica round to be audited".into(),
            ))
        }
        (Some(_), None) => {
            return Err(Error::Audit(
                "a replica round for a run whose replicas train apart".into(),
            ))
        }
    };
    let mut io = RevealIo {
        inputs,
        output_grads: out_grads,
        round,
    };
    let report = run_step(&mut worker, c.step, &mut io)?;
    let record = report
        .record
        .as_ref()
        .ok_or_else(|| Error::Audit("the recomputation kept no record".into()))?;
    // Outputs in micro-batch order (activations, or each micro-batch's loss); input
    // gradients in the order they were sent back, M-1 down to 0.
    let outputs = record
        .outputs
        .iter()
        .map(tensor_f32s)
        .collect::<Result<Vec<_>>>()?;
    let in_grads = record
        .input_grads
        .iter()
        .map(tensor_f32s)
        .collect::<Result<Vec<_>>>()?;

    let tol = &job.tolerance;
    let mut checks = Vec::new();
    let out_len: usize = outputs.iter().map(Vec::len).sum();
    let got_out = f32s(reveal.get(StepItem::Outputs)?);
    if got_out.len() != out_len {
        return Ok(AuditOutcome::fail("outputs have the wrong size".into()));
    }
    let mut off = 0;
    for (mu, r) in outputs.iter().enumerate() {
        checks.push(compare(
            StepItem::Outputs,
            &format!("micro {mu}"),
            &got_out[off..off + r.len()],
            r,
            tol,
        ));
        off += r.len();
    }
    if !spec.is_first() {
        let got = f32s(reveal.get(StepItem::InputGrads)?);
        let len: usize = in_grads.iter().map(Vec::len).sum();
        if got.len() != len {
            return Ok(AuditOutcome::fail(
                "input gradients have the wrong size".into(),
            ));
        }
        let mut off = 0;
        for (i, r) in in_grads.iter().enumerate() {
            checks.push(compare(
                StepItem::InputGrads,
                &format!("micro {}", m - 1 - i),
                &got[off..off + r.len()],
                r,
                tol,
            ));
            off += r.len();
        }
    }
    if train.update_codec().is_some() {
        // The update the trainer sent must be the one its inputs give (within tolerance);
        // the aggregate and the step from it are then recomputed from the committed updates.
        let got = f32s(reveal.get(StepItem::Update)?);
        let mut off = 0;
        for ((name, _), t) in names.iter().zip(&record.update) {
            let r = tensor_f32s(t)?;
            let Some(g) = got.get(off..off + r.len()) else {
                return Ok(AuditOutcome::fail("the update has the wrong size".into()));
            };
            checks.push(compare(StepItem::Update, name, g, &r, tol));
            off += r.len();
        }
    }
    let after_got = f32s(reveal.get(StepItem::WeightsAfter)?);
    let before_all = f32s(reveal.get(StepItem::WeightsBefore)?);
    let mut off = 0;
    let params = worker.stage().params();
    let total: usize = names
        .iter()
        .map(|(_, s)| s.iter().product::<i64>() as usize)
        .sum();
    if after_got.len() != total {
        return Ok(AuditOutcome::fail(
            "weights_after has the wrong size".into(),
        ));
    }
    for (name, p) in params {
        let r = tensor_f32s(p)?;
        let g = &after_got[off..off + r.len()];
        let bf = &before_all[off..off + r.len()];
        let mut chk = compare(StepItem::WeightsAfter, name, g, &r, tol);
        // The update must match too, relative to its own size.
        let (mut e2, mut u2) = (0f64, 0f64);
        for ((&gv, &rv), &bv) in g.iter().zip(&r).zip(bf) {
            e2 += (f64::from(gv) - f64::from(rv)).powi(2);
            u2 += (f64::from(rv) - f64::from(bv)).powi(2);
        }
        let floor = tol.abs_floor * (r.len() as f64).sqrt();
        if e2.sqrt() > tol.update_rel_l2 * u2.sqrt() + floor {
            chk.pass = false;
            chk.name = format!("{name} (update)");
        }
        checks.push(chk);
        off += r.len();
    }
    let opt_got = f32s(reveal.get(StepItem::OptimizerAfter)?);
    if opt_got.len() != 2 * total {
        return Ok(AuditOutcome::fail(
            "optimizer_after has the wrong size".into(),
        ));
    }
    let mut off = 0;
    for s in worker.optimizer().moments() {
        for (tag, t) in [("m", &s.m), ("v", &s.v)] {
            let r = tensor_f32s(t)?;
            checks.push(compare(
                StepItem::OptimizerAfter,
                &format!("{tag}:{}", s.name),
                &opt_got[off..off + r.len()],
                &r,
                tol,
            ));
            off += r.len();
        }
    }
    let mut failure = checks.iter().find(|c| !c.pass).map(|c| {
        format!(
            "{:?} {} off: rel L2 {:.3e}, max abs {:.3e} (max |ref| {:.3e})",
            c.item, c.name, c.rel_l2, c.max_abs, c.ref_max
        )
    });
    if failure.is_none() && spec.is_last() {
        let mean = report.loss.unwrap_or(f64::NAN);
        let committed = c.loss.map(loss_value);
        let ok = committed
            .is_some_and(|l| (l - mean).abs() <= tol.max_abs_rel * mean.abs().max(1.0) + 1e-6);
        if !ok {
            failure = Some(format!(
                "committed loss {committed:?} but the recomputed loss is {mean:.6}"
            ));
        }
    }
    Ok(AuditOutcome {
        pass: failure.is_none(),
        failure,
        checks,
    })
}

/// A step's I/O from a reveal: the revealed inputs and output gradients, already cut into
/// one tensor per micro-batch. What the recomputation sends is kept in the worker's record
/// and compared afterwards; a step coupled to other stages is refused before it runs.
struct RevealIo {
    inputs: Option<Vec<Tensor>>,
    output_grads: Option<Vec<Tensor>>,
    /// The committed round, built from the revealed and the included updates.
    round: Option<crate::schedule::ReplicaRound>,
}

fn revealed(tensors: &Option<Vec<Tensor>>, index: usize, what: &str) -> Result<Tensor> {
    tensors
        .as_ref()
        .and_then(|v| v.get(index))
        .map(Tensor::shallow_clone)
        .ok_or_else(|| Error::Audit(format!("no revealed {what} for micro-batch {index}")))
}

impl StepIo for RevealIo {
    fn recv_activation(&mut self, _step: Step, micro: usize) -> Result<Tensor> {
        revealed(&self.inputs, micro, "input")
    }
    fn send_activation(&mut self, _: Step, _: usize, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn recv_output_grad(&mut self, _step: Step, micro: usize) -> Result<Tensor> {
        // Output gradients are stored in the order received: M-1 down to 0.
        let n = self.output_grads.as_ref().map_or(0, Vec::len);
        let index = n
            .checked_sub(1 + micro)
            .ok_or_else(|| Error::Audit(format!("no revealed gradient for micro-batch {micro}")))?;
        revealed(&self.output_grads, index, "output gradient")
    }
    fn send_input_grad(&mut self, _: Step, _: usize, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn exchange_shared_grad(&mut self, _: Step, _: &Tensor) -> Result<Tensor> {
        Err(Error::Audit(
            "a shared embedding cannot be audited alone".into(),
        ))
    }
    fn global_sq_sum(&mut self, _: Step, _: f64) -> Result<f64> {
        Err(Error::Audit(
            "global clipping cannot be audited alone".into(),
        ))
    }
    fn replica_updates(
        &mut self,
        _: Step,
        _: &[Tensor],
    ) -> Result<Option<crate::schedule::ReplicaRound>> {
        // The aggregate is of the committed updates, not of the recomputed one (compared
        // within tolerance afterwards): so it is recomputed bit for bit.
        Ok(self.round.take())
    }
}
