//! The journal: the last step a stage committed, written atomically after the step's
//! commitment and store entry exist. A restart resumes at `last_committed + 1` (see
//! [`crate::recovery`]).

use crate::error::{Error, Result};
use crate::files::write_atomic;
use parity_scale_codec::Encode;
use std::path::{Path, PathBuf};
use weft_primitives::step::{RunId, Step, StepCommitment};

/// The last step a stage committed, written atomically after the step's commitment and
/// store entry exist. A restart resumes at `last_committed + 1`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    /// The run.
    pub run: RunId,
    /// The stage.
    pub stage: usize,
    /// Number of stages.
    pub n_stages: usize,
    /// The last committed step.
    pub last_committed: Step,
    /// Hex of blake3 of the SCALE-encoded commitment of that step.
    pub commitment_hash: String,
    /// The step was committed by the slot's previous holder and this directory holds only
    /// the state it ended in (a checkpoint), fetched in a hand-over; nothing of it is in the
    /// store.
    #[serde(default)]
    pub handed_over: bool,
}

impl Journal {
    /// The journal file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("journal.json")
    }

    /// Reads the journal; `None` when there is none yet.
    pub fn read(data_dir: &Path) -> Result<Option<Journal>> {
        let p = Self::path(data_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Store(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Writes the journal atomically.
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Store(format!("cannot serialise the journal: {e}")))?;
        write_atomic(&Self::path(data_dir), &json)
    }

    /// The journal entry for `c`.
    pub fn for_commitment(run: RunId, stage: usize, n_stages: usize, c: &StepCommitment) -> Self {
        Journal {
            run,
            stage,
            n_stages,
            last_committed: c.step,
            commitment_hash: blake3::hash(&c.encode()).to_hex().to_string(),
            handed_over: false,
        }
    }
}
