//! sr25519 key pairs and signatures (through `sp-core`), so that SURIs such as `//Alice`,
//! `//Alice//stash` and BIP-39 mnemonics derive the same keys as in any Substrate tool.

use crate::AccountId;
use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::Serialize;
use sp_core::crypto::{Pair as _, Ss58AddressFormat, Ss58Codec};
use sp_core::sr25519;
use std::fmt;

/// A 64-byte sr25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

/// Why a secret URI could not be turned into a key pair.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The SURI is not a valid mnemonic, seed or derivation path.
    #[error("invalid secret URI: {0}")]
    InvalidSuri(String),
}

/// An sr25519 key pair.
#[derive(Clone)]
pub struct Keypair {
    pair: sr25519::Pair,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account_id())
    }
}

impl Keypair {
    /// A key pair from a secret URI: `//Alice`, a 12/24-word mnemonic with an optional
    /// derivation path (`word … word//hard/soft`), or a `0x` 32-byte seed.
    pub fn from_suri(suri: &str) -> Result<Self, KeyError> {
        let pair = sr25519::Pair::from_string(suri, None)
            .map_err(|e| KeyError::InvalidSuri(format!("{e:?}")))?;
        Ok(Keypair { pair })
    }

    /// A fresh key pair with its 12-word mnemonic.
    pub fn generate() -> (Self, String) {
        let (pair, phrase, _seed) = sr25519::Pair::generate_with_phrase(None);
        (Keypair { pair }, phrase)
    }

    /// The account of this key pair.
    pub fn account_id(&self) -> AccountId {
        AccountId(self.pair.public().0)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.pair.sign(message).0)
    }
}

/// Whether `signature` is `signer`'s sr25519 signature of `message`.
pub fn verify(signature: &Signature, message: &[u8], signer: &AccountId) -> bool {
    let sig = sr25519::Signature::from_raw(signature.0);
    sr25519::Pair::verify(&sig, message, &signer.public())
}

/// What `key inspect` and `key generate` print about a key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// The secret phrase, when one was generated or given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_phrase: Option<String>,
    /// The public key, `0x` hex.
    pub public_key: String,
    /// The account, SS58.
    pub ss58_address: String,
    /// The account id, `0x` hex (same bytes as the public key).
    pub account_id: String,
}

impl KeyInfo {
    /// Describes the key of `suri`; `phrase` is shown when the caller knows it.
    pub fn of(pair: &Keypair, phrase: Option<String>) -> Self {
        let public = pair.pair.public();
        KeyInfo {
            secret_phrase: phrase,
            public_key: format!("0x{}", hex::encode(public.0)),
            ss58_address: public
                .to_ss58check_with_version(Ss58AddressFormat::custom(crate::account::SS58_PREFIX)),
            account_id: format!("0x{}", hex::encode(public.0)),
        }
    }
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(phrase) = &self.secret_phrase {
            writeln!(f, "Secret phrase:  {phrase}")?;
        }
        writeln!(f, "Public key:     {}", self.public_key)?;
        writeln!(f, "Account ID:     {}", self.account_id)?;
        write!(f, "SS58 Address:   {}", self.ss58_address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alice_is_the_well_known_account() {
        let alice = Keypair::from_suri("//Alice").unwrap();
        assert_eq!(
            alice.account_id().to_ss58(),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
    }

    #[test]
    fn sign_and_verify() {
        let k = Keypair::from_suri("//Bob").unwrap();
        let sig = k.sign(b"msg");
        assert!(verify(&sig, b"msg", &k.account_id()));
        assert!(!verify(&sig, b"msh", &k.account_id()));
        let other = Keypair::from_suri("//Charlie").unwrap();
        assert!(!verify(&sig, b"msg", &other.account_id()));
        assert!(Keypair::from_suri("not a suri at all !!").is_err());
    }
}
