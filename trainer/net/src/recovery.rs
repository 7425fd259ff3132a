//! Crash recovery of a stage: where a restarted stage stands.
//!
//! A stage writes, per step and in this order: the step's tensors and commitment into the
//! store ([`crate::store`]), then the journal ([`crate::journal`]), and a checkpoint every
//! `checkpoint_every` steps. After `kill -9` at any moment it restarts from its checkpoint
//! (step `c`) and must redo, from the store, every step the journal says it committed after
//! it (`c ..= last_committed`), each replay reproducing its stored commitment bit for bit;
//! it then trains on from `last_committed + 1` and asks its partners to resend what they
//! sent it from there on. [`plan`] turns what is on disk into that plan and refuses a data
//! directory that belongs to another stage or whose checkpoint is ahead of its journal.
//! Running the replays is the trainer's (it holds the model).

use crate::error::{Error, Result};
use crate::journal::Journal;
use std::ops::Range;
use std::path::Path;
use weft_primitives::step::{RunId, Step};

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
        had_journal: true,
    })
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
        assert_eq!((fresh.replay, fresh.next_step, fresh.had_journal), (0..0, 0, false));
        let c = StepCommitment {
            step: 6,
            roots: StepRoots::default(),
            loss: None,
        };
        Journal::for_commitment(1, 0, 2, &c).write(dir.path()).unwrap();
        let p = plan(dir.path(), 1, 0, 2, 4).unwrap();
        assert_eq!((p.replay, p.next_step, p.had_journal), (4..7, 7, true));
        assert_eq!(plan(dir.path(), 1, 0, 2, 7).unwrap().replay, 7..7);
        assert!(matches!(plan(dir.path(), 1, 0, 2, 8), Err(Error::Store(_))));
        assert!(matches!(plan(dir.path(), 2, 0, 2, 0), Err(Error::Store(_))));
        assert!(matches!(plan(dir.path(), 1, 1, 2, 0), Err(Error::Store(_))));
    }
}
