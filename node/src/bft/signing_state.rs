//! The validator's signing record on disk: `weft_consensus::guard`'s [`SignedRecord`] kept
//! in a small JSON file beside the keys, outside the chain database, so that wiping or
//! losing the database (`purge-chain`, `--db-recover`, a dead disk restored from another
//! node) never lets the validator sign a second, conflicting vote or proposal at a height it
//! has signed.
//!
//! Default path `<base-path>/chains/<id>/signing-state.json` (`--signing-state-file`);
//! `purge-chain` removes the database only, never this file. Moving a validator to another
//! machine means moving this file with its keys.
//!
//! A new signature is recorded before it is made: the record is written to
//! `signing-state.json.tmp`, synced, renamed over the file, and the directory synced; only
//! then does the engine sign. A crash in between leaves either the old record (nothing was
//! signed yet) or the new one (the signature may or may not exist; either way it is not
//! repeated for another block). A file that exists but does not parse stops the node at
//! startup: guessing would risk equivocation.
//!
//! ```json
//! {"height":42,"signed":[{"round":0,"kind":"prevote","block":"0x…"},{"round":0,"kind":"precommit","block":"0x…"}]}
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use weft_consensus::guard::{Allowed, GuardError, SignGuard, SignRequest, SignedRecord};

/// The file name under the chain directory.
pub const FILE_NAME: &str = "signing-state.json";

/// Why the signing state cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningStateError {
    /// Reading failed.
    #[error("cannot read the signing state {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("the signing state {path} is damaged ({reason}); refusing to validate, since signing without it could equivocate. Restore it from a backup, or, only if you are sure this validator never signed above a height H, write {{\"height\":H,\"signed\":[]}} into it")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

/// The record and the file that holds it; the engine's [`SignGuard`].
#[derive(Debug)]
pub struct SigningStateFile {
    path: PathBuf,
    record: SignedRecord,
}

impl SigningStateFile {
    /// Loads `path`; a missing file is an empty record (a validator that never signed).
    pub fn load(path: &Path) -> Result<Self, SigningStateError> {
        let record = match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| SigningStateError::Damaged {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SignedRecord::default(),
            Err(source) => {
                return Err(SigningStateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(SigningStateFile {
            path: path.to_path_buf(),
            record,
        })
    }

    /// What has been signed.
    pub fn record(&self) -> &SignedRecord {
        &self.record
    }

    /// Writes `record` durably: temporary file, fsync, rename, fsync of the directory.
    fn persist(&self, record: &SignedRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl SignGuard for SigningStateFile {
    fn approve(&mut self, request: &SignRequest) -> Result<(), GuardError> {
        let mut next = self.record.clone();
        if next.approve(request)? == Allowed::Again {
            return Ok(());
        }
        self.persist(&next)
            .map_err(|e| GuardError::Storage(format!("{}: {e}", self.path.display())))?;
        self.record = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_consensus::guard::{Refusal, SignKind};
    use weft_primitives::Hash;

    fn vote(height: u64, kind: SignKind, block: u8) -> SignRequest {
        SignRequest {
            height,
            round: 0,
            kind,
            block: Some(Hash([block; 32])),
        }
    }

    #[test]
    fn a_signature_is_on_disk_before_it_is_allowed_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut g = SigningStateFile::load(&path).unwrap();
        assert_eq!(g.record(), &SignedRecord::default());
        g.approve(&vote(3, SignKind::Prevote, 1)).unwrap();
        g.approve(&vote(3, SignKind::Precommit, 1)).unwrap();
        let mut again = SigningStateFile::load(&path).unwrap();
        assert_eq!(again.record(), g.record());
        assert!(matches!(
            again.approve(&vote(3, SignKind::Precommit, 2)),
            Err(GuardError::Refused(Refusal::Conflict { .. }))
        ));
        assert!(matches!(
            again.approve(&vote(2, SignKind::Prevote, 1)),
            Err(GuardError::Refused(Refusal::HeightBelow { .. }))
        ));
        again.approve(&vote(3, SignKind::Precommit, 1)).unwrap();
        again.approve(&vote(4, SignKind::Prevote, 1)).unwrap();
        assert_eq!(SigningStateFile::load(&path).unwrap().record().height, 4);
    }

    #[test]
    fn a_damaged_file_is_refused_and_an_unwritable_one_refuses_to_sign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"{\"height\": 7, \"sig").unwrap();
        assert!(matches!(
            SigningStateFile::load(&path),
            Err(SigningStateError::Damaged { .. })
        ));
        // The file's directory is gone: nothing can be recorded, so nothing is signed.
        let gone = dir.path().join("gone").join(FILE_NAME);
        let mut g = SigningStateFile::load(&gone).unwrap();
        assert!(matches!(
            g.approve(&vote(1, SignKind::Prevote, 1)),
            Err(GuardError::Storage(_))
        ));
        assert_eq!(g.record(), &SignedRecord::default());
    }
}
