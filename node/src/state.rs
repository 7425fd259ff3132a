//! The state tree: a Jellyfish Merkle tree (the `jmt` crate) hashed with blake3, stored in
//! rocksdb, one tree version per block height.
//!
//! A storage key `k` lives at leaf `blake3(k)`; the leaf commits to `blake3(value)`. Committing
//! a block's change set at version `n` writes the new tree nodes and the changed values; the
//! root of version `n` is the header's `state_root`. Older versions stay readable (this is an
//! archive node; pruning of stale nodes is left to a later change), so `state_getStorage` and
//! `state_getReadProof` work at any block.
//!
//! Reads of values bypass the tree: `jmt_values` is keyed by `key hash ‖ version (BE)`, so the
//! value of a key at version `n` is one `seek_for_prev`.

use crate::db::{col, Batch, Db, DbError};
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, SimpleHasher, Version};
use parity_scale_codec::{Decode, Encode};
use weft_primitives::storage::{Changes, StateReader, StorageError};
use weft_primitives::Hash;

/// blake3 for the tree.
pub struct Blake3Hasher(blake3::Hasher);

impl SimpleHasher for Blake3Hasher {
    fn new() -> Self {
        Blake3Hasher(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The tree type.
pub type StateTree<'a> = JellyfishMerkleTree<'a, TreeStore<'a>, Blake3Hasher>;

/// A sparse Merkle proof for one key.
pub type StateProof = jmt::proof::SparseMerkleProof<Blake3Hasher>;

/// The key hash of a storage key.
pub fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash(<Blake3Hasher as SimpleHasher>::hash(key))
}

fn value_key(key_hash: &KeyHash, version: Version) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&key_hash.0);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

fn to_anyhow(e: DbError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

/// Reads tree nodes and values from the database.
pub struct TreeStore<'a> {
    db: &'a Db,
}

impl<'a> TreeStore<'a> {
    /// Over `db`.
    pub fn new(db: &'a Db) -> Self {
        TreeStore { db }
    }
}

impl TreeReader for TreeStore<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = borsh::to_vec(node_key)?;
        match self.db.get(col::JMT_NODES, &key).map_err(to_anyhow)? {
            Some(bytes) => Ok(Some(borsh::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        read_value(self.db, max_version, &key_hash).map_err(to_anyhow)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only used when restoring a tree from a snapshot, which this node does not do.
        Err(anyhow::anyhow!("state restoration is not supported"))
    }
}

fn read_value(
    db: &Db,
    max_version: Version,
    key_hash: &KeyHash,
) -> Result<Option<Vec<u8>>, DbError> {
    let seek = value_key(key_hash, max_version);
    match db.get_prev_with_prefix(col::JMT_VALUES, &seek, &key_hash.0)? {
        Some(bytes) => Option::<Vec<u8>>::decode(&mut &bytes[..]).map_err(|e| DbError::Corrupt {
            column: col::JMT_VALUES,
            reason: e.to_string(),
        }),
        None => Ok(None),
    }
}

/// The state as of one block (tree version).
pub struct StateView<'a> {
    db: &'a Db,
    version: Version,
}

impl<'a> StateView<'a> {
    /// The state after block `version`.
    pub fn new(db: &'a Db, version: Version) -> Self {
        StateView { db, version }
    }

    /// Value and proof of `key` against this version's root.
    pub fn prove(&self, key: &[u8]) -> Result<(Option<Vec<u8>>, StateProof), StateError> {
        let store = TreeStore::new(self.db);
        let tree = StateTree::new(&store);
        tree.get_with_proof(key_hash(key), self.version)
            .map_err(|e| StateError::Tree(e.to_string()))
    }

    /// This version's root.
    pub fn root(&self) -> Result<Hash, StateError> {
        let store = TreeStore::new(self.db);
        let tree = StateTree::new(&store);
        let RootHash(root) = tree
            .get_root_hash(self.version)
            .map_err(|e| StateError::Tree(e.to_string()))?;
        Ok(Hash(root))
    }
}

impl StateReader for StateView<'_> {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        read_value(self.db, self.version, &key_hash(key))
            .map_err(|e| StorageError::Backend(e.to_string()))
    }
}

/// A state tree failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The tree could not be read or updated.
    #[error("state tree: {0}")]
    Tree(String),
    /// A block must change at least one key.
    #[error("empty change set")]
    EmptyChanges,
}

/// The tree update of one block, ready to be written with the block.
pub struct StateUpdate {
    /// The new root.
    pub root: Hash,
    /// New nodes and values.
    pub nodes: NodeBatch,
}

/// Computes the tree update that applies `changes` at `version` (on top of `version - 1`).
pub fn compute_update(
    db: &Db,
    changes: &Changes,
    version: Version,
) -> Result<StateUpdate, StateError> {
    if changes.is_empty() {
        return Err(StateError::EmptyChanges);
    }
    let store = TreeStore::new(db);
    let tree = StateTree::new(&store);
    let value_set = changes.iter().map(|(k, v)| (key_hash(k), v.clone()));
    let (RootHash(root), TreeUpdateBatch { node_batch, .. }) = tree
        .put_value_set(value_set, version)
        .map_err(|e| StateError::Tree(e.to_string()))?;
    Ok(StateUpdate {
        root: Hash(root),
        nodes: node_batch,
    })
}

/// Adds a tree update to a block's write batch.
pub fn write_update(batch: &mut Batch<'_>, update: &StateUpdate) -> Result<(), StateError> {
    for (node_key, node) in update.nodes.nodes() {
        let k = borsh::to_vec(node_key).map_err(|e| StateError::Tree(e.to_string()))?;
        let v = borsh::to_vec(node).map_err(|e| StateError::Tree(e.to_string()))?;
        batch.put(col::JMT_NODES, &k, &v);
    }
    for ((version, key_hash), value) in update.nodes.values() {
        batch.put(
            col::JMT_VALUES,
            &value_key(key_hash, *version),
            &value.encode(),
        );
    }
    Ok(())
}

/// Checks a proof from `state_getReadProof` against a state root.
pub fn verify_proof(root: &Hash, key: &[u8], value: Option<&[u8]>, proof: &StateProof) -> bool {
    proof.verify(RootHash(root.0), key_hash(key), value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_roots_and_proofs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut changes = Changes::new();
        changes.insert(b"a".to_vec(), Some(b"1".to_vec()));
        changes.insert(b"b".to_vec(), Some(b"2".to_vec()));
        let u0 = compute_update(&db, &changes, 0).unwrap();
        let mut batch = db.batch();
        write_update(&mut batch, &u0).unwrap();
        batch.commit().unwrap();

        let mut changes = Changes::new();
        changes.insert(b"a".to_vec(), Some(b"3".to_vec()));
        changes.insert(b"b".to_vec(), None);
        let u1 = compute_update(&db, &changes, 1).unwrap();
        let mut batch = db.batch();
        write_update(&mut batch, &u1).unwrap();
        batch.commit().unwrap();

        assert_ne!(u0.root, u1.root);
        let v0 = StateView::new(&db, 0);
        let v1 = StateView::new(&db, 1);
        assert_eq!(v0.root().unwrap(), u0.root);
        assert_eq!(v1.root().unwrap(), u1.root);
        assert_eq!(v0.read(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(v1.read(b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(v1.read(b"b").unwrap(), None);
        assert_eq!(v0.read(b"b").unwrap(), Some(b"2".to_vec()));

        let (value, proof) = v1.prove(b"a").unwrap();
        assert_eq!(value.as_deref(), Some(&b"3"[..]));
        assert!(verify_proof(&u1.root, b"a", Some(b"3"), &proof));
        assert!(!verify_proof(&u1.root, b"a", Some(b"1"), &proof));
        assert!(!verify_proof(&u0.root, b"a", Some(b"3"), &proof));
        let (absent, proof) = v1.prove(b"b").unwrap();
        assert_eq!(absent, None);
        assert!(verify_proof(&u1.root, b"b", None, &proof));

        // The same changes give the same root in a fresh database: roots are deterministic.
        let dir2 = tempfile::tempdir().unwrap();
        let db2 = Db::open(dir2.path()).unwrap();
        let mut changes = Changes::new();
        changes.insert(b"b".to_vec(), Some(b"2".to_vec()));
        changes.insert(b"a".to_vec(), Some(b"1".to_vec()));
        assert_eq!(compute_update(&db2, &changes, 0).unwrap().root, u0.root);
    }
}
