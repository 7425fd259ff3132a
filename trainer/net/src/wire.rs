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
//! [`WireTensor`] (from `weft_primitives::tensor`) = `dtype (u8) ‖ shape (Compact<len> ‖
//! u32 LE…) ‖ data (Compact<len> ‖ bytes)`, elements in row-major order, little-endian.
//! dtype indices: `F32 = 0`, `BF16 = 1`, `F16 = 2`, `I64 = 3`.
//!
//! # Ids
//!
//! Runs, stages, replicas and steps are the chain's own types and widths
//! ([`RunId`] u32, [`StageIndex`] u16, [`Replica`] u16, [`Step`] u64).
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
//! turned into a `tch::Tensor` (by the ML core's adapter, `weft_ml::tensor`). A refused message is answered with
//! [`Response::Error`] and never trained on.

use parity_scale_codec::{Decode, Encode};
use weft_primitives::merkle::MerkleProof;
pub use weft_primitives::seal::Direction;
pub use weft_primitives::step::{Replica, RunId, StageIndex, Step, StepItem};
pub use weft_primitives::tensor::{DType, Limits, WireError, WireTensor};

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
    /// An inference request without an open escrow for this run, or whose body does not
    /// match the escrow's hash (index 10). Not retried.
    #[codec(index = 10)]
    Unpaid,
    /// This holder cannot serve the asked step or session (weights of that step not held,
    /// session unknown or evicted, positions out of order) (index 11). The router re-routes.
    #[codec(index = 11)]
    Unavailable,
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
        run: RunId,
        /// The step.
        step: Step,
        /// The micro-batch.
        micro: u32,
        /// The sending stage.
        from_stage: StageIndex,
        /// Activations `[B, T, d_model]`.
        tensor: WireTensor,
    },
    /// Stage `from_stage`'s input gradient for micro-batch `micro` of `step`, sent to
    /// stage `from_stage - 1` (index 1).
    #[codec(index = 1)]
    Backward {
        /// The run.
        run: RunId,
        /// The step.
        step: Step,
        /// The micro-batch.
        micro: u32,
        /// The sending stage.
        from_stage: StageIndex,
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
        run: RunId,
        /// The step.
        step: Step,
        /// The sending stage.
        from_stage: StageIndex,
        /// Gradient `[vocab, d_model]`.
        tensor: WireTensor,
    },
    /// Global clipping: the sender's Σ‖g‖² for `step` (f64 bits), sent to every stage
    /// (index 4).
    #[codec(index = 4)]
    GradSqSum {
        /// The run.
        run: RunId,
        /// The step.
        step: Step,
        /// The sending stage.
        from_stage: StageIndex,
        /// `f64::to_bits` of the sum of squares.
        bits: u64,
    },
    /// A restarted stage asks a peer to send again everything it sent it for steps
    /// `≥ from_step` (index 5).
    #[codec(index = 5)]
    Resend {
        /// The run.
        run: RunId,
        /// The asking stage.
        from_stage: StageIndex,
        /// The first step to resend.
        from_step: Step,
    },
    /// The sender has completed `steps` steps and is leaving (index 6).
    #[codec(index = 6)]
    Done {
        /// The run.
        run: RunId,
        /// The sending stage.
        from_stage: StageIndex,
        /// Completed steps.
        steps: Step,
    },
    /// An auditor proves that the sending libp2p peer speaks for validator `account`, an
    /// auditor of `stage` on chain: `signature` is its BLS signature over
    /// [`crate::access::auditor_hello_message`]`(run, stage, sender)` (index 7). Answered
    /// with `Ack` (the peer may fetch reveals from now on) or `Forbidden`.
    #[codec(index = 7)]
    AuditorHello {
        /// The run.
        run: RunId,
        /// The audited stage.
        stage: StageIndex,
        /// The validator account.
        account: [u8; 32],
        /// BN254 BLS signature (compressed G1).
        signature: [u8; 32],
    },
    /// Inference: run new positions of a session through this stage (index 8). Answered
    /// with `InferHidden` (not the last stage), `InferToken` (the last stage), `Busy` or an
    /// error.
    #[codec(index = 8)]
    InferForward(crate::inference::InferForward),
    /// Inference: the session is over; free its cache (and settle, on the last stage)
    /// (index 9). Answered with `Ack`.
    #[codec(index = 9)]
    InferClose(crate::inference::InferClose),
    /// The chain's new holder of a slot proves that this peer speaks for its account: an
    /// sr25519 signature by the account over
    /// [`crate::access::successor_hello_message`]`(run, stage, replica, sender)` (index 10).
    /// Answered by the slot's previous holder — or, where the run's replicas average, by the
    /// holder of another replica of the stage, which holds the same state — with `Ack` (the
    /// peer may fetch the committed state from now on) or `Forbidden`.
    #[codec(index = 10)]
    SuccessorHello {
        /// The run.
        run: RunId,
        /// The stage.
        stage: StageIndex,
        /// The replica.
        replica: Replica,
        /// The successor's account.
        account: [u8; 32],
        /// sr25519 signature by that account.
        signature: [u8; 64],
    },
    /// The sender's seal over everything it sent its neighbour in `direction` during
    /// `step`: `root` is the Merkle root of those tensors in the order sent, `signature` the
    /// sender's ed25519 signature (its p2p identity) over
    /// [`weft_primitives::seal::seal_message`] (index 11). Sent after the last activation
    /// (to the next stage) and after the last input gradient (to the previous stage); the
    /// receiver checks it and commits it with its step.
    #[codec(index = 11)]
    Seal {
        /// The run.
        run: RunId,
        /// The step.
        step: Step,
        /// The sending stage.
        from_stage: StageIndex,
        /// Activations or gradients.
        direction: Direction,
        /// Merkle root of the tensors sent.
        root: [u8; 32],
        /// ed25519 signature.
        signature: [u8; 64],
    },
    /// Replicas that average: asks the replica `replica` of `stage` is talking to for its
    /// update of `step` (index 12). Answered with [`Response::ReplicaUpdate`], or
    /// [`Response::NotReady`] while the answerer has not finished that step's backward pass.
    /// Taken only from the peers of the stage's other replicas (see
    /// [`crate::replica_desk`]).
    #[codec(index = 12)]
    ReplicaUpdate {
        /// The run.
        run: RunId,
        /// The step.
        step: Step,
        /// The stage (the asker's and the answerer's).
        stage: StageIndex,
        /// The asking replica.
        replica: Replica,
    },
}

/// A replica's update of a step as it crosses to the other replicas of its stage: every
/// parameter's gradient in parameter-name order, flattened, in the run's codec.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum EncodedUpdate {
    /// f32 little-endian, 4 bytes per value (index 0).
    #[codec(index = 0)]
    Fp32(Vec<u8>),
    /// int8 with one f32 scale per tensor (index 1): value `i` of tensor `k` is
    /// `values[i] as i8 × f32::from_bits(scales[k])`.
    #[codec(index = 1)]
    Int8 {
        /// The scale of each tensor, f32 bits.
        scales: Vec<u32>,
        /// One signed byte per value.
        values: Vec<u8>,
    },
}

impl EncodedUpdate {
    /// The bytes it takes on the wire (payload only).
    pub fn payload_bytes(&self) -> usize {
        match self {
            EncodedUpdate::Fp32(b) => b.len(),
            EncodedUpdate::Int8 { scales, values } => 4 * scales.len() + values.len(),
        }
    }
}

/// `RevealRequest { run, step, stage, replica, item, chunk }`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RevealRequest {
    /// The run.
    pub run: RunId,
    /// The step.
    pub step: Step,
    /// The stage.
    pub stage: StageIndex,
    /// The replica of the stage.
    pub replica: Replica,
    /// Which committed item.
    pub item: StepItem,
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
    /// Inference: the stage's hidden states for the new positions `[1, n, d_model]`
    /// (index 3).
    #[codec(index = 3)]
    InferHidden(WireTensor),
    /// Inference: the token the last stage drew for the position after the new ones
    /// (index 4).
    #[codec(index = 4)]
    InferToken(u32),
    /// Inference: every session slot is taken; ask again after `retry_after_ms` (index 5).
    #[codec(index = 5)]
    Busy {
        /// Milliseconds to wait.
        retry_after_ms: u32,
    },
    /// A replica's update of the asked step (index 6), and, once the answerer has decided
    /// which replicas its aggregate of that step includes, that set.
    #[codec(index = 6)]
    ReplicaUpdate {
        /// The update.
        update: EncodedUpdate,
        /// The answerer's seal over its update's root: its ed25519 signature over
        /// [`weft_primitives::seal::seal_message`]`(run, step, stage, replica,
        /// Direction::Update, root)` (boxed: it keeps `Response` small; the same bytes on
        /// the wire).
        signature: Box<[u8; 64]>,
        /// The answerer's included set, once decided.
        decided: Option<weft_primitives::replicas::Included>,
    },
    /// The answerer has no update of that step yet; ask again (index 7).
    #[codec(index = 7)]
    NotReady,
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
        Request::InferForward(f) => match &f.input {
            crate::inference::InferInput::Hidden(tensor) => {
                tensor.validate(limits, true)?;
                if !tensor.dtype.is_float() || tensor.shape.len() != 3 {
                    return Err(WireError::Unexpected {
                        expected: "floating-point hidden states [1, n, d_model]".into(),
                        got: format!("{:?} {:?}", tensor.dtype, tensor.shape),
                    });
                }
            }
            crate::inference::InferInput::Tokens(tokens) => {
                if tokens.is_empty() || tokens.len() as u64 > u64::from(limits.max_dim) {
                    return Err(WireError::Unexpected {
                        expected: format!("1 to {} tokens", limits.max_dim),
                        got: format!("{}", tokens.len()),
                    });
                }
            }
        },
        Request::Reveal(_)
        | Request::Resend { .. }
        | Request::Done { .. }
        | Request::AuditorHello { .. }
        | Request::SuccessorHello { .. }
        | Request::Seal { .. }
        | Request::ReplicaUpdate { .. }
        | Request::InferClose(_) => {}
    }
    Ok(req)
}

/// Decodes a response and validates a tensor it carries against `limits` (finite floats).
pub fn decode_response_checked(bytes: &[u8], limits: &Limits) -> Result<Response, WireError> {
    let resp: Response = decode_exact(bytes)?;
    if let Response::ReplicaUpdate { update, .. } = &resp {
        if update.payload_bytes() > limits.max_bytes {
            return Err(WireError::TooLarge {
                bytes: update.payload_bytes() as u64,
                max: limits.max_bytes,
            });
        }
    }
    if let Response::InferHidden(t) = &resp {
        t.validate(limits, true)?;
        if !t.dtype.is_float() {
            return Err(WireError::Unexpected {
                expected: "floating-point hidden states".into(),
                got: format!("{:?}", t.dtype),
            });
        }
    }
    Ok(resp)
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
    fn layout_is_locked() {
        let req = forward(f32_tensor(&[1.0], &[1]));
        let enc = req.encode();
        let mut expected = vec![0u8]; // Forward
        expected.extend(7u32.to_le_bytes()); // run: RunId
        expected.extend(3u64.to_le_bytes()); // step: Step
        expected.extend(1u32.to_le_bytes()); // micro
        expected.extend(0u16.to_le_bytes()); // from_stage: StageIndex
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
            item: StepItem::OptimizerAfter,
            chunk: 5,
        })
        .encode();
        assert_eq!(r[0], 2);
        assert_eq!(r[1 + 4 + 8 + 2 + 2], 7);
        assert_eq!(r.len(), 1 + 4 + 8 + 2 + 2 + 1 + 4);
        for (i, item) in StepItem::ALL.iter().enumerate() {
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
            Request::Seal {
                run: 1,
                step: 2,
                from_stage: 0,
                direction: Direction::Gradients,
                root: [4; 32],
                signature: [5; 64],
            },
            Request::ReplicaUpdate {
                run: 1,
                step: 2,
                stage: 3,
                replica: 4,
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
        let resp = Response::ReplicaUpdate {
            update: EncodedUpdate::Int8 {
                scales: vec![1.5f32.to_bits()],
                values: vec![1, 255],
            },
            signature: Box::new([9; 64]),
            decided: weft_primitives::replicas::Included::of([0, 1]),
        };
        let enc = resp.encode();
        assert_eq!(enc[0], 6);
        assert_eq!(enc[1], 1);
        assert_eq!(
            decode_response_checked(&enc, &Limits::default()).unwrap(),
            resp
        );
        let small = Limits {
            max_bytes: 5,
            ..Limits::default()
        };
        assert!(matches!(
            decode_response_checked(&enc, &small),
            Err(WireError::TooLarge { bytes: 6, .. })
        ));
        assert_eq!(Response::NotReady.encode(), vec![7]);
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
        bytes[1 + 4 + 8 + 4 + 2] = 9;
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
        // 1.0 then +inf in bf16 (0x3f80, 0x7f80) and f16 (0x3c00, 0x7c00).
        for (dtype, one, inf) in [
            (DType::BF16, 0x3f80u16, 0x7f80u16),
            (DType::F16, 0x3c00, 0x7c00),
        ] {
            let w = WireTensor {
                dtype,
                shape: vec![2],
                data: [one, inf].iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            let e = decode_request(&forward(w).encode(), &lim).unwrap_err();
            assert_eq!(e, WireError::NonFinite { index: 1 }, "{dtype:?}");
        }
        // Integers where activations are due.
        let w = WireTensor {
            dtype: DType::I64,
            shape: vec![1],
            data: 1i64.to_le_bytes().to_vec(),
        };
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
}
