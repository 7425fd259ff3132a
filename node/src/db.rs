//! The node's database: rocksdb with one column family per kind of record.
//!
//! | column | key | value |
//! |---|---|---|
//! | `meta` | `b"genesis"`, `b"best"`, `b"finalized"` | block hash (32 bytes) |
//! | `headers` | block hash | SCALE header |
//! | `bodies` | block hash | SCALE `Vec<Vec<u8>>` of encoded extrinsics |
//! | `justifications` | block hash | SCALE [`crate::consensus::Justification`] |
//! | `number_to_hash` | number (u64 big-endian) | block hash (canonical chain) |
//! | `tx_index` | extrinsic hash | SCALE `(block hash, index)` |
//! | `jmt_nodes` | borsh `NodeKey` | borsh `Node` of the Jellyfish Merkle state tree |
//! | `jmt_values` | key hash ‖ version (u64 big-endian) | SCALE `Option<Vec<u8>>` |
//! | `consensus_wal` | height (u64 BE) ‖ sequence (u32 BE) | a Tendermint write-ahead-log entry |
//!
//! Every imported block is written as **one** rocksdb `WriteBatch` (header, body, index, tree
//! nodes, values and the new best/finalized pointers together), with the write-ahead log on,
//! so a `kill -9` at any moment leaves either the whole block or none of it.
//!
//! Durability (issue 10): the commit is **synced** (`WriteOptions::sync`), so a block the node
//! has written, and finalized, survives a power loss, not only a process kill; the cost is
//! one `fdatasync` of the write-ahead log per block (measured with `weft-node benchmark
//! block`, see `docs/operations.md`). The log is replayed with
//! `WalRecoveryMode::AbsoluteConsistency`: a log that lost or garbled records it had
//! acknowledged (a truncated or damaged `*.log`) makes [`Db::open`] fail with
//! [`DbError::Damaged`] instead of silently opening at an older block, which for a validator
//! would mean signing a second block at a height it had signed. The way forward is in the
//! error: `weft-node purge-chain` and re-sync or `import-blocks`, or `--db-recover`
//! ([`Db::open_recovering`]). A log cut exactly at a record boundary looks whole to rocksdb;
//! the chain's finalized watermark outside the database catches that ([`crate::watermark`]).

//!
//! **Write failures** (issue 10). rocksdb stops accepting writes after an I/O error in its log
//! or a flush (a full disk, a file-size limit, descriptors exhausted) until the database is
//! opened again. So when a commit fails with an I/O error, [`Db`] records the failure
//! ([`Db::storage_error`], the `weft_storage_writable` gauge and
//! `weft_storage_write_failures_total` counter) and reopens itself in place before returning
//! the error; the caller retries (block production at its next slot). The reopen replays the
//! log with `TolerateCorruptedTailRecords`: the only torn record can be the write that just
//! failed, which was never acknowledged, while every acknowledged write is still checked by
//! the chain's finalized watermark. The first commit that succeeds clears the failure. If the
//! reopen itself fails (the disk is still full), every read fails too until a later commit
//! reopens it.
//!
//! **Damage found while running** (a table whose checksum fails on read: a corrupted or
//! truncated SST) is reported the same way, but kept until a restart: nothing heals it short
//! of `purge-chain` and a re-sync (at the next start rocksdb may refuse the database
//! outright, [`DbError::Damaged`]).

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Column family names.
pub mod col {
    /// Chain pointers.
    pub const META: &str = "meta";
    /// Headers by hash.
    pub const HEADERS: &str = "headers";
    /// Bodies by hash.
    pub const BODIES: &str = "bodies";
    /// Finality proofs by hash.
    pub const JUSTIFICATIONS: &str = "justifications";
    /// Canonical hash by number.
    pub const NUMBER_TO_HASH: &str = "number_to_hash";
    /// Extrinsic locations.
    pub const TX_INDEX: &str = "tx_index";
    /// State tree nodes.
    pub const JMT_NODES: &str = "jmt_nodes";
    /// State values by key hash and version.
    pub const JMT_VALUES: &str = "jmt_values";
    /// The Tendermint engine's write-ahead log of the current height.
    pub const CONSENSUS_WAL: &str = "consensus_wal";
    /// All of them.
    pub const ALL: [&str; 9] = [
        META,
        HEADERS,
        BODIES,
        JUSTIFICATIONS,
        NUMBER_TO_HASH,
        TX_INDEX,
        JMT_NODES,
        JMT_VALUES,
        CONSENSUS_WAL,
    ];
}

/// Meta keys.
pub mod meta {
    /// Genesis hash.
    pub const GENESIS: &[u8] = b"genesis";
    /// Best block hash.
    pub const BEST: &[u8] = b"best";
    /// Finalized block hash.
    pub const FINALIZED: &[u8] = b"finalized";
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// rocksdb reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A column family is missing (the database was not created by this node).
    #[error("missing column family {0}")]
    MissingColumn(&'static str),
    /// The database cannot be opened consistently: its write-ahead log or tables are damaged.
    #[error("the database at {path} is damaged and may have lost acknowledged writes ({reason}); refusing to start rather than roll back finalized blocks. Recover with `weft-node --db-recover …` (keep what the log holds up to the damage; a Tendermint node re-syncs the rest), or `weft-node purge-chain --base-path <BASE> -y` and re-sync, or re-import exported blocks with `weft-node import-blocks`")]
    Damaged {
        /// The database directory.
        path: String,
        /// What rocksdb reported.
        reason: String,
    },
    /// The database could not be reopened after a failed write; it is closed until a later
    /// write reopens it.
    #[error("the database is closed after a failed write and could not be reopened yet")]
    Closed,
    /// A stored record does not decode.
    #[error("corrupt record in {column}: {reason}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// Why.
        reason: String,
    },
}

/// Memory for memtables across all column families.
const MEMTABLE_BUDGET: usize = 32 * 1024 * 1024;
/// The shared block cache.
const BLOCK_CACHE: usize = 32 * 1024 * 1024;

/// A key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// The opened database.
pub struct Db {
    path: PathBuf,
    /// `None` only while a reopen after a failed write has not succeeded.
    inner: RwLock<Option<DB>>,
    /// Why the last commit failed; `None` once one succeeds.
    write_error: Mutex<Option<String>>,
    /// Why a read found the database damaged; kept until a restart.
    damaged: Mutex<Option<String>>,
    /// The gauge and counter that report write failures (see [`Db::report_to`]).
    gauges: OnceLock<(Gauge, Counter)>,
    /// When the last reopen after a failed write was tried.
    last_reopen: Mutex<Option<Instant>>,
}

/// Least time between two reopens after failed writes.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// How [`open_rocks`] opens the database.
#[derive(Clone, Copy)]
enum Access {
    ReadWrite,
    /// Reads only, nothing written (not even recovery): the fallback while writes fail.
    ReadOnly,
}

fn open_rocks(
    path: &Path,
    recovery: rocksdb::DBRecoveryMode,
    access: Access,
) -> Result<DB, DbError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_open_files(512);
    opts.set_wal_recovery_mode(recovery);
    // Keep memory bounded and flat: all memtables of all column families share one
    // 32 MiB budget (flushed when it fills), and one 32 MiB block cache holds data,
    // index and filter blocks.
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    opts.set_max_write_buffer_number(2);
    opts.set_max_background_jobs(2);
    let mut block_opts = rocksdb::BlockBasedOptions::default();
    let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
    block_opts.set_block_cache(&cache);
    block_opts.set_cache_index_and_filter_blocks(true);
    block_opts.set_pin_l0_filter_and_index_blocks_in_cache(true);
    block_opts.set_bloom_filter(10.0, false);
    let cfs = col::ALL.iter().map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&block_opts);
        cf_opts.set_write_buffer_size(MEMTABLE_BUDGET / 4);
        cf_opts.set_max_write_buffer_number(2);
        ColumnFamilyDescriptor::new(*name, cf_opts)
    });
    let opened = match access {
        Access::ReadWrite => DB::open_cf_descriptors(&opts, path, cfs),
        Access::ReadOnly => DB::open_cf_descriptors_read_only(&opts, path, cfs, false),
    };
    opened.map_err(|e| {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            tracing::error!(path = %path.display(), error = %e, "the database is damaged");
            DbError::Damaged {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        } else {
            DbError::Rocks(e)
        }
    })
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, DbError> {
    db.cf_handle(name).ok_or(DbError::MissingColumn(name))
}

impl Db {
    /// Opens (creating if needed) the database at `path`; a damaged write-ahead log is
    /// refused ([`DbError::Damaged`]).
    pub fn open(path: &Path) -> Result<Self, DbError> {
        // Refuse a log that lost acknowledged (synced) records rather than open an older chain.
        Self::open_with(path, rocksdb::DBRecoveryMode::AbsoluteConsistency)
    }

    /// Opens the database at `path`, replaying its write-ahead log up to the first damaged
    /// record and dropping the rest (`--db-recover`; the chain then checks what was lost
    /// against its watermark).
    pub fn open_recovering(path: &Path) -> Result<Self, DbError> {
        tracing::warn!(path = %path.display(), "--db-recover: a damaged write-ahead log is replayed up to its first damaged record");
        Self::open_with(path, rocksdb::DBRecoveryMode::PointInTime)
    }

    fn open_with(path: &Path, recovery: rocksdb::DBRecoveryMode) -> Result<Self, DbError> {
        Ok(Db {
            path: path.to_path_buf(),
            inner: RwLock::new(Some(open_rocks(path, recovery, Access::ReadWrite)?)),
            write_error: Mutex::new(None),
            damaged: Mutex::new(None),
            gauges: OnceLock::new(),
            last_reopen: Mutex::new(None),
        })
    }

    /// Runs `f` on the open database.
    fn with<R>(&self, f: impl FnOnce(&DB) -> Result<R, DbError>) -> Result<R, DbError> {
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let result = f(guard.as_ref().ok_or(DbError::Closed)?);
        if let Err(e) = &result {
            self.note_read(e);
        }
        result
    }

    /// Reports write failures on `writable` (1 or 0) and `failures` from now on.
    pub fn report_to(&self, writable: Gauge, failures: Counter) {
        writable.set(i64::from(self.storage_error().is_none()));
        let _ = self.gauges.set((writable, failures));
    }

    /// Why the database cannot be relied on now: found damaged (kept until a restart), or
    /// the last write failed (cleared by the next that succeeds); `None` when healthy.
    pub fn storage_error(&self) -> Option<String> {
        let damaged = self.damaged.lock().unwrap_or_else(|e| e.into_inner());
        damaged.clone().or_else(|| {
            self.write_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Notes a read that found the database damaged (a table whose checksum fails): blocks
    /// cannot be built or checked any more, and nothing heals that short of `purge-chain`
    /// and a re-sync, so the node says so until it is restarted.
    fn note_read(&self, error: &DbError) {
        let DbError::Rocks(e) = error else { return };
        if e.kind() != rocksdb::ErrorKind::Corruption {
            return;
        }
        let mut damaged = self.damaged.lock().unwrap_or_else(|e| e.into_inner());
        if damaged.is_none() {
            tracing::error!(error = %e, "💾 the database is damaged: no blocks and no transactions; stop the node, `weft-node purge-chain` and re-sync");
            *damaged = Some(format!("the database is damaged: {e}"));
            if let Some((writable, failures)) = self.gauges.get() {
                writable.set(0);
                failures.inc();
            }
        }
    }

    fn note_write(&self, result: &Result<(), DbError>) {
        let mut error = self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                if error.take().is_some() {
                    tracing::info!("💾 database writes succeed again");
                }
            }
            Err(e) => {
                if error.is_none() {
                    tracing::error!(error = %e, "💾 cannot write the database: no blocks and no transactions until writes succeed");
                }
                *error = Some(e.to_string());
                if let Some((_, failures)) = self.gauges.get() {
                    failures.inc();
                }
            }
        }
        let damaged = self
            .damaged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if let Some((writable, _)) = self.gauges.get() {
            writable.set(i64::from(error.is_none() && !damaged));
        }
    }

    /// Closes and reopens rocksdb after a failed write (see the module docs), at most once
    /// per [`REOPEN_INTERVAL`]. If it cannot be opened for writing, it is opened read-only,
    /// so reads (RPC, pool validation) go on while writes keep failing and retrying.
    fn reopen(&self) {
        {
            let mut last = self.last_reopen.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *guard = None; // closes the old instance first: one process, one lock on the files
        let tolerate = rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords;
        match open_rocks(&self.path, tolerate, Access::ReadWrite) {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "💾 reopened the database after a failed write");
                *guard = Some(db);
            }
            Err(e) => {
                tracing::warn!(error = %e, "💾 reopening the database for writing failed; serving reads only, retrying at the next write");
                match open_rocks(&self.path, tolerate, Access::ReadOnly) {
                    Ok(db) => *guard = Some(db),
                    Err(e) => {
                        tracing::error!(error = %e, "💾 the database cannot be opened at all")
                    }
                }
            }
        }
    }

    /// Reads a record.
    pub fn get(&self, column: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.with(|db| Ok(db.get_cf(cf(db, column)?, key)?))
    }

    /// The last record in `column` whose key is ≤ `key` and starts with `prefix`.
    pub fn get_prev_with_prefix(
        &self,
        column: &'static str,
        key: &[u8],
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, DbError> {
        self.with(|db| {
            let mut it = db.raw_iterator_cf(cf(db, column)?);
            it.seek_for_prev(key);
            if it.valid() {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    if k.starts_with(prefix) {
                        return Ok(Some(v.to_vec()));
                    }
                }
            }
            it.status()?;
            Ok(None)
        })
    }

    /// All records of `column` whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, column: &'static str, prefix: &[u8]) -> Result<Vec<Record>, DbError> {
        self.with(|db| {
            let mut it = db.raw_iterator_cf(cf(db, column)?);
            it.seek(prefix);
            let mut out = Vec::new();
            while it.valid() {
                match (it.key(), it.value()) {
                    (Some(k), Some(v)) if k.starts_with(prefix) => {
                        out.push((k.to_vec(), v.to_vec()))
                    }
                    _ => break,
                }
                it.next();
            }
            it.status()?;
            Ok(out)
        })
    }

    /// All keys of `column` before `end`, in key order.
    pub fn keys_before(&self, column: &'static str, end: &[u8]) -> Result<Vec<Vec<u8>>, DbError> {
        self.with(|db| {
            let mut it = db.raw_iterator_cf(cf(db, column)?);
            it.seek_to_first();
            let mut out = Vec::new();
            while it.valid() {
                match it.key() {
                    Some(k) if k < end => out.push(k.to_vec()),
                    _ => break,
                }
                it.next();
            }
            it.status()?;
            Ok(out)
        })
    }

    /// Starts a batch of writes.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            db: self,
            inner: WriteBatch::default(),
            error: None,
        }
    }

    /// Flushes memtables to disk (used before a clean shutdown).
    pub fn flush(&self) -> Result<(), DbError> {
        self.with(|db| {
            for name in col::ALL {
                db.flush_cf(cf(db, name)?)?;
            }
            Ok(())
        })
    }
}

/// An atomic batch of writes.
pub struct Batch<'a> {
    db: &'a Db,
    inner: WriteBatch,
    error: Option<DbError>,
}

impl Batch<'_> {
    /// Adds a put.
    pub fn put(&mut self, column: &'static str, key: &[u8], value: &[u8]) {
        let batch = &mut self.inner;
        let added = self.db.with(|db| {
            batch.put_cf(cf(db, column)?, key, value);
            Ok(())
        });
        if let Err(e) = added {
            self.error = Some(e);
        }
    }

    /// Adds a delete.
    pub fn delete(&mut self, column: &'static str, key: &[u8]) {
        let batch = &mut self.inner;
        let added = self.db.with(|db| {
            batch.delete_cf(cf(db, column)?, key);
            Ok(())
        });
        if let Err(e) = added {
            self.error = Some(e);
        }
    }

    /// Writes everything atomically through the write-ahead log, synced to disk before it
    /// returns. A failure is recorded, and after an I/O error the database is reopened
    /// (see the module docs).
    pub fn commit(self) -> Result<(), DbError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        opts.disable_wal(false);
        let batch = self.inner;
        let result = self.db.with(|db| Ok(db.write_opt(batch, &opts)?));
        self.db.note_write(&result);
        if matches!(result, Err(DbError::Rocks(_)) | Err(DbError::Closed)) {
            self.db.reopen();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flips bytes in the middle of every table file under `dir`.
    fn corrupt_tables(dir: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sst") {
                let mut bytes = std::fs::read(&p).unwrap();
                for b in bytes.iter_mut().skip(16).take(64) {
                    *b ^= 0x5a;
                }
                std::fs::write(&p, bytes).unwrap();
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_damaged_table_found_by_a_read_is_reported_and_stays_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let mut batch = db.batch();
            for i in 0u32..2_000 {
                batch.put(col::HEADERS, &i.to_be_bytes(), &[7u8; 100]);
            }
            batch.commit().unwrap();
            db.flush().unwrap();
        }
        assert!(corrupt_tables(dir.path()) > 0, "the flush wrote tables");
        // Opening reads the tables' footers and indexes, not the damaged data block.
        let db = Db::open(dir.path()).expect("the damage is found only when it is read");
        let (writable, failures) = (Gauge::default(), Counter::default());
        db.report_to(writable.clone(), failures.clone());
        assert_eq!(db.storage_error(), None);
        assert!(db.get(col::HEADERS, &5u32.to_be_bytes()).is_err());
        let why = db.storage_error().expect("the damage is reported");
        assert!(why.contains("damaged"), "{why}");
        assert_eq!(writable.get(), 0);
        assert_eq!(failures.get(), 1);
        // A write that succeeds does not hide it.
        let mut batch = db.batch();
        batch.put(col::META, b"probe", b"1");
        batch.commit().unwrap();
        assert!(db.storage_error().is_some());
        assert_eq!(writable.get(), 0);
    }
}
