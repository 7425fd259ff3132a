//! Crash recovery of a stage: where a restarted stage stands.
//!
//! A stage writes, per step and in this order: the step's tensors and commitment into the
//! store ([`crate::store`]), then the journal ([`crate::journal`]), and a checkpoint every
//! `checkpoint_every` steps. After `kill -9` at any moment it restarts from its checkpoint
//! (step `c`) and must redo, from the store, every step the journal says it committed after
//! it (`c ..= last_committed`), each replay reproducing its stored commitment bit for bit;
//! it then sends again what it sent in `last_committed` ([`last_step_messages`]: the process
//! may have died before those deliveries), trains on from `last_committed + 1` and asks its
//! partners to resend what they sent it from there on. [`plan`] turns what is on disk into that plan and refuses a data
//! directory that belongs to another stage or whose checkpoint is ahead of its journal.
//! Running the replays is the trainer's (it holds the model).

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::link::StageShape;
use crate::store::TensorStore;
use crate::wire::{DType, Direction, Request, WireTensor};
use std::ops::Range;
use std::path::Path;
use weft_primitives::step::{RunId, StageIndex, Step, StepItem};

/// What a (re)starting stage must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Steps to replay from the store, in order, after loading the checkpoint.
    pub replay: Range<Step>,
    /// The next step to train.
    pub next_step: Step,
    /// Whether a journal was found (the stage had committed before, so its partners must be
    /// asked to resend).
    pub had_journal: bool,
}

/// The plan for stage `stage` of `n_stages` of `run` whose checkpoint holds
/// `checkpoint_step` completed steps (0 without a checkpoint), from the journal in
/// `data_dir`.
pub fn plan(
    data_dir: &Path,
    run: RunId,
    stage: usize,
    n_stages: usize,
    checkpoint_step: Step,
) -> Result<RecoveryPlan> {
    let Some(j) = Journal::read(data_dir)? else {
        return Ok(RecoveryPlan {
            replay: checkpoint_step..checkpoint_step,
            next_step: checkpoint_step,
            had_journal: false,
        });
    };
    if j.run != run || j.stage != stage || j.n_stages != n_stages {
        return Err(Error::Store(format!(
            "the journal in {} is for run {} stage {} of {}, not run {run} stage {stage} of \
             {n_stages}",
            data_dir.display(),
            j.run,
            j.stage,
            j.n_stages,
        )));
    }
    if checkpoint_step > j.last_committed + 1 {
        return Err(Error::Store(format!(
            "the checkpoint (step {checkpoint_step}) is ahead of the journal (step {})",
            j.last_committed
        )));
    }
    Ok(RecoveryPlan {
        replay: checkpoint_step..j.last_committed + 1,
        next_step: j.last_committed + 1,
        // A handed-over state has no step of this directory's to send again.
        had_journal: !j.handed_over,
    })
}

/// What a stage sent in its last committed step `step`, rebuilt from its store so that a
/// restarted stage can send it again: a crash after the journal entry but before every
/// delivery would otherwise leave a partner waiting for a message that died with the
/// process. Partners acknowledge what they already have (identical) and drop what they are
/// past (stale). Activations go to the next stage, input gradients to the previous one, the
/// own embedding gradient to the other holder, the own Σ‖g‖² to every other stage.
pub fn last_step_messages(
    store: &TensorStore,
    step: Step,
    shape: &StageShape,
    run: RunId,
    stage_id: StageIndex,
) -> Result<Vec<(usize, Request)>> {
    let (k, n) = (shape.stage, shape.n_stages);
    let dims = shape
        .activation
        .iter()
        .map(|&d| u32::try_from(d).map_err(|_| Error::Store(format!("dimension {d}"))))
        .collect::<Result<Vec<u32>>>()?;
    let per = dims.iter().map(|&d| d as usize).product::<usize>() * DType::F32.size();
    let tensors = |bytes: Vec<u8>| -> Result<Vec<WireTensor>> {
        if per == 0 || bytes.len() != per * shape.micro_batches {
            return Err(Error::Store(format!(
                "step {step}: {} stored bytes for {} micro-batches of {per}",
                bytes.len(),
                shape.micro_batches
            )));
        }
        Ok(bytes
            .chunks(per)
            .map(|c| WireTensor {
                dtype: DType::F32,
                shape: dims.clone(),
                data: c.to_vec(),
            })
            .collect())
    };
    let mut out = Vec::new();
    if k + 1 < n {
        for (micro, tensor) in tensors(store.item(step, StepItem::Outputs)?)?
            .into_iter()
            .enumerate()
        {
            out.push((
                k + 1,
                Request::Forward {
                    run,
                    step,
                    micro: micro as u32,
                    from_stage: stage_id,
                    tensor,
                },
            ));
        }
    }
    if k > 0 {
        // Stored in the order sent: micro-batch M-1 down to 0.
        let m = shape.micro_batches;
        for (i, tensor) in tensors(store.item(step, StepItem::InputGrads)?)?
            .into_iter()
            .enumerate()
        {
            out.push((
                k - 1,
                Request::Backward {
                    run,
                    step,
                    micro: (m - 1 - i) as u32,
                    from_stage: stage_id,
                    tensor,
                },
            ));
        }
    }
    let aux = store.aux(step)?;
    if let Some(tensor) = aux.shared_grad_own {
        let other = if k == 0 { n - 1 } else { 0 };
        out.push((
            other,
            Request::SharedGrad {
                run,
                step,
                from_stage: stage_id,
                tensor,
            },
        ));
    }
    for (direction, root, signature) in aux.seals_sent {
        let to = match direction {
            Direction::Activations => Some(k + 1),
            Direction::Gradients => k.checked_sub(1),
            Direction::Update => None,
        };
        if let Some(to) = to.filter(|&t| t < n) {
            out.push((
                to,
                Request::Seal {
                    run,
                    step,
                    from_stage: stage_id,
                    direction,
                    root,
                    signature,
                },
            ));
        }
    }
    if let Some(bits) = aux.own_sq_sum_bits {
        for s in (0..n).filter(|&s| s != k) {
            out.push((
                s,
                Request::GradSqSum {
                    run,
                    step,
                    from_stage: stage_id,
                    bits,
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_primitives::step::{StepCommitment, StepRoots};

    #[test]
    fn plans_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = plan(dir.path(), 1, 0, 2, 0).unwrap();
        assert_eq!(
            (fresh.replay, fresh.next_step, fresh.had_journal),
            (0..0, 0, false)
        );
        let c = StepCommitment {
            step: 6,
            roots: StepRoots::default(),
            loss: None,
        };
        Journal::for_commitment(1, 0, 2, &c)
            .write(dir.path())
            .unwrap();
        let p = plan(dir.path(), 1, 0, 2, 4).unwrap();
        assert_eq!((p.replay, p.next_step, p.had_journal), (4..7, 7, true));
        assert_eq!(plan(dir.path(), 1, 0, 2, 7).unwrap().replay, 7..7);
        assert!(matches!(plan(dir.path(), 1, 0, 2, 8), Err(Error::Store(_))));
        assert!(matches!(plan(dir.path(), 2, 0, 2, 0), Err(Error::Store(_))));
        assert!(matches!(plan(dir.path(), 1, 1, 2, 0), Err(Error::Store(_))));
    }
}
