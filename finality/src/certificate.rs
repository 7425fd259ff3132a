//! Commit certificates.
//!
//! A block is final once precommits for it from more than two thirds of the power of its
//! height's set agree at one round. The certificate stored with the block (its
//! justification, served by `chain_getFinalityProof`) is:
//!
//! * `height`, `round`, `block`: what was decided;
//! * `signers`: a bitmap over the set's order (bit `i` of byte `i / 8`, least significant
//!   first), exactly `⌈n / 8⌉` bytes with the bits past `n` zero;
//! * `signature`: the sum of the signers' BLS signatures over the precommit message
//!   (`Vote::signing_bytes` of a precommit for `block`: the voter is not in the signed bytes,
//!   so every signer signed the same message).
//!
//! Size: 32 + 32 + 4 + 8 + ⌈n/8⌉ bytes. Verification: sum the signers' keys, one
//! hash-to-curve, one two-pairing check.

use crate::set::ValidatorSet;
use crate::vote::{Vote, VoteKind};
use parity_scale_codec::{Decode, Encode};
use weft_bls::{PublicKey, Signature, SignatureBytes};
use weft_primitives::{AccountId, Hash};

/// The finality proof of a block.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Certificate {
    /// The decided height.
    pub height: u64,
    /// The round it was decided at.
    pub round: u32,
    /// The decided block.
    pub block: Hash,
    /// Who signed, as a bitmap over set order.
    pub signers: Vec<u8>,
    /// The aggregate signature.
    pub signature: SignatureBytes,
}

/// Why a certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// For another height.
    #[error("certificate for height {found}, expected {expected}")]
    WrongHeight {
        /// In the certificate.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// For another block.
    #[error("certificate for block {found}, expected {expected}")]
    WrongBlock {
        /// In the certificate.
        found: Hash,
        /// Expected.
        expected: Hash,
    },
    /// The bitmap has the wrong length or bits past the set.
    #[error("signer bitmap does not fit a set of {0}")]
    BadBitmap(usize),
    /// The signers do not carry more than two thirds of the power.
    #[error("signers carry {signed} of {total} power, not more than two thirds")]
    NoQuorum {
        /// Signed power.
        signed: u64,
        /// Total power.
        total: u64,
    },
    /// A signer is not in the set, or a signature does not parse.
    #[error("unknown signer {0}")]
    UnknownSigner(AccountId),
    /// The aggregate does not verify.
    #[error("aggregate signature does not verify")]
    BadSignature,
    /// Nothing to aggregate.
    #[error("no signatures to aggregate")]
    Empty,
}

/// The bytes every signer of a certificate signed (a precommit's, whoever the voter).
pub fn precommit_message(genesis: &Hash, height: u64, round: u32, block: Hash) -> Vec<u8> {
    Vote {
        kind: VoteKind::Precommit,
        height,
        round,
        block: Some(block),
        validator: AccountId([0; 32]),
    }
    .signing_bytes(genesis)
}

impl Certificate {
    /// Aggregates precommit signatures (over [`precommit_message`]) of members of `set`.
    /// Checks nothing but membership: call [`Certificate::verify`] on the result.
    pub fn aggregate(
        set: &ValidatorSet,
        height: u64,
        round: u32,
        block: Hash,
        signatures: &[(AccountId, SignatureBytes)],
    ) -> Result<Self, CertificateError> {
        let mut bitmap = vec![0u8; set.len().div_ceil(8)];
        let mut sigs = Vec::with_capacity(signatures.len());
        for (who, sig) in signatures {
            let i = set
                .index_of(who)
                .ok_or(CertificateError::UnknownSigner(*who))?;
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                continue;
            }
            bitmap[i / 8] |= 1 << (i % 8);
            sigs.push(
                Signature::from_bytes(sig).map_err(|_| CertificateError::UnknownSigner(*who))?,
            );
        }
        let signature = Signature::aggregate(&sigs)
            .map_err(|_| CertificateError::Empty)?
            .to_bytes();
        Ok(Certificate {
            height,
            round,
            block,
            signers: bitmap,
            signature,
        })
    }

    /// The signers' accounts, in set order.
    pub fn signer_accounts(&self, set: &ValidatorSet) -> Vec<AccountId> {
        set.validators()
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.signers
                    .get(i / 8)
                    .is_some_and(|b| b & (1 << (i % 8)) != 0)
            })
            .map(|(_, v)| v.account)
            .collect()
    }

    /// Checks that this certifies `block` at `height` with a quorum of `set`, on the chain
    /// with `genesis`.
    pub fn verify(
        &self,
        genesis: &Hash,
        set: &ValidatorSet,
        height: u64,
        block: &Hash,
    ) -> Result<(), CertificateError> {
        if self.height != height {
            return Err(CertificateError::WrongHeight {
                found: self.height,
                expected: height,
            });
        }
        if self.block != *block {
            return Err(CertificateError::WrongBlock {
                found: self.block,
                expected: *block,
            });
        }
        let n = set.len();
        if self.signers.len() != n.div_ceil(8) {
            return Err(CertificateError::BadBitmap(n));
        }
        if !n.is_multiple_of(8) {
            let last = self.signers[n / 8];
            if last >> (n % 8) != 0 {
                return Err(CertificateError::BadBitmap(n));
            }
        }
        let mut keys: Vec<PublicKey> = Vec::new();
        let mut signed = 0u64;
        for (i, v) in set.validators().iter().enumerate() {
            if self.signers[i / 8] & (1 << (i % 8)) != 0 {
                signed = signed.saturating_add(v.power);
                if let Some(k) = set.key_at(i) {
                    keys.push(*k);
                }
            }
        }
        if !set.is_quorum(signed) {
            return Err(CertificateError::NoQuorum {
                signed,
                total: set.total_power(),
            });
        }
        let sig =
            Signature::from_bytes(&self.signature).map_err(|_| CertificateError::BadSignature)?;
        let msg = precommit_message(genesis, self.height, self.round, self.block);
        if !weft_bls::verify_aggregate(&keys, &msg, &sig) {
            return Err(CertificateError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::set::tests::{keys, set_of};

    fn precommits(
        k: &[(AccountId, weft_bls::SecretKey)],
        g: &Hash,
        block: Hash,
    ) -> Vec<(AccountId, SignatureBytes)> {
        let msg = precommit_message(g, 7, 1, block);
        k.iter()
            .map(|(a, sk)| (*a, sk.sign(&msg).unwrap().to_bytes()))
            .collect()
    }

    #[test]
    fn three_of_four_certify_two_do_not() {
        let k = keys(4);
        let set = set_of(&k, 10);
        let g = Hash([5; 32]);
        let b = Hash([8; 32]);
        let sigs = precommits(&k, &g, b);
        let cert = Certificate::aggregate(&set, 7, 1, b, &sigs[..3]).unwrap();
        assert_eq!(cert.verify(&g, &set, 7, &b), Ok(()));
        assert_eq!(cert.signer_accounts(&set).len(), 3);
        let weak = Certificate::aggregate(&set, 7, 1, b, &sigs[..2]).unwrap();
        assert!(matches!(
            weak.verify(&g, &set, 7, &b),
            Err(CertificateError::NoQuorum { .. })
        ));
        // A duplicate signer adds nothing.
        let dup = vec![sigs[0], sigs[0], sigs[1]];
        let cert = Certificate::aggregate(&set, 7, 1, b, &dup).unwrap();
        assert!(matches!(
            cert.verify(&g, &set, 7, &b),
            Err(CertificateError::NoQuorum { .. })
        ));
    }

    #[test]
    fn forged_bitmaps_and_blocks_fail() {
        let k = keys(4);
        let set = set_of(&k, 10);
        let g = Hash([5; 32]);
        let b = Hash([8; 32]);
        let sigs = precommits(&k, &g, b);
        let cert = Certificate::aggregate(&set, 7, 1, b, &sigs[..3]).unwrap();
        // Claim the fourth signed too: the aggregate no longer matches the keys.
        let mut claimed = cert.clone();
        claimed.signers[0] |= 0b1111;
        assert_eq!(
            claimed.verify(&g, &set, 7, &b),
            Err(CertificateError::BadSignature)
        );
        let mut past = cert.clone();
        past.signers[0] |= 1 << 6;
        assert_eq!(
            past.verify(&g, &set, 7, &b),
            Err(CertificateError::BadBitmap(4))
        );
        assert!(matches!(
            cert.verify(&g, &set, 7, &Hash([9; 32])),
            Err(CertificateError::WrongBlock { .. })
        ));
        assert!(matches!(
            cert.verify(&g, &set, 8, &b),
            Err(CertificateError::WrongHeight { .. })
        ));
        assert_eq!(
            cert.verify(&Hash([6; 32]), &set, 7, &b),
            Err(CertificateError::BadSignature),
            "another chain's genesis"
        );
        let decoded = Certificate::decode(&mut &cert.encode()[..]).unwrap();
        assert_eq!(decoded, cert);
    }
}
