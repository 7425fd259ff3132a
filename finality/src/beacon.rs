//! The randomness beacon.
//!
//! Block hashes can be ground: an author can try many bodies and keep the one whose hash
//! selects the audits it likes. Each block of a BFT chain instead carries its proposer's BLS
//! signature over `"weft/beacon/v1" ‖ genesis ‖ height ‖ previous randomness`. BLS signatures
//! are unique (one key, one message, one signature), so the proposer's only choice is to
//! propose or not. The chain's randomness after block `n` is
//! `blake3("weft/beacon/next" ‖ randomness(n−1) ‖ signature(n))`, verified on import against
//! the proposer's registered key.
//!
//! **Bias that remains: withholding.** A proposer that dislikes the randomness its block would
//! produce can refuse to propose; after the propose timeout the next round's proposer (drawn
//! afresh) signs instead, giving a different value. Each withheld block costs the withholder
//! its block's reward point, and it gets one extra draw per withheld round; a coalition
//! holding a fraction `p` of the stake is the proposer of a round with probability `p`, so it
//! gets on average `1/(1−p)` draws per height, and it cannot choose among them, only reject.
//! Consumers that need more (audit selection) use randomness of a block at least one block
//! old, so the beacon value is fixed before the audited work is revealed.

use parity_scale_codec::{Decode, Encode};
use weft_bls::{PublicKey, SecretKey, Signature, SignatureBytes};
use weft_primitives::{DigestItem, Hash, Header};

/// What a BFT proposer puts in its header's digest, as `PreRuntime { engine: BFT_ENGINE }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct PreDigest {
    /// The round the block was proposed in.
    pub round: u32,
    /// The proposer's beacon signature ([`sign`]).
    pub beacon: SignatureBytes,
}

impl PreDigest {
    /// As a digest item.
    pub fn to_item(&self) -> DigestItem {
        DigestItem::PreRuntime {
            engine: crate::BFT_ENGINE,
            data: self.encode(),
        }
    }

    /// The BFT pre-digest of `header`, if it has one that decodes.
    pub fn of(header: &Header) -> Option<PreDigest> {
        header.digest.logs.iter().find_map(|item| match item {
            DigestItem::PreRuntime { engine, data } if *engine == crate::BFT_ENGINE => {
                PreDigest::decode(&mut &data[..]).ok()
            }
            _ => None,
        })
    }
}

/// The bytes a proposer signs for the beacon of block `height`.
pub fn message(genesis: &Hash, height: u64, previous: &Hash) -> Vec<u8> {
    let mut out = b"weft/beacon/v1".to_vec();
    out.extend_from_slice(genesis.as_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(previous.as_bytes());
    out
}

/// The proposer's beacon signature for block `height`.
pub fn sign(
    key: &SecretKey,
    genesis: &Hash,
    height: u64,
    previous: &Hash,
) -> Result<SignatureBytes, weft_bls::BlsError> {
    Ok(key.sign(&message(genesis, height, previous))?.to_bytes())
}

/// Whether `signature` is the beacon signature of `key` for block `height`.
pub fn verify(
    key: &PublicKey,
    genesis: &Hash,
    height: u64,
    previous: &Hash,
    signature: &SignatureBytes,
) -> bool {
    match Signature::from_bytes(signature) {
        Ok(s) => key.verify(&message(genesis, height, previous), &s),
        Err(_) => false,
    }
}

/// The randomness after a block with beacon `signature`.
pub fn next(previous: &Hash, signature: &SignatureBytes) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"weft/beacon/next");
    h.update(previous.as_bytes());
    h.update(&signature.0);
    Hash(*h.finalize().as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_beacon_is_unique_and_chained() {
        let sk = SecretKey::from_seed(b"b").unwrap();
        let g = Hash([1; 32]);
        let r0 = Hash([0; 32]);
        let s1 = sign(&sk, &g, 1, &r0).unwrap();
        assert_eq!(
            s1,
            sign(&sk, &g, 1, &r0).unwrap(),
            "no choice for the signer"
        );
        assert!(verify(&sk.public_key(), &g, 1, &r0, &s1));
        assert!(!verify(&sk.public_key(), &g, 2, &r0, &s1));
        let r1 = next(&r0, &s1);
        assert_ne!(r1, r0);
        let s2 = sign(&sk, &g, 2, &r1).unwrap();
        assert_ne!(next(&r1, &s2), r1);
    }
}
