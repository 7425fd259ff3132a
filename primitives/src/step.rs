//! The protocol types of one training step, shared by the chain, the trainer and the auditor.
//!
//! Every step of every stage (and replica) of a run is committed on chain as a
//! [`StepCommitment`]: the step, the blake3 Merkle roots of what the stage received, computed
//! and sent ([`StepRoots`]), and on the last stage the step's mean loss in fixed point
//! ([`CommittedLoss`], the loss × 10⁶). The trainer builds it, the work pallet stores its roots
//! and loss, the auditor recomputes the step and compares against it. One type on every side:
//! nothing converts between look-alikes.
//!
//! [`StepItem`] names the nine committed items (the fields of [`StepRoots`]); a reveal asks
//! for one of them, chunk by chunk (see [`crate::tensor`] for the chunking).
//!
//! The SCALE layouts are locked by tests: `StepRoots` is nine hashes in field order,
//! `StepCommitment` is `step (u64 LE) ‖ roots ‖ Option<u64 loss>`, `StepItem` one byte.

use crate::Hash;
use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};

/// A step of a run (0-based).
pub type Step = u64;
/// A run.
pub type RunId = u32;
/// A pipeline stage of a run (0-based).
pub type StageIndex = u16;
/// A replica of a stage (0-based).
pub type Replica = u16;

/// A committed loss: the step's mean cross-entropy × 10⁶, rounded. The trainer's checked
/// conversion from and to floating point is `weft_ml::commit::committed_loss` /
/// `loss_value` (floats never enter the runtime).
pub type CommittedLoss = u64;

/// The Merkle roots of one step of one stage.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct StepRoots {
    /// Weights before the update, in parameter-name order.
    pub weights_before: Hash,
    /// Inputs of every micro-batch (the token batch on stage 0, activations elsewhere).
    pub inputs: Hash,
    /// Outputs sent on (activations), or on the last stage the per micro-batch losses.
    pub outputs: Hash,
    /// Gradients received for the outputs; zero on the last stage.
    pub output_grads: Hash,
    /// Gradients sent back for the inputs; zero on stage 0.
    pub input_grads: Hash,
    /// Weights after the update.
    pub weights_after: Hash,
    /// AdamW moments before the update (`m`, `v` per parameter, name order).
    pub optimizer_before: Hash,
    /// AdamW moments after the update.
    pub optimizer_after: Hash,
    /// This replica's update as it sent it to the other replicas of its stage (the gradient
    /// of every parameter, name order, after the run's update codec); zero where the
    /// replicas of the run train apart (see [`crate::replicas`]).
    pub update: Hash,
}

impl StepRoots {
    /// The root committed for `item`.
    pub fn get(&self, item: StepItem) -> Hash {
        match item {
            StepItem::WeightsBefore => self.weights_before,
            StepItem::Inputs => self.inputs,
            StepItem::Outputs => self.outputs,
            StepItem::OutputGrads => self.output_grads,
            StepItem::InputGrads => self.input_grads,
            StepItem::WeightsAfter => self.weights_after,
            StepItem::OptimizerBefore => self.optimizer_before,
            StepItem::OptimizerAfter => self.optimizer_after,
            StepItem::Update => self.update,
        }
    }
}

/// What a trainer commits for one step of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen)]
pub struct StepCommitment {
    /// The step.
    pub step: Step,
    /// The roots.
    pub roots: StepRoots,
    /// The step's mean loss; only on the last stage.
    pub loss: Option<CommittedLoss>,
}

/// One committed item of a step: what a reveal request asks for. Encoded as one byte, the
/// explicit index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen,
)]
pub enum StepItem {
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
    /// The replica's update as sent to the other replicas of its stage (index 8); empty
    /// where the replicas train apart.
    #[codec(index = 8)]
    Update,
}

impl StepItem {
    /// Every item, in index order.
    pub const ALL: [StepItem; 9] = [
        StepItem::WeightsBefore,
        StepItem::Inputs,
        StepItem::Outputs,
        StepItem::OutputGrads,
        StepItem::InputGrads,
        StepItem::WeightsAfter,
        StepItem::OptimizerBefore,
        StepItem::OptimizerAfter,
        StepItem::Update,
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn step_commitment_layout_is_locked() {
        let h = |b: u8| Hash([b; 32]);
        let c = StepCommitment {
            step: 0x0102,
            roots: StepRoots {
                weights_before: h(1),
                inputs: h(2),
                outputs: h(3),
                output_grads: h(4),
                input_grads: h(5),
                weights_after: h(6),
                optimizer_before: h(7),
                optimizer_after: h(8),
                update: h(9),
            },
            loss: Some(0x0304),
        };
        let enc = c.encode();
        assert_eq!(enc.len(), 8 + 9 * 32 + 1 + 8);
        assert_eq!(&enc[..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        for (i, b) in (1u8..=9).enumerate() {
            assert_eq!(enc[8 + 32 * i..8 + 32 * (i + 1)], [b; 32]);
        }
        assert_eq!(&enc[296..], &[1, 4, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(StepCommitment::decode(&mut &enc[..]).unwrap(), c);
        for (i, item) in StepItem::ALL.iter().enumerate() {
            assert_eq!(item.encode(), vec![i as u8]);
            assert_eq!(c.roots.get(*item), h(i as u8 + 1));
        }
        assert_eq!(StepCommitment::max_encoded_len(), enc.len());
    }
}
