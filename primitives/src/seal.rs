//! Pipeline seals: what makes a message between two stages attributable to its sender.
//!
//! Each stage commits its own view of a step: the sender the root of the activations (or
//! input gradients) it sent, the receiver the root of what it received. Honest neighbours
//! commit the same root, and the chain compares the two on every step. When they differ,
//! one of them lied, and the chain needs evidence to tell which: the **seal**.
//!
//! After the last message of a step in one direction, the sender signs
//!
//! ```text
//! seal_message = SCALE(("weft/pipeline-seal/1", run, step, from_stage, replica, direction, root))
//! ```
//!
//! with its p2p identity (the ed25519 key behind the peer id it declared on chain with
//! `Staking::train`), where `root` is the Merkle root of every tensor it sent that step in
//! that direction, in the order sent. The receiver checks the signature and that the root is
//! that of the tensors it received, and refuses to go on otherwise; it puts the seal in its
//! own commitment. A receiver therefore holds, for every step it commits, a statement
//! signed by its sender of exactly what it was sent; a sender that then commits another root
//! has contradicted its own signature (see the work pallet's pipeline checks).
//!
//! One signature per step and direction rather than one per micro-batch: the chain compares
//! per-step roots, so a signature over the per-step root is exactly the evidence it can check
//! (64 bytes in the commitment, verified at commit), where per-message signatures would have
//! to be posted as a list and tied to the root by a proof the chain cannot compute without
//! the tensors.

use crate::step::{Replica, RunId, StageIndex, Step};
use crate::Hash;
use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};
use sp_core::crypto::Pair as _;
use sp_core::ed25519;

/// Domain tag of [`seal_message`].
pub const SEAL_DOMAIN: &[u8; 20] = b"weft/pipeline-seal/1";

/// Which tensors of a step a seal covers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Activations, from stage `k` to stage `k + 1` (the sender's `outputs`, the receiver's
    /// `inputs`).
    #[codec(index = 0)]
    Activations,
    /// Input gradients, from stage `k` to stage `k − 1` (the sender's `input_grads`, the
    /// receiver's `output_grads`).
    #[codec(index = 1)]
    Gradients,
    /// A replica's update, from replica `r` of stage `k` to the other replicas of stage `k`
    /// (the sender's `update` root; see [`crate::replicas`]).
    #[codec(index = 2)]
    Update,
}

/// The bytes a sender signs to seal `root`, what it sent to its neighbour in `direction`
/// during `step` of `(run, from_stage, replica)`.
pub fn seal_message(
    run: RunId,
    step: Step,
    from_stage: StageIndex,
    replica: Replica,
    direction: Direction,
    root: &Hash,
) -> Vec<u8> {
    (SEAL_DOMAIN, run, step, from_stage, replica, direction, root).encode()
}

/// A 64-byte ed25519 signature over a [`seal_message`], by the sender's p2p identity.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen)]
pub struct SealSignature(pub [u8; 64]);

impl SealSignature {
    /// `0x` and 128 hex digits.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }
}

impl std::str::FromStr for SealSignature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(digits).map_err(|e| format!("seal signature: {e}"))?;
        let raw: [u8; 64] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("seal signature: {} bytes, not 64", b.len()))?;
        Ok(SealSignature(raw))
    }
}

crate::string_encoded!(SealSignature, to_hex);

/// The seals a receiver holds for one step: its previous stage's over the activations it
/// received (every stage but the first), its next stage's over the gradients it received
/// (every stage but the last).
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
pub struct StepSeals {
    /// The previous stage's seal over this step's `inputs` root.
    pub inputs: Option<SealSignature>,
    /// The next stage's seal over this step's `output_grads` root.
    pub output_grads: Option<SealSignature>,
}

/// The ed25519 public key inside a libp2p peer id, when the id is one (the identity
/// multihash, code 0 and length 36, of the protobuf `PublicKey { Type: Ed25519, Data: key }`:
/// the bytes `00 24 08 01 12 20` and the 32-byte key). `None` for any other form.
pub fn ed25519_key_of_peer_id(peer_id: &[u8]) -> Option<[u8; 32]> {
    const PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    peer_id.strip_prefix(&PREFIX)?.try_into().ok()
}

/// Whether `signature` is a signature of `message` by the ed25519 key of `peer_id` (binary
/// libp2p form); `false` when the peer id holds no ed25519 key.
pub fn verify_by_peer_id(peer_id: &[u8], message: &[u8], signature: &SealSignature) -> bool {
    let Some(key) = ed25519_key_of_peer_id(peer_id) else {
        return false;
    };
    ed25519::Pair::verify(
        &ed25519::Signature::from_raw(signature.0),
        message,
        &ed25519::Public::from_raw(key),
    )
}

/// The binary libp2p peer id of the ed25519 public key `key` (the inverse of
/// [`ed25519_key_of_peer_id`]; tools and tests that hold keys, not peer ids, use it).
pub fn peer_id_of_ed25519_key(key: &[u8; 32]) -> Vec<u8> {
    let mut id = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    id.extend_from_slice(key);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_only_for_its_key_and_message() {
        let pair = ed25519::Pair::from_seed(&[7; 32]);
        let peer = peer_id_of_ed25519_key(&pair.public().0);
        assert_eq!(ed25519_key_of_peer_id(&peer), Some(pair.public().0));
        let root = Hash([1; 32]);
        let msg = seal_message(3, 9, 0, 1, Direction::Activations, &root);
        let sig = SealSignature(pair.sign(&msg).0);
        assert!(verify_by_peer_id(&peer, &msg, &sig));
        // Another root, direction, replica or signer: refused.
        let other = seal_message(3, 9, 0, 1, Direction::Activations, &Hash([2; 32]));
        assert!(!verify_by_peer_id(&peer, &other, &sig));
        let other = seal_message(3, 9, 0, 1, Direction::Gradients, &root);
        assert!(!verify_by_peer_id(&peer, &other, &sig));
        let other = seal_message(3, 9, 0, 0, Direction::Activations, &root);
        assert!(!verify_by_peer_id(&peer, &other, &sig));
        let stranger = ed25519::Pair::from_seed(&[8; 32]);
        let peer2 = peer_id_of_ed25519_key(&stranger.public().0);
        assert!(!verify_by_peer_id(&peer2, &msg, &sig));
        // A peer id that holds no ed25519 key verifies nothing.
        assert!(!verify_by_peer_id(b"not a peer id", &msg, &sig));
        assert_eq!(ed25519_key_of_peer_id(&peer[..37]), None);
    }

    #[test]
    fn the_seal_message_layout_is_stable() {
        let msg = seal_message(1, 2, 3, 4, Direction::Gradients, &Hash([5; 32]));
        let mut want = SEAL_DOMAIN.to_vec();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&3u16.to_le_bytes());
        want.extend_from_slice(&4u16.to_le_bytes());
        want.push(1);
        want.extend_from_slice(&[5; 32]);
        assert_eq!(msg, want);
        let sig: SealSignature = SealSignature([9; 64]).to_hex().parse().unwrap();
        assert_eq!(sig, SealSignature([9; 64]));
    }
}
