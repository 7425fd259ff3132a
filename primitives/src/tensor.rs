//! Tensors as bytes, shared by every side that moves or commits them without libtorch.
//!
//! # On the wire
//!
//! [`WireTensor`] = `dtype (u8) ‖ shape (Compact<len> ‖ u32 LE…) ‖ data (Compact<len> ‖ bytes)`,
//! elements in row-major order, little-endian. dtype indices: `F32 = 0`, `BF16 = 1`,
//! `F16 = 2`, `I64 = 3`. [`WireTensor::validate`] refuses, with a [`WireError`] that says why,
//! a tensor of rank above [`Limits::max_rank`] (4), a dimension above [`Limits::max_dim`], a
//! data length that is not `numel × element size`, more than [`Limits::max_bytes`] of data,
//! and (for activations and gradients) any NaN or infinity. [`WireTensor::expect`] checks it
//! against the shape the receiver expects. The conversion to and from `tch::Tensor` is an
//! adapter in the ML core (`weft_ml::tensor`): nothing here links libtorch, so the decoders
//! can be fuzzed on their own.
//!
//! # Commitment chunks
//!
//! A committed item is a canonical byte stream (see `weft_ml::commit`) cut into
//! [`CHUNK_SIZE`] (64 KiB) chunks, the last one possibly shorter; its root is
//! [`crate::merkle::root`] over those chunks. [`root_of_bytes`] computes it and
//! [`verify_chunk`] checks one revealed chunk against a committed root.

use crate::merkle::{self, MerkleProof};
use crate::Hash;
use parity_scale_codec::{Decode, Encode, Input, Output};

/// Size of a commitment chunk in bytes.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The Merkle root of an already canonical byte stream (see the module docs). An empty
/// stream has root [`Hash::ZERO`].
pub fn root_of_bytes(bytes: &[u8]) -> Hash {
    merkle::root_of_leaf_hashes(bytes.chunks(CHUNK_SIZE).map(merkle::leaf_hash).collect())
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

/// Element type of a [`WireTensor`]. Encoded as one byte: the explicit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE-754 binary32 (index 0).
    F32,
    /// bfloat16 (index 1).
    BF16,
    /// IEEE-754 binary16 (index 2).
    F16,
    /// Signed 64-bit integers (index 3): token ids.
    I64,
}

impl DType {
    /// The wire index.
    pub fn index(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::BF16 => 1,
            DType::F16 => 2,
            DType::I64 => 3,
        }
    }

    /// The dtype of wire index `i`.
    pub fn from_index(i: u8) -> Option<Self> {
        Some(match i {
            0 => DType::F32,
            1 => DType::BF16,
            2 => DType::F16,
            3 => DType::I64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::I64 => 8,
        }
    }

    /// Whether the type is floating point.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }
}

impl Encode for DType {
    fn size_hint(&self) -> usize {
        1
    }
    fn encode_to<T: Output + ?Sized>(&self, dest: &mut T) {
        dest.push_byte(self.index());
    }
}

impl Decode for DType {
    fn decode<I: Input>(input: &mut I) -> Result<Self, parity_scale_codec::Error> {
        let b = input.read_byte()?;
        DType::from_index(b).ok_or_else(|| "unknown tensor dtype index (known: 0..=3)".into())
    }
}

/// Receipt limits for tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest rank (number of dimensions).
    pub max_rank: usize,
    /// Largest single dimension.
    pub max_dim: u32,
    /// Largest tensor data in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rank: 4,
            max_dim: 1 << 20,
            max_bytes: 192 * 1024 * 1024,
        }
    }
}

/// Why a frame or a tensor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a SCALE encoding of the message (bad index, truncated, …).
    #[error("undecodable message: {0}")]
    Decode(String),
    /// Bytes left over after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// Too many dimensions.
    #[error("tensor of rank {rank}, at most {max} allowed")]
    Rank {
        /// The rank.
        rank: usize,
        /// The limit.
        max: usize,
    },
    /// A dimension above the limit.
    #[error("dimension {axis} is {dim}, at most {max} allowed")]
    Dim {
        /// The axis.
        axis: usize,
        /// Its size.
        dim: u32,
        /// The limit.
        max: u32,
    },
    /// The data length does not match the shape and dtype.
    #[error("tensor data is {got} bytes, shape and dtype need {expected}")]
    Length {
        /// `numel × element size`.
        expected: u64,
        /// What came.
        got: usize,
    },
    /// More data than allowed.
    #[error("tensor of {bytes} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: usize,
    },
    /// A NaN or infinity in a floating-point tensor.
    #[error("non-finite value at element {index}")]
    NonFinite {
        /// The first such element.
        index: usize,
    },
    /// The tensor is not what the receiver expects.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the receiver expects.
        expected: String,
        /// What came.
        got: String,
    },
}

/// A tensor on the wire: dtype, shape and little-endian row-major data.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u32>,
    /// `numel × dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl WireTensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Checks rank, dimensions, length and size against `limits`, and (for floating-point
    /// tensors when `finite` is set) that every element is finite.
    pub fn validate(&self, limits: &Limits, finite: bool) -> Result<(), WireError> {
        if self.shape.len() > limits.max_rank {
            return Err(WireError::Rank {
                rank: self.shape.len(),
                max: limits.max_rank,
            });
        }
        for (axis, &dim) in self.shape.iter().enumerate() {
            if dim > limits.max_dim {
                return Err(WireError::Dim {
                    axis,
                    dim,
                    max: limits.max_dim,
                });
            }
        }
        // ≤ 4 dims of ≤ 2^32 each could overflow u64 only past rank 2 with huge dims, which
        // max_dim excludes in practice; saturate to be safe.
        let expected = self
            .shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
            .unwrap_or(u64::MAX);
        if expected > limits.max_bytes as u64 {
            return Err(WireError::TooLarge {
                bytes: expected,
                max: limits.max_bytes,
            });
        }
        if self.data.len() as u64 != expected {
            return Err(WireError::Length {
                expected,
                got: self.data.len(),
            });
        }
        if finite && self.dtype.is_float() {
            if let Some(index) = self.first_non_finite() {
                return Err(WireError::NonFinite { index });
            }
        }
        Ok(())
    }

    fn first_non_finite(&self) -> Option<usize> {
        match self.dtype {
            DType::F32 => self.data.chunks_exact(4).position(|b| {
                let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                bits & 0x7f80_0000 == 0x7f80_0000
            }),
            DType::BF16 => self.data.chunks_exact(2).position(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                bits & 0x7f80 == 0x7f80
            }),
            DType::F16 => self.data.chunks_exact(2).position(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                bits & 0x7c00 == 0x7c00
            }),
            DType::I64 => None,
        }
    }

    /// Checks that the tensor has exactly `dtype` (any float dtype when `None`) and `shape`.
    pub fn expect(&self, dtype: Option<DType>, shape: &[i64]) -> Result<(), WireError> {
        let dtype_ok = match dtype {
            Some(d) => d == self.dtype,
            None => self.dtype.is_float(),
        };
        let shape_ok = self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&a, &b)| i64::from(a) == b);
        if dtype_ok && shape_ok {
            Ok(())
        } else {
            Err(WireError::Unexpected {
                expected: format!(
                    "{} {shape:?}",
                    dtype.map_or("float".to_string(), |d| format!("{d:?}"))
                ),
                got: format!("{:?} {:?}", self.dtype, self.shape),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f32_tensor(values: &[f32], shape: &[u32]) -> WireTensor {
        WireTensor {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn expected_shapes() {
        let t = f32_tensor(&[0.0; 6], &[1, 2, 3]);
        t.expect(Some(DType::F32), &[1, 2, 3]).unwrap();
        t.expect(None, &[1, 2, 3]).unwrap();
        assert!(t.expect(Some(DType::F32), &[1, 3, 2]).is_err());
        assert!(t.expect(Some(DType::BF16), &[1, 2, 3]).is_err());
        assert!(t.expect(None, &[1, 2]).is_err());
    }

    #[test]
    fn non_finite_half_precision_values_are_found() {
        // 1.0 then +inf, in bf16 (0x3f80, 0x7f80) and f16 (0x3c00, 0x7c00); NaN too.
        for (dtype, one, inf, nan) in [
            (DType::BF16, 0x3f80u16, 0x7f80u16, 0x7fc0u16),
            (DType::F16, 0x3c00, 0x7c00, 0x7e00),
        ] {
            for bad in [inf, nan] {
                let t = WireTensor {
                    dtype,
                    shape: vec![2],
                    data: [one, bad].iter().flat_map(|v| v.to_le_bytes()).collect(),
                };
                assert_eq!(
                    t.validate(&Limits::default(), true),
                    Err(WireError::NonFinite { index: 1 }),
                    "{dtype:?}"
                );
                t.validate(&Limits::default(), false).unwrap();
            }
        }
    }

    #[test]
    fn chunks_verify_against_their_root() {
        let bytes: Vec<u8> = (0..(2 * CHUNK_SIZE + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let leaves: Vec<Hash> = bytes.chunks(CHUNK_SIZE).map(merkle::leaf_hash).collect();
        let root = root_of_bytes(&bytes);
        assert_eq!(
            root,
            merkle::root(&bytes.chunks(CHUNK_SIZE).collect::<Vec<_>>())
        );
        for (i, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
            let proof = merkle::prove(&leaves, i).unwrap();
            assert!(verify_chunk(&root, chunk, &proof));
            let mut bad = chunk.to_vec();
            bad[0] ^= 1;
            assert!(!verify_chunk(&root, &bad, &proof));
        }
        assert_eq!(root_of_bytes(&[]), Hash::ZERO);
    }
}
