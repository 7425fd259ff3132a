//! Key-value storage for the runtime.
//!
//! The runtime never touches a database. It reads committed state through [`StateReader`]
//! (the node implements it over its Jellyfish Merkle tree in rocksdb; tests use
//! [`MemoryState`]) and writes into an [`Overlay`]. The overlay has nested transactional
//! layers: each extrinsic runs in its own layer, which is committed when the call succeeds
//! and rolled back when it fails, so a failed call changes nothing (its fee aside). At the end
//! of a block the node takes the overlay's [`Overlay::into_changes`] and writes them into the
//! state tree in one atomic batch.
//!
//! Keys are built like Substrate's: `blake3(pallet)[..16] ‖ blake3(item)[..16]` for a value,
//! followed by `blake3(encoded key)[..16] ‖ encoded key` for a map entry, so entries of one
//! map share a prefix and the raw key stays recoverable from the storage key.

use parity_scale_codec::{Decode, Encode};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A storage failure the runtime cannot recover from inside a block.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StorageError {
    /// The backend (the database) failed.
    #[error("state backend failed: {0}")]
    Backend(String),
    /// A stored value does not decode as its declared type: state corruption.
    #[error("corrupt value under key 0x{key}: {reason}")]
    Corrupt {
        /// The key, hex.
        key: String,
        /// The decoding error.
        reason: String,
    },
}

/// Read access to committed state.
pub trait StateReader {
    /// The value under `key`, if any.
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

/// What the runtime reads and writes through.
pub trait Storage: StateReader {
    /// Sets `key` to `value`.
    fn set(&mut self, key: &[u8], value: Vec<u8>);
    /// Removes `key`.
    fn remove(&mut self, key: &[u8]);
}

/// A change set: `Some(value)` sets, `None` removes. Ordered by key, so applying it is
/// deterministic.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Committed state held in memory: genesis building and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// The key-value pairs.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryState {
    /// Applies a change set.
    pub fn apply(&mut self, changes: &Changes) {
        for (k, v) in changes {
            match v {
                Some(v) => {
                    self.entries.insert(k.clone(), v.clone());
                }
                None => {
                    self.entries.remove(k);
                }
            }
        }
    }
}

impl StateReader for MemoryState {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries.get(key).cloned())
    }
}

/// Uncommitted writes over a [`StateReader`], with nested transactions.
pub struct Overlay<'a> {
    backend: &'a dyn StateReader,
    /// `layers[0]` is the block-level change set; each open transaction pushes one more.
    layers: Vec<Changes>,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `backend`.
    pub fn new(backend: &'a dyn StateReader) -> Self {
        Overlay {
            backend,
            layers: vec![Changes::new()],
        }
    }

    /// Opens a nested transaction.
    pub fn start_transaction(&mut self) {
        self.layers.push(Changes::new());
    }

    /// Folds the innermost transaction into its parent.
    pub fn commit_transaction(&mut self) {
        if self.layers.len() > 1 {
            if let Some(top) = self.layers.pop() {
                if let Some(parent) = self.layers.last_mut() {
                    parent.extend(top);
                }
            }
        }
    }

    /// Discards the innermost transaction.
    pub fn rollback_transaction(&mut self) {
        if self.layers.len() > 1 {
            self.layers.pop();
        }
    }

    /// Number of open nested transactions.
    pub fn transaction_depth(&self) -> usize {
        self.layers.len() - 1
    }

    /// All changes, with open transactions folded in.
    pub fn into_changes(mut self) -> Changes {
        while self.layers.len() > 1 {
            self.commit_transaction();
        }
        self.layers.pop().unwrap_or_default()
    }
}

impl StateReader for Overlay<'_> {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.get(key) {
                return Ok(v.clone());
            }
        }
        self.backend.read(key)
    }
}

impl Storage for Overlay<'_> {
    fn set(&mut self, key: &[u8], value: Vec<u8>) {
        if let Some(top) = self.layers.last_mut() {
            top.insert(key.to_vec(), Some(value));
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(top) = self.layers.last_mut() {
            top.insert(key.to_vec(), None);
        }
    }
}

fn hash128(bytes: &[u8]) -> [u8; 16] {
    let h = blake3::hash(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

/// The 32-byte prefix of a storage item.
pub fn item_prefix(pallet: &str, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(&hash128(pallet.as_bytes()));
    k.extend_from_slice(&hash128(item.as_bytes()));
    k
}

fn decode_at<T: Decode>(key: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    T::decode(&mut &bytes[..]).map_err(|e| StorageError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    })
}

/// A single typed value in storage.
pub struct StorageValue<V> {
    pallet: &'static str,
    item: &'static str,
    _v: PhantomData<V>,
}

impl<V: Encode + Decode> StorageValue<V> {
    /// Declares the value `pallet::item`.
    pub const fn new(pallet: &'static str, item: &'static str) -> Self {
        StorageValue {
            pallet,
            item,
            _v: PhantomData,
        }
    }

    /// Its storage key.
    pub fn key(&self) -> Vec<u8> {
        item_prefix(self.pallet, self.item)
    }

    /// Reads it.
    pub fn get(&self, s: &(impl StateReader + ?Sized)) -> Result<Option<V>, StorageError> {
        let key = self.key();
        s.read(&key)?.map(|b| decode_at(&key, &b)).transpose()
    }

    /// Writes it.
    pub fn put(&self, s: &mut (impl Storage + ?Sized), value: &V) {
        s.set(&self.key(), value.encode());
    }

    /// Removes it.
    pub fn kill(&self, s: &mut (impl Storage + ?Sized)) {
        s.remove(&self.key());
    }
}

/// A typed map in storage.
pub struct StorageMap<K, V> {
    pallet: &'static str,
    item: &'static str,
    _kv: PhantomData<(K, V)>,
}

impl<K: Encode, V: Encode + Decode> StorageMap<K, V> {
    /// Declares the map `pallet::item`.
    pub const fn new(pallet: &'static str, item: &'static str) -> Self {
        StorageMap {
            pallet,
            item,
            _kv: PhantomData,
        }
    }

    /// The storage key of the entry for `k`.
    pub fn key(&self, k: &K) -> Vec<u8> {
        let mut key = item_prefix(self.pallet, self.item);
        let enc = k.encode();
        key.extend_from_slice(&hash128(&enc));
        key.extend_from_slice(&enc);
        key
    }

    /// Reads the entry for `k`.
    pub fn get(&self, s: &(impl StateReader + ?Sized), k: &K) -> Result<Option<V>, StorageError> {
        let key = self.key(k);
        s.read(&key)?.map(|b| decode_at(&key, &b)).transpose()
    }

    /// Writes the entry for `k`.
    pub fn insert(&self, s: &mut (impl Storage + ?Sized), k: &K, v: &V) {
        s.set(&self.key(k), v.encode());
    }

    /// Removes the entry for `k`.
    pub fn remove(&self, s: &mut (impl Storage + ?Sized), k: &K) {
        s.remove(&self.key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_transactions() {
        let mut base = MemoryState::default();
        base.entries.insert(b"a".to_vec(), b"1".to_vec());
        let mut o = Overlay::new(&base);
        o.set(b"b", b"2".to_vec());
        o.start_transaction();
        o.set(b"a", b"9".to_vec());
        o.remove(b"b");
        assert_eq!(o.read(b"a").unwrap(), Some(b"9".to_vec()));
        assert_eq!(o.read(b"b").unwrap(), None);
        o.rollback_transaction();
        assert_eq!(o.read(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(o.read(b"b").unwrap(), Some(b"2".to_vec()));
        o.start_transaction();
        o.set(b"c", b"3".to_vec());
        o.commit_transaction();
        let changes = o.into_changes();
        assert_eq!(changes.len(), 2);
        base.apply(&changes);
        assert_eq!(base.entries.len(), 3);
    }

    #[test]
    fn typed_items_and_corruption() {
        let base = MemoryState::default();
        let mut o = Overlay::new(&base);
        let m: StorageMap<u32, u64> = StorageMap::new("P", "M");
        m.insert(&mut o, &5, &77);
        assert_eq!(m.get(&o, &5).unwrap(), Some(77));
        assert_eq!(m.get(&o, &6).unwrap(), None);
        assert!(m.key(&5).starts_with(&item_prefix("P", "M")));
        o.set(&m.key(&6), vec![1]);
        assert!(matches!(m.get(&o, &6), Err(StorageError::Corrupt { .. })));
    }
}
