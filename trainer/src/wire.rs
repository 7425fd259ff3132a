//! The wire format between trainers (and auditors): SCALE-framed tensors and the pipeline
//! and reveal messages that carry them.
//!
//! Every message travels as one request or one response of the `/weft/msg/1` protocol of
//! `weft-p2p` (a `u32` little-endian length ‖ bytes frame, size-limited before anything is
//! allocated). The bytes are the SCALE encoding of [`Request`] or [`Response`]; every enum
//! has explicit `#[codec(index)]`es so the layout does not depend on declaration order, and
//! a unit test locks it byte for byte.
//!
//! # Tensors
//!
//! [`WireTensor`] = `dtype (u8) ‖ shape (Compact<len> ‖ u32 LE…) ‖ data (Compact<len> ‖ bytes)`,
//! elements in row-major order, little-endian. dtype indices: `F32 = 0`, `BF16 = 1`,
//! `F16 = 2`, `I64 = 3`.
//!
//! # Validation on receipt
//!
//! [`decode_request`] / [`decode_response`] refuse, with a [`WireError`] that says why:
//! an undecodable frame (bad enum or dtype index, truncated data), trailing bytes after the
//! message, a tensor of rank above [`Limits::max_rank`] (4), a dimension above
//! [`Limits::max_dim`], a data length that is not `numel × element size`, more than
//! [`Limits::max_bytes`] of tensor data, and — for activations and gradients, which are
//! always floating point — any NaN or infinity. The receiver then checks the tensor against
//! the shape it expects from the model config ([`WireTensor::expect`]); only then is it
//! turned into a `tch::Tensor` ([`WireTensor::to_tensor`]). A refused message is answered with
//! [`Response::Error`] and never trained on.

use crate::error::{Error, Result};
use parity_scale_codec::{Decode, Encode, Input, Output};
use tch::{Device, Kind, Tensor};
use weft_primitives::merkle::MerkleProof;

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

    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::BF16 => Kind::BFloat16,
            DType::F16 => Kind::Half,
            DType::I64 => Kind::Int64,
        }
    }

    /// The dtype of a libtorch kind, if it has one on the wire.
    pub fn from_kind(kind: Kind) -> Option<Self> {
        Some(match kind {
            Kind::Float => DType::F32,
            Kind::BFloat16 => DType::BF16,
            Kind::Half => DType::F16,
            Kind::Int64 => DType::I64,
            _ => return None,
        })
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

#[cfg(target_endian = "big")]
fn swap_bytes(data: &mut [u8], size: usize) {
    for e in data.chunks_mut(size) {
        e.reverse();
    }
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

    /// The wire form of `t` (moved to the CPU, made contiguous).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let kind = t.f_kind()?;
        let dtype = DType::from_kind(kind)
            .ok_or_else(|| Error::Shape(format!("no wire dtype for {kind:?}")))?;
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let shape = t
            .size()
            .iter()
            .map(|&d| u32::try_from(d).map_err(|_| Error::Shape(format!("dimension {d}"))))
            .collect::<Result<Vec<u32>>>()?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * dtype.size()];
        t.f_copy_data_u8(&mut data, numel)?;
        #[cfg(target_endian = "big")]
        swap_bytes(&mut data, dtype.size());
        Ok(WireTensor { dtype, shape, data })
    }

    /// The libtorch tensor (on the CPU). Call [`Self::validate`] first: the length must match.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let expected = self.numel() * self.dtype.size() as u64;
        if self.data.len() as u64 != expected {
            return Err(Error::Shape(format!(
                "tensor data is {} bytes, shape {:?} needs {expected}",
                self.data.len(),
                self.shape
            )));
        }
        let shape: Vec<i64> = self.shape.iter().map(|&d| i64::from(d)).collect();
        #[cfg(target_endian = "big")]
        let data = {
            let mut d = self.data.clone();
            swap_bytes(&mut d, self.dtype.size());
            d
        };
        #[cfg(target_endian = "little")]
        let data = &self.data;
        Ok(Tensor::f_from_data_size(
            &data[..],
            &shape,
            self.dtype.kind(),
        )?)
    }
}

/// What a [`Request::Reveal`] asks for: one committed item of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum RevealItem {
    /// Parameters before the update (index 0).
    #[codec(index = 0)]
    WeightsBefore,
    /// Inputs of every micro-batch (index 1).
    #[codec(index = 1)]
    Inputs,
    /// Outputs of every micro-batch (index 2).
    #[codec(index = 2)]
    Outputs,
    /// Gradients received for the outputs (index 3).
    #[codec(index = 3)]
    OutputGrads,
    /// Gradients sent back for the inputs (index 4).
    #[codec(index = 4)]
    InputGrads,
    /// Parameters after the update (index 5).
    #[codec(index = 5)]
    WeightsAfter,
    /// AdamW moments before the update (index 6).
    #[codec(index = 6)]
    OptimizerBefore,
    /// AdamW moments after the update (index 7).
    #[codec(index = 7)]
    OptimizerAfter,
}

impl RevealItem {
    /// Every item, in index order.
    pub const ALL: [RevealItem; 8] = [
        RevealItem::WeightsBefore,
        RevealItem::Inputs,
        RevealItem::Outputs,
        RevealItem::OutputGrads,
        RevealItem::InputGrads,
        RevealItem::WeightsAfter,
        RevealItem::OptimizerBefore,
        RevealItem::OptimizerAfter,
    ];

    /// The file name of the item in the tensor store.
    pub fn file_name(self) -> &'static str {
        match self {
            RevealItem::WeightsBefore => "weights_before.bin",
            RevealItem::Inputs => "inputs.bin",
            RevealItem::Outputs => "outputs.bin",
            RevealItem::OutputGrads => "output_grads.bin",
            RevealItem::InputGrads => "input_grads.bin",
            RevealItem::WeightsAfter => "weights_after.bin",
            RevealItem::OptimizerBefore => "optimizer_before.bin",
            RevealItem::OptimizerAfter => "optimizer_after.bin",
        }
    }

    /// The root the commitment holds for this item.
    pub fn root(self, c: &crate::commit::StepCommitment) -> weft_primitives::Hash {
        match self {
            RevealItem::WeightsBefore => c.weights_before,
            RevealItem::Inputs => c.inputs,
            RevealItem::Outputs => c.outputs,
            RevealItem::OutputGrads => c.output_grads,
            RevealItem::InputGrads => c.input_grads,
            RevealItem::WeightsAfter => c.weights_after,
            RevealItem::OptimizerBefore => c.optimizer_before,
            RevealItem::OptimizerAfter => c.optimizer_after,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ErrorCode {
    /// The bytes or a tensor failed validation (index 0). Not retried.
    #[codec(index = 0)]
    Malformed,
    /// The message is for another run (index 1). Not retried.
    #[codec(index = 1)]
    WrongRun,
    /// The message is for a step this stage has committed and forgotten (index 2). The
    /// sender drops it: the receiver is past that step.
    #[codec(index = 2)]
    StaleStep,
    /// The message is for a step too far ahead (index 3). Retried with backoff.
    #[codec(index = 3)]
    FutureStep,
    /// The message does not fit this stage (wrong `from_stage`, micro-batch out of range,
    /// a message kind this stage does not take) (index 4). Not retried.
    #[codec(index = 4)]
    WrongStage,
    /// The sender is not the peer assigned to the stage it claims (index 5). Not retried.
    #[codec(index = 5)]
    NotNeighbour,
    /// A different tensor was already received for the same slot (index 6). Not retried.
    #[codec(index = 6)]
    Conflict,
    /// The reveal was asked by a peer that is not an auditor of this stage (index 7).
    #[codec(index = 7)]
    Forbidden,
    /// The step, item or chunk is not in the store (index 8).
    #[codec(index = 8)]
    NotFound,
    /// The receiver failed internally (index 9). Retried with backoff.
    #[codec(index = 9)]
    Internal,
}

impl ErrorCode {
    /// Whether a sender should retry the same message later.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::FutureStep | ErrorCode::Internal)
    }
}

/// A request between trainers (and from auditors).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Request {
    /// Stage `from_stage`'s output activations for micro-batch `micro` of `step`, sent to
    /// stage `from_stage + 1` (index 0).
    #[codec(index = 0)]
    Forward {
        /// The run.
        run: u64,
        /// The step.
        step: u64,
        /// The micro-batch.
        micro: u32,
        /// The sending stage.
        from_stage: u32,
        /// Activations `[B, T, d_model]`.
        tensor: WireTensor,
    },
    /// Stage `from_stage`'s input gradient for micro-batch `micro` of `step`, sent to
    /// stage `from_stage - 1` (index 1).
    #[codec(index = 1)]
    Backward {
        /// The run.
        run: u64,
        /// The step.
        step: u64,
        /// The micro-batch.
        micro: u32,
        /// The sending stage.
        from_stage: u32,
        /// Gradient `[B, T, d_model]`.
        tensor: WireTensor,
    },
    /// A chunk of a committed item, for an auditor (index 2).
    #[codec(index = 2)]
    Reveal(RevealRequest),
    /// Tied embeddings: the sender's gradient of `wte.weight` for `step`, exchanged between
    /// the first and the last stage (index 3).
    #[codec(index = 3)]
    SharedGrad {
        /// The run.
        run: u64,
        /// The step.
        step: u64,
        /// The sending stage.
        from_stage: u32,
        /// Gradient `[vocab, d_model]`.
        tensor: WireTensor,
    },
    /// Global clipping: the sender's Σ‖g‖² for `step` (f64 bits), sent to every stage
    /// (index 4).
    #[codec(index = 4)]
    GradSqSum {
        /// The run.
        run: u64,
        /// The step.
        step: u64,
        /// The sending stage.
        from_stage: u32,
        /// `f64::to_bits` of the sum of squares.
        bits: u64,
    },
    /// A restarted stage asks a peer to send again everything it sent it for steps
    /// `≥ from_step` (index 5).
    #[codec(index = 5)]
    Resend {
        /// The run.
        run: u64,
        /// The asking stage.
        from_stage: u32,
        /// The first step to resend.
        from_step: u64,
    },
    /// The sender has completed `steps` steps and is leaving (index 6).
    #[codec(index = 6)]
    Done {
        /// The run.
        run: u64,
        /// The sending stage.
        from_stage: u32,
        /// Completed steps.
        steps: u64,
    },
    /// An auditor proves that the sending libp2p peer speaks for validator `account`, an
    /// auditor of `stage` on chain: `signature` is its BLS signature over
    /// [`crate::chain::auditor_hello_message`]`(run, stage, sender)` (index 7). Answered
    /// with `Ack` (the peer may fetch reveals from now on) or `Forbidden`.
    #[codec(index = 7)]
    AuditorHello {
        /// The run.
        run: u64,
        /// The audited stage.
        stage: u32,
        /// The validator account.
        account: [u8; 32],
        /// BN254 BLS signature (compressed G1).
        signature: [u8; 32],
    },
}

/// `RevealRequest { run, step, stage, replica, item, chunk }`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RevealRequest {
    /// The run.
    pub run: u64,
    /// The step.
    pub step: u64,
    /// The stage.
    pub stage: u32,
    /// The replica of the stage.
    pub replica: u32,
    /// Which committed item.
    pub item: RevealItem,
    /// Which 64 KiB chunk of the item's canonical bytes.
    pub chunk: u32,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    /// Accepted (index 0).
    #[codec(index = 0)]
    Ack,
    /// Refused (index 1).
    #[codec(index = 1)]
    Error {
        /// Why, for the machine.
        code: ErrorCode,
        /// Why, for the operator (at most 1 KiB).
        message: String,
    },
    /// A chunk of a revealed item with its proof against the committed root (index 2).
    #[codec(index = 2)]
    RevealChunk {
        /// The chunk (64 KiB but the last).
        data: Vec<u8>,
        /// Its Merkle proof.
        proof: MerkleProof,
        /// Number of chunks of the item.
        total_chunks: u32,
    },
}

impl Response {
    /// An error response; the message is cut to 1 KiB.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Response::Error { code, message }
    }
}

fn decode_exact<T: Decode>(bytes: &[u8]) -> Result<T, WireError> {
    let mut input = bytes;
    let v = T::decode(&mut input).map_err(|e| WireError::Decode(e.to_string()))?;
    if !input.is_empty() {
        return Err(WireError::TrailingBytes(input.len()));
    }
    Ok(v)
}

/// Decodes and validates a request: exact SCALE decoding (no trailing bytes), then every
/// tensor against `limits`, with activations and gradients required to be finite floats.
pub fn decode_request(bytes: &[u8], limits: &Limits) -> Result<Request, WireError> {
    let req: Request = decode_exact(bytes)?;
    match &req {
        Request::Forward { tensor, .. }
        | Request::Backward { tensor, .. }
        | Request::SharedGrad { tensor, .. } => {
            tensor.validate(limits, true)?;
            if !tensor.dtype.is_float() {
                return Err(WireError::Unexpected {
                    expected: "a floating-point tensor".into(),
                    got: format!("{:?}", tensor.dtype),
                });
            }
        }
        Request::GradSqSum { bits, .. } => {
            let v = f64::from_bits(*bits);
            if !v.is_finite() || v < 0.0 {
                return Err(WireError::Unexpected {
                    expected: "a finite non-negative sum of squares".into(),
                    got: format!("{v}"),
                });
            }
        }
        Request::Reveal(_)
        | Request::Resend { .. }
        | Request::Done { .. }
        | Request::AuditorHello { .. } => {}
    }
    Ok(req)
}

/// Decodes a response exactly (no trailing bytes).
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    decode_exact(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn f32_tensor(values: &[f32], shape: &[u32]) -> WireTensor {
        WireTensor {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn forward(tensor: WireTensor) -> Request {
        Request::Forward {
            run: 7,
            step: 3,
            micro: 1,
            from_stage: 0,
            tensor,
        }
    }

    #[test]
    fn tensor_roundtrip_all_dtypes() {
        let t = Tensor::arange(24, (Kind::Float, Device::Cpu))
            .f_reshape([2, 3, 4])
            .unwrap()
            .f_div_scalar(7.0)
            .unwrap();
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half, Kind::Int64] {
            let t = t.to_kind(kind);
            let w = WireTensor::from_tensor(&t).unwrap();
            assert_eq!(w.shape, vec![2, 3, 4]);
            assert_eq!(w.data.len(), 24 * w.dtype.size());
            w.validate(&Limits::default(), true).unwrap();
            let back = w.to_tensor().unwrap();
            assert_eq!(back.kind(), kind);
            assert!(back.equal(&t), "{kind:?}");
            let req = forward(w.clone());
            let bytes = req.encode();
            assert_eq!(
                decode_request(&bytes, &Limits::default()).is_ok(),
                kind != Kind::Int64
            );
        }
        // f32 little-endian on the wire.
        let w = WireTensor::from_tensor(&Tensor::from_slice(&[1.0f32, -2.0])).unwrap();
        assert_eq!(&w.data[..4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn layout_is_locked() {
        let req = forward(f32_tensor(&[1.0], &[1]));
        let enc = req.encode();
        let mut expected = vec![0u8]; // Forward
        expected.extend(7u64.to_le_bytes());
        expected.extend(3u64.to_le_bytes());
        expected.extend(1u32.to_le_bytes());
        expected.extend(0u32.to_le_bytes());
        expected.push(0); // F32
        expected.push(4); // Compact(1)
        expected.extend(1u32.to_le_bytes());
        expected.push(16); // Compact(4)
        expected.extend(1.0f32.to_le_bytes());
        assert_eq!(enc, expected);
        assert_eq!(Response::Ack.encode(), vec![0]);
        assert_eq!(
            Response::error(ErrorCode::Forbidden, "").encode(),
            vec![1, 7, 0]
        );
        let r = Request::Reveal(RevealRequest {
            run: 1,
            step: 2,
            stage: 3,
            replica: 4,
            item: RevealItem::OptimizerAfter,
            chunk: 5,
        })
        .encode();
        assert_eq!(r[0], 2);
        assert_eq!(r[1 + 8 + 8 + 4 + 4], 7);
        assert_eq!(r.len(), 1 + 8 + 8 + 4 + 4 + 1 + 4);
        for (i, item) in RevealItem::ALL.iter().enumerate() {
            assert_eq!(item.encode(), vec![i as u8]);
        }
    }

    #[test]
    fn messages_roundtrip() {
        let msgs = vec![
            forward(f32_tensor(&[1.0, 2.0], &[1, 2])),
            Request::Backward {
                run: 1,
                step: 2,
                micro: 3,
                from_stage: 4,
                tensor: f32_tensor(&[0.5], &[1, 1, 1, 1]),
            },
            Request::SharedGrad {
                run: 1,
                step: 2,
                from_stage: 0,
                tensor: f32_tensor(&[0.5], &[1]),
            },
            Request::GradSqSum {
                run: 1,
                step: 2,
                from_stage: 3,
                bits: 2.5f64.to_bits(),
            },
            Request::Resend {
                run: 1,
                from_stage: 2,
                from_step: 3,
            },
            Request::Done {
                run: 1,
                from_stage: 2,
                steps: 3,
            },
        ];
        for m in msgs {
            assert_eq!(decode_request(&m.encode(), &Limits::default()).unwrap(), m);
        }
        let resp = Response::RevealChunk {
            data: vec![1, 2, 3],
            proof: MerkleProof {
                index: 0,
                leaf_count: 1,
                siblings: vec![],
            },
            total_chunks: 1,
        };
        assert_eq!(decode_response(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn malformed_tensors_are_refused_with_clear_errors() {
        let lim = Limits::default();
        // Wrong length.
        let mut t = f32_tensor(&[1.0, 2.0, 3.0], &[1, 3]);
        t.data.pop();
        let e = decode_request(&forward(t).encode(), &lim).unwrap_err();
        assert_eq!(
            e,
            WireError::Length {
                expected: 12,
                got: 11
            }
        );
        assert!(e.to_string().contains("11 bytes"));
        // Bad dtype index.
        let mut bytes = forward(f32_tensor(&[1.0], &[1])).encode();
        bytes[1 + 8 + 8 + 4 + 4] = 9;
        let e = decode_request(&bytes, &lim).unwrap_err();
        assert!(
            matches!(&e, WireError::Decode(m) if m.contains("dtype")),
            "{e}"
        );
        // Bad message index.
        let e = decode_request(&[42], &lim).unwrap_err();
        assert!(matches!(e, WireError::Decode(_)), "{e}");
        // Oversized dimension (checked before the data length).
        let t = WireTensor {
            dtype: DType::F32,
            shape: vec![1, (1 << 20) + 1],
            data: vec![],
        };
        let e = decode_request(&forward(t).encode(), &lim).unwrap_err();
        assert!(matches!(e, WireError::Dim { axis: 1, .. }), "{e}");
        // Rank above 4.
        let t = f32_tensor(&[1.0], &[1, 1, 1, 1, 1]);
        let e = decode_request(&forward(t).encode(), &lim).unwrap_err();
        assert_eq!(e, WireError::Rank { rank: 5, max: 4 });
        // Total size above the limit (the shape is checked, nothing allocated for it).
        let small = Limits {
            max_bytes: 16,
            ..lim
        };
        let e = decode_request(&forward(f32_tensor(&[0.0; 5], &[5])).encode(), &small).unwrap_err();
        assert!(matches!(e, WireError::TooLarge { bytes: 20, .. }), "{e}");
        // NaN and infinity, in every float dtype.
        let e = decode_request(&forward(f32_tensor(&[1.0, f32::NAN], &[2])).encode(), &lim)
            .unwrap_err();
        assert_eq!(e, WireError::NonFinite { index: 1 });
        let e = decode_request(
            &forward(f32_tensor(&[f32::NEG_INFINITY], &[1])).encode(),
            &lim,
        )
        .unwrap_err();
        assert_eq!(e, WireError::NonFinite { index: 0 });
        for kind in [Kind::BFloat16, Kind::Half] {
            let t = Tensor::from_slice(&[1.0f32, f32::INFINITY]).to_kind(kind);
            let w = WireTensor::from_tensor(&t).unwrap();
            let e = decode_request(&forward(w).encode(), &lim).unwrap_err();
            assert_eq!(e, WireError::NonFinite { index: 1 }, "{kind:?}");
        }
        // Integers where activations are due.
        let w = WireTensor::from_tensor(&Tensor::from_slice(&[1i64])).unwrap();
        assert!(matches!(
            decode_request(&forward(w).encode(), &lim).unwrap_err(),
            WireError::Unexpected { .. }
        ));
        // Trailing bytes.
        let mut bytes = forward(f32_tensor(&[1.0], &[1])).encode();
        bytes.extend([0, 0, 0]);
        assert_eq!(
            decode_request(&bytes, &lim).unwrap_err(),
            WireError::TrailingBytes(3)
        );
        let mut bytes = Response::Ack.encode();
        bytes.push(0);
        assert_eq!(
            decode_response(&bytes).unwrap_err(),
            WireError::TrailingBytes(1)
        );
        // Truncated.
        let bytes = forward(f32_tensor(&[1.0, 2.0], &[2])).encode();
        assert!(matches!(
            decode_request(&bytes[..bytes.len() - 1], &lim).unwrap_err(),
            WireError::Decode(_)
        ));
        // A lying length prefix does not allocate: it fails as truncated.
        let mut bytes = forward(f32_tensor(&[], &[0])).encode();
        let n = bytes.len();
        bytes.truncate(n - 1);
        bytes.extend([0xfe, 0xff, 0xff, 0xff]); // Compact(~1 GiB) data length
        assert!(decode_request(&bytes, &lim).is_err());
        // Negative or NaN sums of squares.
        for v in [f64::NAN, -1.0, f64::INFINITY] {
            let m = Request::GradSqSum {
                run: 0,
                step: 0,
                from_stage: 0,
                bits: v.to_bits(),
            };
            assert!(decode_request(&m.encode(), &lim).is_err());
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
}
