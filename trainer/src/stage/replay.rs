//! Crash recovery of a stage: load the checkpoint, then replay from the tensor store every
//! step the journal says was committed after it ([`weft_stage_net::recovery`] makes the
//! plan), each through the one step schedule with the store as its I/O ([`StoreIo`]), and
//! check that each replay reproduces the stored commitment bit for bit.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;
use weft_ml::checkpoint;
use weft_ml::commit::StepItem;
use weft_ml::schedule::{run_step, StepIo};
use weft_ml::tensor::{f32_slice, from_wire};
use weft_ml::worker::StageWorker;
use weft_primitives::step::{Replica, RunId, Step};
use weft_stage_net::recovery;
use weft_stage_net::store::{StepAux, TensorStore};

/// Where a restarted stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The next step to train.
    pub next_step: u64,
    /// The step the checkpoint continued from.
    pub checkpoint_step: u64,
    /// Steps recomputed from the store after the checkpoint.
    pub replayed: u64,
    /// Whether a journal was found (the stage had committed before).
    pub had_journal: bool,
}

/// The checkpoint file of a stage's data directory.
pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint.safetensors")
}

/// Restores `worker` to the state after its last committed step: loads the checkpoint (if
/// any), then recomputes each journaled step after it from the tensor store
/// ([`weft_stage_net::recovery`]), checking that the recomputation reproduces the stored
/// commitment bit for bit.
pub fn resume(
    worker: &mut StageWorker,
    data_dir: &Path,
    store: &TensorStore,
    run: RunId,
) -> Result<Resumed> {
    let ck = checkpoint_path(data_dir);
    let checkpoint_step = if ck.exists() {
        checkpoint::load(worker, &ck)?
    } else {
        0
    };
    let spec = worker.stage().spec();
    let plan = recovery::plan(data_dir, run, spec.stage, spec.n_stages, checkpoint_step)?;
    for step in plan.replay.clone() {
        replay_step(worker, store, step)?;
    }
    let replayed = plan.replay.end - plan.replay.start;
    if replayed > 0 {
        tracing::info!(
            from = plan.replay.start,
            to = plan.replay.end - 1,
            "replayed committed steps from the store"
        );
    }
    Ok(Resumed {
        next_step: plan.next_step,
        checkpoint_step,
        replayed,
        had_journal: plan.had_journal,
    })
}

/// Recomputes step `step` from the stored inputs and gradients ([`StoreIo`]).
fn replay_step(worker: &mut StageWorker, store: &TensorStore, step: Step) -> Result<()> {
    let stored = store.commitment(step)?;
    let spec = worker.stage().spec();
    let mut io = StoreIo {
        inputs: if spec.is_first() {
            Vec::new()
        } else {
            store.item(step, StepItem::Inputs)?
        },
        output_grads: if spec.is_last() {
            Vec::new()
        } else {
            store.item(step, StepItem::OutputGrads)?
        },
        // Activations and output gradients are both `[micro_batch, seq, d_model]` (stage 0
        // reads its inputs from the data, not from here).
        shape: vec![
            worker.train_config().micro_batch_size,
            worker.stage().config().seq_len,
            worker.stage().config().d_model,
        ],
        micro_batches: worker.micro_batches(),
        aux: store.aux(step)?,
        replica: worker.replica(),
    };
    let report = run_step(worker, step, &mut io)?;
    if report.commitment.as_ref() != Some(&stored) {
        return Err(Error::Replay(format!(
            "replaying step {step} does not reproduce its stored commitment (non-deterministic \
             compute?); checkpoint every step on this device"
        )));
    }
    Ok(())
}

/// A step's I/O replayed from the store: what the stage received is read back, what it
/// sent goes nowhere (its partners have it), and the cross-stage values come from the
/// step's stored [`StepAux`].
struct StoreIo {
    inputs: Vec<u8>,
    output_grads: Vec<u8>,
    /// The shape of one micro-batch's activation (and of its gradient).
    shape: Vec<i64>,
    micro_batches: usize,
    aux: StepAux,
    /// This stage's replica (its own place in a stored replica round).
    replica: Replica,
}

impl StepIo for StoreIo {
    fn recv_activation(&mut self, _step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        f32_slice(&self.inputs, micro, &self.shape)
    }
    fn send_activation(&mut self, _: Step, _: usize, _: &Tensor) -> weft_ml::Result<()> {
        Ok(())
    }
    fn recv_output_grad(&mut self, _step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        // Gradients are stored in the order they were received: M-1 down to 0.
        let index = self
            .micro_batches
            .checked_sub(1 + micro)
            .ok_or_else(|| weft_ml::Error::StepIo(format!("micro-batch {micro} out of range")))?;
        f32_slice(&self.output_grads, index, &self.shape)
    }
    fn send_input_grad(&mut self, _: Step, _: usize, _: &Tensor) -> weft_ml::Result<()> {
        Ok(())
    }
    fn exchange_shared_grad(&mut self, step: Step, _own: &Tensor) -> weft_ml::Result<Tensor> {
        let theirs = self.aux.shared_grad_other.as_ref().ok_or_else(|| {
            weft_ml::Error::StepIo(format!("step {step}: no stored shared gradient"))
        })?;
        from_wire(theirs)
    }
    fn global_sq_sum(&mut self, step: Step, _own: f64) -> weft_ml::Result<f64> {
        self.aux
            .global_sq_sum_bits
            .map(f64::from_bits)
            .ok_or_else(|| weft_ml::Error::StepIo(format!("step {step}: no stored global norm")))
    }
    fn replica_updates(
        &mut self,
        _step: Step,
        sent: &[Tensor],
    ) -> weft_ml::Result<Option<weft_ml::schedule::ReplicaRound>> {
        super::replicas::replayed_round(&self.aux, self.replica, sent)
    }
}
