//! The Tendermint write-ahead log, in the chain's rocksdb (column `consensus_wal`).
//!
//! The engine hands out entries (`Output::WalAppend`) for what must survive a crash: the
//! votes and proposals it signed or accepted, the proposed blocks it judged, the timeouts that
//! fired. Each is written **synced** under key `height (u64 BE) ‖ sequence (u32 BE)` before
//! anything the engine produced after it in the same batch is acted on (in particular before
//! the vote it protects is broadcast). After a `kill -9` the node opens the chain, starts the
//! engine at the height after the finalized block and replays that height's entries in
//! order: the engine is back in the round and step it reached, with the votes it signed, so
//! it cannot sign a conflicting one. Entries of decided heights are deleted when the next
//! height starts.

use crate::db::{col, Db, DbError};

/// The log of one node.
pub struct Wal<'a> {
    db: &'a Db,
}

fn key(height: u64, seq: u32) -> Vec<u8> {
    let mut k = height.to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl<'a> Wal<'a> {
    /// The log kept in `db`.
    pub fn new(db: &'a Db) -> Self {
        Wal { db }
    }

    /// The entries of `height`, in order.
    pub fn entries(&self, height: u64) -> Result<Vec<Vec<u8>>, DbError> {
        Ok(self
            .db
            .scan_prefix(col::CONSENSUS_WAL, &height.to_be_bytes())?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Appends `entry` to `height`'s log, synced, after the `count` entries it has.
    pub fn append(&self, height: u64, count: u32, entry: &[u8]) -> Result<(), DbError> {
        let mut batch = self.db.batch();
        batch.put(col::CONSENSUS_WAL, &key(height, count), entry);
        batch.commit()
    }

    /// Deletes the entries of every height below `height`.
    pub fn prune_below(&self, height: u64) -> Result<(), DbError> {
        let stale = self
            .db
            .keys_before(col::CONSENSUS_WAL, &height.to_be_bytes())?;
        if stale.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for k in stale {
            batch.delete(col::CONSENSUS_WAL, &k);
        }
        batch.commit()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_in_order_and_prune_by_height() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let wal = Wal::new(&db);
            wal.append(7, 0, b"a").unwrap();
            wal.append(7, 1, b"b").unwrap();
            wal.append(8, 0, b"c").unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let wal = Wal::new(&db);
        assert_eq!(wal.entries(7).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        wal.prune_below(8).unwrap();
        assert!(wal.entries(7).unwrap().is_empty());
        assert_eq!(wal.entries(8).unwrap(), vec![b"c".to_vec()]);
    }
}
