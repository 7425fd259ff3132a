//! A validator's BLS key from the secret it already holds.
//!
//! * With `seed` = `0x…` hex: those bytes are the seed of [`SecretKey::from_seed`].
//! * With any other `seed` text: its UTF-8 bytes are the seed.
//! * Without a seed: the seed is `blake3("weft-cli/bls-from-suri/v1/" ‖ suri)`, so the same
//!   secret URI always gives the same BLS key (and whoever knows the URI knows the key, like
//!   the account key itself). The CLI (`weft stake validate`, attestations) and the auditor
//!   (`weft-trainer audit`) derive it the same way, here.

use crate::{BlsError, SecretKey};

/// The domain of BLS seeds derived from a secret URI.
pub const BLS_FROM_SURI_DOMAIN: &[u8] = b"weft-cli/bls-from-suri/v1/";

/// The BLS secret key of secret URI `suri`, or of an explicit `seed` (see the module docs).
pub fn secret_from_suri(suri: &str, seed: Option<&str>) -> Result<SecretKey, BlsError> {
    let bytes = match seed.map(str::trim) {
        Some(hexed) if hexed.starts_with("0x") => {
            hex::decode(&hexed[2..]).map_err(|_| BlsError::SeedNotHex)?
        }
        Some(text) => text.as_bytes().to_vec(),
        None => {
            let mut h = blake3::Hasher::new();
            h.update(BLS_FROM_SURI_DOMAIN);
            h.update(suri.trim().as_bytes());
            h.finalize().as_bytes().to_vec()
        }
    };
    if bytes.is_empty() {
        return Err(BlsError::EmptySeed);
    }
    SecretKey::from_seed(&bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bls_keys_are_deterministic() {
        let key = |suri: &str, seed: Option<&str>| {
            secret_from_suri(suri, seed)
                .unwrap()
                .public_key()
                .to_bytes()
        };
        let a = key("//Alice", None);
        assert_eq!(a, key(" //Alice ", None));
        assert_ne!(a, key("//Bob", None));
        let h = key("//Alice", Some("0x0102"));
        assert_ne!(a, h);
        assert_eq!(
            h,
            SecretKey::from_seed(&[1, 2])
                .unwrap()
                .public_key()
                .to_bytes()
        );
        let t = key("//Alice", Some("my seed"));
        assert_eq!(
            t,
            SecretKey::from_seed(b"my seed")
                .unwrap()
                .public_key()
                .to_bytes()
        );
        assert_eq!(
            secret_from_suri("//Alice", Some("0xzz")).err(),
            Some(BlsError::SeedNotHex)
        );
        assert_eq!(
            secret_from_suri("//Alice", Some("")).err(),
            Some(BlsError::EmptySeed)
        );
    }
}
