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
//! [`StepCommitment`] is what a trainer puts on chain for one step of one stage: a few
//! hundred bytes, SCALE-encoded in the declared field order (the layout is locked by a
//! test).

use crate::error::Result;
use parity_scale_codec::{Decode, Encode};
use tch::{Kind, Tensor};
use weft_primitives::merkle::{self, MerkleProof};
use weft_primitives::Hash;

/// Size of a commitment chunk in bytes.
pub const CHUNK_SIZE: usize = 64 * 1024;

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

/// The Merkle root of an already canonical byte stream (see the module docs).
pub fn root_of_bytes(bytes: &[u8]) -> Hash {
    merkle::root_of_leaf_hashes(bytes.chunks(CHUNK_SIZE).map(merkle::leaf_hash).collect())
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

/// Whether `chunk` is chunk `proof.index` of the byte stream committed to by `root`. Every
/// chunk but the last must be exactly [`CHUNK_SIZE`] bytes.
pub fn verify_chunk(root: &Hash, chunk: &[u8], proof: &MerkleProof) -> bool {
    let is_last = proof.index + 1 == proof.leaf_count;
    let size_ok = if is_last {
        !chunk.is_empty() && chunk.len() <= CHUNK_SIZE
    } else {
        chunk.len() == CHUNK_SIZE
    };
    size_ok && merkle::verify(root, merkle::leaf_hash(chunk), proof)
}

/// A loss in fixed point: `round(loss × 10⁶)`, saturating (NaN → 0).
pub fn loss_to_fixed(loss: f64) -> i64 {
    (loss * 1e6).round() as i64
}

/// What a trainer commits for one step of one stage. Field order is the SCALE layout.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct StepCommitment {
    /// The step (0-based).
    pub step: u64,
    /// Root of the stage's parameters before the update, in name order.
    pub weights_before: Hash,
    /// Root of the stage's inputs for every micro-batch, in micro-batch order (token ids as
    /// i64 on stage 0, activations as f32 elsewhere).
    pub inputs: Hash,
    /// Root of the outputs sent on (activations), or, on the last stage, of the per
    /// micro-batch losses.
    pub outputs: Hash,
    /// Root of the gradients received for the outputs; [`Hash::ZERO`] on the last stage.
    pub output_grads: Hash,
    /// Root of the gradients sent back for the inputs; [`Hash::ZERO`] on stage 0.
    pub input_grads: Hash,
    /// Root of the parameters after the update.
    pub weights_after: Hash,
    /// The step's mean loss × 10⁶, rounded; only on the last stage.
    pub loss_fixed: Option<i64>,
    /// Root of the AdamW moments before the update (`m`, `v` per parameter, name order).
    pub optimizer_before: Hash,
    /// Root of the AdamW moments after the update.
    pub optimizer_after: Hash,
}

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
    fn step_commitment_layout_is_locked() {
        let h = |b: u8| Hash([b; 32]);
        let c = StepCommitment {
            step: 0x0102,
            weights_before: h(1),
            inputs: h(2),
            outputs: h(3),
            output_grads: h(4),
            input_grads: h(5),
            weights_after: h(6),
            loss_fixed: Some(-2),
            optimizer_before: h(7),
            optimizer_after: h(8),
        };
        let enc = c.encode();
        assert_eq!(enc.len(), 8 + 6 * 32 + 1 + 8 + 2 * 32);
        assert_eq!(&enc[..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        for (i, b) in (1u8..=6).enumerate() {
            assert_eq!(enc[8 + 32 * i..8 + 32 * (i + 1)], [b; 32]);
        }
        assert_eq!(
            &enc[200..209],
            &[1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(enc[209..241], [7; 32]);
        assert_eq!(enc[241..273], [8; 32]);
        assert_eq!(StepCommitment::decode(&mut &enc[..]).unwrap(), c);
        assert_eq!(loss_to_fixed(1.2345678), 1_234_568);
    }
}
