//! The signed transaction envelope.
//!
//! An extrinsic carries the signer, an sr25519 signature, the signer's nonce, a tip, a
//! validity window ([`Era`]) and the call. What is signed is the blake3 hash of the
//! [`SignedPayload`]: the format version, the call, nonce, tip and era, *plus* the genesis hash
//! (a signature is valid on one chain only) and the hash of the era's birth block (a mortal
//! transaction is valid on one fork only, and only inside its window). The runtime rebuilds
//! the payload from its own view of the chain, so a signature over anything else fails.

use crate::crypto::{verify, Keypair, Signature};
use crate::{blake3_256, AccountId, Balance, BlockNumber, Hash, Nonce};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The extrinsic format this code writes and accepts.
pub const EXTRINSIC_FORMAT_VERSION: u8 = 1;

/// The validity window of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Era {
    /// Valid at any height. Replay is still impossible (nonces), but a stuck transaction
    /// never expires; wallets should prefer [`Era::Mortal`].
    #[codec(index = 0)]
    Immortal,
    /// Valid in blocks `birth + 1 ..= birth + period`; the birth block's hash is signed.
    #[codec(index = 1)]
    Mortal {
        /// The block the transaction was built on.
        birth: BlockNumber,
        /// How many blocks after `birth` it stays valid.
        period: u64,
    },
}

impl Era {
    /// Whether a block at `height` may include a transaction with this era.
    pub fn is_valid_at(&self, height: BlockNumber) -> bool {
        match *self {
            Era::Immortal => true,
            Era::Mortal { birth, period } => {
                height > birth && height <= birth.saturating_add(period)
            }
        }
    }

    /// The block whose hash is signed: genesis for immortal transactions.
    pub fn birth(&self) -> BlockNumber {
        match *self {
            Era::Immortal => 0,
            Era::Mortal { birth, .. } => birth,
        }
    }
}

/// A signed extrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UncheckedExtrinsic<Call> {
    /// [`EXTRINSIC_FORMAT_VERSION`].
    pub version: u8,
    /// The account that signed and pays.
    pub signer: AccountId,
    /// Signature over the hash of the [`SignedPayload`].
    pub signature: Signature,
    /// The signer's nonce; must equal the account's nonce when included.
    pub nonce: Nonce,
    /// Extra fee paid to the block author, for priority.
    pub tip: Balance,
    /// The validity window.
    pub era: Era,
    /// What to do.
    pub call: Call,
}

/// What a signer signs (hashed with blake3).
#[derive(Encode)]
pub struct SignedPayload<'a, Call: Encode> {
    /// [`EXTRINSIC_FORMAT_VERSION`].
    pub version: u8,
    /// The call.
    pub call: &'a Call,
    /// The nonce.
    pub nonce: Nonce,
    /// The tip.
    pub tip: Balance,
    /// The era.
    pub era: Era,
    /// Hash of block 0 of the chain.
    pub genesis_hash: Hash,
    /// Hash of the era's birth block (genesis for immortal).
    pub birth_hash: Hash,
}

impl<Call: Encode> SignedPayload<'_, Call> {
    /// The 32 bytes that are signed.
    pub fn signing_hash(&self) -> Hash {
        blake3_256(&self.encode())
    }
}

/// The chain context a signature binds to.
#[derive(Debug, Clone, Copy)]
pub struct SigningContext {
    /// Hash of block 0.
    pub genesis_hash: Hash,
    /// Hash of the era's birth block.
    pub birth_hash: Hash,
}

impl<Call: Encode> UncheckedExtrinsic<Call> {
    /// Builds and signs an extrinsic.
    pub fn new_signed(
        call: Call,
        signer: &Keypair,
        nonce: Nonce,
        tip: Balance,
        era: Era,
        ctx: SigningContext,
    ) -> Self {
        let payload = SignedPayload {
            version: EXTRINSIC_FORMAT_VERSION,
            call: &call,
            nonce,
            tip,
            era,
            genesis_hash: ctx.genesis_hash,
            birth_hash: ctx.birth_hash,
        };
        let signature = signer.sign(payload.signing_hash().as_bytes());
        UncheckedExtrinsic {
            version: EXTRINSIC_FORMAT_VERSION,
            signer: signer.account_id(),
            signature,
            nonce,
            tip,
            era,
            call,
        }
    }

    /// Whether the signature is valid for this chain context.
    pub fn signature_is_valid(&self, ctx: SigningContext) -> bool {
        let payload = SignedPayload {
            version: self.version,
            call: &self.call,
            nonce: self.nonce,
            tip: self.tip,
            era: self.era,
            genesis_hash: ctx.genesis_hash,
            birth_hash: ctx.birth_hash,
        };
        verify(
            &self.signature,
            payload.signing_hash().as_bytes(),
            &self.signer,
        )
    }

    /// The extrinsic hash: blake3 of its encoding.
    pub fn hash(&self) -> Hash {
        blake3_256(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_chain_and_fields() {
        let k = Keypair::from_suri("//Alice").unwrap();
        let ctx = SigningContext {
            genesis_hash: Hash([1; 32]),
            birth_hash: Hash([2; 32]),
        };
        let xt = UncheckedExtrinsic::new_signed(
            7u32,
            &k,
            3,
            0,
            Era::Mortal {
                birth: 5,
                period: 64,
            },
            ctx,
        );
        assert!(xt.signature_is_valid(ctx));
        let other_chain = SigningContext {
            genesis_hash: Hash([9; 32]),
            ..ctx
        };
        assert!(!xt.signature_is_valid(other_chain));
        let mut tampered = xt.clone();
        tampered.nonce = 4;
        assert!(!tampered.signature_is_valid(ctx));
        let mut tampered = xt.clone();
        tampered.call = 8;
        assert!(!tampered.signature_is_valid(ctx));
        let decoded = UncheckedExtrinsic::<u32>::decode(&mut &xt.encode()[..]).unwrap();
        assert_eq!(decoded, xt);
    }

    #[test]
    fn era_window() {
        let e = Era::Mortal {
            birth: 10,
            period: 4,
        };
        assert!(!e.is_valid_at(10));
        assert!(e.is_valid_at(11));
        assert!(e.is_valid_at(14));
        assert!(!e.is_valid_at(15));
        assert!(Era::Immortal.is_valid_at(u64::MAX));
    }
}

#[cfg(test)]
mod decode_robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to exactly
        /// the bytes it consumed (the fuzz targets in `fuzz/` push this much further).
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut input = &data[..];
            if let Ok(xt) = UncheckedExtrinsic::<Vec<u8>>::decode(&mut input) {
                let consumed = data.len() - input.len();
                prop_assert_eq!(xt.encode(), data[..consumed].to_vec());
            }
            let mut input = &data[..];
            if let Ok(h) = crate::Header::decode(&mut input) {
                let consumed = data.len() - input.len();
                prop_assert_eq!(h.encode(), data[..consumed].to_vec());
            }
        }
    }
}
