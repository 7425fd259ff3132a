//! Account identifiers: sr25519 public keys, shown and parsed as SS58 (generic prefix 42).

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use sp_core::crypto::{Ss58AddressFormat, Ss58Codec};
use std::str::FromStr;

/// The SS58 address prefix of Weft addresses (42, the generic Substrate prefix).
pub const SS58_PREFIX: u16 = 42;

/// An account: the 32 bytes of an sr25519 public key.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode, MaxEncodedLen,
)]
pub struct AccountId(pub [u8; 32]);

/// Why a string is not an account.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an SS58 address or 0x-prefixed 32-byte public key: {0}")]
pub struct AccountParseError(pub String);

impl AccountId {
    /// The SS58 form of the account (prefix 42).
    pub fn to_ss58(&self) -> String {
        sp_core::sr25519::Public::from_raw(self.0)
            .to_ss58check_with_version(Ss58AddressFormat::custom(SS58_PREFIX))
    }

    /// The sr25519 public key.
    pub fn public(&self) -> sp_core::sr25519::Public {
        sp_core::sr25519::Public::from_raw(self.0)
    }
}

impl FromStr for AccountId {
    type Err = AccountParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(hex_part) = s.strip_prefix("0x") {
            let bytes = hex::decode(hex_part).map_err(|_| AccountParseError(s.to_string()))?;
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| AccountParseError(s.to_string()))?;
            return Ok(AccountId(arr));
        }
        let public = sp_core::sr25519::Public::from_ss58check(s)
            .map_err(|_| AccountParseError(s.to_string()))?;
        Ok(AccountId(public.0))
    }
}

crate::string_encoded!(AccountId, to_ss58);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss58_and_hex_roundtrip() {
        let a = AccountId([7u8; 32]);
        assert_eq!(a.to_ss58().parse::<AccountId>().unwrap(), a);
        assert_eq!(
            format!("0x{}", hex::encode(a.0))
                .parse::<AccountId>()
                .unwrap(),
            a
        );
        assert!("hello".parse::<AccountId>().is_err());
        assert!("0x1234".parse::<AccountId>().is_err());
    }
}
