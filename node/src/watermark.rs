//! The finalized watermark: the newest finalized block the database has acknowledged,
//! recorded **outside** rocksdb, so that a database that silently lost acknowledged writes is
//! caught when it is opened.
//!
//! rocksdb replays its write-ahead log with `AbsoluteConsistency` (see [`crate::db`]), which
//! refuses a log whose framing is damaged. A log cut exactly at a record boundary (a lost
//! tail of whole records: a filesystem that dropped the last appends, a copy taken while the
//! node ran, a restored snapshot) looks like a clean, shorter log, and the database would open
//! at an older block — for a validator, the way to sign a second block at a height. The
//! watermark closes that gap: after every synced write that moves the finalized block, the
//! node writes `<number> <hash>` to `<db>/FINALIZED-WATERMARK` (temporary file, fsync,
//! rename). On open, a database whose finalized block is below the watermark (or at its
//! number with another hash) lost acknowledged writes: the node refuses to start and says so
//! ([`WatermarkError::Lost`]), unless started with `--db-recover`, which accepts the loss
//! (the lost blocks are re-synced from peers on a Tendermint chain; the validator's signing
//! state keeps it from signing any of those heights again) and moves the watermark down.
//!
//! The watermark is written after the database write returns, so it never claims more than
//! the database acknowledged; a crash between the two leaves it one block behind, which only
//! means that single block's loss would go unnoticed. `purge-chain` removes it with the
//! database.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use weft_primitives::{BlockNumber, Hash};

/// The file name inside the database directory.
pub const FILE_NAME: &str = "FINALIZED-WATERMARK";

/// What is wrong with the watermark or the database it describes.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// The database holds less than it acknowledged.
    #[error("the database at {path} lost acknowledged writes: this node had finalized #{recorded} ({recorded_hash}) but the database ends at finalized #{found} ({found_hash}). Refusing to start rather than roll back finalized blocks. Recover with `weft-node --db-recover …` (accept the loss; a Tendermint node re-syncs the lost blocks from its peers, and a validator's signing state keeps it from signing them again) or `weft-node purge-chain --base-path <BASE> -y` and re-sync")]
    Lost {
        /// The database directory.
        path: String,
        /// The watermark's block number.
        recorded: BlockNumber,
        /// The watermark's block hash.
        recorded_hash: Hash,
        /// The database's finalized number.
        found: BlockNumber,
        /// The database's finalized hash.
        found_hash: Hash,
    },
    /// The watermark file cannot be read or written.
    #[error("finalized watermark {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The watermark file does not parse.
    #[error("finalized watermark {path} is damaged ({content:?}); start with --db-recover to rewrite it from the database")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
}

/// The watermark file of one database.
#[derive(Debug, Clone)]
pub struct Watermark {
    path: PathBuf,
}

impl Watermark {
    /// The watermark of the database at `db`.
    pub fn of(db: &Path) -> Self {
        Watermark {
            path: db.join(FILE_NAME),
        }
    }

    /// The recorded block, if any.
    pub fn read(&self) -> Result<Option<(BlockNumber, Hash)>, WatermarkError> {
        let content = match fs::read_to_string(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(WatermarkError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let damaged = || WatermarkError::Damaged {
            path: self.path.clone(),
            content: content.chars().take(100).collect(),
        };
        let mut parts = content.split_whitespace();
        let number = parts
            .next()
            .and_then(|n| n.parse::<BlockNumber>().ok())
            .ok_or_else(damaged)?;
        let hash = parts
            .next()
            .and_then(|h| h.parse::<Hash>().ok())
            .ok_or_else(damaged)?;
        Ok(Some((number, hash)))
    }

    /// Records `(number, hash)`: temporary file, fsync, rename.
    pub fn write(&self, number: BlockNumber, hash: &Hash) -> Result<(), WatermarkError> {
        let io = |source| WatermarkError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(format!("{number} {hash}\n").as_bytes())
                .map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Compares the database's finalized block with the watermark: `Lost` when the database
    /// is behind it. A database ahead of it is fine (the watermark write after the last block
    /// did not happen).
    pub fn check(
        &self,
        db: &Path,
        finalized: BlockNumber,
        finalized_hash: Hash,
    ) -> Result<(), WatermarkError> {
        match self.read()? {
            Some((n, h)) if n > finalized || (n == finalized && h != finalized_hash) => {
                Err(WatermarkError::Lost {
                    path: db.display().to_string(),
                    recorded: n,
                    recorded_hash: h,
                    found: finalized,
                    found_hash: finalized_hash,
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_behind_its_watermark_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watermark::of(dir.path());
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        assert_eq!(w.read().unwrap(), None);
        w.check(dir.path(), 0, a).unwrap();
        w.write(6, &a).unwrap();
        assert_eq!(w.read().unwrap(), Some((6, a)));
        w.check(dir.path(), 6, a).unwrap();
        w.check(dir.path(), 7, b).unwrap();
        assert!(matches!(
            w.check(dir.path(), 5, b),
            Err(WatermarkError::Lost {
                recorded: 6,
                found: 5,
                ..
            })
        ));
        assert!(matches!(
            w.check(dir.path(), 6, b),
            Err(WatermarkError::Lost { .. })
        ));
        fs::write(dir.path().join(FILE_NAME), "six").unwrap();
        assert!(matches!(w.read(), Err(WatermarkError::Damaged { .. })));
    }
}
