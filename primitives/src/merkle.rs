//! Binary blake3 Merkle trees over a list of leaves, with inclusion proofs.
//!
//! Used for the extrinsics root of a header and for the commitments of training steps.
//! Leaves and inner nodes are domain-separated (`0x00 ‖ leaf`, `0x01 ‖ left ‖ right`) so a
//! leaf can never be passed off as an inner node. A level with an odd number of nodes carries
//! its last node up unchanged. The root of zero leaves is [`Hash::ZERO`].

use crate::Hash;
use parity_scale_codec::{Decode, Encode};

/// Hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0u8]);
    h.update(data);
    Hash(*h.finalize().as_bytes())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1u8]);
    h.update(&left.0);
    h.update(&right.0);
    Hash(*h.finalize().as_bytes())
}

/// Root over already-hashed leaves.
pub fn root_of_leaf_hashes(mut level: Vec<Hash>) -> Hash {
    if level.is_empty() {
        return Hash::ZERO;
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [single] => *single,
                _ => Hash::ZERO,
            })
            .collect();
    }
    level[0]
}

/// Root over raw leaves.
pub fn root<T: AsRef<[u8]>>(leaves: &[T]) -> Hash {
    root_of_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
}

/// The sibling path from a leaf to the root.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MerkleProof {
    /// Index of the leaf.
    pub index: u64,
    /// Number of leaves in the tree.
    pub leaf_count: u64,
    /// Siblings from the bottom up; levels where the node was carried up have none.
    pub siblings: Vec<Hash>,
}

/// The proof that leaf `index` is in the tree over `leaf_hashes`.
pub fn prove(leaf_hashes: &[Hash], index: usize) -> Option<MerkleProof> {
    if index >= leaf_hashes.len() {
        return None;
    }
    let mut siblings = Vec::new();
    let mut level: Vec<Hash> = leaf_hashes.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            siblings.push(level[sibling]);
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [single] => *single,
                _ => Hash::ZERO,
            })
            .collect();
        i /= 2;
    }
    Some(MerkleProof {
        index: index as u64,
        leaf_count: leaf_hashes.len() as u64,
        siblings,
    })
}

/// Whether `proof` shows that the leaf with hash `leaf` is in the tree with `root`.
pub fn verify(root: &Hash, leaf: Hash, proof: &MerkleProof) -> bool {
    if proof.index >= proof.leaf_count {
        return false;
    }
    let mut acc = leaf;
    let mut i = proof.index;
    let mut width = proof.leaf_count;
    let mut siblings = proof.siblings.iter();
    while width > 1 {
        let sibling = i ^ 1;
        if sibling < width {
            let Some(s) = siblings.next() else {
                return false;
            };
            acc = if i.is_multiple_of(2) {
                node_hash(&acc, s)
            } else {
                node_hash(s, &acc)
            };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && acc == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_leaf_proves_and_tampering_fails(n in 1usize..40, pick in 0usize..40) {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 3]).collect();
            let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
            let r = root(&leaves);
            let idx = pick % n;
            let proof = prove(&hashes, idx).unwrap();
            prop_assert!(verify(&r, hashes[idx], &proof));
            prop_assert!(!verify(&r, leaf_hash(b"other"), &proof));
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(root::<&[u8]>(&[]), Hash::ZERO);
        assert_eq!(root(&[b"a"]), leaf_hash(b"a"));
        assert_ne!(root(&[b"a", b"b"]), root(&[b"b", b"a"]));
    }
}
