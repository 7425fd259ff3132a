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
//! error: `weft-node purge-chain` and re-sync or `import-blocks`.

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};
use std::path::Path;

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
    #[error("the database at {path} is damaged and may have lost acknowledged writes ({reason}); refusing to start rather than roll back finalized blocks. Recover with `weft-node purge-chain --base-path <BASE> -y` and re-sync, or re-import exported blocks with `weft-node import-blocks`")]
    Damaged {
        /// The database directory.
        path: String,
        /// What rocksdb reported.
        reason: String,
    },
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
    inner: DB,
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(512);
        // Refuse a log that lost acknowledged (synced) records rather than open an older chain.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::AbsoluteConsistency);
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
        let inner = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            if e.kind() == rocksdb::ErrorKind::Corruption {
                tracing::error!(path = %path.display(), error = %e, "the database is damaged");
                DbError::Damaged {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            } else {
                DbError::Rocks(e)
            }
        })?;
        Ok(Db { inner })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.inner
            .cf_handle(name)
            .ok_or(DbError::MissingColumn(name))
    }

    /// Reads a record.
    pub fn get(&self, column: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.inner.get_cf(self.cf(column)?, key)?)
    }

    /// The last record in `column` whose key is ≤ `key` and starts with `prefix`.
    pub fn get_prev_with_prefix(
        &self,
        column: &'static str,
        key: &[u8],
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, DbError> {
        let mut it = self.inner.raw_iterator_cf(self.cf(column)?);
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
    }

    /// All records of `column` whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, column: &'static str, prefix: &[u8]) -> Result<Vec<Record>, DbError> {
        let mut it = self.inner.raw_iterator_cf(self.cf(column)?);
        it.seek(prefix);
        let mut out = Vec::new();
        while it.valid() {
            match (it.key(), it.value()) {
                (Some(k), Some(v)) if k.starts_with(prefix) => out.push((k.to_vec(), v.to_vec())),
                _ => break,
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// All keys of `column` before `end`, in key order.
    pub fn keys_before(&self, column: &'static str, end: &[u8]) -> Result<Vec<Vec<u8>>, DbError> {
        let mut it = self.inner.raw_iterator_cf(self.cf(column)?);
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
        for name in col::ALL {
            self.inner.flush_cf(self.cf(name)?)?;
        }
        Ok(())
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
        match self.db.cf(column) {
            Ok(cf) => self.inner.put_cf(cf, key, value),
            Err(e) => self.error = Some(e),
        }
    }

    /// Adds a delete.
    pub fn delete(&mut self, column: &'static str, key: &[u8]) {
        match self.db.cf(column) {
            Ok(cf) => self.inner.delete_cf(cf, key),
            Err(e) => self.error = Some(e),
        }
    }

    /// Writes everything atomically through the write-ahead log, synced to disk before it
    /// returns.
    pub fn commit(self) -> Result<(), DbError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        opts.disable_wal(false);
        self.db.inner.write_opt(self.inner, &opts)?;
        Ok(())
    }
}
