//! Commitments to tensors: canonical bytes, 64 KiB chunks, blake3 Merkle roots.
//!
//! # Canonical bytes
//!
//! A tensor's canonical bytes are its elements in row-major order, floating-point kinds
//! as `f32` little-endian (bf16/f16/f64 are converted to f32 first), integer and boolean
//! kinds as `i64` little-endian. A list of tensors is the concatenation of their canonical
//! bytes in a fixed order: parameter-name order for weights (and for the optimiser, `m`
//! then `v` of each parameter in name order), micro-batch order for activations. Shapes are
//! not part of the bytes: both sides know them from the model configuration.
//!
//! # Chunks and roots
//!
//! The byte stream is cut into [`CHUNK_SIZE`] (64 KiB) chunks, the last one possibly
//! shorter, and the root is [`weft_primitives::merkle::root`] over those chunks (blake3,
//! leaves and nodes domain-separated). The chunker streams: it never holds more than one
//! tensor's bytes plus one chunk. An auditor who fetches chunk `i` with its
//! [`MerkleProof`] checks it against the committed root with [`verify_chunk`] before
//! using it, so reveals can be checked piece by piece. An empty list has root
//! [`Hash::ZERO`].
//!
//! # Step commitments
//!
//! [`StepCommitment`] (from `weft_primitives::step`, the type the chain and the auditor use
//! too) is what a trainer puts on chain for one step of one stage: the step, its
//! [`StepRoots`] and on the last stage the mean loss as [`committed_loss`] makes it.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use weft_primitives::merkle::{self, MerkleProof};
pub use weft_primitives::step::{CommittedLoss, StepCommitment, StepItem, StepRoots};
pub use weft_primitives::tensor::{root_of_bytes, verify_chunk, CHUNK_SIZE};
use weft_primitives::Hash;

/// The canonical bytes of one tensor (see the module docs).
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    if flat.is_floating_point() {
        let v: Vec<f32> = Vec::try_from(&flat.f_to_kind(Kind::Float)?)?;
        Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    } else {
        let v: Vec<i64> = Vec::try_from(&flat.f_to_kind(Kind::Int64)?)?;
        Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// The canonical bytes of a list of tensors, concatenated.
pub fn canonical_bytes<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend(tensor_bytes(t)?);
    }
    Ok(out)
}

/// The chunk leaf hashes and root of a list of tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorTree {
    /// `leaf_hash` of each 64 KiB chunk.
    pub leaf_hashes: Vec<Hash>,
    /// The Merkle root over the chunks.
    pub root: Hash,
    /// Length of the canonical byte stream.
    pub total_bytes: u64,
}

impl TensorTree {
    /// Chunks and hashes `tensors` in the given order.
    pub fn build<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Self> {
        let mut leaf_hashes = Vec::new();
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK_SIZE);
        let mut total_bytes = 0u64;
        for t in tensors {
            let bytes = tensor_bytes(t)?;
            total_bytes += bytes.len() as u64;
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let take = (CHUNK_SIZE - pending.len()).min(rest.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if pending.len() == CHUNK_SIZE {
                    leaf_hashes.push(merkle::leaf_hash(&pending));
                    pending.clear();
                }
            }
        }
        if !pending.is_empty() {
            leaf_hashes.push(merkle::leaf_hash(&pending));
        }
        let root = merkle::root_of_leaf_hashes(leaf_hashes.clone());
        Ok(TensorTree {
            leaf_hashes,
            root,
            total_bytes,
        })
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.leaf_hashes.len()
    }

    /// The inclusion proof of chunk `index`.
    pub fn prove(&self, index: usize) -> Option<MerkleProof> {
        merkle::prove(&self.leaf_hashes, index)
    }
}

/// The Merkle root of `tensors` (see the module docs).
pub fn root_of<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Hash> {
    Ok(TensorTree::build(tensors)?.root)
}

/// Chunk `index` of the canonical bytes of `tensors` with its proof; `None` if out of range.
pub fn prove_chunk<'a>(
    tensors: impl IntoIterator<Item = &'a Tensor>,
    index: usize,
) -> Result<Option<(Vec<u8>, MerkleProof)>> {
    let bytes = canonical_bytes(tensors)?;
    let leaf_hashes: Vec<Hash> = bytes.chunks(CHUNK_SIZE).map(merkle::leaf_hash).collect();
    let Some(proof) = merkle::prove(&leaf_hashes, index) else {
        return Ok(None);
    };
    let start = index * CHUNK_SIZE;
    let end = (start + CHUNK_SIZE).min(bytes.len());
    Ok(Some((bytes[start..end].to_vec(), proof)))
}

/// The committed form of a step's mean loss: `round(loss × 10⁶)`. The one place a float
/// loss becomes the chain's fixed point; a loss that is not finite, is negative or does not
/// fit is an [`Error::Loss`] (training diverged: nothing honest can be committed).
pub fn committed_loss(loss: f64) -> Result<CommittedLoss> {
    let fixed = (loss * LOSS_SCALE).round();
    // Below 2^63: far above any cross-entropy, and exactly representable.
    let limit = (1u64 << 63) as f64;
    if !(0.0..limit).contains(&fixed) {
        return Err(Error::Loss(loss));
    }
    Ok(fixed as CommittedLoss)
}

/// A committed loss as a float (the inverse of [`committed_loss`] up to rounding).
pub fn loss_value(loss: CommittedLoss) -> f64 {
    loss as f64 / LOSS_SCALE
}

const LOSS_SCALE: f64 = 1e6;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn roots_chunks_and_proofs() {
        // 3 tensors, 160_024 bytes in all: 3 chunks, the last one partial.
        let a = Tensor::arange(30_000, (Kind::Float, tch::Device::Cpu));
        let b = Tensor::ones([100, 100], (Kind::Float, tch::Device::Cpu));
        let c = Tensor::from_slice(&[1i64, 2, 3]);
        let tree = TensorTree::build([&a, &b, &c]).unwrap();
        assert_eq!(tree.total_bytes, 30_000 * 4 + 40_000 + 24);
        assert_eq!(tree.chunk_count(), 3);
        assert_eq!(tree.root, root_of([&a, &b, &c]).unwrap());
        let bytes = canonical_bytes([&a, &b, &c]).unwrap();
        assert_eq!(&bytes[4..8], &1f32.to_le_bytes());
        assert_eq!(
            tree.root,
            merkle::root(&bytes.chunks(CHUNK_SIZE).collect::<Vec<_>>())
        );
        for i in 0..3 {
            let (chunk, proof) = prove_chunk([&a, &b, &c], i).unwrap().unwrap();
            assert_eq!(Some(proof.clone()), tree.prove(i));
            assert!(verify_chunk(&tree.root, &chunk, &proof));
            let mut bad = chunk.clone();
            bad[7] ^= 1;
            assert!(!verify_chunk(&tree.root, &bad, &proof));
        }
        assert!(prove_chunk([&a], 99).unwrap().is_none());
        // Order matters; one element matters.
        assert_ne!(tree.root, root_of([&b, &a, &c]).unwrap());
        let a2 = a.copy();
        let _ = a2.narrow(0, 29_999, 1).fill_(0.5);
        assert_ne!(tree.root, root_of([&a2, &b, &c]).unwrap());
        assert_eq!(root_of(std::iter::empty::<&Tensor>()).unwrap(), Hash::ZERO);
    }

    #[test]
    fn losses_convert_once_and_checked() {
        assert_eq!(committed_loss(1.2345678).unwrap(), 1_234_568);
        assert_eq!(committed_loss(0.0).unwrap(), 0);
        assert!((loss_value(committed_loss(5.5).unwrap()) - 5.5).abs() < 1e-9);
        for bad in [f64::NAN, f64::INFINITY, -0.5, 1e13] {
            assert!(matches!(committed_loss(bad), Err(Error::Loss(_))), "{bad}");
        }
    }
}
