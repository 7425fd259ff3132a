//! # weft-bls
//!
//! BLS signatures over the BN254 pairing curve (the curve of Ethereum's `ecPairing`
//! precompile), used by validators for audit verdicts and finality certificates.
//!
//! ## Scheme (minimal-signature-size variant)
//!
//! * **Keys.** A secret key is a scalar `sk ∈ Fr \ {0}`; the public key is `pk = sk·G2` (64 bytes
//!   compressed). [`SecretKey::from_seed`] derives `sk` deterministically: 64 bytes of blake3
//!   XOF output over `"weft-bls/keygen/v1" ‖ seed`, reduced modulo `r` (the bias of reducing a
//!   512-bit value modulo a 254-bit prime is below 2^-250).
//! * **Hash to G1.** `H(dst, m)` is try-and-increment: for `ctr = 0, 1, …` take 64 bytes of
//!   blake3 XOF over `dst ‖ len(m) ‖ m ‖ ctr`, reduce modulo `p` to get `x`, and if
//!   `x³ + 3` is a square, return the point `(x, y)` where the parity of `y` is chosen by one more
//!   hash bit. About half of all `x` succeed, so the expected number of tries is 2; we give up
//!   after 256 tries (probability 2^-256). BN254's G1 has cofactor 1, so every curve point is
//!   in the prime-order group. Try-and-increment is not constant time; messages here are
//!   public, so that does not matter.
//! * **Sign / verify.** `σ = sk·H(m)` (32 bytes compressed); valid iff
//!   `e(σ, G2) = e(H(m), pk)`, checked as one multi-pairing `e(σ, −G2)·e(H(m), pk) = 1`.
//! * **Aggregation.** Signatures add in G1 and public keys add in G2. For one message,
//!   `e(Σσᵢ, G2) = e(H(m), Σpkᵢ)`; for distinct messages,
//!   `e(Σσᵢ, G2) = Πᵢ e(H(mᵢ), pkᵢ)`.
//! * **Rogue keys.** An attacker who sees an honest `pk_h` can publish `pk_r = x·G2 − pk_h`;
//!   the aggregate `pk_r + pk_h = x·G2` then verifies a signature only the attacker made. A key
//!   is therefore accepted only with a **proof of possession** — a signature over the key's own
//!   bytes under a separate domain (`"weft-bls/pop/v1"`), which needs the secret key of `pk_r`
//!   that the attacker does not have. Messages are signed under `"weft-bls/sig/v1"`, so a
//!   proof of possession can never be replayed as a message signature or vice versa.
//!
//! Deserialisation checks that points are on the curve and in the prime-order subgroup, and
//! the identity is refused as a public key or signature.

pub mod derive;
use ark_bn254::{Bn254, Fq, Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::{One, PrimeField, Zero};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
pub use derive::secret_from_suri;
use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Domain of message signatures.
pub const DST_SIG: &[u8] = b"weft-bls/sig/v1";
/// Domain of proofs of possession.
pub const DST_POP: &[u8] = b"weft-bls/pop/v1";
const DST_KEYGEN: &[u8] = b"weft-bls/keygen/v1";
const MAX_HASH_TRIES: u32 = 256;

/// Length of a compressed public key (a G2 point).
pub const PUBLIC_KEY_LEN: usize = 64;
/// Length of a compressed signature (a G1 point).
pub const SIGNATURE_LEN: usize = 32;

/// Why a key or signature is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    /// The bytes are not a point of the right group (or are the identity).
    #[error("invalid BLS point encoding")]
    InvalidPoint,
    /// The seed gives the zero scalar (probability 2^-254).
    #[error("seed yields a zero secret key")]
    ZeroKey,
    /// Hash to curve found no point (probability 2^-256).
    #[error("hash to curve failed")]
    HashToCurve,
    /// Nothing to aggregate.
    #[error("empty aggregation")]
    Empty,
    /// A `0x…` key seed that is not hex.
    #[error("the BLS seed is not hex")]
    SeedNotHex,
    /// An empty key seed.
    #[error("the BLS seed is empty")]
    EmptySeed,
}

/// A compressed public key as stored on chain and sent on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen)]
pub struct PublicKeyBytes(pub [u8; PUBLIC_KEY_LEN]);

/// A compressed signature as stored on chain and sent on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen)]
pub struct SignatureBytes(pub [u8; SIGNATURE_LEN]);

impl Default for PublicKeyBytes {
    fn default() -> Self {
        PublicKeyBytes([0; PUBLIC_KEY_LEN])
    }
}

impl Default for SignatureBytes {
    fn default() -> Self {
        SignatureBytes([0; SIGNATURE_LEN])
    }
}

macro_rules! hex_bytes {
    ($t:ident, $n:expr) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&format!("0x{}", hex::encode(self.0)))
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let raw = hex::decode(s.strip_prefix("0x").unwrap_or(&s))
                    .map_err(serde::de::Error::custom)?;
                let arr: [u8; $n] = raw.as_slice().try_into().map_err(|_| {
                    serde::de::Error::custom(format!("expected {} bytes, got {}", $n, raw.len()))
                })?;
                Ok($t(arr))
            }
        }
    };
}
hex_bytes!(PublicKeyBytes, PUBLIC_KEY_LEN);
hex_bytes!(SignatureBytes, SIGNATURE_LEN);

/// A secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Fr);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// A public key: a point of G2, never the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(G2Affine);

/// A signature (or an aggregate of signatures): a point of G1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(G1Affine);

fn xof(parts: &[&[u8]], out: &mut [u8]) {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize_xof().fill(out);
}

/// Hashes `msg` under domain `dst` to a point of G1 (try-and-increment, see the crate docs).
pub fn hash_to_g1(dst: &[u8], msg: &[u8]) -> Result<G1Affine, BlsError> {
    let dst_len = (dst.len() as u64).to_le_bytes();
    let msg_len = (msg.len() as u64).to_le_bytes();
    for ctr in 0..MAX_HASH_TRIES {
        let mut wide = [0u8; 65];
        xof(
            &[&dst_len, dst, &msg_len, msg, &ctr.to_le_bytes()],
            &mut wide,
        );
        let x = Fq::from_le_bytes_mod_order(&wide[..64]);
        let greatest = wide[64] & 1 == 1;
        if let Some(p) = G1Affine::get_point_from_x_unchecked(x, greatest) {
            // Cofactor 1: every point on the curve is in the group. Skip the identity.
            if !p.is_zero() {
                return Ok(p);
            }
        }
    }
    Err(BlsError::HashToCurve)
}

impl SecretKey {
    /// Derives a key from a seed (for example 32 random bytes, or a SURI's secret).
    pub fn from_seed(seed: &[u8]) -> Result<Self, BlsError> {
        let mut wide = [0u8; 64];
        xof(&[DST_KEYGEN, seed], &mut wide);
        let sk = Fr::from_le_bytes_mod_order(&wide);
        if sk.is_zero() {
            return Err(BlsError::ZeroKey);
        }
        Ok(SecretKey(sk))
    }

    /// The public key `sk·G2`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey((G2Projective::generator() * self.0).into_affine())
    }

    /// Signs `msg` under the message domain.
    pub fn sign(&self, msg: &[u8]) -> Result<Signature, BlsError> {
        self.sign_in(DST_SIG, msg)
    }

    fn sign_in(&self, dst: &[u8], msg: &[u8]) -> Result<Signature, BlsError> {
        let h = hash_to_g1(dst, msg)?;
        Ok(Signature((h * self.0).into_affine()))
    }

    /// A proof of possession of this key: its signature over its own public key bytes under
    /// the proof-of-possession domain.
    pub fn proof_of_possession(&self) -> Result<Signature, BlsError> {
        let pk = self.public_key().to_bytes();
        self.sign_in(DST_POP, &pk.0)
    }
}

fn pairing_check(sig: &G1Affine, pairs: &[(G1Affine, G2Affine)]) -> bool {
    // e(σ, −G2) · Π e(Hᵢ, pkᵢ) == 1
    let mut g1s: Vec<G1Affine> = Vec::with_capacity(pairs.len() + 1);
    let mut g2s: Vec<G2Affine> = Vec::with_capacity(pairs.len() + 1);
    g1s.push(*sig);
    g2s.push(-G2Affine::generator());
    for (h, pk) in pairs {
        g1s.push(*h);
        g2s.push(*pk);
    }
    Bn254::multi_pairing(g1s, g2s).0.is_one()
}

impl PublicKey {
    /// Compressed bytes.
    pub fn to_bytes(&self) -> PublicKeyBytes {
        let mut out = Vec::with_capacity(PUBLIC_KEY_LEN);
        // Serialising a valid point into a Vec cannot fail.
        let _ = self.0.serialize_compressed(&mut out);
        let mut arr = [0u8; PUBLIC_KEY_LEN];
        if out.len() == PUBLIC_KEY_LEN {
            arr.copy_from_slice(&out);
        }
        PublicKeyBytes(arr)
    }

    /// Parses compressed bytes, checking curve, subgroup and non-identity.
    pub fn from_bytes(b: &PublicKeyBytes) -> Result<Self, BlsError> {
        let p = G2Affine::deserialize_compressed(&b.0[..]).map_err(|_| BlsError::InvalidPoint)?;
        if p.is_zero() {
            return Err(BlsError::InvalidPoint);
        }
        Ok(PublicKey(p))
    }

    /// Verifies a signature on `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        match hash_to_g1(DST_SIG, msg) {
            Ok(h) => pairing_check(&sig.0, &[(h, self.0)]),
            Err(_) => false,
        }
    }

    /// Verifies a proof of possession of this key.
    pub fn verify_proof_of_possession(&self, pop: &Signature) -> bool {
        let bytes = self.to_bytes();
        match hash_to_g1(DST_POP, &bytes.0) {
            Ok(h) => pairing_check(&pop.0, &[(h, self.0)]),
            Err(_) => false,
        }
    }

    /// The sum of public keys. Only sound for keys whose proofs of possession were checked.
    pub fn aggregate(keys: &[PublicKey]) -> Result<PublicKey, BlsError> {
        if keys.is_empty() {
            return Err(BlsError::Empty);
        }
        let sum: G2Projective = keys.iter().map(|k| k.0.into_group()).sum();
        let p = sum.into_affine();
        if p.is_zero() {
            return Err(BlsError::InvalidPoint);
        }
        Ok(PublicKey(p))
    }
}

impl Signature {
    /// Compressed bytes.
    pub fn to_bytes(&self) -> SignatureBytes {
        let mut out = Vec::with_capacity(SIGNATURE_LEN);
        let _ = self.0.serialize_compressed(&mut out);
        let mut arr = [0u8; SIGNATURE_LEN];
        if out.len() == SIGNATURE_LEN {
            arr.copy_from_slice(&out);
        }
        SignatureBytes(arr)
    }

    /// Parses compressed bytes, checking curve membership and non-identity.
    pub fn from_bytes(b: &SignatureBytes) -> Result<Self, BlsError> {
        let p = G1Affine::deserialize_compressed(&b.0[..]).map_err(|_| BlsError::InvalidPoint)?;
        if p.is_zero() {
            return Err(BlsError::InvalidPoint);
        }
        Ok(Signature(p))
    }

    /// The sum of signatures.
    pub fn aggregate(sigs: &[Signature]) -> Result<Signature, BlsError> {
        if sigs.is_empty() {
            return Err(BlsError::Empty);
        }
        let sum: G1Projective = sigs.iter().map(|s| s.0.into_group()).sum();
        Ok(Signature(sum.into_affine()))
    }
}

/// Verifies an aggregate signature over one message by the aggregate of `keys` (whose proofs
/// of possession must have been checked when they were registered).
pub fn verify_aggregate(keys: &[PublicKey], msg: &[u8], sig: &Signature) -> bool {
    match PublicKey::aggregate(keys) {
        Ok(agg) => agg.verify(msg, sig),
        Err(_) => false,
    }
}

/// Verifies an aggregate signature over distinct messages: `e(σ, G2) = Πᵢ e(H(mᵢ), pkᵢ)`.
pub fn verify_aggregate_distinct(items: &[(&[u8], PublicKey)], sig: &Signature) -> bool {
    if items.is_empty() {
        return false;
    }
    let mut pairs = Vec::with_capacity(items.len());
    for (msg, pk) in items {
        match hash_to_g1(DST_SIG, msg) {
            Ok(h) => pairs.push((h, pk.0)),
            Err(_) => return false,
        }
    }
    pairing_check(&sig.0, &pairs)
}

/// Parses a public key and checks its proof of possession: what the chain does before it
/// accepts a validator's key.
pub fn check_registration(
    pk: &PublicKeyBytes,
    pop: &SignatureBytes,
) -> Result<PublicKey, BlsError> {
    let key = PublicKey::from_bytes(pk)?;
    let sig = Signature::from_bytes(pop)?;
    if key.verify_proof_of_possession(&sig) {
        Ok(key)
    } else {
        Err(BlsError::InvalidPoint)
    }
}

/// Verifies a signature given as bytes against a key given as bytes.
pub fn verify_bytes(pk: &PublicKeyBytes, msg: &[u8], sig: &SignatureBytes) -> bool {
    match (PublicKey::from_bytes(pk), Signature::from_bytes(sig)) {
        (Ok(k), Ok(s)) => k.verify(msg, &s),
        _ => false,
    }
}

/// A deterministic key pair for tests and dev chains: the seed is `"weft-dev-bls" ‖ name`.
pub fn dev_keypair(name: &str) -> Result<(SecretKey, PublicKeyBytes, SignatureBytes), BlsError> {
    let mut seed = b"weft-dev-bls".to_vec();
    seed.extend_from_slice(name.as_bytes());
    let sk = SecretKey::from_seed(&seed)?;
    let pk = sk.public_key().to_bytes();
    let pop = sk.proof_of_possession()?.to_bytes();
    Ok((sk, pk, pop))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn sign_and_verify_roundtrip_through_bytes() {
        let sk = key(1);
        let pk = PublicKey::from_bytes(&sk.public_key().to_bytes()).unwrap();
        let sig = Signature::from_bytes(&sk.sign(b"hello").unwrap().to_bytes()).unwrap();
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellp", &sig));
        assert!(!key(2).public_key().verify(b"hello", &sig));
        assert!(verify_bytes(&pk.to_bytes(), b"hello", &sig.to_bytes()));
    }

    #[test]
    fn keygen_is_deterministic() {
        assert_eq!(key(7).public_key(), key(7).public_key());
        assert_ne!(key(7).public_key(), key(8).public_key());
        assert_eq!(key(7).sign(b"m").unwrap(), key(7).sign(b"m").unwrap());
    }

    #[test]
    fn aggregate_same_and_distinct_messages() {
        let keys: Vec<SecretKey> = (1..=5).map(key).collect();
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
        let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(b"verdict").unwrap()).collect();
        let agg = Signature::aggregate(&sigs).unwrap();
        assert!(verify_aggregate(&pks, b"verdict", &agg));
        assert!(!verify_aggregate(&pks[..4], b"verdict", &agg));
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3]).collect();
        let sigs: Vec<Signature> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| k.sign(m).unwrap())
            .collect();
        let agg = Signature::aggregate(&sigs).unwrap();
        let items: Vec<(&[u8], PublicKey)> = msgs
            .iter()
            .map(|m| m.as_slice())
            .zip(pks.iter().copied())
            .collect();
        assert!(verify_aggregate_distinct(&items, &agg));
        // The same messages, but signed by the wrong keys.
        let mut wrong = items.clone();
        wrong[0].0 = items[1].0;
        wrong[1].0 = items[0].0;
        assert!(!verify_aggregate_distinct(&wrong, &agg));
    }

    #[test]
    fn proof_of_possession_blocks_rogue_keys() {
        let honest = key(1);
        let pk_h = honest.public_key();
        assert!(check_registration(
            &pk_h.to_bytes(),
            &honest.proof_of_possession().unwrap().to_bytes()
        )
        .is_ok());
        // The attacker knows x and publishes pk_r = x·G2 − pk_h.
        let x = Fr::from(123_456_789u64);
        let pk_r = PublicKey((G2Projective::generator() * x - pk_h.0.into_group()).into_affine());
        // Without proofs of possession, the attacker alone forges a "joint" signature.
        let forged = Signature((hash_to_g1(DST_SIG, b"fail").unwrap() * x).into_affine());
        assert!(verify_aggregate(&[pk_h, pk_r], b"fail", &forged));
        // But the attacker cannot prove possession of pk_r: any proof it can make is rejected.
        let fake_pop =
            Signature((hash_to_g1(DST_POP, &pk_r.to_bytes().0).unwrap() * x).into_affine());
        assert!(check_registration(&pk_r.to_bytes(), &fake_pop.to_bytes()).is_err());
        // Nor can an ordinary signature be passed off as a proof of possession.
        let sig_over_key = SecretKey(x).sign(&pk_r.to_bytes().0).unwrap();
        assert!(check_registration(&pk_r.to_bytes(), &sig_over_key.to_bytes()).is_err());
    }

    #[test]
    fn identity_and_garbage_are_rejected() {
        assert!(PublicKey::from_bytes(&PublicKeyBytes([0; 64])).is_err());
        assert!(PublicKey::from_bytes(&PublicKeyBytes([0xff; 64])).is_err());
        assert!(Signature::from_bytes(&SignatureBytes([0xff; 32])).is_err());
        let mut identity = Vec::new();
        G2Affine::zero()
            .serialize_compressed(&mut identity)
            .unwrap();
        let arr: [u8; 64] = identity.try_into().unwrap();
        assert_eq!(
            PublicKey::from_bytes(&PublicKeyBytes(arr)),
            Err(BlsError::InvalidPoint)
        );
    }

    #[test]
    fn serde_hex_roundtrip() {
        let (_, pk, pop) = dev_keypair("alice").unwrap();
        let json = serde_json_like(&pk);
        assert!(json.starts_with("0x"));
        assert_eq!(check_registration(&pk, &pop).map(|k| k.to_bytes()), Ok(pk));
    }

    fn serde_json_like(pk: &PublicKeyBytes) -> String {
        format!("{pk}")
    }
}
