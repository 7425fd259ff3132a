//! # weft-primitives
//!
//! The types every Weft component shares: the node, the runtime and its pallets, the CLI and
//! the trainer. Everything here is SCALE-encoded with explicit, stable variant indices, and
//! every hash is blake3-256.
//!
//! * [`hash`]: the 32-byte [`Hash`] and the blake3 helpers.
//! * [`account`]: [`AccountId`] (an sr25519 public key), shown as SS58.
//! * [`crypto`]: sr25519 key pairs from SURIs (`//Alice`, mnemonics) and signature checks.
//! * [`header`]: block [`Header`], [`Digest`] and [`Block`].
//! * [`extrinsic`]: the signed transaction envelope and the payload that is signed.
//! * [`storage`]: the key-value storage trait the runtime executes against, a transactional
//!   overlay over it, and typed storage items.
//! * [`step`]: the step commitment (roots and loss) that chain, trainer and auditor share.
//! * [`tensor`]: tensors as bytes on the wire, commitment chunks and their proofs.
//! * [`units`]: token amounts in plancks and their decimal form.

/// Implements `Display`, `Debug`, `Serialize` and `Deserialize` for a type through its string
/// form (`$to_string` one way, `FromStr` the other), so JSON and logs show the same text.
#[macro_export]
macro_rules! string_encoded {
    ($ty:ty, $to_string:ident) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.$to_string())
            }
        }

        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.$to_string())
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.$to_string())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub mod account;
pub mod compute;
pub mod crypto;
pub mod extrinsic;
pub mod hash;
pub mod header;
pub mod inference;
pub mod merkle;
pub mod replicas;
pub mod seal;
pub mod step;
pub mod storage;
pub mod tensor;
pub mod units;

pub use account::AccountId;
pub use crypto::{KeyError, Keypair, Signature};
pub use extrinsic::{Era, SignedPayload, SigningContext, UncheckedExtrinsic};
pub use hash::{blake3_256, Bytes, Hash};
pub use header::{Block, Digest, DigestItem, Header};

/// A token amount, in the smallest unit (plancks).
pub type Balance = u128;
/// A block height; genesis is block 0.
pub type BlockNumber = u64;
/// The per-account transaction counter that prevents replay.
pub type Nonce = u64;
/// Milliseconds since the Unix epoch, as written into headers by block authors.
pub type Moment = u64;

/// Largest encoded extrinsic the pool and the runtime accept, in bytes.
pub const MAX_EXTRINSIC_SIZE: usize = 64 * 1024;
/// Largest encoded block the node imports, in bytes.
pub const MAX_BLOCK_SIZE: usize = 8 * 1024 * 1024;

/// A failed dispatch as recorded in events: which pallet, which error, and its message.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    parity_scale_codec::Encode,
    parity_scale_codec::Decode,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct DispatchError {
    /// The pallet's index in the runtime's call enum.
    pub pallet: u8,
    /// The error's index in the pallet's error enum.
    pub error: u8,
    /// The error's name and message, for people.
    pub message: String,
}

impl DispatchError {
    /// The typed error, if this failure is pallet `pallet`'s and its error index decodes as
    /// an `E` (the pallet's error enum, whose variants carry explicit indices). Match on
    /// this, never on [`DispatchError::message`], which is for people.
    pub fn pallet_error<E: parity_scale_codec::Decode>(&self, pallet: u8) -> Option<E> {
        if self.pallet != pallet {
            return None;
        }
        E::decode(&mut &[self.error][..]).ok()
    }
}

/// Pallet errors: each has a stable index and a message.
pub trait PalletError: std::fmt::Display {
    /// The stable index of the variant.
    fn index(&self) -> u8;
}
