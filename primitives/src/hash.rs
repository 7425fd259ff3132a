//! 32-byte hashes (blake3-256) with hex display and SCALE encoding.

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A blake3-256 digest: block hashes, extrinsic hashes, state and Merkle roots.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode, MaxEncodedLen,
)]
pub struct Hash(pub [u8; 32]);

/// blake3-256 of `bytes`.
pub fn blake3_256(bytes: &[u8]) -> Hash {
    Hash(*blake3::hash(bytes).as_bytes())
}

impl Hash {
    /// The all-zero hash: the parent of genesis.
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// The bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex with a `0x` prefix, as JSON-RPC shows hashes.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }
}

/// Why a hex string is not a hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashParseError {
    /// Not hex at all.
    #[error("not hex: {0}")]
    NotHex(String),
    /// Hex, but not 32 bytes.
    #[error("expected 32 bytes, got {0}")]
    WrongLength(usize),
}

/// Decodes `0x`-prefixed (or bare) hex into bytes.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, HashParseError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|e| HashParseError::NotHex(e.to_string()))
}

impl FromStr for Hash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = decode_hex(s)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| HashParseError::WrongLength(bytes.len()))?;
        Ok(Hash(arr))
    }
}

crate::string_encoded!(Hash, to_hex);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let h = blake3_256(b"weft");
        let parsed: Hash = h.to_hex().parse().unwrap();
        assert_eq!(parsed, h);
        assert_eq!("0x00".parse::<Hash>(), Err(HashParseError::WrongLength(1)));
        assert!(matches!(
            "0xzz".parse::<Hash>(),
            Err(HashParseError::NotHex(_))
        ));
    }
}

/// Opaque bytes shown as `0x` hex in JSON (storage keys and values, encoded extrinsics).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(&self.0))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(&self.0)))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode_hex(&s).map(Bytes).map_err(serde::de::Error::custom)
    }
}
