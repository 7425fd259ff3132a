//! Replicas of a stage that average: the run's choice ([`ReplicaSync`]) and the set of
//! replicas whose updates a step aggregated ([`Included`]).
//!
//! A run registers `R` replicas of every stage. With [`ReplicaSync::Apart`] each replica
//! pipeline trains its own model. With [`ReplicaSync::Average`] (or its int8 form), after
//! the backward pass of every step the replicas of a stage exchange their updates and each
//! applies the same coordinate-wise trimmed mean, so they hold bitwise the same weights
//! after every step (the trainer's `weft_ml::aggregate`, `docs/replicas.md`). Each
//! commitment then carries the root of the update its replica sent (`StepRoots::update`)
//! and the bitmap of the replicas it aggregated; the work pallet checks that the replicas of
//! a stage end each step with the same `weights_after` root.
//!
//! Every update crosses **sealed**: its sender signs `seal_message(run, step, stage, replica,
//! Direction::Update, root)` ([`crate::seal`]) with its p2p identity, the receiver checks the
//! signature and the root of what it received, and commits, with its own step, the root and
//! the seal of every other replica's update it aggregated ([`Round::received`]). A replica
//! that sends one update and commits another has contradicted its own signature, and the
//! chain slashes it, as it does a stage that seals other tensors than it commits.
//!
//! SCALE: `ReplicaSync` one byte (explicit indices), `Included` a `u64` little-endian,
//! `ReceivedUpdate` `replica (u16) ‖ root (32) ‖ signature (64)`, `Round` `included ‖
//! Vec<ReceivedUpdate>`.

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};

/// How the replicas of a run's stages relate.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaSync {
    /// Every replica pipeline trains its own model (index 0).
    #[default]
    #[codec(index = 0)]
    Apart,
    /// The replicas of a stage average their updates every step, sent as f32 (index 1).
    #[codec(index = 1)]
    Average,
    /// As `Average`, the updates sent as int8 with one f32 scale per tensor (index 2).
    #[codec(index = 2)]
    AverageInt8,
}

impl ReplicaSync {
    /// Whether the replicas average.
    pub fn averages(self) -> bool {
        self != ReplicaSync::Apart
    }
}

/// The replicas whose updates one step aggregated: bit `r` set ⇔ replica `r`'s update is in
/// the aggregate. Replicas are numbered below [`Included::MAX_REPLICAS`].
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
pub struct Included(pub u64);

impl Included {
    /// The most replicas a stage that averages may have.
    pub const MAX_REPLICAS: u16 = 64;

    /// The set of the given replicas; `None` if one is out of range.
    pub fn of(replicas: impl IntoIterator<Item = u16>) -> Option<Included> {
        let mut set = Included(0);
        for r in replicas {
            if r >= Self::MAX_REPLICAS {
                return None;
            }
            set.0 |= 1 << r;
        }
        Some(set)
    }

    /// Whether replica `r` is in the set.
    pub fn contains(self, r: u16) -> bool {
        r < Self::MAX_REPLICAS && self.0 & (1 << r) != 0
    }

    /// How many replicas are in the set.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// The replicas in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        (0..Self::MAX_REPLICAS).filter(move |&r| self.contains(r))
    }

    /// Whether every replica in the set is below `replicas`.
    pub fn within(self, replicas: u16) -> bool {
        replicas >= Self::MAX_REPLICAS || self.0 >> replicas == 0
    }
}

/// Another replica's update as a replica received and aggregated it: the sender, the root
/// of the update and the sender's seal over that root (`Direction::Update`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedUpdate {
    /// The sending replica.
    pub replica: u16,
    /// The Merkle root of its update's canonical bytes.
    pub root: crate::Hash,
    /// Its seal over `root`.
    pub signature: crate::seal::SealSignature,
}

/// What the commitment of a step of a run whose replicas average says about its round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    /// The replicas whose updates the step aggregated.
    pub included: Included,
    /// For every included replica but the committing one, its update as received, sealed;
    /// ascending by replica.
    pub received: Vec<ReceivedUpdate>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_set_operations() {
        assert_eq!(ReplicaSync::Apart.encode(), vec![0]);
        assert_eq!(ReplicaSync::Average.encode(), vec![1]);
        assert_eq!(ReplicaSync::AverageInt8.encode(), vec![2]);
        assert!(!ReplicaSync::Apart.averages() && ReplicaSync::AverageInt8.averages());
        let s = Included::of([0, 2, 63]).unwrap();
        assert_eq!(s.encode(), (1u64 | 4 | 1 << 63).to_le_bytes().to_vec());
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 2, 63]);
        assert_eq!(s.count(), 3);
        assert!(s.contains(2) && !s.contains(1) && !s.contains(64));
        assert!(Included::of([64]).is_none());
        assert!(Included::of([0, 2]).unwrap().within(3));
        assert!(!Included::of([0, 3]).unwrap().within(3));
    }
}
