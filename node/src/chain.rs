//! The chain: genesis, block building, block import, and reads of blocks and state.
//!
//! Import is linear: a block must extend the current best block (finality is immediate, so
//! there are no forks to choose between). Importing checks, in order: the block is not known,
//! its parent is the best block, the extrinsics root, the finality proof (through the
//! [`ConsensusEngine`] seam, against the validator set in the parent state), then executes the
//! block with the runtime and compares the resulting state root with the header's. Only then
//! is it written, as one atomic batch. Building a block runs the same runtime code on pool
//! transactions and writes the result the same way, without executing twice.

use crate::consensus::{ConsensusEngine, ConsensusError, Justification};
use crate::db::{col, meta, Db, DbError};
use crate::state::{self, StateError, StateUpdate, StateView};
use crate::watermark::{Watermark, WatermarkError};
use parity_scale_codec::{Decode, Encode};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::broadcast;
use weft_primitives::header::extrinsics_root;
use weft_primitives::{
    AccountId, BlockNumber, Digest, DigestItem, Hash, Header, Moment, MAX_BLOCK_SIZE,
};
use weft_runtime::executive::{execute_block, ApplyError, BlockContext};
use weft_runtime::{
    build_genesis, validate_transaction, Block, BlockBuilder, BlockError, Extrinsic,
    InvalidTransaction, ValidTransaction,
};

/// Why the chain could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database lost acknowledged writes, or its watermark is unusable.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// State tree failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// The runtime rejected the block.
    #[error("block execution failed: {0}")]
    Execution(#[from] BlockError),
    /// Genesis could not be built.
    #[error("genesis: {0}")]
    Genesis(#[from] weft_runtime::genesis::GenesisError),
    /// The database was created for another chain spec.
    #[error("the database at this base path belongs to another chain (genesis {found}, expected {expected}); use another --base-path or purge-chain")]
    GenesisMismatch {
        /// Stored.
        found: Hash,
        /// From the spec.
        expected: Hash,
    },
    /// A record the chain needs is missing.
    #[error("missing {0}")]
    Missing(String),
    /// The block is already in the chain.
    #[error("block {0} is already imported")]
    AlreadyKnown(Hash),
    /// The block does not extend the best block.
    #[error("block's parent {parent} is not the best block {best}")]
    NotOnBest {
        /// The block's parent.
        parent: Hash,
        /// The best block.
        best: Hash,
    },
    /// The extrinsics root does not match the body.
    #[error("extrinsics root mismatch")]
    BadExtrinsicsRoot,
    /// The state root does not match the execution.
    #[error("state root mismatch: header {header}, computed {computed}")]
    BadStateRoot {
        /// In the header.
        header: Hash,
        /// Computed.
        computed: Hash,
    },
    /// The finality proof is missing or wrong.
    #[error("finality: {0}")]
    Consensus(#[from] ConsensusError),
    /// An imported block has no finality proof.
    #[error("block has no justification")]
    MissingJustification,
    /// The block is too large.
    #[error("block too large: {0} bytes")]
    TooLarge(usize),
}

/// What subscribers hear about.
#[derive(Debug, Clone)]
pub enum ChainEvent {
    /// A new best block (in this engine, also final).
    Imported {
        /// Its hash.
        hash: Hash,
        /// Its header.
        header: Header,
        /// Hashes of its extrinsics, in order.
        extrinsics: Vec<Hash>,
        /// Whether it is final.
        finalized: bool,
    },
}

/// A stored block: its header, its encoded extrinsics and its finality proof.
pub type StoredBlock = (Header, Vec<Vec<u8>>, Option<Justification>);

/// Best and finalized heads.
#[derive(Debug, Clone)]
pub struct Heads {
    /// Best block hash.
    pub best_hash: Hash,
    /// Best header.
    pub best: Header,
    /// Finalized hash.
    pub finalized_hash: Hash,
    /// Finalized header.
    pub finalized: Header,
}

/// A block built by this node.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// Its hash.
    pub hash: Hash,
    /// Its header.
    pub header: Header,
    /// Hashes of the included extrinsics.
    pub included: Vec<Hash>,
    /// Candidates that turned out invalid, with why.
    pub rejected: Vec<(Hash, InvalidTransaction)>,
    /// Time spent building and writing.
    pub elapsed: std::time::Duration,
}

/// A block executed on the best block but not yet written.
pub struct ExecutedBlock {
    /// Its hash.
    pub hash: Hash,
    /// The block.
    pub block: Block,
    /// Its encoded extrinsics.
    bodies: Vec<Vec<u8>>,
    /// Its state changes.
    update: StateUpdate,
    /// Hashes of its extrinsics.
    pub included: Vec<Hash>,
    /// Candidates that turned out invalid while building, with why.
    pub rejected: Vec<(Hash, InvalidTransaction)>,
    /// Time spent executing.
    pub elapsed: std::time::Duration,
}

/// A candidate transaction for a block.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its hash.
    pub hash: Hash,
    /// Decoded.
    pub extrinsic: Extrinsic,
    /// Encoded.
    pub encoded: Vec<u8>,
}

/// The chain database with its heads.
pub struct Chain {
    db: Db,
    chain_name: String,
    genesis_hash: Hash,
    heads: RwLock<Heads>,
    import_lock: Mutex<()>,
    events: broadcast::Sender<ChainEvent>,
    engine: Arc<dyn ConsensusEngine>,
    /// The newest finalized block acknowledged, recorded outside the database.
    watermark: Watermark,
}

fn decode<T: Decode>(column: &'static str, bytes: &[u8]) -> Result<T, DbError> {
    T::decode(&mut &bytes[..]).map_err(|e| DbError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

fn hash_from(column: &'static str, bytes: &[u8]) -> Result<Hash, DbError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| DbError::Corrupt {
        column,
        reason: "hash length".into(),
    })?;
    Ok(Hash(arr))
}

impl Chain {
    /// Opens the chain at `path`, writing genesis if the database is new; refuses a damaged
    /// database or one that lost acknowledged writes.
    pub fn open(
        path: &Path,
        chain_name: &str,
        genesis: &weft_runtime::GenesisConfig,
        engine: Arc<dyn ConsensusEngine>,
    ) -> Result<Self, ChainError> {
        Self::open_with(path, chain_name, genesis, engine, false)
    }

    /// [`Chain::open`]; with `recover` (`--db-recover`) a damaged write-ahead log is replayed
    /// up to its first damaged record and a database behind its finalized watermark is
    /// accepted (see [`crate::watermark`]), both with a warning saying what was lost.
    pub fn open_with(
        path: &Path,
        chain_name: &str,
        genesis: &weft_runtime::GenesisConfig,
        engine: Arc<dyn ConsensusEngine>,
        recover: bool,
    ) -> Result<Self, ChainError> {
        std::fs::create_dir_all(path)
            .map_err(|e| ChainError::Missing(format!("database directory: {e}")))?;
        let db = if recover {
            Db::open_recovering(path)?
        } else {
            Db::open(path)?
        };
        let changes = build_genesis(chain_name, genesis)?;
        let update = state::compute_update(&db, &changes, 0)?;
        let genesis_header = Header {
            parent_hash: Hash::ZERO,
            number: 0,
            state_root: update.root,
            extrinsics_root: extrinsics_root::<Vec<u8>>(&[]),
            timestamp: 0,
            author: AccountId::default(),
            digest: Digest::default(),
        };
        let genesis_hash = genesis_header.hash();
        match db.get(col::META, meta::GENESIS)? {
            Some(stored) => {
                let found = hash_from(col::META, &stored)?;
                if found != genesis_hash {
                    return Err(ChainError::GenesisMismatch {
                        found,
                        expected: genesis_hash,
                    });
                }
            }
            None => {
                let mut batch = db.batch();
                state::write_update(&mut batch, &update)?;
                write_block_records(&mut batch, &genesis_header, genesis_hash, &[], None);
                batch.put(col::META, meta::GENESIS, genesis_hash.as_bytes());
                batch.put(col::META, meta::BEST, genesis_hash.as_bytes());
                batch.put(col::META, meta::FINALIZED, genesis_hash.as_bytes());
                batch.commit()?;
                tracing::info!(%genesis_hash, "wrote genesis");
            }
        }
        let best_hash = hash_from(
            col::META,
            &db.get(col::META, meta::BEST)?
                .ok_or_else(|| ChainError::Missing("best".into()))?,
        )?;
        let finalized_hash = hash_from(
            col::META,
            &db.get(col::META, meta::FINALIZED)?
                .ok_or_else(|| ChainError::Missing("finalized".into()))?,
        )?;
        let read_header = |h: &Hash| -> Result<Header, ChainError> {
            let bytes = db
                .get(col::HEADERS, h.as_bytes())?
                .ok_or_else(|| ChainError::Missing(format!("header {h}")))?;
            Ok(decode(col::HEADERS, &bytes)?)
        };
        let heads = Heads {
            best: read_header(&best_hash)?,
            best_hash,
            finalized: read_header(&finalized_hash)?,
            finalized_hash,
        };
        let watermark = Watermark::of(path);
        match watermark.check(path, heads.finalized.number, finalized_hash) {
            Ok(()) => {}
            Err(e) if recover => {
                tracing::warn!(
                    error = %e,
                    "--db-recover: accepting the database as it is, at finalized #{}; blocks after it are re-synced (Tendermint) or authored anew (dev)",
                    heads.finalized.number
                );
                watermark.write(heads.finalized.number, &finalized_hash)?;
            }
            Err(e) => {
                tracing::error!(error = %e, "the database lost acknowledged writes");
                return Err(e.into());
            }
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Chain {
            db,
            chain_name: chain_name.to_string(),
            genesis_hash,
            heads: RwLock::new(heads),
            import_lock: Mutex::new(()),
            events,
            engine,
            watermark,
        })
    }

    /// The database, for records kept beside the chain (the consensus write-ahead log).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The chain's name.
    pub fn name(&self) -> &str {
        &self.chain_name
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The consensus engine.
    pub fn engine(&self) -> &Arc<dyn ConsensusEngine> {
        &self.engine
    }

    /// Best and finalized heads.
    pub fn heads(&self) -> Heads {
        match self.heads.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Subscribes to chain events.
    pub fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }

    /// A header by hash.
    pub fn header(&self, hash: &Hash) -> Result<Option<Header>, ChainError> {
        Ok(self
            .db
            .get(col::HEADERS, hash.as_bytes())?
            .map(|b| decode(col::HEADERS, &b))
            .transpose()?)
    }

    /// The canonical hash at `number`.
    pub fn hash_of(&self, number: BlockNumber) -> Result<Option<Hash>, ChainError> {
        Ok(self
            .db
            .get(col::NUMBER_TO_HASH, &number.to_be_bytes())?
            .map(|b| hash_from(col::NUMBER_TO_HASH, &b))
            .transpose()?)
    }

    /// The encoded extrinsics of a block.
    pub fn body(&self, hash: &Hash) -> Result<Option<Vec<Vec<u8>>>, ChainError> {
        Ok(self
            .db
            .get(col::BODIES, hash.as_bytes())?
            .map(|b| decode(col::BODIES, &b))
            .transpose()?)
    }

    /// The finality proof of a block.
    pub fn justification(&self, hash: &Hash) -> Result<Option<Justification>, ChainError> {
        Ok(self
            .db
            .get(col::JUSTIFICATIONS, hash.as_bytes())?
            .map(|b| decode(col::JUSTIFICATIONS, &b))
            .transpose()?)
    }

    /// Where an extrinsic was included: block hash and index.
    pub fn extrinsic_location(&self, hash: &Hash) -> Result<Option<(Hash, u32)>, ChainError> {
        Ok(self
            .db
            .get(col::TX_INDEX, hash.as_bytes())?
            .map(|b| decode(col::TX_INDEX, &b))
            .transpose()?)
    }

    /// The state after block `number`.
    pub fn state_at(&self, number: BlockNumber) -> StateView<'_> {
        StateView::new(&self.db, number)
    }

    /// The state after the best block.
    pub fn best_state(&self) -> StateView<'_> {
        self.state_at(self.heads().best.number)
    }

    /// Checks a transaction against the best state, for the pool.
    pub fn validate_transaction(
        &self,
        xt: &Extrinsic,
        len: usize,
    ) -> Result<ValidTransaction, ApplyError> {
        let heads = self.heads();
        validate_transaction(
            &self.state_at(heads.best.number),
            heads.best.number,
            heads.best_hash,
            xt,
            len,
        )
    }

    /// Builds a block on the best block from `candidates` (in order), finalizes it through the
    /// engine and writes it: what the dev engine's single validator does every block time.
    /// Invalid candidates are skipped and reported.
    pub fn build_block(
        &self,
        candidates: &[Candidate],
        author: AccountId,
        now: Moment,
    ) -> Result<BuiltBlock, ChainError> {
        let number = self.heads().best.number + 1;
        let executed =
            self.prepare_block(candidates, author, now, self.engine.pre_digest(number))?;
        let justification = self.engine.justify(&executed.block.header);
        self.commit_block(&executed, justification.as_ref())?;
        Ok(BuiltBlock {
            hash: executed.hash,
            header: executed.block.header,
            included: executed.included,
            rejected: executed.rejected,
            elapsed: executed.elapsed,
        })
    }

    /// Executes a new block on the best block from `candidates` (in order) without writing
    /// it: a BFT proposer's candidate. Invalid candidates are skipped and reported.
    pub fn prepare_block(
        &self,
        candidates: &[Candidate],
        author: AccountId,
        now: Moment,
        logs: Vec<DigestItem>,
    ) -> Result<ExecutedBlock, ChainError> {
        let started = Instant::now();
        let _guard = self
            .import_lock
            .lock()
            .map_err(|_| ChainError::Missing("import lock".into()))?;
        let heads = self.heads();
        let parent = &heads.best;
        let number = parent.number + 1;
        let parent_state = self.state_at(parent.number);
        let mut header = Header {
            parent_hash: heads.best_hash,
            number,
            state_root: Hash::ZERO,
            extrinsics_root: Hash::ZERO,
            timestamp: now.max(parent.timestamp),
            author,
            digest: Digest { logs },
        };
        let mut builder = BlockBuilder::new(&parent_state, BlockContext::of(&header))?;
        let mut included = Vec::new();
        let mut extrinsics = Vec::new();
        let mut bodies = Vec::new();
        let mut rejected = Vec::new();
        let mut size = 0usize;
        for c in candidates {
            if size + c.encoded.len() > MAX_BLOCK_SIZE / 2 {
                break;
            }
            match builder.apply(&c.extrinsic, c.encoded.len()) {
                Ok(_) => {
                    size += c.encoded.len();
                    included.push(c.hash);
                    extrinsics.push(c.extrinsic.clone());
                    bodies.push(c.encoded.clone());
                }
                Err(ApplyError::Invalid(InvalidTransaction::ExhaustsResources)) => break,
                // A missing earlier nonce: it may become valid later; leave it in the pool.
                Err(ApplyError::Invalid(InvalidTransaction::Future)) => {}
                Err(ApplyError::Invalid(reason)) => rejected.push((c.hash, reason)),
                Err(ApplyError::Storage(e)) => {
                    return Err(ChainError::Execution(BlockError::Storage(e)))
                }
            }
        }
        let outcome = builder.finish();
        let update = state::compute_update(&self.db, &outcome.changes, number)?;
        header.state_root = update.root;
        header.extrinsics_root = extrinsics_root(&bodies);
        Ok(ExecutedBlock {
            hash: header.hash(),
            block: Block { header, extrinsics },
            bodies,
            update,
            included,
            rejected,
            elapsed: started.elapsed(),
        })
    }

    /// Checks a block that extends the best block, everything but its finality proof:
    /// extrinsics root, size, execution and state root. Writes nothing.
    pub fn check_block(&self, block: &Block) -> Result<ExecutedBlock, ChainError> {
        let started = Instant::now();
        let _guard = self
            .import_lock
            .lock()
            .map_err(|_| ChainError::Missing("import lock".into()))?;
        self.check_block_locked(block, started)
    }

    fn check_block_locked(
        &self,
        block: &Block,
        started: Instant,
    ) -> Result<ExecutedBlock, ChainError> {
        let hash = block.header.hash();
        if self.header(&hash)?.is_some() {
            return Err(ChainError::AlreadyKnown(hash));
        }
        let heads = self.heads();
        if block.header.parent_hash != heads.best_hash {
            return Err(ChainError::NotOnBest {
                parent: block.header.parent_hash,
                best: heads.best_hash,
            });
        }
        let bodies: Vec<Vec<u8>> = block.extrinsics.iter().map(|x| x.encode()).collect();
        let size: usize = bodies.iter().map(|b| b.len()).sum();
        if size > MAX_BLOCK_SIZE {
            return Err(ChainError::TooLarge(size));
        }
        if extrinsics_root(&bodies) != block.header.extrinsics_root {
            return Err(ChainError::BadExtrinsicsRoot);
        }
        let parent_state = self.state_at(heads.best.number);
        let outcome = execute_block(&parent_state, block)?;
        let update = state::compute_update(&self.db, &outcome.changes, block.header.number)?;
        if update.root != block.header.state_root {
            return Err(ChainError::BadStateRoot {
                header: block.header.state_root,
                computed: update.root,
            });
        }
        Ok(ExecutedBlock {
            hash,
            block: block.clone(),
            included: block.extrinsics.iter().map(|x| x.hash()).collect(),
            bodies,
            update,
            rejected: Vec::new(),
            elapsed: started.elapsed(),
        })
    }

    /// Checks the finality proof of a block on the best block against the parent state.
    pub fn verify_justification(
        &self,
        header: &Header,
        justification: &Justification,
    ) -> Result<(), ChainError> {
        let heads = self.heads();
        let parent_state = self.state_at(header.number.saturating_sub(1).min(heads.best.number));
        self.engine
            .verify(&self.genesis_hash, header, justification, &parent_state)?;
        Ok(())
    }

    /// Writes a block executed by [`Chain::prepare_block`] or [`Chain::check_block`], if it
    /// still extends the best block. With a justification it is final.
    pub fn commit_block(
        &self,
        executed: &ExecutedBlock,
        justification: Option<&Justification>,
    ) -> Result<(), ChainError> {
        let _guard = self
            .import_lock
            .lock()
            .map_err(|_| ChainError::Missing("import lock".into()))?;
        let header = &executed.block.header;
        let best = self.heads().best_hash;
        if header.parent_hash != best {
            return Err(ChainError::NotOnBest {
                parent: header.parent_hash,
                best,
            });
        }
        self.write_block(
            header,
            executed.hash,
            &executed.bodies,
            &executed.update,
            justification,
            &executed.included,
        )
    }

    /// Imports a block from outside (file, network): full verification, then one atomic write.
    pub fn import_block(
        &self,
        block: &Block,
        justification: Option<&Justification>,
    ) -> Result<Hash, ChainError> {
        let started = Instant::now();
        let _guard = self
            .import_lock
            .lock()
            .map_err(|_| ChainError::Missing("import lock".into()))?;
        let justification = justification.ok_or(ChainError::MissingJustification)?;
        let heads = self.heads();
        if block.header.parent_hash == heads.best_hash {
            let parent_state = self.state_at(heads.best.number);
            self.engine.verify(
                &self.genesis_hash,
                &block.header,
                justification,
                &parent_state,
            )?;
        }
        let executed = self.check_block_locked(block, started)?;
        self.write_block(
            &block.header,
            executed.hash,
            &executed.bodies,
            &executed.update,
            Some(justification),
            &executed.included,
        )?;
        Ok(executed.hash)
    }

    fn write_block(
        &self,
        header: &Header,
        hash: Hash,
        bodies: &[Vec<u8>],
        update: &StateUpdate,
        justification: Option<&Justification>,
        included: &[Hash],
    ) -> Result<(), ChainError> {
        let mut batch = self.db.batch();
        state::write_update(&mut batch, update)?;
        write_block_records(&mut batch, header, hash, bodies, justification);
        for (i, xt) in included.iter().enumerate() {
            batch.put(col::TX_INDEX, xt.as_bytes(), &(hash, i as u32).encode());
        }
        batch.put(col::META, meta::BEST, hash.as_bytes());
        let finalized = justification.is_some();
        if finalized {
            batch.put(col::META, meta::FINALIZED, hash.as_bytes());
        }
        batch.commit()?;
        if finalized {
            if let Err(e) = self.watermark.write(header.number, &hash) {
                // The block is written; only the detection of its later loss is weaker.
                tracing::warn!(error = %e, "cannot move the finalized watermark");
            }
        }
        {
            let mut heads = match self.heads.write() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            heads.best = header.clone();
            heads.best_hash = hash;
            if finalized {
                heads.finalized = header.clone();
                heads.finalized_hash = hash;
            }
        }
        // Nobody listening is fine.
        let _ = self.events.send(ChainEvent::Imported {
            hash,
            header: header.clone(),
            extrinsics: included.to_vec(),
            finalized,
        });
        tracing::debug!(number = header.number, %hash, txs = included.len(), "imported block");
        Ok(())
    }

    /// The block `hash` with its justification.
    pub fn block(&self, hash: &Hash) -> Result<Option<StoredBlock>, ChainError> {
        let Some(header) = self.header(hash)? else {
            return Ok(None);
        };
        let body = self.body(hash)?.unwrap_or_default();
        Ok(Some((header, body, self.justification(hash)?)))
    }

    /// Flushes the database.
    pub fn flush(&self) -> Result<(), ChainError> {
        Ok(self.db.flush()?)
    }
}

fn write_block_records(
    batch: &mut crate::db::Batch<'_>,
    header: &Header,
    hash: Hash,
    bodies: &[Vec<u8>],
    justification: Option<&Justification>,
) {
    batch.put(col::HEADERS, hash.as_bytes(), &header.encode());
    batch.put(col::BODIES, hash.as_bytes(), &bodies.to_vec().encode());
    batch.put(
        col::NUMBER_TO_HASH,
        &header.number.to_be_bytes(),
        hash.as_bytes(),
    );
    if let Some(j) = justification {
        batch.put(col::JUSTIFICATIONS, hash.as_bytes(), &j.encode());
    }
}
